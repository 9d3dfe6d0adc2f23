//! The METIS deployment workflow on session-scoped stores.
//!
//! Three target scripts (deploy-start, deploy-step, deploy-status) run in two
//! target environments of one session. The deployment record lives in the
//! session's global store, so every environment sees it; each environment's
//! progress lives in its local store, which no other environment sees. When
//! the session ends its data is freed and old handles report `Outdated`.
//!
//! ```sh
//! cargo run --example session-workflow
//! ```
//!
//! With `--redis <url>` the sessions' durable tier lives in a Redis store
//! (`session-workflow`) instead of in memory; `--redis` alone starts a
//! `redis-server` on a free loopback port in a temporary directory and stops
//! it at the end:
//!
//! ```sh
//! cargo run --example session-workflow -- --redis redis://127.0.0.1:6379
//! cargo run --example session-workflow -- --redis
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use store_redis::RedisBackend;
use store_session::{Error, Result, Session, Sessions};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Deployment {
    id: Option<String>,
    status: String,
    steps: Vec<Step>,
    environment: String,
    version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Step {
    name: String,
    target: String,
    status: String,
}

/// deploy-start: initialises the deployment in the global store.
async fn deploy_start(session: &Session, environment: &str, version: &str) -> Result<String> {
    let global = session.global()?.durable().await?;
    let deployment = global
        .use_value("deployment", Deployment::default())
        .await?;
    let id = format!("deploy_{}", session.id());
    deployment
        .update(|d| {
            d.id = Some(id.clone());
            d.status = "preparing".into();
            d.environment = environment.into();
            d.version = version.into();
        })
        .await?;
    println!("deploy-start: deployment {id} initialised ({environment}, {version})");
    Ok(id)
}

/// deploy-step: records a step in the global record and in the target's local progress.
async fn deploy_step(session: &Session, target: &str, step: &str) -> Result<()> {
    let global = session.global()?.durable().await?;
    let deployment = global
        .use_value("deployment", Deployment::default())
        .await?;
    if deployment.get()?.id.is_none() {
        println!("deploy-step: no active deployment; start one first");
        return Ok(());
    }
    deployment
        .update(|d| {
            d.status = "running".into();
            d.steps.push(Step {
                name: step.into(),
                target: target.into(),
                status: "completed".into(),
            });
        })
        .await?;
    let local = session.local(target)?;
    let done = local.use_value("steps-done", 0_u32)?;
    done.update(|n| *n += 1)?;
    println!(
        "deploy-step: {target} completed {step} ({} done here)",
        done.get()?
    );
    Ok(())
}

/// deploy-status: reports progress as one target sees it.
async fn deploy_status(session: &Session, target: &str) -> Result<()> {
    let global = session.global()?.durable().await?;
    let deployment = global
        .use_value("deployment", Deployment::default())
        .await?
        .get()?;
    let local = session
        .local(target)?
        .use_value("steps-done", 0_u32)?
        .get()?;
    println!(
        "deploy-status: {target} sees deployment {} {} with {} steps in all, {local} of them its own",
        deployment.id.as_deref().unwrap_or("-"),
        deployment.status,
        deployment.steps.len()
    );
    Ok(())
}

/// Where the durable tier lives.
enum Tier {
    /// In this process (the default).
    Memory,
    /// On the Redis server at this URL.
    Redis(String),
    /// On a `redis-server` this example starts.
    OwnRedis,
}

fn parse_args() -> std::result::Result<Tier, String> {
    let mut args = std::env::args().skip(1).peekable();
    let mut tier = Tier::Memory;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--redis" => {
                tier = match args.next_if(|next| !next.starts_with("--")) {
                    Some(url) => Tier::Redis(url),
                    None => Tier::OwnRedis,
                }
            }
            other => {
                return Err(format!(
                    "unknown argument `{other}` (usage: session-workflow [--redis [URL]])"
                ));
            }
        }
    }
    Ok(tier)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let tier = match parse_args() {
        Ok(tier) => tier,
        Err(e) => {
            eprintln!("session-workflow: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // Declared before the registry so the server stops after it.
    let mut own_server = None;
    let sessions = match tier {
        Tier::Memory => Ok(Sessions::new()),
        Tier::Redis(url) => on_redis(&url).await,
        Tier::OwnRedis => match RedisServer::start() {
            Ok(server) => {
                let url = server.url();
                own_server = Some(server);
                on_redis(&url).await
            }
            Err(e) => Err(e),
        },
    };
    let result = match sessions {
        Ok(sessions) => run(sessions).await.map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    drop(own_server);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("session-workflow failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A registry whose durable tier is the store `session-workflow` on `url`.
/// Sessions left over by an interrupted earlier run are ended first.
async fn on_redis(url: &str) -> std::result::Result<Sessions, String> {
    let backend = RedisBackend::builder(url, "session-workflow")
        .build()
        .await
        .map_err(|e| e.to_string())?;
    println!("durable tier: Redis at {}", backend.endpoint());
    let sessions = Sessions::builder().backend(backend).build();
    for id in ["session-42", "session-43"] {
        let left = sessions.end(id).await.map_err(|e| e.to_string())?;
        if left.durable_keys > 0 {
            println!(
                "durable tier: ended {id}, left by an earlier run ({} keys)",
                left.durable_keys
            );
        }
    }
    Ok(sessions)
}

/// A `redis-server` on a free loopback port in a temporary directory,
/// stopped (and its directory removed) when dropped.
struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    fn start() -> std::result::Result<RedisServer, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free loopback port: {e}"))?
            .port();
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start redis-server ({e}): install Redis 7 \
                     (`apt-get install -y redis-server`) or give `--redis <url>`"
                )
            })?;
        let mut server = RedisServer {
            child,
            port,
            _dir: dir,
        };
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("redis-server exited at start: {status}"));
            }
            if server.answers() {
                return Ok(server);
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err("redis-server did not answer within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the server answers `PING` with `PONG`.
    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut answer = [0_u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut answer).is_ok()
            && &answer == b"+PONG\r\n"
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn run(sessions: Sessions) -> Result<()> {
    let session = sessions.open("session-42").await?;

    deploy_start(&session, "staging", "1.4.2").await?;
    deploy_step(&session, "env-alpha", "pull-images").await?;
    deploy_step(&session, "env-bravo", "pull-images").await?;
    deploy_step(&session, "env-alpha", "migrate-db").await?;
    deploy_status(&session, "env-alpha").await?;
    deploy_status(&session, "env-bravo").await?;

    // Isolation: a local value of env-alpha is not visible from env-bravo.
    let alpha = session.local("env-alpha")?.keys()?;
    let bravo_cache = session
        .local("env-bravo")?
        .use_value("steps-done", 0_u32)?
        .get()?;
    println!("isolation: env-alpha local keys {alpha:?}; env-bravo counts {bravo_cache} step(s)");

    // A second session is a world of its own.
    let other = sessions.open("session-43").await?;
    let other_global = other.global()?.durable().await?;
    let seen = other_global
        .use_value("deployment", Deployment::default())
        .await?
        .get()?;
    println!("isolation: session-43 sees deployment id {:?}", seen.id);

    // Cleanup at session end: its data is freed, its handles are outdated.
    let handle = session.local("env-alpha")?.use_value("steps-done", 0_u32)?;
    let ended = session.end().await?;
    println!(
        "cleanup: session-42 ended, freed {} live entries and {} durable keys",
        ended.live_entries, ended.durable_keys
    );
    match handle.get() {
        Err(Error::Outdated { key }) => println!("cleanup: handle for {key:?} is outdated"),
        other => println!("cleanup: unexpected {other:?}"),
    }
    let ended = other.end().await?;
    println!(
        "cleanup: session-43 ended, freed {} durable keys",
        ended.durable_keys
    );
    Ok(())
}

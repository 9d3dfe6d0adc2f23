//! Model-based test of the Redis backend: random calls from three replicas
//! (each its own backend and connections) on one store, with Redis faults
//! between them, checked against store-core's model. Faults: every client
//! connection killed (`CLIENT KILL`), the server paused (`CLIENT PAUSE`) or
//! busy (`DEBUG SLEEP`, longer than a request's timeout), the change log
//! trimmed (watches get a gap and re-list), and `kill -9` and a restart with
//! the append-only file fsynced on every write (no acknowledged write may be
//! lost), and writes paused for longer than the backend resends a batch
//! (its outcome is reported unknown and the store sends it again). On the
//! cluster, the node holding the store is the one restarted.
//!
//! `STORE_MODEL_CASES` sets the number of cases (default 10 standalone, 5 on
//! the cluster) and `PROPTEST_RNG_SEED` repeats a run; the summary lines
//! start with `model:`.

mod support;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use store_core::Store;
use store_redis::RedisBackend;
use support::{RedisCluster, RedisServer};

// The model kit; moving it to another crate changes this line.
use store_conformance::model::{self, ModelCase, ModelHarness, Runner};

/// Faults, in `inject`'s numbering.
const FAULTS: &[&str] = &[
    "client_kill",
    "client_pause",
    "debug_sleep",
    "log_trimmed",
    "kill9_restart",
    "long_pause",
];

/// One request may take this long before it is resent; a `DEBUG SLEEP`
/// outlasts it.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a batch is resent before its outcome is reported unknown; a
/// long pause outlasts it.
const RETRY_WINDOW: Duration = Duration::from_millis(1200);

/// The servers: one standalone server, or a cluster.
enum Servers {
    Standalone(RedisServer),
    Cluster(RedisCluster),
}

impl Servers {
    fn url(&self) -> String {
        match self {
            Servers::Standalone(server) => server.url(),
            Servers::Cluster(cluster) => cluster.url(),
        }
    }

    /// The node holding `tag`'s slot.
    fn node(&mut self, tag: &str) -> &mut RedisServer {
        match self {
            Servers::Standalone(server) => server,
            Servers::Cluster(cluster) => {
                let index = cluster.node_of(tag);
                &mut cluster.nodes[index]
            }
        }
    }

    fn all(&self) -> Vec<&RedisServer> {
        match self {
            Servers::Standalone(server) => vec![server],
            Servers::Cluster(cluster) => cluster.nodes.iter().collect(),
        }
    }
}

struct RedisModel {
    name: &'static str,
    servers: Arc<Mutex<Servers>>,
}

struct RedisCase {
    servers: Arc<Mutex<Servers>>,
    tag: String,
    replicas: Vec<Store>,
}

fn lock(servers: &Mutex<Servers>) -> std::sync::MutexGuard<'_, Servers> {
    servers.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ModelHarness for RedisModel {
    type Case = RedisCase;

    fn backend(&self) -> &str {
        self.name
    }

    fn faults(&self) -> &[&'static str] {
        FAULTS
    }

    async fn open(&self, replicas: usize) -> RedisCase {
        let url = lock(&self.servers).url();
        let store = format!("model-{:08x}", fastrand::u32(..));
        let mut stores = Vec::with_capacity(replicas);
        let mut tag = String::new();
        for _ in 0..replicas {
            let backend = RedisBackend::builder(&url, &store)
                .prefix("test")
                .request_timeout(REQUEST_TIMEOUT)
                .write_retry_window(RETRY_WINDOW)
                .build()
                .await
                .expect("backend connects");
            tag = backend.hash_tag().to_owned();
            stores.push(
                Store::builder()
                    .backend(backend)
                    .linked_hooks(false)
                    .timeout(Duration::from_millis(2500))
                    .retry_backoff(Duration::from_millis(5), Duration::from_millis(200))
                    .open()
                    .await
                    .expect("store starts"),
            );
        }
        RedisCase {
            servers: Arc::clone(&self.servers),
            tag,
            replicas: stores,
        }
    }
}

impl ModelCase for RedisCase {
    fn replicas(&self) -> &[Store] {
        &self.replicas
    }

    async fn inject(&self, fault: usize, _replica: usize, arg: u8) {
        let servers = Arc::clone(&self.servers);
        let tag = self.tag.clone();
        let blocking = move || {
            let mut servers = lock(&servers);
            match fault {
                0 => {
                    for node in servers.all() {
                        let _ = node.try_cli(&["CLIENT", "KILL", "TYPE", "normal"]);
                    }
                }
                1 => {
                    let ms = (50 + 50 * u64::from(arg % 8)).to_string();
                    let _ = servers.node(&tag).try_cli(&["CLIENT", "PAUSE", &ms, "ALL"]);
                }
                2 => {
                    let port = servers.node(&tag).port();
                    let seconds = format!("0.{}", 6 + arg % 4);
                    // The sleep blocks the server, not the test: run it aside.
                    std::thread::spawn(move || {
                        let _ = std::process::Command::new("redis-cli")
                            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                            .args(["DEBUG", "SLEEP", &seconds])
                            .output();
                    });
                }
                3 => {
                    let log = format!("{tag}:log");
                    let _ = servers.node(&tag).try_cli(&["XTRIM", &log, "MAXLEN", "0"]);
                }
                4 => servers.node(&tag).restart(),
                _ => {
                    let ms = (1500 + 100 * u64::from(arg % 4)).to_string();
                    let _ = servers
                        .node(&tag)
                        .try_cli(&["CLIENT", "PAUSE", &ms, "WRITE"]);
                }
            }
        };
        tokio::task::spawn_blocking(blocking)
            .await
            .expect("the fault is injected");
    }

    async fn heal(&self) {
        let servers = Arc::clone(&self.servers);
        let tag = self.tag.clone();
        tokio::task::spawn_blocking(move || {
            let mut servers = lock(&servers);
            let _ = servers.node(&tag).try_cli(&["CLIENT", "UNPAUSE"]);
            // A restarted primary refuses requests (CLUSTERDOWN) for a
            // while; the next case starts on a cluster that is whole.
            if let Servers::Cluster(cluster) = &mut *servers {
                cluster.wait_ok();
            }
        })
        .await
        .expect("healed");
    }
}

fn run(name: &'static str, servers: Servers, cases: u32) {
    let servers = Arc::new(Mutex::new(servers));
    Runner::new(async || RedisModel { name, servers }).run(model::cases(cases), 32);
}

#[test]
fn standalone_replicas_agree_with_the_model_under_faults() {
    run("redis", Servers::Standalone(RedisServer::start()), 10);
}

#[test]
fn cluster_replicas_agree_with_the_model_under_faults() {
    run("redis-cluster", Servers::Cluster(RedisCluster::start()), 5);
}

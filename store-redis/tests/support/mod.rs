//! Real Redis servers for the tests: each started here, from the machine's
//! `redis-server`, on a free loopback port in a temporary directory, and
//! killed when dropped. Nothing is expected to be running beforehand.
//!
//! Without `redis-server` the tests fail, naming the package to install
//! (`apt-get install -y redis-server`); under `CI` they say the CI script
//! must install it.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use store_conformance::deadline;
use store_redis::RedisBackend;

/// How long a server may take to start, load its data or form a cluster
/// (scaled by `STORE_TEST_DEADLINE_SCALE`).
pub(crate) const START: Duration = Duration::from_secs(30);

/// How long any one expectation of a test may take (scaled).
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

/// Fails the test unless `redis-server` and `redis-cli` are installed.
pub(crate) fn require_redis() {
    let found = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if found("redis-server") && found("redis-cli") {
        return;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "redis-server / redis-cli not found, and CI is set: the CI script must install them \
             (`apt-get install -y redis-server`) before running store-redis's tests"
        );
    }
    panic!(
        "NOT RUN: store-redis's tests need a real Redis 7: install it with \
         `apt-get install -y redis-server` (Debian/Ubuntu; the tests start their own servers)"
    );
}

/// A loopback port that is free now, and whose cluster bus port (+10000) is too.
pub(crate) fn free_port() -> u16 {
    for _ in 0..200 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("local address").port();
        if port > 55_000 {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port pair found");
}

/// One `redis-server` process with its own directory, killed on drop.
pub(crate) struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// `Some(node timeout in ms)` for a cluster node.
    cluster: Option<u32>,
    /// `Some(port)` for a replica of the server on that port.
    replica_of: Option<u16>,
    /// More `redis-server` arguments.
    extra: Vec<String>,
}

impl RedisServer {
    /// A standalone server with the append-only file fsynced on every write.
    pub(crate) fn start() -> RedisServer {
        RedisServer::spawn(None, None, Vec::new())
    }

    /// A standalone server as [`start`](Self::start) makes, with more
    /// `redis-server` arguments (such as `--requirepass`).
    pub(crate) fn start_with_args(args: &[&str]) -> RedisServer {
        RedisServer::spawn(None, None, args.iter().map(|a| (*a).to_owned()).collect())
    }

    /// A standalone server replicating the one on `primary_port`, once it
    /// has caught up.
    pub(crate) fn start_replica_of(primary_port: u16) -> RedisServer {
        let replica = RedisServer::spawn(None, Some(primary_port), Vec::new());
        let limit = deadline(START);
        let started = Instant::now();
        while !replica
            .try_cli(&["INFO", "replication"])
            .is_ok_and(|info| info.contains("master_link_status:up"))
        {
            assert!(started.elapsed() < limit, "the replica did not catch up");
            std::thread::sleep(Duration::from_millis(10));
        }
        replica
    }

    /// A server with cluster mode on, not yet part of a cluster, that takes
    /// a node as failed after `node_timeout_ms` without an answer.
    pub(crate) fn start_cluster_node(node_timeout_ms: u32) -> RedisServer {
        RedisServer::spawn(Some(node_timeout_ms), None, Vec::new())
    }

    fn spawn(cluster: Option<u32>, replica_of: Option<u16>, extra: Vec<String>) -> RedisServer {
        require_redis();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir,
            cluster,
            replica_of,
            extra,
        };
        for _ in 0..5 {
            server.port = free_port();
            server.launch();
            if server.wait_ready().is_ok() {
                return server;
            }
            server.kill();
        }
        panic!("redis-server did not start; log:\n{}", server.log());
    }

    fn launch(&mut self) {
        let dir = self.dir.path();
        let mut command = Command::new("redis-server");
        command
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--protected-mode", "no"])
            .arg("--dir")
            .arg(dir)
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", ""])
            .args(["--enable-debug-command", "yes"])
            .args(["--daemonize", "no"])
            .arg("--logfile")
            .arg(dir.join("redis.log"));
        command.args(&self.extra);
        if let Some(primary) = self.replica_of {
            command
                .args(["--replicaof", "127.0.0.1"])
                .arg(primary.to_string());
        }
        if let Some(node_timeout) = self.cluster {
            command
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                ])
                .arg(node_timeout.to_string());
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
    }

    /// Waits until the server answers PING with PONG (not LOADING).
    fn wait_ready(&mut self) -> Result<(), String> {
        let limit = deadline(START);
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("redis-server exited: {status}"));
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && self.try_cli(&["PING"]).is_ok_and(|r| r.trim() == "PONG")
            {
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(format!("no PONG within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The server's port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's directory.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Runs `redis-cli` against the server; its output, or its error output.
    pub(crate) fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        let mut command = Command::new("redis-cli");
        command
            .args(["-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string());
        if let Some(at) = self.extra.iter().position(|a| a == "--requirepass")
            && let Some(password) = self.extra.get(at + 1)
        {
            command.env("REDISCLI_AUTH", password);
        }
        let output = command
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() && !stdout.starts_with("ERR") && !stdout.starts_with("(error)") {
            Ok(stdout)
        } else {
            Err(format!(
                "{stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// Runs `redis-cli`, failing the test if it fails.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|e| panic!("redis-cli {args:?} failed: {e}"))
    }

    /// `kill -9`: the server dies at once, with no chance to save anything.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory (its
    /// append-only file is loaded) and waits until it answers.
    pub(crate) fn restart(&mut self) {
        self.kill();
        let started = Instant::now();
        loop {
            self.launch();
            match self.wait_ready() {
                Ok(()) => return,
                // The port may linger briefly after a kill.
                Err(_) if started.elapsed() < deadline(START) => {
                    self.kill();
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("redis-server did not restart: {e}\n{}", self.log()),
            }
        }
    }

    /// Whether the process is running.
    pub(crate) fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of three primaries (no replicas), formed with
/// `redis-cli --cluster create`.
pub(crate) struct RedisCluster {
    /// The nodes, in the order given to `--cluster create`.
    pub(crate) nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster nodes, forms the cluster and waits until every
    /// node says `cluster_state:ok`.
    pub(crate) fn start() -> RedisCluster {
        RedisCluster::start_with(0, 5000)
    }

    /// Three primaries with `replicas` replicas each; a node silent for
    /// `node_timeout_ms` is taken as failed (and a replica takes over).
    pub(crate) fn start_with(replicas: usize, node_timeout_ms: u32) -> RedisCluster {
        let count = 3 * (1 + replicas);
        let nodes: Vec<RedisServer> = (0..count)
            .map(|_| RedisServer::start_cluster_node(node_timeout_ms))
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addresses.iter().map(String::as_str));
        let replicas = replicas.to_string();
        args.extend(["--cluster-replicas", &replicas, "--cluster-yes"]);
        let output = Command::new("redis-cli")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let mut cluster = RedisCluster { nodes };
        cluster.wait_ok();
        cluster
    }

    /// Waits until every running node says `cluster_state:ok` and knows all
    /// the nodes.
    pub(crate) fn wait_ok(&mut self) {
        let limit = deadline(START);
        let started = Instant::now();
        let known = format!("cluster_known_nodes:{}", self.nodes.len());
        loop {
            let ok = self
                .nodes
                .iter_mut()
                .filter_map(|n| n.is_running().then_some(&*n))
                .all(|node| {
                    node.try_cli(&["CLUSTER", "INFO"]).is_ok_and(|info| {
                        let lines: Vec<&str> = info.lines().map(str::trim).collect();
                        lines.contains(&"cluster_state:ok") && lines.contains(&known.as_str())
                    })
                });
            if ok {
                return;
            }
            assert!(
                started.elapsed() < limit,
                "the cluster did not become ok within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis+cluster://` with every node as a seed.
    pub(crate) fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// The index of the node that serves `key`'s hash slot.
    pub(crate) fn node_of(&self, key: &str) -> usize {
        let slot: u16 = self
            .nodes
            .iter()
            .find_map(|node| node.try_cli(&["CLUSTER", "KEYSLOT", key]).ok())
            .and_then(|slot| slot.trim().parse().ok())
            .expect("a slot number");
        self.nodes
            .iter()
            .position(|node| owns_slot(node, slot))
            .expect("some node owns the slot")
    }
}

/// Whether `node` serves `slot` (its `CLUSTER NODES` line marked `myself`).
fn owns_slot(node: &RedisServer, slot: u16) -> bool {
    let Ok(nodes) = node.try_cli(&["CLUSTER", "NODES"]) else {
        return false;
    };
    let Some(mine) = nodes.lines().find(|line| line.contains("myself")) else {
        return false;
    };
    mine.split_whitespace().skip(8).any(|range| {
        let (start, end) = range.split_once('-').unwrap_or((range, range));
        match (start.parse::<u16>(), end.parse::<u16>()) {
            (Ok(start), Ok(end)) => (start..=end).contains(&slot),
            _ => false,
        }
    })
}

/// A backend on `url` for `store`, with short timeouts so faults show quickly.
pub(crate) async fn backend(url: &str, store: &str) -> RedisBackend {
    RedisBackend::builder(url, store)
        .prefix("test")
        .request_timeout(Duration::from_millis(1500))
        .build()
        .await
        .expect("backend connects")
}

#[allow(unused_imports, reason = "each test binary uses a different subset")]
pub(crate) use store_conformance::support::eventually_async as eventually;

/// The path of the server's append-only directory (for messages).
pub(crate) fn aof_dir(server: &RedisServer) -> PathBuf {
    server.dir().join("appendonlydir")
}

//! A real `redis-server` for tests: started from the machine's binary on a
//! free loopback port in a temporary directory, killed when dropped. Nothing
//! needs to be running beforehand.
//!
//! Without `redis-server` the test fails and says what to install: it never
//! passes without having run.
//!
//! ```no_run
//! use store_redis_testing::RedisServer;
//!
//! let server = RedisServer::start();
//! let url = server.url(); // redis://127.0.0.1:<port>
//! # let _ = url;
//! ```

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use store_conformance::deadline;

/// One `redis-server` process with its own directory, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server (append-only file on, fsync every second) and waits
    /// until it answers.
    ///
    /// # Panics
    ///
    /// When `redis-server` is not installed or does not start.
    pub fn start() -> RedisServer {
        RedisServer::start_with_args(&[])
    }

    /// A server as [`start`](Self::start) makes, with more `redis-server`
    /// arguments (such as `--requirepass`).
    ///
    /// # Panics
    ///
    /// When `redis-server` is not installed or does not start.
    pub fn start_with_args(extra: &[&str]) -> RedisServer {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            installed,
            "NOT RUN: the Redis cases need a real `redis-server` (Redis 7): install it with \
             `apt-get install -y redis-server`; the tests start their own servers"
        );
        let mut last = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let port = free_port();
            let child = Command::new("redis-server")
                .arg("--port")
                .arg(port.to_string())
                .args(["--bind", "127.0.0.1", "--protected-mode", "no"])
                .arg("--dir")
                .arg(dir.path())
                .args(["--appendonly", "yes", "--appendfsync", "everysec"])
                .args(["--save", "", "--daemonize", "no"])
                .arg("--logfile")
                .arg(dir.path().join("redis.log"))
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server starts");
            let mut server = RedisServer { child, port, dir };
            match server.wait_ready() {
                Ok(()) => return server,
                // Another process may have taken the port meanwhile.
                Err(error) => last = error,
            }
        }
        panic!("redis-server did not start: {last}");
    }

    /// Waits until the port accepts connections and the server answers PING.
    fn wait_ready(&mut self) -> Result<(), String> {
        let limit = deadline(Duration::from_secs(30));
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "redis-server exited: {status}; log:\n{}",
                    self.log()
                ));
            }
            if let Ok(stream) = TcpStream::connect(("127.0.0.1", self.port))
                && ping(stream)
            {
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(format!("no answer within {limit:?}; log:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `PING` and says whether `+PONG` came back (not `-LOADING`); a
/// server asking for a password answers `-NOAUTH`, which also means it is up.
fn ping(mut stream: TcpStream) -> bool {
    use std::io::{Read, Write};
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut answer = [0_u8; 7];
    stream.read_exact(&mut answer).is_ok() && (&answer == b"+PONG\r\n" || &answer == b"-NOAUTH")
}

/// A loopback port that is free now.
///
/// # Panics
///
/// When no loopback port can be bound.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

//! [`PeprPeer`]: a TypeScript Pepr module's own store code (npm `pepr`'s
//! `PeprModule` and `StoreController`) running in Node against a cluster, as
//! a Pepr pod runs it, driven one JSON command per line. Tests share stores
//! with it; benchmarks time it as the baseline it is.
//!
//! The Node side is `peer.js` in a directory where `npm ci` installed npm
//! `pepr` (store-kube's `tests/pepr`).

use std::path::Path;
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::deadline::{DEFAULT_DEADLINE, deadline};
use crate::error::{Error, Result};

/// One Pepr module's stores in a Node process; killed when dropped.
pub struct PeprPeer {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl std::fmt::Debug for PeprPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeprPeer")
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

impl PeprPeer {
    /// Why the peer cannot run from `dir`, if it cannot: Node missing, or npm
    /// `pepr` not installed there.
    pub fn unavailable(dir: &Path) -> Option<String> {
        if !dir.join("node_modules/pepr/package.json").exists() {
            return Some(format!(
                "npm `pepr` is not installed in {} (`npm ci` there)",
                dir.display()
            ));
        }
        let node = std::process::Command::new("node")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match node {
            Ok(status) if status.success() => None,
            _ => Some("`node` does not run".to_owned()),
        }
    }

    /// Starts `peer.js` in `dir` for `capabilities` of module `uuid`, on the
    /// cluster `kubeconfig` names, and waits until every capability's store
    /// is ready.
    pub async fn start(
        dir: &Path,
        kubeconfig: &Path,
        uuid: &str,
        capabilities: &[&str],
    ) -> Result<Self> {
        let mut child = Command::new("node")
            .arg("peer.js")
            .arg(uuid)
            .args(capabilities)
            .current_dir(dir)
            .env("KUBECONFIG", kubeconfig)
            .env("LOG_LEVEL", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| Error::Io {
                path: dir.join("peer.js"),
                source,
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(Error::Peer("started without its pipes".to_owned()));
        };
        let mut peer = PeprPeer {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        };
        let ready = peer.answer("its stores to be ready").await?;
        if ready != json!({"ready": true}) {
            return Err(Error::Peer(format!("said {ready} before it was ready")));
        }
        Ok(peer)
    }

    /// The peer's next answer (its own logs on stdout are skipped).
    async fn answer(&mut self, what: &str) -> Result<Value> {
        let limit = deadline(DEFAULT_DEADLINE);
        let next = async {
            loop {
                let line = self
                    .lines
                    .next_line()
                    .await
                    .map_err(|e| Error::Peer(format!("output unreadable: {e}")))?
                    .ok_or_else(|| Error::Peer("exited".to_owned()))?;
                if let Some(message) = line.strip_prefix("@@ ") {
                    return serde_json::from_str(message)
                        .map_err(|e| Error::Peer(format!("answered {message:?}: {e}")));
                }
            }
        };
        tokio::time::timeout(limit, next)
            .await
            .map_err(|_| Error::Timeout {
                what: format!("the Pepr peer: {what}"),
                after: limit,
            })?
    }

    /// Sends one command and returns its answer; an `{"error": ...}` answer
    /// is an error.
    pub async fn send(&mut self, command: Value) -> Result<Value> {
        let line = format!("{command}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| Error::Peer(format!("does not read commands: {e}")))?;
        let answer = self.answer(&command.to_string()).await?;
        match answer.get("error") {
            Some(error) => Err(Error::Peer(format!("refused {command}: {error}"))),
            None => Ok(answer),
        }
    }

    /// `store.getItem(key)` of capability `cap`.
    pub async fn get(&mut self, cap: &str, key: &str) -> Result<Option<String>> {
        let answer = self
            .send(json!({"op": "get", "cap": cap, "key": key}))
            .await?;
        Ok(answer["value"].as_str().map(str::to_owned))
    }

    /// `store.setItemAndWait(key, value)` of capability `cap`.
    pub async fn set_and_wait(&mut self, cap: &str, key: &str, value: &str) -> Result<()> {
        self.send(json!({"op": "setAndWait", "cap": cap, "key": key, "value": value}))
            .await
            .map(drop)
    }

    /// Returns once capability `cap`'s store reads `value` at `key`; checked
    /// in Node every millisecond, so timing it costs no round trips.
    pub async fn wait_for_value(&mut self, cap: &str, key: &str, value: &str) -> Result<()> {
        let limit = deadline(DEFAULT_DEADLINE);
        let millis = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        self.send(
            json!({"op": "waitFor", "cap": cap, "key": key, "value": value,
            "timeoutMs": millis}),
        )
        .await
        .map(drop)
    }
}

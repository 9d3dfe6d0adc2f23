//! The real control plane's process faults: a paused kube-apiserver answers
//! nothing until resumed, either process killed and started again comes back
//! with the data, and etcd's history compacts on demand.

#![cfg_attr(
    not(real_control_plane),
    allow(unused_imports, reason = "the real-tier test is compiled out")
)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use store_kube_testing::{Component, ControlPlane, within};

async fn create(client: kube::Client, name: &str) -> Result<(), kube::Error> {
    let map: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name },
        "data": { "kept": "yes" },
    }))
    .expect("a ConfigMap");
    Api::<ConfigMap>::namespaced(client, "default")
        .create(&PostParams::default(), &map)
        .await
        .map(|_| ())
}

async fn kept(client: kube::Client, name: &str) -> bool {
    let api = Api::<ConfigMap>::namespaced(client, "default");
    within("a read", api.get(name)).await.is_ok_and(|map| {
        map.data.unwrap_or_default().get("kept").map(String::as_str) == Some("yes")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(real_control_plane),
    ignore = "no control plane found at build time: run `cargo xtask envtest` or set KUBEBUILDER_ASSETS"
)]
async fn process_faults_on_a_real_control_plane_of_its_own() {
    let plane = ControlPlane::start().await.expect("control plane");
    within("a write", create(plane.client().expect("client"), "before"))
        .await
        .expect("created");

    // Paused: a request hangs (no answer, no refusal) until resumed.
    plane.pause(Component::KubeApiserver).expect("paused");
    let hung = tokio::time::timeout(
        Duration::from_millis(500),
        create(plane.client().expect("client"), "while-paused"),
    )
    .await;
    assert!(hung.is_err(), "a paused server answered: {hung:?}");
    plane.resume(Component::KubeApiserver).expect("resumed");
    within("the answer after resuming", plane.wait_until_ready())
        .await
        .expect("ready");

    for component in [Component::KubeApiserver, Component::Etcd] {
        plane.kill_and_restart(component).expect("restarted");
        plane.wait_until_ready().await.expect("ready again");
        assert!(
            kept(plane.client().expect("client"), "before").await,
            "{component:?} restarted without the data"
        );
    }

    let compacted = plane.compact_etcd().await.expect("compacted");
    assert!(compacted > 1, "revision {compacted}");
    within(
        "a write after compaction",
        create(plane.client().expect("client"), "after"),
    )
    .await
    .expect("created");
}

/// How a process holding a control plane ends.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// Its stdin closes, and it drops the control plane.
    Drops,
    /// Its whole process group gets SIGTERM, as from `timeout` or Ctrl-C.
    GroupTerminated,
    /// It alone gets SIGKILL.
    Killed,
}

/// A `store-kube-control-plane` process, in a process group of its own as a
/// test binary under `timeout` or a terminal is.
struct Holder {
    process: Child,
    directory: PathBuf,
    servers: Vec<u32>,
}

impl Holder {
    fn start() -> Child {
        Command::new(env!("CARGO_BIN_EXE_store-kube-control-plane"))
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("store-kube-control-plane starts")
    }

    /// Reads what `process` prints once its control plane is ready.
    fn ready(mut process: Child) -> Self {
        let stdout = process.stdout.take().expect("stdout");
        let (mut directory, mut servers) = (None, Vec::new());
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("a line");
            if let Some(path) = line.strip_prefix("kubeconfig ") {
                directory = Path::new(path).parent().map(ToOwned::to_owned);
            } else if let Some(pids) = line.strip_prefix("pids ") {
                servers = pids
                    .split(' ')
                    .map(|pid| pid.parse().expect("a pid"))
                    .collect();
                break;
            }
        }
        assert_eq!(servers.len(), 2, "no pids line: {process:?}");
        let directory = directory.expect("a kubeconfig line");
        for (pid, name) in servers.iter().zip(["etcd", "kube-apiserver"]) {
            let command = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            assert!(
                String::from_utf8_lossy(&command).contains(name),
                "process {pid} is not {name}"
            );
        }
        Self {
            process,
            directory,
            servers,
        }
    }

    fn end(&mut self, ending: Ending) {
        let pid = self.process.id().to_string();
        let signal = |script: &str| {
            let status = Command::new("sh")
                .args(["-c", script, "signal", &pid])
                .status()
                .expect("sh runs");
            assert!(status.success(), "{script}: {status}");
        };
        match ending {
            Ending::Drops => drop(self.process.stdin.take()),
            Ending::GroupTerminated => signal("kill -s TERM -- -\"$1\""),
            Ending::Killed => signal("kill -s KILL \"$1\""),
        }
        self.process.wait().expect("the holder ends");
    }
}

/// Whether `pid` is still a process that runs (a zombie does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        !state.is_some_and(|rest| rest.starts_with('Z') || rest.starts_with('X'))
    })
}

/// However the process holding a control plane ends (dropping it, a signal to
/// its process group, SIGKILL), etcd and kube-apiserver end too and their
/// directory goes: no server outlives a test run.
#[test]
#[cfg_attr(
    not(real_control_plane),
    ignore = "no control plane found at build time: run `cargo xtask envtest` or set KUBEBUILDER_ASSETS"
)]
fn servers_end_with_the_process_holding_them_on_a_real_control_plane() {
    let endings = [Ending::Drops, Ending::GroupTerminated, Ending::Killed];
    // All three start at once; each is read once ready.
    let started: Vec<_> = endings.iter().map(|_| Holder::start()).collect();
    let mut holders: Vec<_> = started.into_iter().map(Holder::ready).collect();
    for (holder, ending) in holders.iter_mut().zip(endings) {
        holder.end(ending);
    }
    let deadline = Instant::now() + store_kube_testing::deadline(Duration::from_secs(30));
    for (holder, ending) in holders.iter().zip(endings) {
        while holder.servers.iter().any(|&pid| running(pid)) || holder.directory.exists() {
            assert!(
                Instant::now() < deadline,
                "{ending:?}: servers {:?} running: {:?}, {} exists: {}",
                holder.servers,
                holder
                    .servers
                    .iter()
                    .map(|&pid| running(pid))
                    .collect::<Vec<_>>(),
                holder.directory.display(),
                holder.directory.exists()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

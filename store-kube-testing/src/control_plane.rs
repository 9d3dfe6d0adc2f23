//! [`ControlPlane`]: a real etcd + kube-apiserver on 127.0.0.1 for tests,
//! following envtest's conventions for finding the binaries.
//!
//! Each control plane gets free ports, its own certificates, a token for a
//! `system:masters` user and a kubeconfig in a private temporary directory.
//! Dropping it stops both processes and removes the directory. A small
//! watchdog shell process does the same if the test process dies first, so
//! a panicking or killed test run leaves nothing behind. The servers and the
//! watchdog run in process groups of their own: a signal to the test's group
//! (Ctrl-C, `timeout`) ends the test, and the watchdog then ends the servers.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use super::error::{Error, Result};
use super::kubeconfig::{self, KubeconfigSpec};

/// How long [`ControlPlane::apply_crd`] waits for a CRD to be served.
const CRD_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long etcd and kube-apiserver get to become ready (kube-apiserver
/// usually needs about five seconds).
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Where the control-plane binaries are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneAssets {
    /// The `etcd` binary.
    pub etcd: PathBuf,
    /// The `kube-apiserver` binary.
    pub kube_apiserver: PathBuf,
}

impl ControlPlaneAssets {
    /// Finds the binaries as envtest does: `TEST_ASSET_ETCD` and
    /// `TEST_ASSET_KUBE_APISERVER` name each binary; otherwise they are
    /// looked up in `KUBEBUILDER_ASSETS`, then in the directory `cargo xtask
    /// envtest` fills (`$STORE_KUBE_ENVTEST_CACHE/bin`, else
    /// `$XDG_CACHE_HOME/store-kube-envtest/bin`, else
    /// `~/.cache/store-kube-envtest/bin`), then in `/usr/local/kubebuilder/bin`.
    pub fn discover() -> Result<Self> {
        let (etcd, kube_apiserver) =
            crate::assets::find().map_err(|hint| Error::AssetsMissing { hint })?;
        Ok(Self {
            etcd,
            kube_apiserver,
        })
    }
}

/// A running etcd + kube-apiserver pair.
pub struct ControlPlane {
    directory: PathBuf,
    kubeconfig_path: PathBuf,
    config: kube::Config,
    url: String,
    processes: Mutex<Processes>,
    /// How to start each process again, on the same ports and data.
    launch: Option<Launch>,
}

/// What starting the processes takes, kept to start them again.
struct Launch {
    assets: ControlPlaneAssets,
    files: Credentials,
    etcd_port: u16,
    peer_port: u16,
    api_port: u16,
}

/// A process of the control plane, for the fault methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// etcd (its data is kept across a restart).
    Etcd,
    /// kube-apiserver.
    KubeApiserver,
}

impl Component {
    fn name(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::KubeApiserver => "kube-apiserver",
        }
    }
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("url", &self.url)
            .field("directory", &self.directory)
            .finish_non_exhaustive()
    }
}

struct Processes {
    etcd: Option<Child>,
    kube_apiserver: Option<Child>,
    /// Closing its stdin makes the watchdog stop both processes and clean up.
    watchdog: Option<(Child, ChildStdin)>,
}

impl ControlPlane {
    /// Starts a control plane from the binaries [`ControlPlaneAssets::discover`] finds.
    pub async fn start() -> Result<Self> {
        Self::start_with(&ControlPlaneAssets::discover()?).await
    }

    /// Starts a control plane from these binaries and waits until it is ready.
    ///
    /// Ports are picked free just before the servers bind them (envtest's
    /// method), so a server can find its port taken meanwhile by another
    /// process starting at the same moment; the start is then made again on
    /// fresh ports, a few times at most.
    pub async fn start_with(assets: &ControlPlaneAssets) -> Result<Self> {
        let mut tries = 1;
        loop {
            match Self::start_once(assets).await {
                Err(error) if tries < START_TRIES && port_taken(&error) => tries += 1,
                started => return started,
            }
        }
    }

    async fn start_once(assets: &ControlPlaneAssets) -> Result<Self> {
        // On tmpfs, etcd's fsyncs cost nothing; the data is thrown away anyway.
        let shm = Path::new("/dev/shm");
        let mut builder = tempfile::Builder::new();
        builder.prefix("store-kube-control-plane-");
        let temporary = if shm.is_dir() {
            builder.tempdir_in(shm)
        } else {
            builder.tempdir()
        };
        let directory = temporary
            .map_err(|source| Error::Io {
                path: shm.to_path_buf(),
                source,
            })?
            .keep();
        let mut plane = Self {
            kubeconfig_path: directory.join("kubeconfig"),
            directory: directory.clone(),
            config: kube::Config::new(http::Uri::default()),
            url: String::new(),
            processes: Mutex::new(Processes {
                etcd: None,
                kube_apiserver: None,
                watchdog: None,
            }),
            launch: None,
        };
        // From here on, dropping `plane` cleans up whatever was started.
        plane.launch(assets).await?;
        Ok(plane)
    }

    async fn launch(&mut self, assets: &ControlPlaneAssets) -> Result<()> {
        let dir = self.directory.clone();
        let launch = Launch {
            assets: assets.clone(),
            files: write_credentials(&dir)?,
            etcd_port: free_port()?,
            peer_port: free_port()?,
            api_port: free_port()?,
        };
        self.start_watchdog()?;
        let launch = self.launch.insert(launch);
        self.url = format!("https://127.0.0.1:{}", launch.api_port);
        let token = launch.files.token.clone();
        let ca_cert = launch.files.ca_cert.clone();
        self.spawn(Component::Etcd)?;
        self.spawn(Component::KubeApiserver)?;
        kubeconfig::write(
            &self.kubeconfig_path,
            &KubeconfigSpec {
                name: "store-kube-control-plane",
                server: &self.url,
                certificate_authority: Some(&ca_cert),
                token: &token,
            },
        )?;
        self.config = kubeconfig::load(&self.kubeconfig_path).await?;
        self.wait_until_ready().await
    }

    /// The command line that starts `component`.
    fn command(&self, component: Component) -> Result<Command> {
        let launch = self.launch.as_ref().ok_or_else(|| Error::ControlPlane {
            component: component.name(),
            message: "the control plane was never launched".to_owned(),
        })?;
        let dir = &self.directory;
        let files = &launch.files;
        let etcd_url = format!("http://127.0.0.1:{}", launch.etcd_port);
        let peer_url = format!("http://127.0.0.1:{}", launch.peer_port);
        Ok(match component {
            Component::Etcd => {
                let mut etcd = Command::new(&launch.assets.etcd);
                etcd.arg("--name=default")
                    .arg(format!("--data-dir={}", dir.join("etcd").display()))
                    .arg(format!("--listen-client-urls={etcd_url}"))
                    .arg(format!("--advertise-client-urls={etcd_url}"))
                    .arg(format!("--listen-peer-urls={peer_url}"))
                    .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                    .arg(format!("--initial-cluster=default={peer_url}"));
                etcd
            }
            Component::KubeApiserver => {
                let mut apiserver = Command::new(&launch.assets.kube_apiserver);
                apiserver
                    .arg(format!("--etcd-servers={etcd_url}"))
                    .arg("--bind-address=127.0.0.1")
                    .arg("--advertise-address=127.0.0.1")
                    .arg(format!("--secure-port={}", launch.api_port))
                    // 1.20 still opens an unauthenticated port 8080 unless told not to.
                    .arg("--insecure-port=0")
                    .arg(format!("--cert-dir={}", dir.join("certs").display()))
                    .arg(format!("--tls-cert-file={}", files.serving_cert.display()))
                    .arg(format!(
                        "--tls-private-key-file={}",
                        files.serving_key.display()
                    ))
                    .arg(format!("--token-auth-file={}", files.tokens.display()))
                    .arg("--authorization-mode=RBAC")
                    .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
                    .arg(format!(
                        "--service-account-key-file={}",
                        files.sa_public.display()
                    ))
                    .arg(format!(
                        "--service-account-signing-key-file={}",
                        files.sa_private.display()
                    ))
                    .arg("--service-cluster-ip-range=10.0.0.0/24")
                    .arg("--endpoint-reconciler-type=none")
                    // History expires in seconds, not etcd's five minutes, so tests can
                    // observe 410 Gone on a deadline (the fake's window plays this part).
                    .arg("--etcd-compaction-interval=5s")
                    .arg("--allow-privileged=true")
                    .arg("--disable-admission-plugins=ServiceAccount");
                apiserver
            }
        })
    }

    /// Starts `component` and records its process id where the watchdog
    /// looks for it (appending to its log, so a restart keeps the history).
    fn spawn(&self, component: Component) -> Result<()> {
        let name = component.name();
        let child = spawn(
            self.command(component)?,
            &self.directory.join(format!("{name}.log")),
            name,
        )?;
        let pid_file = self.directory.join(format!("{name}.pid"));
        std::fs::write(&pid_file, format!("{}\n", child.id())).map_err(|source| Error::Io {
            path: pid_file,
            source,
        })?;
        let mut processes = lock(&self.processes);
        match component {
            Component::Etcd => processes.etcd = Some(child),
            Component::KubeApiserver => processes.kube_apiserver = Some(child),
        }
        Ok(())
    }

    /// Sends `signal` (`STOP`, `CONT`, `KILL`) to `component`'s process.
    fn signal(&self, component: Component, signal: &str) -> Result<()> {
        let pid = self.pid(component);
        let failed = |message: String| Error::ControlPlane {
            component: component.name(),
            message,
        };
        let pid = pid.ok_or_else(|| failed("not running".to_owned()))?;
        let status = Command::new("sh")
            .args(["-c", "kill -s \"$1\" \"$2\"", "signal"])
            .args([signal, &pid.to_string()])
            .status()
            .map_err(|e| failed(format!("cannot run sh: {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(failed(format!("kill -s {signal} {pid} failed: {status}")))
        }
    }

    /// Stops `component` where it is (`SIGSTOP`): it keeps its connections
    /// open and answers nothing, as a hung server. [`resume`](Self::resume)
    /// lets it go on.
    pub fn pause(&self, component: Component) -> Result<()> {
        self.signal(component, "STOP")
    }

    /// Lets a [paused](Self::pause) component go on (`SIGCONT`); harmless
    /// on one that is running.
    pub fn resume(&self, component: Component) -> Result<()> {
        self.signal(component, "CONT")
    }

    /// Kills `component` (`SIGKILL`, no chance to clean up) and starts it
    /// again on the same ports; etcd keeps its data. Returns once the new
    /// process runs: [`wait_until_ready`](Self::wait_until_ready) waits for
    /// the API to answer again.
    pub fn kill_and_restart(&self, component: Component) -> Result<()> {
        let child = {
            let mut processes = lock(&self.processes);
            match component {
                Component::Etcd => processes.etcd.take(),
                Component::KubeApiserver => processes.kube_apiserver.take(),
            }
        };
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spawn(component)
    }

    /// Compacts etcd's history up to its current revision (through its HTTP
    /// gateway), as kube-apiserver does every few seconds here; returns the
    /// revision compacted to. Watches from before it need a fresh list
    /// (`410 Gone`), unless kube-apiserver's watch cache still covers them.
    pub async fn compact_etcd(&self) -> Result<u64> {
        let port = self
            .launch
            .as_ref()
            .map(|launch| launch.etcd_port)
            .ok_or_else(|| Error::ControlPlane {
                component: "etcd",
                message: "the control plane was never launched".to_owned(),
            })?;
        // Any key will do: the answer's header carries the store's revision.
        let range = etcd_post(port, "/v3/kv/range", &serde_json::json!({"key": "AA=="})).await?;
        let revision = range["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse::<u64>().ok())
            .ok_or_else(|| Error::ControlPlane {
                component: "etcd",
                message: format!("no revision in {range}"),
            })?;
        etcd_post(
            port,
            "/v3/kv/compaction",
            &serde_json::json!({"revision": revision.to_string(), "physical": true}),
        )
        .await?;
        Ok(revision)
    }

    /// Starts the shell process that stops both servers and removes the
    /// directory once its stdin closes: when this handle drops, or when the
    /// test process ends without dropping it (a shared control plane in a
    /// `static`, a panic, a kill).
    fn start_watchdog(&self) -> Result<()> {
        let mut processes = lock(&self.processes);
        // The process ids are read from the pid files when it is time, so
        // processes restarted since are stopped too. SIGKILL, as `Drop` sends:
        // the data is thrown away, a paused process dies of it too, and a
        // kube-apiserver told to stop gracefully after its etcd has gone never
        // finishes. The wait is bounded in case nothing reaps the servers once
        // the test process has gone.
        let script = r#"cat >/dev/null
pids=
for name in kube-apiserver etcd; do pids="$pids $(cat "$1/$name.pid" 2>/dev/null)"; done
kill -s KILL $pids 2>/dev/null
for pid in $pids; do
    tries=0
    while kill -0 "$pid" 2>/dev/null && [ "$tries" -lt 100 ]; do sleep 0.1; tries=$((tries + 1)); done
done
rm -rf "$1""#;
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("store-kube-watchdog")
            .arg(&self.directory)
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| Error::ControlPlane {
                component: "watchdog",
                message: format!("cannot start sh: {source}"),
            })?;
        let stdin = watchdog.stdin.take().ok_or_else(|| Error::ControlPlane {
            component: "watchdog",
            message: "no stdin pipe".to_owned(),
        })?;
        processes.watchdog = Some((watchdog, stdin));
        Ok(())
    }

    /// Waits until kube-apiserver answers `/readyz` and serves the `default`
    /// namespace (after a start, or a restart of either process).
    pub async fn wait_until_ready(&self) -> Result<()> {
        let client = self.client()?;
        let started = Instant::now();
        loop {
            let last_error;
            self.check_alive()?;
            let readyz = http::Request::get("/readyz").body(Vec::new());
            let namespace = http::Request::get("/api/v1/namespaces/default").body(Vec::new());
            match (readyz, namespace) {
                (Ok(readyz), Ok(namespace)) => match client.request_text(readyz).await {
                    // The `default` namespace appears shortly after readiness; tests use it.
                    Ok(_) => match client.request_text(namespace).await {
                        Ok(_) => return Ok(()),
                        Err(error) => last_error = error.to_string(),
                    },
                    Err(error) => last_error = error.to_string(),
                },
                _ => last_error = "cannot build the readiness request".to_owned(),
            }
            if started.elapsed() > crate::deadline(READY_TIMEOUT) {
                return Err(Error::ControlPlane {
                    component: "kube-apiserver",
                    message: format!(
                        "not ready after {:?} ({last_error}); log ends with:\n{}",
                        crate::deadline(READY_TIMEOUT),
                        log_tail(&self.directory.join("kube-apiserver.log"))
                    ),
                });
            }
            // Polling a process that gives no readiness signal; not a test sleep.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn check_alive(&self) -> Result<()> {
        let mut guard = lock(&self.processes);
        let processes = &mut *guard;
        for (component, child) in [
            ("etcd", &mut processes.etcd),
            ("kube-apiserver", &mut processes.kube_apiserver),
        ] {
            if let Some(child) = child
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(Error::ControlPlane {
                    component,
                    message: format!(
                        "exited with {status}; log ends with:\n{}",
                        log_tail(&self.directory.join(format!("{component}.log")))
                    ),
                });
            }
        }
        Ok(())
    }

    /// The process id of `component`, while it runs.
    pub fn pid(&self, component: Component) -> Option<u32> {
        let processes = lock(&self.processes);
        let child = match component {
            Component::Etcd => &processes.etcd,
            Component::KubeApiserver => &processes.kube_apiserver,
        };
        child.as_ref().map(Child::id)
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A client configuration (server CA and admin token included).
    pub fn config(&self) -> kube::Config {
        self.config.clone()
    }

    /// A new client with full (`system:masters`) rights.
    pub fn client(&self) -> Result<kube::Client> {
        kube::Client::try_from(self.config()).map_err(Error::Client)
    }

    /// A kubeconfig file for `kubectl --kubeconfig`.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// Creates or updates a CRD (server-side apply, forced) and returns once
    /// its resource is served.
    pub async fn apply_crd(&self, crd: &CustomResourceDefinition) -> Result<()> {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let client = self.client()?;
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let mut config = crd.clone();
        config.metadata.managed_fields = None;
        config.metadata.resource_version = None;
        config.status = None;
        crds.patch(
            &name,
            &PatchParams::apply("store-kube-testing").force(),
            &Patch::Apply(&config),
        )
        .await
        .map_err(|source| Error::Request {
            what: format!("applying CRD {name}"),
            source,
        })?;
        let version = crd
            .spec
            .versions
            .iter()
            .find(|version| version.storage)
            .map(|version| version.name.clone())
            .unwrap_or_default();
        let list_path = format!(
            "/apis/{}/{}/{}?limit=1",
            crd.spec.group, version, crd.spec.names.plural
        );
        let started = Instant::now();
        loop {
            let established = crds
                .get(&name)
                .await
                .ok()
                .and_then(|crd| crd.status)
                .and_then(|status| status.conditions)
                .is_some_and(|conditions| {
                    conditions
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            // Established can precede the handler serving the resource by a moment.
            if established
                && let Ok(request) = http::Request::get(&list_path).body(Vec::new())
                && client.request_text(request).await.is_ok()
            {
                return Ok(());
            }
            if started.elapsed() > crate::deadline(CRD_READY_TIMEOUT) {
                return Err(Error::Timeout {
                    what: format!("CRD {name} to be served"),
                    after: crate::deadline(CRD_READY_TIMEOUT),
                });
            }
            // kube-apiserver gives no event for "now serving"; poll briefly.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// [`apply_crd`](Self::apply_crd) for each of a set of CRDs.
    pub async fn apply_crds(&self, crds: &[CustomResourceDefinition]) -> Result<()> {
        for crd in crds {
            self.apply_crd(crd).await?;
        }
        Ok(())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let mut processes = lock(&self.processes);
        for child in [processes.kube_apiserver.take(), processes.etcd.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some((mut watchdog, stdin)) = processes.watchdog.take() {
            drop(stdin);
            // The watchdog removes the directory; reap it off this thread.
            std::thread::spawn(move || watchdog.wait());
        } else {
            let _ = std::fs::remove_dir_all(&self.directory);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn spawn(mut command: Command, log: &Path, component: &'static str) -> Result<Child> {
    let io = |source| Error::Io {
        path: log.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io)?;
    let stderr = file.try_clone().map_err(io)?;
    command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(stderr)
        .spawn()
        .map_err(|source| Error::ControlPlane {
            component,
            message: format!("cannot run {:?}: {source}", command.get_program()),
        })
}

/// How many times [`ControlPlane::start_with`] starts a control plane whose
/// ports were taken by another process meanwhile.
const START_TRIES: u32 = 3;

/// Whether a start failed because a server's port was taken: the servers say
/// so only in their logs, whose tail the error carries.
fn port_taken(error: &Error) -> bool {
    matches!(error, Error::ControlPlane { message, .. } if message.contains("address already in use"))
}

/// A port nobody listens on right now (envtest's method, with its small race:
/// see [`ControlPlane::start_with`]).
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|source| Error::Listen {
        address: "127.0.0.1:0".to_owned(),
        source,
    })?;
    listener
        .local_addr()
        .map(|address| address.port())
        .map_err(|source| Error::Listen {
            address: "127.0.0.1:0".to_owned(),
            source,
        })
}

fn log_tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Paths of the generated credentials.
struct Credentials {
    ca_cert: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    sa_private: PathBuf,
    sa_public: PathBuf,
    tokens: PathBuf,
    token: String,
}

/// A CA, a serving certificate for 127.0.0.1 and localhost, a
/// service-account signing key, and a token for a `system:masters` user.
fn write_credentials(dir: &Path) -> Result<Credentials> {
    let write = |name: &str, content: &str| -> Result<PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, content).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    };
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "store-kube test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let serving_key = KeyPair::generate()?;
    let mut serving_params = CertificateParams::new(vec!["localhost".to_owned()])?;
    serving_params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    serving_params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = serving_params.signed_by(&serving_key, &issuer)?;

    let sa_key = KeyPair::generate()?;
    let token: String = (0..32).map(|_| fastrand::alphanumeric()).collect();
    Ok(Credentials {
        ca_cert: write("ca.crt", &ca_cert.pem())?,
        serving_cert: write("serving.crt", &serving_cert.pem())?,
        serving_key: write("serving.key", &serving_key.serialize_pem())?,
        sa_private: write("sa.key", &sa_key.serialize_pem())?,
        sa_public: write("sa.pub", &sa_key.public_key_pem())?,
        tokens: write(
            "tokens.csv",
            &format!("{token},admin,admin,\"system:masters\"\n"),
        )?,
        token,
    })
}

/// POSTs `body` to etcd's HTTP gateway on 127.0.0.1:`port` and returns the
/// JSON answer.
async fn etcd_post(port: u16, path: &str, body: &serde_json::Value) -> Result<serde_json::Value> {
    use http_body_util::{BodyExt, Full};
    let failed = |message: String| Error::ControlPlane {
        component: "etcd",
        message,
    };
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| failed(format!("cannot connect: {e}")))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| failed(format!("handshake: {e}")))?;
    tokio::spawn(connection);
    let request = http::Request::post(path)
        .header(http::header::HOST, format!("127.0.0.1:{port}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(hyper::body::Bytes::from(body.to_string())))
        .map_err(|e| failed(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| failed(format!("POST {path}: {e}")))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| failed(format!("POST {path}: {e}")))?
        .to_bytes();
    if !status.is_success() {
        return Err(failed(format!(
            "POST {path}: {status}: {}",
            String::from_utf8_lossy(&bytes)
        )));
    }
    serde_json::from_slice(&bytes).map_err(|e| failed(format!("POST {path}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_taken_port_makes_a_start_try_again() {
        let failed = |message: &str| Error::ControlPlane {
            component: "etcd",
            message: message.to_owned(),
        };
        assert!(port_taken(&failed(
            "exited with exit status: 1; log ends with:\n... C | etcdmain: listen tcp 127.0.0.1:40149: bind: address already in use"
        )));
        assert!(!port_taken(&failed(
            "exited with exit status: 1; log ends with:\nno space left on device"
        )));
        assert!(!port_taken(&Error::Listen {
            address: "127.0.0.1:0".to_owned(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        }));
    }
}

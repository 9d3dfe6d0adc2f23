//! [`FakeApiServer`]: the in-process API server's public handle. It owns the
//! listening socket and every connection, which is what lets a test cut them
//! all (restart) and come back on the same port with the same data.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::json;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::error::{Error, Result};
use super::faults::{Fault, FaultRule, Faults};
use super::handlers::{self, WriteContext};
use super::kubeconfig::{self, KubeconfigSpec};
use super::registry::Registry;
use super::request_log::{RecordedRequest, RequestLog};
use super::router;
use crate::etcd::Etcd;
use crate::query::Query;
use crate::state::{App, Options};
use crate::target::Target;

/// Namespaces a fresh cluster has.
const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Settings for a [`FakeApiServer`]; start with [`FakeApiServer::builder`].
#[derive(Debug, Clone)]
pub struct FakeApiServerBuilder {
    history_window: u64,
    bookmark_interval: Duration,
    crds: Vec<CustomResourceDefinition>,
}

impl Default for FakeApiServerBuilder {
    fn default() -> Self {
        Self {
            history_window: 1_000,
            bookmark_interval: Duration::from_secs(1),
            crds: Vec::new(),
        }
    }
}

impl FakeApiServerBuilder {
    /// How many revisions back watches and exact lists can start (default
    /// 1000). Older ones get `410 Gone`, as after etcd's compaction.
    #[must_use]
    pub fn history_window(mut self, revisions: u64) -> Self {
        self.history_window = revisions;
        self
    }

    /// How often watches that allow bookmarks get a BOOKMARK event (default
    /// one second; kube-apiserver sends one about every minute).
    #[must_use]
    pub fn bookmark_interval(mut self, interval: Duration) -> Self {
        self.bookmark_interval = interval;
        self
    }

    /// CRDs the server serves from the start (see
    /// [`FakeApiServer::apply_crd`]), such as the ones an operator under test
    /// needs installed.
    #[must_use]
    pub fn crds(mut self, crds: impl IntoIterator<Item = CustomResourceDefinition>) -> Self {
        self.crds.extend(crds);
        self
    }

    /// Binds a random port on 127.0.0.1 and starts serving.
    pub async fn start(self) -> Result<FakeApiServer> {
        let listener = bind("127.0.0.1:0".parse().map_err(|_| Error::Listen {
            address: "127.0.0.1:0".to_owned(),
            source: std::io::Error::other("invalid address"),
        })?)?;
        let address = listener.local_addr().map_err(|source| Error::Listen {
            address: "127.0.0.1:0".to_owned(),
            source,
        })?;
        let app = Arc::new(App {
            etcd: Etcd::new(self.history_window),
            registry: Registry::new(),
            faults: Faults::new(),
            log: RequestLog::default(),
            options: Options {
                bookmark_interval: self.bookmark_interval,
                server_address: address.to_string(),
            },
        });
        bootstrap(&app)?;
        let directory = tempfile::Builder::new()
            .prefix("store-kube-fake-")
            .tempdir()
            .map_err(|source| Error::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        let kubeconfig_path = directory.path().join("kubeconfig");
        let url = format!("http://{address}");
        kubeconfig::write(
            &kubeconfig_path,
            &KubeconfigSpec {
                name: "store-kube-fake",
                server: &url,
                certificate_authority: None,
                token: "store-kube-fake",
            },
        )?;
        let serving = serve(Arc::clone(&app), listener);
        let server = FakeApiServer {
            app,
            address,
            serving: Mutex::new(Some(serving)),
            kubeconfig_path,
            _directory: directory,
        };
        for crd in &self.crds {
            server.apply_crd(crd)?;
        }
        Ok(server)
    }
}

/// An in-process Kubernetes API server for tests: custom resources from
/// CRDs, namespaces, discovery, watches with bookmarks and a history window,
/// the real server's limits and answers, scripted faults and a request log.
///
/// Dropping it stops the server and cuts every connection.
pub struct FakeApiServer {
    app: Arc<App>,
    address: SocketAddr,
    serving: Mutex<Option<Serving>>,
    kubeconfig_path: PathBuf,
    _directory: tempfile::TempDir,
}

impl std::fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApiServer")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// The accept loop of one serving period (between start and stop).
struct Serving {
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl FakeApiServer {
    /// Starts a server with default settings.
    pub async fn start() -> Result<Self> {
        FakeApiServerBuilder::default().start().await
    }

    /// Settings for a server: history window, bookmark interval.
    pub fn builder() -> FakeApiServerBuilder {
        FakeApiServerBuilder::default()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The address the server listens on (kept across restarts).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// A client configuration for this server, default namespace `default`;
    /// adjust timeouts on it before building a client.
    pub fn config(&self) -> kube::Config {
        let uri = http::Uri::builder()
            .scheme("http")
            .authority(self.address.to_string())
            .path_and_query("/")
            .build()
            .unwrap_or_default();
        let mut config = kube::Config::new(uri);
        config.default_namespace = "default".to_owned();
        config
    }

    /// A new client for this server (each call builds its own connection pool).
    pub fn client(&self) -> Result<kube::Client> {
        kube::Client::try_from(self.config()).map_err(Error::Client)
    }

    /// [`config`](Self::config) for the client named `name`: its requests
    /// carry the name (in the `x-fake-api-client` header), so faults,
    /// latency and watch delays can be aimed at it alone
    /// ([`FaultRule::client`], [`set_client_latency`](Self::set_client_latency),
    /// [`set_client_watch_delay`](Self::set_client_watch_delay)), as at one
    /// replica of an operator, and the [request log](Self::requests) names it.
    pub fn config_as(&self, name: &str) -> Result<kube::Config> {
        let value = http::HeaderValue::from_str(name).map_err(|_| Error::ClientName {
            name: name.to_owned(),
        })?;
        let mut config = self.config();
        config
            .headers
            .push((http::HeaderName::from_static(router::CLIENT_HEADER), value));
        Ok(config)
    }

    /// A new client named `name` (see [`config_as`](Self::config_as)).
    pub fn client_as(&self, name: &str) -> Result<kube::Client> {
        kube::Client::try_from(self.config_as(name)?).map_err(Error::Client)
    }

    /// A kubeconfig file pointing at this server, for `kubectl --kubeconfig`.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// Creates or updates a CRD and serves its resource at once (no HTTP,
    /// not logged, not subject to faults).
    pub fn apply_crd(&self, crd: &CustomResourceDefinition) -> Result<()> {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let value = serde_json::to_value(crd).map_err(|source| Error::Serialize {
            what: format!("CustomResourceDefinition {name}"),
            source,
        })?;
        handlers::apply_crd(&self.app, &value).map_err(|error| Error::Refused {
            what: format!("CustomResourceDefinition {name}"),
            code: error.code,
            message: error.message,
        })
    }

    /// The current revision: the resourceVersion the next write exceeds.
    pub fn resource_version(&self) -> u64 {
        self.app.etcd.revision()
    }

    /// Adds a fault rule; rules are consulted in the order added.
    pub fn inject(&self, rule: FaultRule) {
        self.app.faults.add(rule);
    }

    /// Fails the next `count` requests, whatever they are, with `fault`.
    pub fn fail_next(&self, count: usize, fault: Fault) {
        self.inject(FaultRule::new(fault).times(count));
    }

    /// Removes every fault rule, latency and watch delay, and resumes if paused.
    pub fn clear_faults(&self) {
        self.app.faults.clear();
    }

    /// Delays every request by `latency` (zero turns it off). Watch events
    /// are not requests: see [`set_watch_delay`](Self::set_watch_delay).
    pub fn set_latency(&self, latency: Duration) {
        self.app.faults.set_latency(None, latency);
    }

    /// Delays the requests of the client named `name`
    /// ([`client_as`](Self::client_as)) by `latency` more than the others
    /// (zero turns it off).
    pub fn set_client_latency(&self, name: &str, latency: Duration) {
        self.app.faults.set_latency(Some(name), latency);
    }

    /// Sends every watch event `delay` after the change it reports (zero
    /// turns it off): the watchers' views lag, in order, as behind a slow
    /// watch cache. Applies to events produced from now on.
    pub fn set_watch_delay(&self, delay: Duration) {
        self.app.faults.set_watch_delay(None, delay);
    }

    /// Delays the watch events of the client named `name` by `delay` more
    /// than the others': one replica's view lags while the others keep up.
    pub fn set_client_watch_delay(&self, name: &str, delay: Duration) {
        self.app.faults.set_watch_delay(Some(name), delay);
    }

    /// Holds every request (new and arriving) until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.app.faults.pause();
    }

    /// How many requests are waiting for [`resume`](Self::resume).
    pub fn paused_requests(&self) -> usize {
        self.app.faults.held()
    }

    /// Lets held requests proceed.
    pub fn resume(&self) {
        self.app.faults.resume();
    }

    /// Ends every open watch stream cleanly, as an API server does when its
    /// watch cache resets; clients see the stream end and re-watch.
    pub fn drop_watches(&self) {
        self.app.etcd.drop_watchers();
    }

    /// How many watch streams are open.
    pub fn open_watches(&self) -> usize {
        self.app.etcd.open_watchers()
    }

    /// Stops listening and cuts every connection; the data is kept. Clients
    /// get connection errors until [`start_again`](Self::start_again).
    pub async fn stop(&self) {
        let serving = lock(&self.serving).take();
        if let Some(serving) = serving {
            serving.shutdown.send_replace(true);
            // The accept loop closes every connection before it returns.
            let _ = serving.task.await;
        }
    }

    /// Serves again on the same port, with the same objects and versions.
    pub async fn start_again(&self) -> Result<()> {
        if lock(&self.serving).is_some() {
            return Ok(());
        }
        let listener = bind(self.address)?;
        let serving = serve(Arc::clone(&self.app), listener);
        *lock(&self.serving) = Some(serving);
        Ok(())
    }

    /// [`stop`](Self::stop) then [`start_again`](Self::start_again): open
    /// connections and watches are cut, then the same data is served again.
    pub async fn restart(&self) -> Result<()> {
        self.stop().await;
        self.start_again().await
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.app.log.snapshot()
    }

    /// Forgets the requests logged so far.
    pub fn clear_requests(&self) {
        self.app.log.clear();
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(serving) = lock(&self.serving).take() {
            serving.shutdown.send_replace(true);
            // Aborting drops the connection set, which aborts every connection.
            serving.task.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Listens with SO_REUSEADDR so a restart can rebind the port its own
/// closed connections still hold in TIME_WAIT.
fn bind(address: SocketAddr) -> Result<TcpListener> {
    let error = |source| Error::Listen {
        address: address.to_string(),
        source,
    };
    let socket = TcpSocket::new_v4().map_err(error)?;
    socket.set_reuseaddr(true).map_err(error)?;
    socket.bind(address).map_err(error)?;
    socket.listen(1024).map_err(error)
}

fn serve(app: Arc<App>, listener: TcpListener) -> Serving {
    let (shutdown, mut signal) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = signal.changed() => break,
                accepted = listener.accept() => {
                    // A failed accept (e.g. the client already left) ends only that connection.
                    let Ok((stream, _)) = accepted else { continue };
                    // As kube-apiserver's (Go's) connections: no Nagle delay, which
                    // beside a client's delayed ACK stalls a small answer 40 ms.
                    let _ = stream.set_nodelay(true);
                    let app = Arc::clone(&app);
                    connections.spawn(async move {
                        let service = service_fn(move |request| {
                            let app = Arc::clone(&app);
                            async move { Ok::<_, Infallible>(router::handle(app, request).await) }
                        });
                        // Connection errors (resets, malformed HTTP) end only this connection.
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(listener);
        connections.shutdown().await;
    });
    Serving { shutdown, task }
}

/// The namespaces every cluster starts with.
fn bootstrap(app: &App) -> Result<()> {
    let info = app
        .registry
        .lookup("", "v1", "namespaces")
        .ok_or_else(|| Error::Refused {
            what: "the namespaces resource".to_owned(),
            code: 500,
            message: "not registered".to_owned(),
        })?;
    let target = Target {
        info,
        version: "v1".to_owned(),
        namespace: None,
        name: None,
        subresource: None,
    };
    let query = Query {
        field_manager: Some("kube-apiserver".to_owned()),
        ..Query::default()
    };
    let ctx = WriteContext {
        query: &query,
        user_agent: None,
    };
    for name in SYSTEM_NAMESPACES {
        let body = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name } });
        handlers::create(app, &target, body.to_string().as_bytes(), &ctx).map_err(|error| {
            Error::Refused {
                what: format!("namespace {name}"),
                code: error.code,
                message: error.message,
            }
        })?;
    }
    Ok(())
}

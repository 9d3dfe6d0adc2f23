//! The admission webhook server: HTTPS (rustls) on hyper, serving `/validate`,
//! `/mutate`, `/healthz`, `/readyz` and `/metrics`.
//!
//! Admission answers come from the store's local view alone. Until the store
//! is ready (its initial sync and on-ready hooks done, as [`Store::ready`]
//! reports) `/readyz`, `/validate` and `/mutate` answer `503 Service
//! Unavailable`: the API server then applies the webhook's `failurePolicy`
//! (`Fail` rejects the request, `Ignore` admits it unchecked), so an empty view
//! is never passed off as the current one.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Instant;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;

/// The largest review body read; kube-apiserver's own request limit is 3 MiB.
const MAX_BODY: usize = 3 * 1024 * 1024;

/// Admission requests by endpoint and outcome (`allowed`, `denied`, `error`).
pub(crate) const REQUESTS_METRIC: &str = "operator_admission_requests_total";

/// How long answering one admission request took, in seconds, by endpoint.
pub(crate) const DURATION_METRIC: &str = "operator_admission_duration_seconds";

/// Histogram buckets for [`DURATION_METRIC`]: 50 µs to 1 s.
const DURATION_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 0.25, 1.0,
];

/// The serving certificate, its key, and the CA that signed it (the
/// webhook configurations' `caBundle`).
#[derive(Clone)]
pub(crate) struct Certificates {
    pub(crate) ca_pem: String,
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

impl Certificates {
    /// A fresh CA and a serving certificate for `names` (DNS names or IP
    /// addresses), signed by it.
    pub(crate) fn generate(names: &[String]) -> Result<Self> {
        let failed = |e: rcgen::Error| Error::backend("certificates", e);
        let ca_key = KeyPair::generate().map_err(failed)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{NAME} webhook CA"));
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(failed)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let key = KeyPair::generate().map_err(failed)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        for name in names {
            let san = match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(name.clone().try_into().map_err(failed)?),
            };
            params.subject_alt_names.push(san);
        }
        params.distinguished_name.push(DnType::CommonName, NAME);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &issuer).map_err(failed)?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Reads PEM files: the serving certificate (chain), its key, and the CA
    /// (`ca.crt`, as cert-manager and `operator --certificates` write it).
    pub(crate) fn read(cert: &Path, key: &Path, ca: &Path) -> Result<Self> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|e| {
                Error::backend(
                    "certificates",
                    format!("cannot read {}: {e}", path.display()),
                )
            })
        };
        Ok(Self {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
            ca_pem: read(ca)?,
        })
    }

    /// Writes `ca.crt`, `tls.crt` and `tls.key` into `dir`, the names of a
    /// `kubernetes.io/tls` Secret's keys.
    pub(crate) fn write(&self, dir: &Path) -> Result<(), BoxError> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("ca.crt"), &self.ca_pem)?;
        std::fs::write(dir.join("tls.crt"), &self.cert_pem)?;
        std::fs::write(dir.join("tls.key"), &self.key_pem)?;
        Ok(())
    }

    /// The server side: this certificate and key, HTTP/1.1.
    pub(crate) fn server_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        let failed = |what: &str, e: String| Error::backend("certificates", format!("{what}: {e}"));
        let chain = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| failed("the serving certificate", e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| failed("the serving key", e.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| failed("TLS versions", e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| failed("the serving certificate", e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// A client that trusts this CA alone, as kube-apiserver does with the
    /// `caBundle`.
    pub(crate) fn client_config(&self) -> Result<Arc<rustls::ClientConfig>> {
        let failed = |e: String| Error::backend("certificates", e);
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots
                .add(cert.map_err(|e| failed(e.to_string()))?)
                .map_err(|e| failed(e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| failed(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

/// The Prometheus recorder behind the `metrics` facade, installed once per
/// process; `None` if another recorder was installed first.
pub(crate) fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(DURATION_METRIC.to_owned()),
                    &DURATION_BUCKETS,
                )
                .ok()?
                .install_recorder()
                .ok()
        })
        .clone()
}

/// Which admission endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Validate,
    Mutate,
}

impl Endpoint {
    pub(crate) fn path(self) -> &'static str {
        match self {
            Self::Validate => "/validate",
            Self::Mutate => "/mutate",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Validate => "validate",
            Self::Mutate => "mutate",
        }
    }
}

/// One replica's webhook: its name (in the mutation's annotation) and its
/// store, once ready. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Webhook {
    replica: Arc<str>,
    store: watch::Sender<Option<Store>>,
    metrics: Option<PrometheusHandle>,
}

impl Webhook {
    /// A webhook that answers `503` until [`serve_when_ready`](Self::serve_when_ready)'s
    /// store is ready.
    pub(crate) fn new(replica: &str) -> Self {
        Self {
            replica: replica.into(),
            store: watch::Sender::new(None),
            metrics: prometheus(),
        }
    }

    /// Starts answering from `store` once it is ready; returns the task that
    /// waits for that (it ends when the store is ready or failed to start).
    pub(crate) fn serve_when_ready(&self, store: Store) -> JoinHandle<Result<()>> {
        let ready = self.store.clone();
        let replica = Arc::clone(&self.replica);
        tokio::spawn(async move {
            // No deadline of the handle's own: a replica stays unready for as
            // long as its store takes, and says so on /readyz.
            match store
                .with_timeout(Duration::from_secs(365 * 24 * 3600))
                .ready()
                .await
            {
                Ok(()) => {
                    tracing::info!(%replica, "store ready; serving admission");
                    ready.send_replace(Some(store));
                    Ok(())
                }
                Err(e) => {
                    tracing::error!(%replica, error = %e, "store failed to start; not ready");
                    Err(e)
                }
            }
        })
    }

    /// Stops answering admission (back to `503`), as while shutting down.
    pub(crate) fn not_ready(&self) {
        self.store.send_replace(None);
    }

    /// The store the webhook answers from, once ready.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<Store>> {
        self.store.subscribe()
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.store.borrow().is_some()
    }

    /// Serves HTTPS on `listener` until the returned task is aborted; aborting
    /// it also closes every open connection.
    pub(crate) fn serve(
        &self,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
    ) -> JoinHandle<()> {
        let webhook = self.clone();
        tokio::spawn(async move {
            let acceptor = TlsAcceptor::from(tls);
            let mut connections = JoinSet::new();
            loop {
                let (tcp, peer) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            continue;
                        }
                    },
                    // Reap finished connections so the set stays small.
                    Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                };
                let acceptor = acceptor.clone();
                let webhook = webhook.clone();
                connections.spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    let tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                    };
                    let service = hyper::service::service_fn(move |request| {
                        let webhook = webhook.clone();
                        async move { Ok::<_, Infallible>(webhook.handle(request).await) }
                    });
                    if let Err(e) = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await
                    {
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                });
            }
        })
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let endpoint = match (request.method(), request.uri().path()) {
            (&Method::GET, "/healthz") => return text(StatusCode::OK, "ok"),
            (&Method::GET, "/readyz") if self.is_ready() => return text(StatusCode::OK, "ready"),
            (&Method::GET, "/readyz") => {
                return text(StatusCode::SERVICE_UNAVAILABLE, "the store is not ready");
            }
            (&Method::GET, "/metrics") => return self.render_metrics(),
            (&Method::POST, "/validate") => Endpoint::Validate,
            (&Method::POST, "/mutate") => Endpoint::Mutate,
            (_, "/validate" | "/mutate") => {
                return text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "admission reviews are POSTed",
                );
            }
            _ => return text(StatusCode::NOT_FOUND, "not found"),
        };
        let started = Instant::now();
        let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => {
                let response = status(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("reading the review: {e}"),
                );
                self.record(endpoint, "error", started);
                return response;
            }
        };
        let (response, outcome) = self.admit(endpoint, &body);
        self.record(endpoint, outcome, started);
        response
    }

    /// Answers one review body; the outcome is `allowed`, `denied` or `error`.
    pub(crate) fn admit(
        &self,
        endpoint: Endpoint,
        body: &[u8],
    ) -> (Response<Full<Bytes>>, &'static str) {
        let Some(store) = self.store.borrow().clone() else {
            let message = format!(
                "{}: the store is not ready; no admission is answered from an incomplete view",
                self.replica
            );
            return (status(StatusCode::SERVICE_UNAVAILABLE, &message), "error");
        };
        let incoming: AdmissionReview<Pod> = match serde_json::from_slice(body) {
            Ok(incoming) => incoming,
            Err(e) => {
                let message = format!("not an AdmissionReview for a Pod: {e}");
                return (status(StatusCode::BAD_REQUEST, &message), "error");
            }
        };
        let answer = match endpoint {
            Endpoint::Validate => review(&store, incoming),
            Endpoint::Mutate => mutate(&store, &self.replica, incoming),
        };
        let outcome = match &answer.response {
            Some(response) if response.allowed => "allowed",
            _ => "denied",
        };
        match serde_json::to_vec(&answer) {
            Ok(json) => (json_response(StatusCode::OK, json), outcome),
            Err(e) => {
                let message = format!("encoding the answer: {e}");
                (status(StatusCode::INTERNAL_SERVER_ERROR, &message), "error")
            }
        }
    }

    fn record(&self, endpoint: Endpoint, outcome: &'static str, started: Instant) {
        metrics::counter!(REQUESTS_METRIC, "endpoint" => endpoint.label(), "outcome" => outcome)
            .increment(1);
        metrics::histogram!(DURATION_METRIC, "endpoint" => endpoint.label())
            .record(started.elapsed().as_secs_f64());
    }

    fn render_metrics(&self) -> Response<Full<Bytes>> {
        let Some(handle) = &self.metrics else {
            return text(
                StatusCode::NOT_FOUND,
                "metrics are not recorded in this process",
            );
        };
        handle.run_upkeep();
        let mut response = Response::new(Full::new(Bytes::from(handle.render())));
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        response
    }
}

fn text(code: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = code;
    response
}

fn json_response(code: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = code;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// An error as a Kubernetes `Status`, which kube-apiserver quotes when it
/// reports a failed webhook call.
fn status(code: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = json!({
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "message": message,
        "code": code.as_u16(),
    });
    json_response(code, body.to_string().into_bytes())
}

/// One replica's HTTPS listener: where it listens and the certificates it serves.
pub(crate) struct Listener {
    pub(crate) address: SocketAddr,
    pub(crate) certificates: Certificates,
}

impl Listener {
    /// Binds `address` (port 0 for any) on loopback, serving `certificates`
    /// or fresh ones for 127.0.0.1.
    pub(crate) async fn loopback(
        address: SocketAddr,
        certificates: Option<Certificates>,
    ) -> Result<(TcpListener, Self)> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|e| Error::backend("webhook", format!("cannot listen on {address}: {e}")))?;
        let address = listener
            .local_addr()
            .map_err(|e| Error::backend("webhook", e))?;
        let certificates = match certificates {
            Some(certificates) => certificates,
            None => Certificates::generate(&["127.0.0.1".to_owned(), "localhost".to_owned()])?,
        };
        Ok((
            listener,
            Self {
                address,
                certificates,
            },
        ))
    }

    /// The base URL kube-apiserver calls (`url` client config).
    pub(crate) fn url(&self) -> String {
        format!("https://{}", self.address)
    }
}

/// An HTTPS client for one webhook server, trusting its CA: the demonstration
/// and the benchmark post reviews with it as kube-apiserver would.
#[derive(Clone)]
pub(crate) struct WebhookClient {
    address: SocketAddr,
    connector: TlsConnector,
}

/// One kept-alive connection of a [`WebhookClient`].
pub(crate) struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    task: JoinHandle<()>,
}

impl WebhookClient {
    pub(crate) fn new(address: SocketAddr, certificates: &Certificates) -> Result<Self> {
        Ok(Self {
            address,
            connector: TlsConnector::from(certificates.client_config()?),
        })
    }

    pub(crate) async fn connect(&self) -> Result<Connection> {
        let failed = |e: String| Error::backend("webhook client", e);
        let tcp = TcpStream::connect(self.address)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::from(self.address.ip());
        let tls = self
            .connector
            .connect(name, tcp)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| failed(e.to_string()))?;
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Connection { sender, task })
    }

    /// One request on a fresh connection.
    pub(crate) async fn request(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes)> {
        self.connect().await?.request(method, path, body).await
    }
}

impl Connection {
    pub(crate) async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes)> {
        let failed = |e: String| Error::backend("webhook client", e);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "127.0.0.1")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| failed(e.to_string()))?;
        self.sender
            .ready()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let code = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| failed(e.to_string()))?
            .to_bytes();
        Ok((code, body))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a webhook answered a review: allowed, and why (the denial's message,
/// or the validating webhook's audit reason), and the mutation's annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) allowed: bool,
    pub(crate) reason: String,
    pub(crate) admitted_by: Option<String>,
}

/// Reads a `200` review answer.
pub(crate) fn read_answer(body: &[u8]) -> Result<Answer> {
    let failed = |e: String| Error::backend("admission answer", e);
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|e| failed(e.to_string()))?;
    let response = review
        .response
        .ok_or_else(|| failed("the review has no response".to_owned()))?;
    let admitted_by = match &response.patch {
        Some(patch) => {
            let operations: Vec<Value> =
                serde_json::from_slice(patch).map_err(|e| failed(e.to_string()))?;
            operations.iter().find_map(|operation| {
                match operation["path"].as_str()? {
                    "/metadata/annotations" => operation["value"][ADMITTED_BY_ANNOTATION].as_str(),
                    path if path == annotation_path() => operation["value"].as_str(),
                    _ => None,
                }
                .map(str::to_owned)
            })
        }
        None => None,
    };
    let reason = if response.allowed {
        response
            .audit_annotations
            .get(REASON_ANNOTATION)
            .cloned()
            .unwrap_or_default()
    } else {
        response.result.message
    };
    Ok(Answer {
        allowed: response.allowed,
        reason,
        admitted_by,
    })
}

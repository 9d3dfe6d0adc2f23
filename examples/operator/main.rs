//! A namespace-exemption operator: a kube-rs controller and admission
//! webhooks in one binary, sharing state through the store.
//!
//! - The **controller** (`kube::runtime::Controller` over Namespaces) records
//!   which namespaces carry the label `typedstore.dev/exempt=true` in one
//!   typed value, [`ExemptNamespaces`] (namespace name to the uid of the
//!   namespace object it exempted).
//! - The **webhook server** ([`Webhook`]) answers kube-apiserver's
//!   `AdmissionReview`s over HTTPS from the store's local view alone: no API
//!   call on the admission path. `/validate` ([`review`]) denies Pods whose
//!   images carry a denied tag (`latest` by default; an image without a tag
//!   counts as `latest`, one pinned by digest is always fine) unless their
//!   namespace is exempt. The denied tags are a second typed value,
//!   [`Policy`], seeded once by whichever replica starts first. `/mutate`
//!   ([`mutate`]) annotates each Pod with `typedstore.dev/admitted-by:
//!   <replica>@policy-v<version>`, the view that decided. `/healthz`,
//!   `/readyz` and `/metrics` (Prometheus text) sit beside them.
//! - **Readiness comes from the store.** Until [`Store::ready`] resolves
//!   (initial sync and on-ready hooks), `/readyz`, `/validate` and `/mutate`
//!   answer `503`, so kube-apiserver applies the webhooks' `failurePolicy`:
//!   `Fail` (the default) rejects the Pod, `Ignore` admits it unchecked and
//!   unannotated. An empty or half-synced view never answers.
//!
//! ```sh
//! cargo run -p store-examples --example operator                       # two replicas on the in-process fake API server, asked over HTTPS
//! cargo run -p store-examples --example operator -- --replicas 3       # more (up to 16)
//! cargo run -p store-examples --example operator -- --real             # the same on etcd + kube-apiserver (`cargo xtask envtest`), Pods created through it
//! cargo run -p store-examples --example operator -- --kube             # one replica on the current cluster, until Ctrl-C or SIGTERM
//! cargo run -p store-examples --example operator -- --manifests <dir> # its RBAC, Deployment, Service and webhooks (what `cargo xtask manifests` writes to deploy/operator)
//! cargo run -p store-examples --example operator -- --certificates <dir>  # a CA and serving certificate for the Service
//! cargo run -p store-examples --release --example operator -- --bench-admission  # admission latency and throughput on etcd + kube-apiserver
//! ```
//!
//! `--kube` takes `--listen ADDR` (default `0.0.0.0:8443`) and `--tls-dir
//! DIR` (`tls.crt`, `tls.key`, `ca.crt`; without it a certificate is
//! generated at start, which kube-apiserver trusts only if the webhook
//! configurations carry its CA). `--manifests` takes `--tls-dir DIR` (its
//! `ca.crt` becomes the `caBundle`) and `--failure-policy Fail|Ignore`.
//!
//! # How replicas cooperate
//!
//! There is no leader election: every replica runs the controller and serves
//! admission. Reconciling is idempotent (a replica writes only when its local
//! view differs from what the namespace asks for) and every write is a
//! compare-and-set [`Store::update`] of the one value, so two replicas
//! recording different namespaces at once never lose each other's entry. A
//! replica whose watch lags may briefly write an older state; its own
//! reconcile of the newer state follows and restores it, so the replicas
//! converge on what the cluster says. Every replica's admission handler reads
//! the same value from its local view, so they answer alike once the views
//! agree (usually within milliseconds of the write).
//!
//! A namespace being deleted is reconciled while it terminates and dropped
//! from the value; a periodic sweep (one fresh LIST) drops the entries of
//! namespaces that vanished while no replica was watching. It removes an entry
//! only if the recorded uid is gone, so a namespace deleted and created again
//! under the same name keeps its new entry.
//!
//! One value keeps the example short and puts the compare-and-set in plain
//! sight; with thousands of exempt namespaces, a key family
//! (`#[store(key = "exempt/{namespace}")]`, one key each) spreads them over
//! the store's shards and replicas no longer contend on one key.
//!
//! # On a cluster
//!
//! ```sh
//! kubectl apply -f deploy/storeshards.crd.json   # the store's CRD
//! kubectl apply -f deploy/operator/              # namespace, RBAC, Deployment (two replicas, `--kube`), Service, webhooks
//! ```
//!
//! The Deployment runs the image `typed-store-operator:0.1.0`, whose entry
//! point is this example built in release mode
//! (`target/release/examples/operator`); build and load it into your cluster
//! as you build images. The store lives in the pod's namespace. The replicas
//! serve the webhooks with the `kubernetes.io/tls` Secret
//! `typed-store-operator-tls`; the checked-in webhook configurations ask
//! cert-manager's CA injector for their `caBundle` (from a Certificate named
//! `typed-store-operator`). Without cert-manager:
//!
//! ```sh
//! cargo run -p store-examples --example operator -- --certificates certs/
//! kubectl apply -f deploy/operator/00-namespace.json
//! kubectl -n typed-store-operator create secret generic typed-store-operator-tls --from-file=certs/
//! cargo run -p store-examples --example operator -- --manifests deploy/operator --tls-dir certs/
//! ```
//!
//! The webhooks skip the operator's own namespace and `kube-system`, so the
//! replicas can start while none is ready.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use store_core::{BoxError, Error, Precondition, Result, Store, StoreBuilder, StoreValue};
use store_kube::KubeBackend;
use store_kube_testing::{ControlPlane, TestCluster};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The store's name: its objects are `operator-0`, ... in the store's namespace.
pub(crate) const STORE: &str = "operator";

/// The label that exempts a namespace.
pub(crate) const EXEMPT_LABEL: &str = "typedstore.dev/exempt";

/// The audit annotation an admitted Pod's response carries, saying why.
const REASON_ANNOTATION: &str = "typedstore.dev/reason";

/// The annotation the mutating webhook adds to every Pod it admits:
/// `<replica>@policy-v<version>`, the replica whose view decided.
pub(crate) const ADMITTED_BY_ANNOTATION: &str = "typedstore.dev/admitted-by";

/// The label that routes a namespace's Pods to one replica's webhooks in the
/// demonstration and the tests (on a cluster, a Service balances instead).
pub(crate) const WEBHOOK_LABEL: &str = "typedstore.dev/webhook";

/// The port the webhook server listens on in a pod.
const WEBHOOK_PORT: u16 = 8443;

/// How long a wait may take: generous, since the real-tier test runs beside
/// the others on a busy 2-core machine; waits end as soon as their condition
/// holds.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

/// Every namespace is reconciled again this often, which repairs the value if
/// someone edits or deletes the store's objects by hand.
const RESYNC: Duration = Duration::from_secs(300);

/// How often a replica on a cluster looks for entries of vanished namespaces.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The same in the demonstration, so a deletion shows up within a second.
const DEMO_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The namespace (and the name of every object) `deploy/operator` installs.
pub(crate) const NAME: &str = "typed-store-operator";

/// The image the Deployment runs.
const IMAGE: &str = "typed-store-operator:0.1.0";

/// The verbs the kube backend uses on its `StoreShard`s, as in
/// `deploy/rbac.json`: `get` and `create` to ensure its objects exist,
/// `list` and `watch` for the local view, `patch` for writes.
const STORE_VERBS: [&str; 5] = ["get", "list", "watch", "create", "patch"];

pub(crate) mod admission;
pub(crate) mod bench;
pub(crate) mod cli;
pub(crate) mod cluster;
pub(crate) mod demo;
pub(crate) mod manifests;
pub(crate) mod reconciler;
pub(crate) mod state;
pub(crate) mod webhook;
pub(crate) mod webhook_config;

use admission::*;
use bench::*;
use cli::*;
use cluster::*;
use demo::*;
use manifests::*;
use reconciler::*;
use state::*;
use webhook::*;
use webhook_config::*;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("operator: {message}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let default_level = if matches!(args.mode, Mode::Kube) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("operator failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_without_a_tag_count_as_latest_and_digests_always_pass() {
        let policy = Policy::default();
        assert_eq!(policy.denied_tag("nginx"), Some("latest"));
        assert_eq!(policy.denied_tag("nginx:latest"), Some("latest"));
        assert_eq!(policy.denied_tag("localhost:5000/team/app"), Some("latest"));
        assert_eq!(policy.denied_tag("localhost:5000/team/app:1.4"), None);
        assert_eq!(policy.denied_tag("nginx:latest@sha256:0123"), None);
    }

    /// The handler only reads the store, so the memory backend stands in for
    /// the cluster.
    #[tokio::test]
    async fn pods_in_exempt_namespaces_are_admitted_whatever_their_images() -> Result<(), BoxError>
    {
        let store = Store::memory().await?;
        let exempt = ExemptNamespaces {
            namespaces: BTreeMap::from([("tools".to_owned(), "uid-1".to_owned())]),
        };
        store.set(ExemptNamespaces::key(), &exempt)?;
        let (allowed, reason) = ask(&store, pod_review("1", "web", "tools", "nginx"))?;
        assert!(allowed);
        assert_eq!(reason, "exempt");
        let (allowed, reason) = ask(&store, pod_review("2", "web", "apps", "nginx"))?;
        assert!(!allowed);
        assert_eq!(
            reason,
            "container web: image nginx has the denied tag latest"
        );
        let (allowed, _) = ask(&store, pod_review("3", "web", "apps", "nginx:1.27"))?;
        assert!(allowed);
        Ok(())
    }

    #[tokio::test]
    async fn a_malformed_review_is_answered_not_a_panic() -> Result<(), BoxError> {
        let store = Store::memory().await?;
        let mut body = pod_review("1", "web", "apps", "nginx");
        body["request"] = Value::Null;
        let request = serde_json::from_value(body)?;
        let answer = review(&store, request).response.ok_or("no response")?;
        assert!(!answer.allowed);
        Ok(())
    }

    /// The server on loopback, a client trusting its generated CA, and the
    /// memory backend standing in for the cluster.
    #[tokio::test]
    async fn the_webhook_answers_over_https_only_once_its_store_is_ready() -> Result<(), BoxError> {
        use hyper::{Method, StatusCode};
        let (tcp, listener) =
            Listener::loopback(SocketAddr::from(([127, 0, 0, 1], 0)), None).await?;
        let webhook = Webhook::new("replica-t");
        let server = webhook.serve(tcp, listener.certificates.server_config()?);
        let client = WebhookClient::new(listener.address, &listener.certificates)?;
        let review = |image: &str| {
            pod_review("1", "web", "apps", image)
                .to_string()
                .into_bytes()
        };

        assert_eq!(
            client.request(Method::GET, "/healthz", vec![]).await?.0,
            StatusCode::OK
        );
        let (code, _) = client.request(Method::GET, "/readyz", vec![]).await?;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        for endpoint in [Endpoint::Validate, Endpoint::Mutate] {
            let (code, body) = client
                .request(Method::POST, endpoint.path(), review("nginx"))
                .await?;
            assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
            assert!(String::from_utf8_lossy(&body).contains("replica-t: the store is not ready"));
        }

        let store = Store::memory().await?;
        webhook.serve_when_ready(store.clone()).await??;
        assert_eq!(
            client.request(Method::GET, "/readyz", vec![]).await?.0,
            StatusCode::OK
        );
        let (code, body) = client
            .request(Method::POST, "/validate", review("nginx"))
            .await?;
        assert_eq!(code, StatusCode::OK);
        let answer = read_answer(&body)?;
        assert!(!answer.allowed);
        assert_eq!(
            answer.reason,
            "container web: image nginx has the denied tag latest"
        );
        let (_, body) = client
            .request(Method::POST, "/mutate", review("nginx:1.27"))
            .await?;
        let answer = read_answer(&body)?;
        assert!(answer.allowed);
        assert_eq!(
            answer.admitted_by.as_deref(),
            Some("replica-t@policy-default")
        );
        store
            .set_and_wait(Policy::key(), &Policy::default())
            .await?;
        let version = store
            .get_versioned(Policy::key())?
            .ok_or("no policy")?
            .version;
        let mut annotated = pod_review("2", "web", "apps", "nginx:1.27");
        annotated["request"]["object"]["metadata"]["annotations"] = json!({ "team": "web" });
        let (_, body) = client
            .request(Method::POST, "/mutate", annotated.to_string().into_bytes())
            .await?;
        let answer = read_answer(&body)?;
        assert_eq!(
            answer.admitted_by,
            Some(format!("replica-t@policy-v{version}"))
        );

        // Bad input is answered, never a panic.
        let (code, _) = client
            .request(Method::POST, "/validate", b"{not json".to_vec())
            .await?;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        let (code, _) = client
            .request(Method::POST, "/mutate", b"[]".to_vec())
            .await?;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        let mut no_request = pod_review("3", "web", "apps", "nginx");
        no_request["request"] = Value::Null;
        let (code, body) = client
            .request(Method::POST, "/mutate", no_request.to_string().into_bytes())
            .await?;
        assert_eq!(code, StatusCode::OK);
        assert!(!read_answer(&body)?.allowed);
        let too_large = vec![b' '; 4 * 1024 * 1024];
        let (code, _) = client.request(Method::POST, "/validate", too_large).await?;
        assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            client.request(Method::GET, "/validate", vec![]).await?.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            client.request(Method::GET, "/nowhere", vec![]).await?.0,
            StatusCode::NOT_FOUND
        );

        let (code, metrics) = client.request(Method::GET, "/metrics", vec![]).await?;
        assert_eq!(code, StatusCode::OK);
        let metrics = String::from_utf8_lossy(&metrics);
        for line in [
            r#"operator_admission_requests_total{endpoint="validate",outcome="denied"}"#,
            r#"operator_admission_requests_total{endpoint="mutate",outcome="allowed"}"#,
            r#"operator_admission_requests_total{endpoint="validate",outcome="error"}"#,
            r#"operator_admission_duration_seconds_count{endpoint="mutate"}"#,
        ] {
            assert!(metrics.contains(line), "no {line} in\n{metrics}");
        }
        server.abort();
        Ok(())
    }

    #[test]
    fn manifests_route_webhooks_to_the_service_with_the_given_ca() -> Result<(), BoxError> {
        let files = manifests(Some("CA"), FailurePolicy::Ignore);
        let webhooks = &files
            .iter()
            .find(|(name, _)| *name == "40-webhooks.json")
            .ok_or("no webhooks")?
            .1;
        for configuration in webhooks["items"].as_array().ok_or("no items")? {
            let webhook = &configuration["webhooks"][0];
            assert_eq!(webhook["failurePolicy"], "Ignore");
            assert_eq!(webhook["clientConfig"]["caBundle"], "Q0E=");
            assert_eq!(webhook["clientConfig"]["service"]["name"], NAME);
            assert!(configuration["metadata"]["annotations"].is_null());
        }
        let placeholder = manifests(None, FailurePolicy::Fail);
        let webhooks = &placeholder
            .iter()
            .find(|(name, _)| *name == "40-webhooks.json")
            .ok_or("no webhooks")?
            .1;
        assert!(webhooks["items"][0]["webhooks"][0]["clientConfig"]["caBundle"].is_null());
        assert_eq!(
            webhooks["items"][0]["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            format!("{NAME}/{NAME}")
        );
        Ok(())
    }

    #[test]
    fn bad_arguments_are_errors() {
        let parse = |args: &[&str]| parse_args(args.iter().map(|a| (*a).to_owned()));
        assert!(parse(&["--replicas", "0"]).is_err());
        assert!(parse(&["--replicas", "many"]).is_err());
        assert!(parse(&["--replicas"]).is_err());
        assert!(parse(&["--kube", "--replicas", "3"]).is_err());
        assert!(parse(&["--frobnicate"]).is_err());
        assert!(parse(&["--failure-policy", "Sometimes"]).is_err());
        assert!(parse(&["--listen", "everywhere"]).is_err());
        assert!(matches!(
            parse(&[]),
            Ok(Args {
                mode: Mode::Fake,
                replicas: 2,
                ..
            })
        ));
        assert!(matches!(
            parse(&["--replicas", "3"]),
            Ok(Args {
                mode: Mode::Fake,
                replicas: 3,
                failure_policy: FailurePolicy::Fail,
                ..
            })
        ));
        assert!(matches!(
            parse(&["--manifests", "out", "--failure-policy", "Ignore"]),
            Ok(Args {
                mode: Mode::Manifests(_),
                failure_policy: FailurePolicy::Ignore,
                ..
            })
        ));
    }
}

//! A namespace-exemption operator: a kube-rs controller and an admission
//! handler in one binary, sharing state through the store.
//!
//! - The **controller** (`kube::runtime::Controller` over Namespaces) records
//!   which namespaces carry the label `typedstore.dev/exempt=true` in one
//!   typed value, [`ExemptNamespaces`] (namespace name to the uid of the
//!   namespace object it exempted).
//! - The **admission handler** ([`review`]) takes an `AdmissionReview` for a
//!   Pod, as kube-apiserver sends it to a validating webhook, and answers from
//!   the store's local view alone: no API call on the admission path. Pods
//!   whose images carry a denied tag (`latest` by default; an image without a
//!   tag counts as `latest`, one pinned by digest is always fine) are denied
//!   unless their namespace is exempt. The denied tags are a second typed
//!   value, [`Policy`], seeded once by whichever replica starts first.
//!
//! ```sh
//! cargo run -p store-examples --example operator                       # two replicas on the in-process fake API server
//! cargo run -p store-examples --example operator -- --replicas 3       # more (up to 16)
//! cargo run -p store-examples --example operator -- --real             # the same on etcd + kube-apiserver (`cargo xtask envtest`)
//! cargo run -p store-examples --example operator -- --kube             # one replica on the current cluster, until Ctrl-C or SIGTERM
//! cargo run -p store-examples --example operator -- --manifests <dir> # its RBAC and Deployment (what `cargo xtask manifests` writes to deploy/operator)
//! ```
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
//! kubectl apply -f deploy/operator/              # namespace, RBAC, Deployment (two replicas, `--kube`)
//! ```
//!
//! The Deployment runs the image `typed-store-operator:0.1.0`, whose entry
//! point is this example built in release mode
//! (`target/release/examples/operator`); build and load it into your cluster
//! as you build images. The store lives in the pod's namespace. The handler is
//! a plain function: to enforce the policy, serve it over HTTPS on the
//! webhook framework you use and register a `ValidatingWebhookConfiguration`
//! for Pods; the replicas already keep its data current.

use std::collections::{BTreeMap, BTreeSet};
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
use store_core::{BoxError, Error, Precondition, Result, Store, StoreValue};
use store_kube::KubeBackend;
use store_kube_testing::{ControlPlane, TestCluster};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The store's name: its objects are `operator-0`, ... in the store's namespace.
const STORE: &str = "operator";

/// The label that exempts a namespace.
const EXEMPT_LABEL: &str = "typedstore.dev/exempt";

/// The audit annotation an admitted Pod's response carries, saying why.
const REASON_ANNOTATION: &str = "typedstore.dev/reason";

/// How long a wait may take.
const DEADLINE: Duration = Duration::from_secs(10);

/// Every namespace is reconciled again this often, which repairs the value if
/// someone edits or deletes the store's objects by hand.
const RESYNC: Duration = Duration::from_secs(300);

/// How often a replica on a cluster looks for entries of vanished namespaces.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The same in the demonstration, so a deletion shows up within a second.
const DEMO_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The namespace (and the name of every object) `deploy/operator` installs.
const NAME: &str = "typed-store-operator";

/// The image the Deployment runs.
const IMAGE: &str = "typed-store-operator:0.1.0";

/// The verbs the kube backend uses on its `StoreShard`s, as in
/// `deploy/rbac.json`: `get` and `create` to ensure its objects exist,
/// `list` and `watch` for the local view, `patch` for writes.
const STORE_VERBS: [&str; 5] = ["get", "list", "watch", "create", "patch"];

mod admission;
mod cli;
mod cluster;
mod demo;
mod manifests;
mod reconciler;
mod state;

use admission::*;
use cli::*;
use cluster::*;
use demo::*;
use manifests::*;
use reconciler::*;
use state::*;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let (mode, replicas) = match parse_args(std::env::args().skip(1)) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("operator: {message}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let default_level = if matches!(mode, Mode::Kube) {
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
    match run(mode, replicas).await {
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

    #[test]
    fn bad_arguments_are_errors() {
        let parse = |args: &[&str]| parse_args(args.iter().map(|a| (*a).to_owned()));
        assert!(parse(&["--replicas", "0"]).is_err());
        assert!(parse(&["--replicas", "many"]).is_err());
        assert!(parse(&["--replicas"]).is_err());
        assert!(parse(&["--kube", "--replicas", "3"]).is_err());
        assert!(parse(&["--frobnicate"]).is_err());
        assert!(matches!(parse(&[]), Ok((Mode::Fake, 2))));
        assert!(matches!(parse(&["--replicas", "3"]), Ok((Mode::Fake, 3))));
    }
}

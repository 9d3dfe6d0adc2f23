//! The operator example end to end, as a user deploys it.
//!
//! - Its admission webhooks on a real etcd + kube-apiserver (`cargo xtask
//!   envtest`): two replicas, each with its own client, store and HTTPS
//!   webhook server, registered with the API server by URL on loopback; Pods
//!   created through the API server as kubectl would. Each replica's webhooks
//!   get the namespaces labelled `typedstore.dev/webhook=<replica>`, so the
//!   test knows which replica's view decided, and the mutation's annotation
//!   (`<replica>@policy-v<version>`) shows it.
//! - The `store` command on the store two running replicas keep, on the fake
//!   API server and on a real control plane: it lists and reads what the
//!   controllers wrote, and a policy it sets is enforced by both replicas.

#![cfg_attr(
    not(real_control_plane),
    allow(
        dead_code,
        unused_imports,
        reason = "the real-tier test is compiled out"
    )
)]

#[allow(
    dead_code,
    reason = "the test drives the operator's replicas; its command line is unused here"
)]
#[path = "../operator/main.rs"]
mod operator;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use store_conformance::support::eventually_async;
use store_core::{BoxError, Error, Store, StoreValue};
use store_kube_testing::{ControlPlane, TestCluster, within};
use tokio::sync::watch;

use operator::demo::{Replica, converge, until};
use operator::state::Policy;
use operator::webhook::{Certificates, Endpoint};
use operator::webhook_config::{FailurePolicy, Target, WebhookSpec, routed_to};
use operator::{ADMITTED_BY_ANNOTATION, EXEMPT_LABEL, NAME, WEBHOOK_LABEL};

/// Creates Pods and namespaces through the API server, as kubectl would.
struct Kubectl {
    client: kube::Client,
}

impl Kubectl {
    /// Creates a namespace routed to `replica`'s webhooks; returns its
    /// resourceVersion.
    async fn namespace(&self, name: &str, replica: &str, exempt: bool) -> Result<String, BoxError> {
        let mut labels = BTreeMap::from([(WEBHOOK_LABEL.to_owned(), replica.to_owned())]);
        if exempt {
            labels.insert(EXEMPT_LABEL.to_owned(), "true".to_owned());
        }
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some(name.to_owned());
        namespace.metadata.labels = Some(labels);
        let created = Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &namespace)
            .await?;
        Ok(created.metadata.resource_version.unwrap_or_default())
    }

    /// Sets or removes a namespace's exemption; returns its resourceVersion.
    async fn exempt(&self, name: &str, exempt: bool) -> Result<String, BoxError> {
        let value = if exempt { json!("true") } else { json!(null) };
        let patch = json!({ "metadata": { "labels": { EXEMPT_LABEL: value } } });
        let patched = Api::<Namespace>::all(self.client.clone())
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(patched.metadata.resource_version.unwrap_or_default())
    }

    /// Creates a one-container Pod (a dry run when `dry_run`); returns the
    /// admitted-by annotation, or the API server's error message.
    async fn create_pod(
        &self,
        namespace: &str,
        name: &str,
        image: &str,
        dry_run: bool,
    ) -> Result<Result<Option<String>, String>, BoxError> {
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": { "name": name, "namespace": namespace },
            "spec": { "containers": [{ "name": "main", "image": image }] },
        }))?;
        let params = PostParams {
            dry_run,
            ..PostParams::default()
        };
        match Api::<Pod>::namespaced(self.client.clone(), namespace)
            .create(&params, &pod)
            .await
        {
            Ok(created) => Ok(Ok(created
                .metadata
                .annotations
                .unwrap_or_default()
                .remove(ADMITTED_BY_ANNOTATION))),
            Err(kube::Error::Api(status)) => Ok(Err(status.message)),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates Pods (dry runs) until `done` holds for the answer, with a
    /// deadline: kube-apiserver picks up webhook configurations and
    /// failure policies a moment after they are written.
    async fn until_pod(
        &self,
        what: &str,
        namespace: &str,
        image: &str,
        done: impl Fn(&Result<Option<String>, String>) -> bool,
    ) -> Result<Result<Option<String>, String>, BoxError> {
        let mut last = None;
        eventually_async(what, async || {
            let answer = self.create_pod(namespace, "probe", image, true).await;
            let held = matches!(&answer, Ok(answer) if done(answer));
            last = Some(answer);
            held
        })
        .await;
        last.ok_or("no answer")?
    }
}

/// The version of the policy value in a replica's local view.
fn policy_version(store: &Store) -> Result<String, BoxError> {
    let policy = store.get_versioned(Policy::key())?.ok_or("no policy")?;
    Ok(format!("policy-v{}", policy.version))
}

fn spec<'a>(replica: &'a Replica, url: &'a str, failure_policy: FailurePolicy) -> WebhookSpec<'a> {
    WebhookSpec {
        name: &replica.name,
        target: Target::Url(url),
        ca_pem: Some(&replica.listener.certificates.ca_pem),
        namespace_selector: routed_to(&replica.name),
        failure_policy,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(real_control_plane),
    ignore = "needs etcd and kube-apiserver: run `cargo xtask envtest` and export KUBEBUILDER_ASSETS"
)]
async fn two_replicas_decide_annotate_and_fail_closed_on_a_real_control_plane()
-> Result<(), BoxError> {
    let plane = ControlPlane::start().await?;
    let cluster = TestCluster::from_control_plane(Arc::new(plane));
    cluster
        .apply_crd(&store_kube::resource::store_shard_crd())
        .await?;
    let kubectl = Kubectl {
        client: cluster.client()?,
    };
    let mut store_namespace = Namespace::default();
    store_namespace.metadata.name = Some(NAME.to_owned());
    Api::<Namespace>::all(kubectl.client.clone())
        .create(&PostParams::default(), &store_namespace)
        .await?;

    let mut replicas = vec![
        Replica::start(0, cluster.client()?).await?,
        Replica::start(1, cluster.client()?).await?,
    ];
    let urls: Vec<String> = replicas.iter().map(|r| r.listener.url()).collect();
    for (replica, url) in replicas.iter().zip(&urls) {
        spec(replica, url, FailurePolicy::Fail)
            .register(kubectl.client.clone())
            .await?;
    }

    // Exempt and non-exempt namespaces for each replica.
    let mut versions = BTreeMap::new();
    for (name, replica, exempt) in [
        ("apps-0", "operator-0", false),
        ("tools-0", "operator-0", true),
        ("apps-1", "operator-1", false),
        ("tools-1", "operator-1", true),
    ] {
        versions.insert(
            name.to_owned(),
            kubectl.namespace(name, replica, exempt).await?,
        );
    }
    converge(&replicas, &versions, &["tools-0", "tools-1"]).await?;
    for (namespace, replica) in [("apps-0", "operator-0"), ("apps-1", "operator-1")] {
        let prefix = format!("{replica}@");
        let _annotated = kubectl
            .until_pod(
                &format!("{replica}'s webhooks to be called"),
                namespace,
                "nginx:1.27",
                |answer| matches!(answer, Ok(Some(by)) if by.starts_with(&prefix)),
            )
            .await?;
    }

    // Decisions and mutations, each from the replica the namespace routes to.
    let version = policy_version(&replicas[0].store)?;
    let denied = kubectl
        .create_pod("apps-0", "web", "nginx:latest", false)
        .await?;
    let message = denied.expect_err("a latest tag outside an exempt namespace is denied");
    assert!(
        message.contains("operator-0.validate.typedstore.dev")
            && message.contains("image nginx:latest has the denied tag latest"),
        "{message}"
    );
    let admitted = kubectl
        .create_pod("tools-0", "web", "nginx:latest", false)
        .await?;
    assert_eq!(admitted, Ok(Some(format!("operator-0@{version}"))));
    let admitted = kubectl
        .create_pod("apps-1", "web", "nginx:1.27", false)
        .await?;
    assert_eq!(admitted, Ok(Some(format!("operator-1@{version}"))));
    let admitted = kubectl.create_pod("tools-1", "web", "nginx", false).await?;
    assert_eq!(admitted, Ok(Some(format!("operator-1@{version}"))));
    let denied = kubectl.create_pod("apps-1", "web", "nginx", false).await?;
    assert!(denied.is_err_and(|m| m.contains("operator-1.validate.typedstore.dev")));

    // Relabelled namespaces: admissions follow once the stores converged.
    versions.insert("apps-0".to_owned(), kubectl.exempt("apps-0", true).await?);
    versions.insert(
        "tools-1".to_owned(),
        kubectl.exempt("tools-1", false).await?,
    );
    converge(&replicas, &versions, &["apps-0", "tools-0"]).await?;
    let admitted = kubectl
        .create_pod("apps-0", "web-2", "nginx:latest", false)
        .await?;
    assert_eq!(admitted, Ok(Some(format!("operator-0@{version}"))));
    let denied = kubectl
        .create_pod("tools-1", "web-2", "nginx:latest", false)
        .await?;
    assert!(denied.is_err_and(|m| m.contains("has the denied tag latest")));

    // A policy written on replica 0 is enforced by replica 1's webhook.
    let written = replicas[0]
        .store
        .update(Policy::key(), |current| {
            let mut next = current.cloned().unwrap_or_default();
            next.denied_tags.insert("edge".to_owned());
            next
        })
        .await?;
    let written_version = format!("policy-v{}", written.version);
    until(&replicas[1].store, "replica 1 to see the policy", |store| {
        Ok(store
            .get_versioned(Policy::key())?
            .is_some_and(|seen| seen.version == written.version))
    })
    .await?;
    let denied = kubectl
        .create_pod("apps-1", "api", "registry.example/api:edge", false)
        .await?;
    let message = denied.expect_err("replica 1 enforces the policy written on replica 0");
    assert!(
        message.contains("operator-1.validate.typedstore.dev")
            && message.contains("has the denied tag edge"),
        "{message}"
    );
    let admitted = kubectl
        .create_pod("apps-1", "api", "registry.example/api:1.0", false)
        .await?;
    assert_eq!(admitted, Ok(Some(format!("operator-1@{written_version}"))));

    // The webhook's own metrics and the store's, as Prometheus scrapes them.
    let (code, metrics) = replicas[0]
        .client()?
        .request(hyper::Method::GET, "/metrics", Vec::new())
        .await?;
    assert_eq!(code, hyper::StatusCode::OK);
    let metrics = String::from_utf8_lossy(&metrics);
    for line in [
        r#"operator_admission_requests_total{endpoint="validate",outcome="denied"}"#,
        r#"operator_admission_requests_total{endpoint="mutate",outcome="allowed"}"#,
        r#"operator_admission_duration_seconds_bucket{endpoint="validate",le="0.005"}"#,
        "typed_store_batches_total{",
        "typed_store_set_and_wait_duration_seconds",
        "typed_store_kube_requests_total{",
        r#"verb="patch""#,
        "typed_store_ready{",
    ] {
        assert!(metrics.contains(line), "no {line} in\n{metrics}");
    }

    // Replica 1 stops: with failurePolicy Fail its namespaces admit nothing.
    let restarted = replicas.pop().ok_or("no replica 1")?;
    let address: SocketAddr = restarted.listener.address;
    let certificates: Certificates = restarted.listener.certificates.clone();
    restarted.stop().await?;
    let refused = kubectl
        .create_pod("apps-1", "down", "nginx:1.27", false)
        .await?;
    let message = refused.expect_err("a stopped replica's namespaces admit nothing");
    assert!(
        message.contains("failed calling webhook \"operator-1."),
        "{message}"
    );

    // It starts again on the same address, and its store is held before
    // ready: the webhook answers 503, never from the empty view.
    let (open, gate) = watch::channel(false);
    let restarted = Replica::start_on(
        1,
        cluster.client()?,
        address,
        Some(certificates),
        |builder| {
            builder.on_ready("held-for-the-test", move |_| {
                let mut gate = gate.clone();
                async move {
                    gate.wait_for(|open| *open)
                        .await
                        .map_err(|_| Error::Closed)?;
                    Ok::<(), Error>(())
                }
            })
        },
    )
    .await?;
    let client = restarted.client()?;
    let (code, _) = client
        .request(hyper::Method::GET, "/readyz", Vec::new())
        .await?;
    assert_eq!(code, hyper::StatusCode::SERVICE_UNAVAILABLE);
    let (code, body) = client
        .request(
            hyper::Method::POST,
            Endpoint::Validate.path(),
            operator::admission::pod_review("1", "web", "apps-1", "nginx")
                .to_string()
                .into_bytes(),
        )
        .await?;
    assert_eq!(code, hyper::StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&body).contains("not ready"));
    let refused = kubectl
        .create_pod("apps-1", "starting", "nginx:1.27", false)
        .await?;
    let message = refused.expect_err("an unready replica's namespaces admit nothing");
    assert!(
        message.contains("failed calling webhook \"operator-1.mutate.typedstore.dev\"")
            && message.contains("operator-1: the store is not ready"),
        "{message}"
    );

    // With failurePolicy Ignore the same Pod is admitted, unchecked and
    // unannotated, while the replica is not ready.
    spec(&restarted, &urls[1], FailurePolicy::Ignore)
        .register(kubectl.client.clone())
        .await?;
    let unchecked = kubectl
        .until_pod(
            "failurePolicy Ignore to apply",
            "apps-1",
            "nginx:latest",
            Result::is_ok,
        )
        .await?;
    assert_eq!(unchecked, Ok(None));
    spec(&restarted, &urls[1], FailurePolicy::Fail)
        .register(kubectl.client.clone())
        .await?;
    let _refused = kubectl
        .until_pod(
            "failurePolicy Fail to apply",
            "apps-1",
            "nginx:1.27",
            Result::is_err,
        )
        .await?;

    // Ready again: it answers from the converged view, the policy from replica 0 included.
    open.send_replace(true);
    within("replica 1 to be ready again", restarted.ready()).await?;
    let (code, _) = client
        .request(hyper::Method::GET, "/readyz", Vec::new())
        .await?;
    assert_eq!(code, hyper::StatusCode::OK);
    let admitted = kubectl
        .create_pod("apps-1", "back", "nginx:1.27", false)
        .await?;
    assert_eq!(admitted, Ok(Some(format!("operator-1@{written_version}"))));
    let denied = kubectl
        .create_pod("apps-1", "back-2", "registry.example/api:edge", false)
        .await?;
    assert!(denied.is_err_and(|m| m.contains("has the denied tag edge")));
    replicas.push(restarted);

    for replica in replicas {
        replica.stop().await?;
    }
    Ok(())
}

/// Runs `store <args>` in-process against `cluster`, returning what it printed.
async fn store_command(cluster: &TestCluster, args: &[&str]) -> Result<String, BoxError> {
    use clap::Parser;
    let kubeconfig = cluster.kubeconfig_path().to_string_lossy().into_owned();
    let mut argv = vec!["store", "--kubeconfig", kubeconfig.as_str(), "-n", NAME];
    argv.extend_from_slice(&["--store", operator::STORE]);
    argv.extend_from_slice(args);
    let cli = store_cli::Cli::try_parse_from(argv)?;
    let mut out = Vec::new();
    store_cli::run(cli, &mut out).await?;
    Ok(String::from_utf8(out)?)
}

async fn the_store_command_reads_and_changes_what_two_running_replicas_keep(
    cluster: &TestCluster,
) -> Result<(), BoxError> {
    use operator::demo::Admin;
    cluster
        .apply_crd(&store_kube::resource::store_shard_crd())
        .await?;
    let admin = Admin {
        namespaces: Api::all(cluster.client()?),
    };
    admin.create(NAME, false).await?;
    let mut replicas = Vec::new();
    for index in 0..2 {
        replicas.push(operator::demo::Replica::start(index, cluster.client()?).await?);
    }
    let mut versions = BTreeMap::new();
    for (name, exempt) in [("cli-tools", true), ("cli-apps", false)] {
        versions.insert(name.to_owned(), admin.create(name, exempt).await?);
    }
    converge(&replicas, &versions, &["cli-tools"]).await?;

    let listed: Vec<serde_json::Value> = store_command(cluster, &["ls", "-o", "jsonl"])
        .await?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let keys: Vec<&str> = listed
        .iter()
        .filter_map(|row| row["key"].as_str())
        .collect();
    assert_eq!(keys, ["exempt-namespaces", "policy"], "{listed:?}");
    let exempt: serde_json::Value = serde_json::from_str(
        &store_command(
            cluster,
            &["get", "exempt-namespaces", "--show-values", "-o", "json"],
        )
        .await?,
    )?;
    let namespaces = &exempt["value"]["namespaces"];
    assert!(namespaces["cli-tools"].is_string(), "{exempt}");
    assert!(namespaces.get("cli-apps").is_none(), "{exempt}");

    // A policy set from the terminal, on the version just read, is what both
    // replicas' webhooks enforce.
    let policy: serde_json::Value =
        serde_json::from_str(&store_command(cluster, &["get", "policy", "-o", "json"]).await?)?;
    let version = policy["version"].as_u64().ok_or("a version")?.to_string();
    let stale = store_command(
        cluster,
        &[
            "set",
            "policy",
            r#"{"denied_tags":["dev"]}"#,
            "--if-version",
            "1",
        ],
    )
    .await;
    assert!(
        matches!(&stale, Err(e) if e.to_string().contains("conflict")),
        "{stale:?}"
    );
    store_command(
        cluster,
        &[
            "set",
            "policy",
            r#"{"denied_tags":["dev"]}"#,
            "--if-version",
            &version,
        ],
    )
    .await?;
    for replica in &replicas {
        until(&replica.store, "the new policy", |store| {
            Ok(store
                .get(Policy::key())?
                .is_some_and(|p| p.denied_tags.contains("dev")))
        })
        .await?;
        let (_, (allowed, reason)) = replica.ask("web", "cli-apps", "nginx:dev").await?;
        assert!(!allowed, "{}: {reason}", replica.name);
        let (_, (allowed, reason)) = replica.ask("web", "cli-apps", "nginx:latest").await?;
        assert!(allowed, "{}: {reason}", replica.name);
    }
    let stat = store_command(cluster, &["stat", "-o", "jsonl"]).await?;
    assert!(stat.contains("\"keys\":2"), "{stat}");
    for replica in replicas {
        replica.stop().await?;
    }
    Ok(())
}

mod the_store_command {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_the_fake() -> Result<(), BoxError> {
        let cluster = TestCluster::fake().await?;
        the_store_command_reads_and_changes_what_two_running_replicas_keep(&cluster).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        not(real_control_plane),
        ignore = "no control plane found at build time: run `cargo xtask envtest` or set KUBEBUILDER_ASSETS"
    )]
    async fn on_a_real_control_plane() -> Result<(), BoxError> {
        let cluster = TestCluster::real().await?;
        the_store_command_reads_and_changes_what_two_running_replicas_keep(&cluster).await
    }
}

//! The real control plane's process faults: a paused kube-apiserver answers
//! nothing until resumed, either process killed and started again comes back
//! with the data, and etcd's history compacts on demand.

#![cfg_attr(
    not(real_control_plane),
    allow(unused_imports, reason = "the real-tier test is compiled out")
)]

use std::time::Duration;

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

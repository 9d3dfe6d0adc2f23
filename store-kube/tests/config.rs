//! A backend pointed at the wrong place, or configured against what exists,
//! fails to open with a typed [`ConfigError`] that says what to fix, on both
//! tiers.

mod support;

use std::time::Duration;

use store_core::Error;
use store_kube::resource::store_shard_crd;
use store_kube::{ConfigError, KubeBackend};
use store_kube_testing::{TestCluster, on_both_tiers, unique_name};

async fn open(cluster: &TestCluster, store: &str, namespace: &str, shards: u32) -> Error {
    KubeBackend::builder(cluster.client().expect("client"), store)
        .namespace(namespace)
        .shards(shards)
        .request_timeout(Duration::from_secs(5))
        .build()
        .await
        .expect_err("the backend does not open")
}

fn config_error(error: &Error) -> &ConfigError {
    ConfigError::of(error).unwrap_or_else(|| panic!("a configuration error, got {error:?}"))
}

// The Pepr kind is never installed in this test binary, so its CRD is missing
// on both tiers.
async fn a_missing_crd_names_the_manifest_that_installs_it(cluster: &TestCluster) {
    let namespace = cluster.create_namespace("nocrd").await.expect("namespace");
    let error = KubeBackend::builder(cluster.client().expect("client"), "unused")
        .pepr(unique_name("module"), "cap")
        .namespace(&namespace)
        .build()
        .await
        .expect_err("no PeprStore kind");
    assert_eq!(
        config_error(&error),
        &ConfigError::CrdMissing {
            crd: "peprstores.pepr.dev",
            manifest: "deploy/peprstores.crd.json",
        }
    );
    assert!(
        error
            .to_string()
            .contains("kubectl apply -f deploy/peprstores.crd.json"),
        "{error}"
    );
}

on_both_tiers!(a_missing_crd_names_the_manifest_that_installs_it);

async fn a_missing_namespace_is_named(cluster: &TestCluster) {
    cluster.apply_crd(&store_shard_crd()).await.expect("CRD");
    let namespace = unique_name("absent");
    let error = open(cluster, "s", &namespace, 1).await;
    assert_eq!(
        config_error(&error),
        &ConfigError::NamespaceMissing { namespace }
    );
}

on_both_tiers!(a_missing_namespace_is_named);

async fn a_shard_count_other_than_the_stores_is_refused(cluster: &TestCluster) {
    cluster.apply_crd(&store_shard_crd()).await.expect("CRD");
    let namespace = cluster.create_namespace("shards").await.expect("namespace");
    let first = KubeBackend::builder(cluster.client().expect("client"), "s")
        .namespace(&namespace)
        .shards(2)
        .build()
        .await
        .expect("the first replica creates the store");
    drop(first);
    let error = open(cluster, "s", &namespace, 3).await;
    assert_eq!(
        config_error(&error),
        &ConfigError::ShardCountMismatch {
            store: "s".to_owned(),
            found: 2,
            configured: 3,
        }
    );
}

on_both_tiers!(a_shard_count_other_than_the_stores_is_refused);

#[tokio::test]
async fn names_that_cannot_name_objects_are_refused_before_any_request() {
    let cluster = TestCluster::fake().await.expect("fake");
    let error = open(&cluster, "Not A Label", "default", 1).await;
    assert_eq!(
        config_error(&error),
        &ConfigError::InvalidStoreName {
            name: "Not A Label".to_owned()
        }
    );
    let error = KubeBackend::builder(cluster.client().expect("client"), "unused")
        .pepr("module", "")
        .build()
        .await
        .expect_err("empty capability");
    assert_eq!(config_error(&error), &ConfigError::EmptyCapability);
    assert!(
        cluster.fake_server().expect("fake").requests().is_empty(),
        "refused before any request"
    );
}

/// One store, one name: a store on a kube backend is named after the
/// backend's store (Pepr: its capability) unless the builder names it.
#[tokio::test]
async fn a_store_takes_its_backends_store_name() {
    let server = support::fake_server().await;
    let client = || server.client().expect("client");
    let native = KubeBackend::builder(client(), "ops")
        .namespace("default")
        .build()
        .await
        .expect("backend");
    let store = store_core::Store::builder()
        .backend(native.clone())
        .linked_hooks(false)
        .open()
        .await
        .expect("store");
    assert_eq!(store.name(), "ops");
    let renamed = store_core::Store::builder()
        .backend(native)
        .name("renamed")
        .linked_hooks(false)
        .open()
        .await
        .expect("store");
    assert_eq!(renamed.name(), "renamed");
    let pepr = KubeBackend::builder(client(), "unused")
        .pepr("module", "cap")
        .namespace("default")
        .build()
        .await
        .expect("backend");
    let store = store_core::Store::builder()
        .backend(pepr)
        .linked_hooks(false)
        .open()
        .await
        .expect("store");
    assert_eq!(store.name(), "cap");
    let memory = store_core::Store::memory().await.expect("store");
    assert_eq!(memory.name(), "default");
}

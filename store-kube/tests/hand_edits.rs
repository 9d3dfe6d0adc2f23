//! Store objects edited by hand (as `kubectl edit` would) into shapes the
//! CRD's schema allows but the store never writes, each on the fake API
//! server and on a real control plane: the store reads on, a broken key gives
//! a typed error for itself alone (its value never quoted), and the store
//! repairs what it owns.

use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use store_conformance::support::eventually_async;
use store_core::{Error, Store};
use store_kube::resource::{STORE_LABEL, pepr_store_resource, store_shard_resource};
use store_kube::{KubeBackend, KubeBackendBuilder};
use store_kube_testing::{TestCluster, on_both_tiers, within};

/// A native store of one shard in a namespace of its own, with two keys, and
/// the API to edit its object by hand.
struct Edited {
    store: Store,
    api: Api<DynamicObject>,
    object: String,
}

async fn store_on(backend: KubeBackend) -> Store {
    within(
        "the store to open",
        Store::builder()
            .backend(backend)
            .linked_hooks(false)
            .timeout(Duration::from_secs(10))
            .retry_backoff(Duration::from_millis(5), Duration::from_millis(200))
            .open(),
    )
    .await
    .expect("store opens")
}

impl Edited {
    async fn native(cluster: &TestCluster) -> Self {
        Self::open(
            cluster,
            |builder| builder,
            &store_shard_resource(),
            "edited-0",
        )
        .await
    }

    async fn pepr(cluster: &TestCluster) -> Self {
        let pepr = |builder: KubeBackendBuilder| {
            builder
                .pepr("edited", "hello")
                .pepr_write_gap(Duration::ZERO)
        };
        Self::open(cluster, pepr, &pepr_store_resource(), "pepr-edited-store").await
    }

    /// A store named `edited` (its layout set by `layout`) with two keys, in
    /// a namespace of its own, whose object `object` of kind `resource` the
    /// test edits.
    async fn open(
        cluster: &TestCluster,
        layout: impl FnOnce(KubeBackendBuilder) -> KubeBackendBuilder,
        resource: &ApiResource,
        object: &str,
    ) -> Self {
        cluster
            .apply_crds(&store_kube::resource::crds())
            .await
            .expect("CRDs");
        let namespace = cluster.create_namespace("edit").await.expect("namespace");
        let client = cluster.client().expect("client");
        let builder = KubeBackend::builder(client.clone(), "edited").namespace(&namespace);
        let backend = within("the backend to start", layout(builder).build())
            .await
            .expect("backend");
        let edited = Edited {
            store: store_on(backend).await,
            api: Api::namespaced_with(client, &namespace, resource),
            object: object.to_owned(),
        };
        edited.seed().await;
        edited
    }

    async fn seed(&self) {
        for (key, value) in [("good", 1u32), ("other", 2)] {
            within("a write", self.store.set_and_wait(key, &value))
                .await
                .expect("set");
        }
    }

    /// A JSON merge patch, as `kubectl edit` sends for a custom resource.
    async fn edit(&self, patch: Value) {
        within(
            "a hand edit",
            self.api
                .patch(&self.object, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await
        .expect("the API server takes the edit");
    }

    async fn object(&self) -> Value {
        let object = within("a read", self.api.get(&self.object))
            .await
            .expect("object");
        serde_json::to_value(object).expect("JSON")
    }

    /// Waits until the store's view reads `key` as `value`.
    async fn reads(&self, what: &str, key: &'static str, value: u32) {
        let store = self.store.clone();
        eventually_async(what, async || {
            store.get::<u32>(key).ok().flatten().as_deref() == Some(&value)
        })
        .await;
    }
}

/// Someone removes the store label from a shard: the watch loses sight of
/// it, yet its keys must not read as removed for long, and the store puts its
/// label back.
async fn a_shard_whose_label_was_removed_is_labelled_again(cluster: &TestCluster) {
    let edited = Edited::native(cluster).await;
    edited
        .edit(json!({"metadata": {"labels": {STORE_LABEL: null}}}))
        .await;
    let api = edited.api.clone();
    let object = edited.object.clone();
    eventually_async("the label to be back", async || {
        api.get(&object)
            .await
            .ok()
            .and_then(|o| o.metadata.labels)
            .is_some_and(|labels| labels.get(STORE_LABEL).map(String::as_str) == Some("edited"))
    })
    .await;
    edited
        .reads("the shard's keys to read again", "good", 1)
        .await;
    within("a write", edited.store.set_and_wait("good", &3u32))
        .await
        .expect("set");
    edited.reads("the write to be seen", "good", 3).await;
    assert_eq!(
        edited.store.get::<u32>("other").expect("get").as_deref(),
        Some(&2)
    );
}
on_both_tiers!(
    a_shard_whose_label_was_removed_is_labelled_again,
    multi_thread
);

/// The placeholder Pepr keeps in every store object is removed by hand; the
/// keys read on and the next write puts it back.
async fn a_pepr_object_without_its_placeholder_reads_and_gets_it_back(cluster: &TestCluster) {
    let edited = Edited::pepr(cluster).await;
    edited
        .edit(json!({"data": {"__pepr_do_not_delete__": null}}))
        .await;
    assert_eq!(
        edited.store.get::<u32>("good").expect("get").as_deref(),
        Some(&1)
    );
    within("a write", edited.store.set_and_wait("good", &3u32))
        .await
        .expect("set");
    let object = edited.object().await;
    assert_eq!(
        object["data"]["__pepr_do_not_delete__"], "k-thx-bye",
        "the placeholder is back: {object}"
    );
    assert_eq!(object["data"]["hello-v2-good"], "3");
}
on_both_tiers!(
    a_pepr_object_without_its_placeholder_reads_and_gets_it_back,
    multi_thread
);

/// Keys the store would never write (empty, with a control character), a
/// value that is not JSON and one of another type: each of them reads as a
/// typed error of its own that never quotes the value, the other keys read,
/// and writes replace them.
async fn broken_keys_and_values_fail_alone_and_writes_replace_them(cluster: &TestCluster) {
    let edited = Edited::native(cluster).await;
    edited
        .edit(json!({"spec": {"data": {
            "": "1",
            "bell\u{7}": "2",
            "text": "not json: secret-hand-edit",
            "typed": "\"a string\"",
        }}}))
        .await;
    let store = edited.store.clone();
    eventually_async("the edit to arrive", async || {
        store.keys().iter().any(|k| k == "text")
    })
    .await;
    for key in ["text", "typed"] {
        let error = edited.store.get::<u32>(key).expect_err("a decode error");
        assert!(
            matches!(&error, Error::Decode { key: k, .. } if k == key),
            "{key}: {error:?}"
        );
        assert!(
            !error.to_string().contains("secret-hand-edit"),
            "the value is quoted: {error}"
        );
    }
    assert_eq!(
        edited.store.get::<u32>("good").expect("get").as_deref(),
        Some(&1)
    );
    within("a write", edited.store.set_and_wait("text", &4u32))
        .await
        .expect("overwriting a broken value works");
    within("clearing", edited.store.clear())
        .await
        .expect("clear removes keys the store would never write too");
    let object = edited.object().await;
    assert_eq!(object["spec"]["data"], json!({}), "{object}");
}
on_both_tiers!(
    broken_keys_and_values_fail_alone_and_writes_replace_them,
    multi_thread
);

/// An object filled by hand to 1.4 MiB, near etcd's limit: it reads, a write
/// that does not fit is refused as `StoreFull` alone, and removals still go.
async fn an_object_filled_by_hand_to_1_4_mib_reads_and_refuses_only_what_does_not_fit(
    cluster: &TestCluster,
) {
    let edited = Edited::native(cluster).await;
    let chunk = "x".repeat(100 * 1024);
    let data: serde_json::Map<String, Value> = (0..14)
        .map(|i| (format!("big{i}"), json!(format!("\"{chunk}\""))))
        .collect();
    edited.edit(json!({"spec": {"data": data}})).await;
    let store = edited.store.clone();
    eventually_async("the edit to arrive", async || {
        store.keys().iter().filter(|k| k.starts_with("big")).count() == 14
    })
    .await;
    assert_eq!(
        edited.store.get::<u32>("good").expect("get").as_deref(),
        Some(&1)
    );
    let big = "y".repeat(200 * 1024);
    let refused = within("a write", edited.store.set_and_wait("more", &big)).await;
    assert!(
        matches!(&refused, Err(Error::StoreFull { key, .. }) if key == "more"),
        "{refused:?}"
    );
    within("a small write", edited.store.set_and_wait("small", &5u32))
        .await
        .expect("a small key still fits");
    within("a removal", edited.store.remove_and_wait("big0"))
        .await
        .expect("removal");
    edited.reads("the small write", "small", 5).await;
}
on_both_tiers!(
    an_object_filled_by_hand_to_1_4_mib_reads_and_refuses_only_what_does_not_fit,
    multi_thread
);

/// Fields the store does not write, and its informational counts set wrong:
/// the store reads on and its next write sets the counts right.
async fn extra_fields_and_wrong_counts_are_harmless(cluster: &TestCluster) {
    let edited = Edited::native(cluster).await;
    edited
        .edit(json!({
            "metadata": {"annotations": {"note": "edited by hand"}, "labels": {"team": "b"}},
            "spec": {"keys": 99, "bytes": 12345},
        }))
        .await;
    within("a write", edited.store.set_and_wait("good", &3u32))
        .await
        .expect("set");
    let object = edited.object().await;
    assert_eq!(object["spec"]["keys"], 2, "{object}");
    assert_eq!(object["metadata"]["annotations"]["note"], "edited by hand");
    assert_eq!(
        edited.store.get::<u32>("other").expect("get").as_deref(),
        Some(&2)
    );
}
on_both_tiers!(extra_fields_and_wrong_counts_are_harmless, multi_thread);

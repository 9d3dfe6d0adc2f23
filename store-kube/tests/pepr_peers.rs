//! What TypeScript Pepr pods sharing a store need from a Rust replica, on the
//! fake API server and on a real control plane: values are strings (a Rust
//! `String` reads back exactly the text stored, whoever stored it, and other
//! types decode from the text as JSON), and a busy Rust writer leaves the quiet
//! gaps a Pepr pod waits for before it applies a change.
#![cfg(feature = "testing")]

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{Api, DynamicObject, PostParams, WatchEvent, WatchParams};
use serde::{Deserialize, Serialize};
use serde_json::json;
use store_core::Store;
use store_kube::KubeBackend;
use store_kube::resource::{pepr_store_crd, pepr_store_resource};
use store_kube::testing::TestCluster;
use support::{on_both_tiers, unique, within};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Counter {
    a: u32,
}

async fn pepr_store(cluster: &TestCluster, namespace: &str, uuid: &str) -> Store {
    let backend = KubeBackend::builder(cluster.client().expect("client"), "unused")
        .pepr(uuid, "cap")
        .namespace(namespace)
        .request_timeout(Duration::from_secs(5))
        .build()
        .await
        .expect("backend starts");
    Store::builder()
        .backend(backend)
        .linked_hooks(false)
        .timeout(Duration::from_secs(20))
        .open()
        .await
        .expect("store opens")
}

fn text(store: &Store, key: &str) -> Option<String> {
    store
        .get::<String>(key)
        .expect("every Pepr value reads as a string")
        .map(|s| (*s).clone())
}

async fn strings_read_back_exactly_as_stored(cluster: &TestCluster) {
    cluster.apply_crd(&pepr_store_crd()).await.expect("CRD");
    let namespace = cluster.create_namespace("pepr").await.expect("namespace");
    let uuid = unique("values");
    let api: Api<DynamicObject> = Api::namespaced_with(
        cluster.client().expect("client"),
        &namespace,
        &pepr_store_resource(),
    );
    // What a TypeScript `setItem` leaves: every value a string.
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "pepr.dev/v1",
        "kind": "PeprStore",
        "metadata": { "name": format!("pepr-{uuid}-store"), "namespace": namespace },
        "data": {
            "__pepr_do_not_delete__": "k-thx-bye",
            "cap-v2-object": "{\"a\":1}",
            "cap-v2-number": "42",
            "cap-v2-quoted": "\"q\"",
            "cap-v2-plain": "yep"
        }
    }))
    .expect("object");
    api.create(&PostParams::default(), &object)
        .await
        .expect("create");

    let store = pepr_store(cluster, &namespace, &uuid).await;
    assert_eq!(text(&store, "object").as_deref(), Some("{\"a\":1}"));
    assert_eq!(text(&store, "number").as_deref(), Some("42"));
    assert_eq!(text(&store, "quoted").as_deref(), Some("\"q\""));
    assert_eq!(text(&store, "plain").as_deref(), Some("yep"));
    assert_eq!(
        store.get::<Counter>("object").expect("decodes").as_deref(),
        Some(&Counter { a: 1 })
    );
    assert_eq!(
        store.get::<u32>("number").expect("decodes").as_deref(),
        Some(&42)
    );
    assert!(store.get::<u32>("plain").is_err(), "not a number");

    // Rust writes: a string holding JSON text, a number, a struct.
    store
        .set_and_wait("rust-object-text", &"{\"b\":2}".to_owned())
        .await
        .expect("set");
    store.set_and_wait("rust-number", &7u32).await.expect("set");
    store
        .set_and_wait("rust-struct", &Counter { a: 3 })
        .await
        .expect("set");
    // A second replica reads them only from what the server holds.
    let replica = pepr_store(cluster, &namespace, &uuid).await;
    within("the replica to see the writes", async {
        while replica.get::<u32>("rust-number").ok().flatten().is_none()
            || text(&replica, "rust-struct").is_none()
            || text(&replica, "rust-object-text").is_none()
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    for reader in [&store, &replica] {
        assert_eq!(
            text(reader, "rust-object-text").as_deref(),
            Some("{\"b\":2}")
        );
        assert_eq!(
            reader.get::<u32>("rust-number").expect("get").as_deref(),
            Some(&7)
        );
        assert_eq!(
            reader
                .get::<Counter>("rust-struct")
                .expect("get")
                .as_deref(),
            Some(&Counter { a: 3 })
        );
    }
    let data = api
        .get(&format!("pepr-{uuid}-store"))
        .await
        .expect("get")
        .data["data"]
        .clone();
    assert_eq!(data["cap-v2-rust-object-text"], "{\"b\":2}");
    assert_eq!(data["cap-v2-rust-number"], "7");
    assert_eq!(data["cap-v2-rust-struct"], "{\"a\":3}");
}

on_both_tiers!(strings_read_back_exactly_as_stored);

/// How long a TypeScript Pepr pod waits without another watch event before it
/// applies the last one.
const PEPR_DEBOUNCE: Duration = Duration::from_secs(1);

async fn a_busy_writer_leaves_pepr_pods_quiet_gaps(cluster: &TestCluster) {
    cluster.apply_crd(&pepr_store_crd()).await.expect("CRD");
    let namespace = cluster.create_namespace("pepr").await.expect("namespace");
    let uuid = unique("gaps");
    let store = pepr_store(cluster, &namespace, &uuid).await;
    let api: Api<DynamicObject> = Api::namespaced_with(
        cluster.client().expect("client"),
        &namespace,
        &pepr_store_resource(),
    );
    let object = format!("pepr-{uuid}-store");
    let version = api
        .get(&object)
        .await
        .expect("created by the backend")
        .metadata
        .resource_version
        .expect("a resource version");
    let params = WatchParams::default().fields(&format!("metadata.name={object}"));
    let mut events = api.watch(&params, &version).await.expect("watch").boxed();

    // What Pepr's watch sees while Rust writes every 50 ms for 3 seconds.
    let writing = async {
        for i in 0..60u32 {
            store.set("busy", &i).expect("queued");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        store.flush().await.expect("every write lands");
    };
    let watching = async {
        let mut arrivals = Vec::new();
        loop {
            let event = within("a watch event", events.next())
                .await
                .expect("the watch goes on")
                .expect("a well-formed event");
            if let WatchEvent::Modified(object) = event {
                arrivals.push(tokio::time::Instant::now());
                if object.data["data"]["cap-v2-busy"] == "59" {
                    return arrivals;
                }
            }
        }
    };
    let ((), arrivals) = tokio::join!(writing, watching);
    assert!(arrivals.len() >= 2, "{} batches", arrivals.len());
    for pair in arrivals.windows(2) {
        let quiet = pair[1] - pair[0];
        assert!(
            quiet >= PEPR_DEBOUNCE,
            "a Pepr pod applies a change only after {PEPR_DEBOUNCE:?} of quiet; this gap was {quiet:?}"
        );
    }
}

on_both_tiers!(a_busy_writer_leaves_pepr_pods_quiet_gaps);

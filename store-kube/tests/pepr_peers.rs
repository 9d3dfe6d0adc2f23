//! What TypeScript Pepr pods sharing a store need from a Rust replica, on the
//! fake API server and on a real control plane: values are strings (a Rust
//! `String` reads back exactly the text stored, whoever stored it, and other
//! types decode from the text as JSON), and a busy Rust writer leaves the quiet
//! gaps a Pepr pod waits for before it applies a change.

use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{Api, DynamicObject, PostParams, WatchEvent, WatchParams};
use serde::{Deserialize, Serialize};
use serde_json::json;
use store_core::Store;
use store_kube::KubeBackend;
use store_kube::resource::{pepr_store_crd, pepr_store_resource};
use store_kube_testing::{PeprPeer, TestCluster};
use store_kube_testing::{on_both_tiers, unique_name as unique, within};

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

/// Creates module `uuid`'s `PeprStore` object as a Pepr pod leaves it: the
/// placeholder and `data`.
async fn create_pepr_object(
    cluster: &TestCluster,
    namespace: &str,
    uuid: &str,
    data: serde_json::Value,
) -> Api<DynamicObject> {
    let api: Api<DynamicObject> = Api::namespaced_with(
        cluster.client().expect("client"),
        namespace,
        &pepr_store_resource(),
    );
    let mut data = data;
    data["__pepr_do_not_delete__"] = json!("k-thx-bye");
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "pepr.dev/v1",
        "kind": "PeprStore",
        "metadata": {
            "name": format!("pepr-{uuid}-store"),
            "namespace": namespace,
            "labels": { "pepr.dev-cacheID": "1" }
        },
        "data": data,
    }))
    .expect("object");
    api.create(&PostParams::default(), &object)
        .await
        .expect("create");
    api
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
    // What a TypeScript `setItem` leaves: every value a string.
    let api = create_pepr_object(
        cluster,
        &namespace,
        &uuid,
        json!({
            "cap-v2-object": "{\"a\":1}",
            "cap-v2-number": "42",
            "cap-v2-quoted": "\"q\"",
            "cap-v2-plain": "yep"
        }),
    )
    .await;

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

// ---------------------------------------------------------------------------
// The real peer: npm `pepr`'s own store code in Node (`tests/pepr/peer.js`).
// ---------------------------------------------------------------------------

/// Where the peer's package lives; `npm ci` there installs npm `pepr` 1.1.4.
fn peer_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pepr")
}

/// The peer for `capabilities` of module `uuid` (the build script found Node
/// and npm `pepr`, or the test is ignored).
async fn start_peer(cluster: &TestCluster, uuid: &str, capabilities: &[&str]) -> PeprPeer {
    PeprPeer::start(&peer_dir(), cluster.kubeconfig_path(), uuid, capabilities)
        .await
        .expect("the Pepr peer starts and its stores are ready")
}

/// Polls the peer's view of `key` until `check` holds.
async fn wait_for(peer: &mut PeprPeer, cap: &str, key: &str, check: impl Fn(Option<&str>) -> bool) {
    let limit = store_conformance::deadline(Duration::from_secs(20));
    let until = tokio::time::Instant::now() + limit;
    loop {
        let seen = peer.get(cap, key).await.expect("the peer answers");
        if check(seen.as_deref()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the Pepr peer's view of {key} stayed {seen:?} for {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The real control plane with Pepr's CRD and namespace.
async fn real_pepr_cluster() -> TestCluster {
    let cluster = TestCluster::real().await.expect("control plane");
    cluster.apply_crd(&pepr_store_crd()).await.expect("CRD");
    pepr_system(&cluster).await;
    cluster
}

/// Pepr's namespace, created once per control plane.
async fn pepr_system(cluster: &TestCluster) {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> =
        Api::all(cluster.client().expect("client"));
    let namespace =
        serde_json::from_value(json!({"metadata": {"name": "pepr-system"}})).expect("namespace");
    match namespaces.create(&PostParams::default(), &namespace).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => panic!("pepr-system: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(real_control_plane, pepr_peer)),
    ignore = "needs a control plane (`cargo xtask envtest`) and the Pepr peer (`npm ci` in store-kube/tests/pepr), found at build time"
)]
async fn a_real_pepr_pod_and_a_busy_rust_replica_share_one_store() {
    let cluster = real_pepr_cluster().await;
    let uuid = unique("peer");
    let store = pepr_store(&cluster, "pepr-system", &uuid).await;
    let mut peer = start_peer(&cluster, &uuid, &["cap"]).await;

    // Values are strings both ways, JSON text included.
    peer.set_and_wait("cap", "ts-json", "{\"a\":1}")
        .await
        .expect("Pepr's setItemAndWait");
    within("Rust to read Pepr's text", async {
        while text(&store, "ts-json").as_deref() != Some("{\"a\":1}") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(
        store.get::<Counter>("ts-json").expect("decodes").as_deref(),
        Some(&Counter { a: 1 })
    );
    store
        .set_and_wait("rs-json", &"{\"b\":2}".to_owned())
        .await
        .expect("set");
    wait_for(&mut peer, "cap", "rs-json", |v| v == Some("{\"b\":2}")).await;

    // A Rust replica writing ten times a second does not starve Pepr's view
    // (Pepr applies a change only after a second without another), and Pepr's
    // own setItemAndWait still completes meanwhile.
    let writer = store.clone();
    let busy = tokio::spawn(async move {
        for i in 0..100u32 {
            writer.set("busy", &i).expect("queued");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        writer.flush().await.expect("lands");
    });
    let mut seen = std::collections::BTreeSet::new();
    let sampling = tokio::time::Instant::now();
    while sampling.elapsed() < Duration::from_secs(5) {
        if let Some(value) = peer.get("cap", "busy").await.expect("the peer answers") {
            seen.insert(value);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!busy.is_finished(), "Rust is still writing");
    assert!(
        seen.len() >= 2,
        "Pepr's view of a key Rust writes ten times a second moved {} times in 5 s: {seen:?}",
        seen.len()
    );
    peer.set_and_wait("cap", "ts-during", "x")
        .await
        .expect("Pepr's setItemAndWait");
    busy.await.expect("writer");
    wait_for(&mut peer, "cap", "busy", |v| v == Some("99")).await;
    assert_eq!(text(&store, "ts-during").as_deref(), Some("x"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(real_control_plane, pepr_peer)),
    ignore = "needs a control plane (`cargo xtask envtest`) and the Pepr peer (`npm ci` in store-kube/tests/pepr), found at build time"
)]
async fn a_real_pepr_pod_starting_beside_a_rust_store_migrates_every_capability() {
    let cluster = real_pepr_cluster().await;
    let uuid = unique("migrate");
    // v1 keys of two capabilities, as an older Pepr left them.
    let api = create_pepr_object(
        &cluster,
        "pepr-system",
        &uuid,
        json!({"holdout-a": "from-v1", "other-k": "other's"}),
    )
    .await;

    // A Rust `holdout` store and a Pepr pod with both capabilities start together.
    let rust = async {
        let backend = KubeBackend::builder(cluster.client().expect("client"), "unused")
            .pepr(&uuid, "holdout")
            .pepr_capabilities(["other"])
            .namespace("pepr-system")
            .build()
            .await
            .expect("backend starts");
        Store::builder()
            .backend(backend)
            .linked_hooks(false)
            .open()
            .await
            .expect("store opens")
    };
    let (store, peer) = tokio::join!(rust, start_peer(&cluster, &uuid, &["holdout", "other"]));
    let mut peer = peer;
    assert_eq!(text(&store, "a").as_deref(), Some("from-v1"));
    wait_for(&mut peer, "other", "k", |v| v == Some("other's")).await;
    wait_for(&mut peer, "holdout", "a", |v| v == Some("from-v1")).await;
    let data = api
        .get(&format!("pepr-{uuid}-store"))
        .await
        .expect("get")
        .data["data"]
        .clone();
    assert_eq!(data["other-v2-k"], "other's", "{data}");
    assert_eq!(data["holdout-v2-a"], "from-v1", "{data}");
}

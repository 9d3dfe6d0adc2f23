//! The kube backend on the in-process fake API server: the conformance suite,
//! then what only a Kubernetes backend has to get right (request counts,
//! faults, deleted objects, size, Pepr's layout, hand-edited data).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;
use store_conformance::support::eventually;
use store_core::{Error, Precondition, Store, Version};
use store_kube::KubeBackend;
use store_kube::resource::{pepr_store_resource, store_shard_resource};
use store_kube_testing::{FakeApiServer, Fault, Verb};
use support::fake_server;

/// Opens backends on one fake API server; each scope is a store.
struct FakeHarness {
    server: FakeApiServer,
}

impl store_conformance::Harness for FakeHarness {
    type Backend = KubeBackend;

    async fn open(&self, scope: &str) -> KubeBackend {
        backend(&self.server, scope, 3).await
    }
}

async fn harness() -> FakeHarness {
    FakeHarness {
        server: fake_server().await,
    }
}

store_conformance::conformance_tests!(harness);

async fn backend(server: &FakeApiServer, store: &str, shards: u32) -> KubeBackend {
    KubeBackend::builder(server.client().expect("client"), store)
        .namespace("default")
        .shards(shards)
        .request_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("backend starts")
}

async fn store_on(backend: KubeBackend) -> Store {
    Store::builder()
        .backend(backend)
        .linked_hooks(false)
        .timeout(Duration::from_secs(30))
        .retry_backoff(Duration::from_millis(5), Duration::from_millis(200))
        .open()
        .await
        .expect("store starts")
}

fn patches(server: &FakeApiServer) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.verb == Some(Verb::Patch) && r.path.contains("storeshards"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_sets_on_a_thousand_keys_take_a_handful_of_patches() {
    let server = fake_server().await;
    let store = store_on(backend(&server, "coalesce", 1).await).await;
    server.set_latency(Duration::from_millis(1));
    server.clear_requests();
    for round in 0..10 {
        for key in 0..1000 {
            store
                .set(format!("k{key}"), &(round * 1000 + key))
                .expect("set");
        }
    }
    store.flush().await.expect("flush");
    let sent = patches(&server);
    assert!(sent <= 20, "{sent} PATCH requests for 10,000 sets");
    assert_eq!(
        store.get::<u32>("k999").expect("get").as_deref(),
        Some(&9999)
    );
    assert_eq!(store.len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_waiting_writes_share_patches_instead_of_one_each() {
    let server = fake_server().await;
    let store = store_on(backend(&server, "group-commit", 1).await).await;
    server.set_latency(Duration::from_millis(50));
    server.clear_requests();
    let writers: Vec<_> = (0..100)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.set_and_wait(format!("w/{i}"), &i).await })
        })
        .collect();
    for writer in writers {
        writer.await.expect("task").expect("acknowledged");
    }
    let sent = patches(&server);
    // One patch goes out at once; everything queued meanwhile goes in the next.
    assert!(
        sent <= 4,
        "{sent} patches for 100 concurrent set_and_wait calls"
    );
    assert_eq!(store.len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_precondition_fails_only_its_own_write() {
    let server = fake_server().await;
    let store = store_on(backend(&server, "isolation", 1).await).await;
    let v1 = store.set_and_wait("guarded", &1).await.expect("set");
    store.set_and_wait("guarded", &2).await.expect("set");
    server.pause();
    let stale = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .compare_and_set("guarded", Precondition::Version(v1), &3)
                .await
        })
    };
    store.set("a", &"a").expect("set");
    store.set("b", &"b").expect("set");
    server.resume();
    let outcome = stale.await.expect("task");
    assert!(
        matches!(outcome, Err(Error::Conflict { .. })),
        "{outcome:?}"
    );
    store.flush().await.expect("the rest of the batch landed");
    assert_eq!(
        store
            .get::<String>("a")
            .expect("get")
            .as_deref()
            .map(String::as_str),
        Some("a")
    );
    assert_eq!(
        store.get::<i32>("guarded").expect("get").as_deref(),
        Some(&2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_kind_is_survived_without_losing_an_acknowledged_write() {
    let server = fake_server().await;
    let store = store_on(backend(&server, "faults", 2).await).await;
    let other = store_on(backend(&server, "faults", 2).await).await;
    let faults = [
        Fault::InternalError,
        Fault::TooManyRequests {
            retry_after: Duration::from_secs(1),
        },
        Fault::Conflict,
        // Longer than the backend's 2 s request timeout.
        Fault::Hang(Duration::from_secs(5)),
    ];
    for (i, fault) in faults.into_iter().enumerate() {
        server.fail_next(2, fault);
        store
            .set_and_wait(format!("after-fault-{i}"), &i)
            .await
            .unwrap_or_else(|e| panic!("write after fault {i}: {e}"));
    }
    server.drop_watches();
    store
        .set_and_wait("after-drop", &1)
        .await
        .expect("after dropped watches");
    server.set_latency(Duration::from_millis(20));
    store.set_and_wait("slow", &1).await.expect("on a slow API");
    server.set_latency(Duration::ZERO);
    server.restart().await.expect("restart");
    store
        .set_and_wait("after-restart", &1)
        .await
        .expect("after a restart");
    eventually("the other replica to converge", || {
        other.snapshot().entries == store.snapshot().entries
    })
    .await;
    assert_eq!(other.len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_store_object_is_recreated_and_its_keys_read_as_removed() {
    let server = fake_server().await;
    let backend = backend(&server, "deleted", 1).await;
    let store = store_on(backend).await;
    store.set_and_wait("k", &1).await.expect("set");
    let mut changes = store.subscribe();
    let api: Api<DynamicObject> = Api::namespaced_with(
        server.client().expect("client"),
        "default",
        &store_shard_resource(),
    );
    api.delete("deleted-0", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("the key to read as removed", || {
        matches!(store.get::<i32>("k"), Ok(None))
    })
    .await;
    let removal = tokio::time::timeout(
        Duration::from_secs(30),
        futures_util::StreamExt::next(&mut changes),
    )
    .await
    .expect("a change")
    .expect("open")
    .expect("no lag");
    assert!(removal.is_removal(), "{removal:?}");
    store.set_and_wait("k", &2).await.expect("service goes on");
    let object = api.get("deleted-0").await.expect("recreated");
    assert_eq!(object.data["spec"]["data"]["k"], "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_updating_one_counter_lose_no_increment() {
    let server = fake_server().await;
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(store_on(backend(&server, "counter", 2).await).await);
    }
    let tasks: Vec<_> = replicas
        .iter()
        .map(|store| {
            let store = store.with_timeout(Duration::from_secs(120));
            tokio::spawn(async move {
                for _ in 0..100 {
                    store
                        .update("n", |n: Option<&u64>| n.copied().unwrap_or(0) + 1)
                        .await
                        .expect("update");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    for store in &replicas {
        eventually("every replica to count 300", || {
            store.get::<u64>("n").ok().flatten().as_deref() == Some(&300)
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_mebibytes_fit_over_shards() {
    let server = fake_server().await;
    let backend = KubeBackend::builder(server.client().expect("client"), "big")
        .namespace("default")
        .capacity(64 * 1024 * 1024)
        .build()
        .await
        .expect("backend");
    let store = store_on(backend).await;
    let value = "x".repeat(10 * 1024);
    let count = 5200; // 52 MB of values
    for i in 0..count {
        store.set(format!("blob/{i}"), &value).expect("set");
    }
    store
        .with_timeout(Duration::from_secs(300))
        .flush()
        .await
        .expect("flush");
    let total: usize = store.snapshot().entries.values().map(|v| v.len()).sum();
    assert!(total >= 50 * 1024 * 1024, "{total} bytes stored");
    let reader = store_on(
        KubeBackend::builder(server.client().expect("client"), "big")
            .namespace("default")
            .capacity(64 * 1024 * 1024)
            .build()
            .await
            .expect("backend"),
    )
    .await;
    assert_eq!(reader.len(), count);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_can_never_fit_is_refused_at_the_call() {
    let server = fake_server().await;
    let store = store_on(backend(&server, "too-large", 1).await).await;
    store.set_and_wait("kept", &1).await.expect("set");
    let err = store
        .set("huge", &"x".repeat(2 * 1024 * 1024))
        .expect_err("too large");
    assert!(
        matches!(&err, Error::ValueTooLarge { key, limit, .. } if key == "huge" && *limit < 1_572_864),
        "{err:?}"
    );
    store.flush().await.expect("nothing else affected");
    assert_eq!(store.get::<i32>("kept").expect("get").as_deref(), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_edited_by_hand_give_a_decode_error_for_that_key_only() {
    let server = fake_server().await;
    let store = store_on(backend(&server, "hand-edited", 1).await).await;
    store.set_and_wait("good", &1u32).await.expect("set");
    store.set_and_wait("bad", &2u32).await.expect("set");
    let api: Api<DynamicObject> = Api::namespaced_with(
        server.client().expect("client"),
        "default",
        &store_shard_resource(),
    );
    // The CRD's schema keeps values strings (the API refuses a number), so what
    // a person can break by hand is the text: not JSON, or JSON of another type.
    let patch = json!({"spec": {"data": {"bad": "not json", "number": "7", "stranger": "\"hi\""}}});
    api.patch(
        "hand-edited-0",
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .expect("kubectl-style edit");
    eventually("the edit to arrive", || {
        store.keys().contains(&"stranger".to_owned())
    })
    .await;
    let err = store.get::<u32>("bad").expect_err("not JSON");
    assert!(
        matches!(&err, Error::Decode { key, .. } if key == "bad"),
        "{err:?}"
    );
    assert_eq!(store.get::<u32>("good").expect("get").as_deref(), Some(&1));
    assert_eq!(
        store
            .get::<u32>("number")
            .expect("a bare number is JSON")
            .as_deref(),
        Some(&7)
    );
    store
        .set_and_wait("bad", &3u32)
        .await
        .expect("overwriting a bad value works");
    assert_eq!(store.get::<u32>("bad").expect("get").as_deref(), Some(&3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pepr_layout_is_read_migrated_and_written_as_pepr_does() {
    let server = fake_server().await;
    let client = server.client().expect("client");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let namespace =
        serde_json::from_value(json!({"metadata": {"name": "pepr-system"}})).expect("namespace");
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .expect("pepr-system created");
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "pepr-system", &pepr_store_resource());
    // An object as TypeScript Pepr leaves it: the placeholder, v2 keys (raw, with
    // `/` and `~` in them), a v1 key, and a capability whose name `hello` prefixes.
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "pepr.dev/v1",
        "kind": "PeprStore",
        "metadata": { "name": "pepr-static-test-store", "namespace": "pepr-system", "labels": { "pepr.dev-cacheID": "1" } },
        "data": {
            "__pepr_do_not_delete__": "k-thx-bye",
            "hello-v2-https://observed": "yep",
            "hello-v2-a~b": "tilde",
            "hello-legacy": "from-v1",
            "hello-pepr-v2-x": "not hello's",
            "hello-pepr-v2-https://onReady": "not hello's either",
            "hello-v2-json": "{\"n\":1}"
        }
    }))
    .expect("object");
    api.create(&PostParams::default(), &object)
        .await
        .expect("create");

    let backend = KubeBackend::builder(client.clone(), "unused")
        .pepr("static-test", "hello")
        .pepr_capabilities(["hello-pepr"])
        .pepr_v1_removal_delay(Duration::ZERO)
        .build()
        .await
        .expect("backend");
    let store = store_on(backend).await;
    let mut keys = store.keys();
    keys.sort();
    assert_eq!(keys, ["a~b", "https://observed", "json", "legacy"]);
    assert_eq!(
        store
            .get::<String>("https://observed")
            .expect("get")
            .as_deref()
            .map(String::as_str),
        Some("yep")
    );
    assert_eq!(
        store
            .get::<String>("legacy")
            .expect("get")
            .as_deref()
            .map(String::as_str),
        Some("from-v1")
    );
    #[derive(serde::Deserialize)]
    struct N {
        n: u32,
    }
    assert_eq!(
        store
            .get::<N>("json")
            .expect("structured text decodes")
            .map(|v| v.n),
        Some(1)
    );

    store
        .set_and_wait("https://sync", "yep")
        .await
        .expect("set");
    store.remove_and_wait("a~b").await.expect("remove");
    let data: BTreeMap<String, String> = serde_json::from_value(
        api.get("pepr-static-test-store").await.expect("get").data["data"].clone(),
    )
    .expect("a string map, as Pepr reads it");
    assert_eq!(
        data.get("hello-v2-https://sync").map(String::as_str),
        Some("yep")
    );
    assert_eq!(
        data.get("hello-v2-legacy").map(String::as_str),
        Some("from-v1")
    );
    let gone = || async {
        let object = api.get("pepr-static-test-store").await.expect("get");
        object.data["data"].get("hello-legacy").is_none()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !gone().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the v1 original is removed after the delay"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!data.contains_key("hello-v2-a~b"));
    assert_eq!(
        data.get("hello-pepr-v2-x").map(String::as_str),
        Some("not hello's")
    );
    assert!(
        data.contains_key("hello-pepr-v2-https://onReady"),
        "never migrated into hello"
    );
    assert_eq!(
        data.get("__pepr_do_not_delete__").map(String::as_str),
        Some("k-thx-bye")
    );

    store.clear().await.expect("clear");
    let data = api.get("pepr-static-test-store").await.expect("get").data["data"].clone();
    assert!(
        data.get("hello-pepr-v2-x").is_some(),
        "clear leaves other capabilities alone"
    );
    assert!(data.get("__pepr_do_not_delete__").is_some());
    assert!(data.get("hello-v2-https://sync").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_asking_for_another_shard_count_is_refused() {
    let server = fake_server().await;
    let _first = backend(&server, "shards", 4).await;
    let err = KubeBackend::builder(server.client().expect("client"), "shards")
        .namespace("default")
        .shards(2)
        .build()
        .await
        .expect_err("shard count differs");
    assert!(err.to_string().contains("4 shards"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_and_wait_returns_once_acknowledged_not_after_a_debounce() {
    let server = fake_server().await;
    let store = store_on(backend(&server, "latency", 1).await).await;
    let started = std::time::Instant::now();
    let version = store.set_and_wait("k", &1).await.expect("set");
    // The version is the object's resourceVersion, which the view shows at once.
    assert_eq!(
        store
            .get_versioned::<i32>("k")
            .expect("get")
            .map(|v| v.version),
        Some(version)
    );
    assert!(version > Version(0));
    // A generous bound that no interval or debounce design meets (Pepr: 4 s + 1 s).
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

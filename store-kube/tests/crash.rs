//! The API server restarting, and replicas stopping, in the middle of a flush:
//! every write acknowledged (by `set_and_wait`, or a `flush` that returned
//! `Ok` after it was queued) is on the server afterwards, as a fresh replica
//! reads it; a write only queued may be lost; nothing else appears.

mod support;

use std::time::Duration;

use store_core::Store;
use store_kube::KubeBackend;
use store_kube::layout::Layout;
use store_kube_testing::{FakeApiServer, Fault, FaultRule, Verb};
use support::fake_server;

const SHARDS: u32 = 2;

/// A replica with a client of its own.
async fn replica(server: &FakeApiServer, store: &str) -> Store {
    let backend = KubeBackend::builder(server.client().expect("client"), store)
        .namespace("default")
        .shards(SHARDS)
        .request_timeout(Duration::from_secs(10))
        .build()
        .await
        .expect("backend starts");
    Store::builder()
        .backend(backend)
        .linked_hooks(false)
        .timeout(Duration::from_secs(30))
        .retry_backoff(Duration::from_millis(5), Duration::from_millis(200))
        .open()
        .await
        .expect("store starts")
}

fn value(store: &Store, key: &str) -> Option<u32> {
    store.get::<u32>(key).expect("a number").as_deref().copied()
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A key of `store` that lives in shard `shard`.
fn key_in_shard(store: &str, shard: usize, stem: &str) -> String {
    let layout = Layout::Native {
        store: store.to_owned(),
        shards: SHARDS,
    };
    (0..)
        .map(|i| format!("{stem}-{i}"))
        .find(|key| layout.shard_of(key) == shard)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_held_by_a_paused_api_that_restarts_land_once_it_is_back() {
    let server = fake_server().await;
    let store = replica(&server, "paused").await;
    store
        .set_and_wait("before", &1)
        .await
        .expect("set_and_wait");

    server.pause();
    store.set("queued-a", &2).expect("set");
    store.set("queued-b", &3).expect("set");
    let waited = tokio::spawn({
        let store = store.clone();
        async move { store.set_and_wait("waited", &4).await }
    });
    let flushed = tokio::spawn({
        let store = store.clone();
        async move { store.flush().await }
    });
    until("the flush to reach the paused API", || {
        server.paused_requests() > 0
    })
    .await;
    // The held requests die with their connections; nothing of them was applied.
    server.restart().await.expect("restart");
    server.resume();

    waited
        .await
        .expect("task")
        .expect("set_and_wait survives the restart");
    flushed
        .await
        .expect("task")
        .expect("flush survives the restart");
    store
        .set_and_wait("after", &5)
        .await
        .expect("set_and_wait after the restart");

    let fresh = replica(&server, "paused").await;
    for (key, expected) in [
        ("before", 1),
        ("queued-a", 2),
        ("queued-b", 3),
        ("waited", 4),
        ("after", 5),
    ] {
        assert_eq!(value(&fresh, key), Some(expected), "{key}");
    }
    assert_eq!(fresh.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_half_applied_when_the_api_restarts_is_completed_once_it_is_back() {
    let server = fake_server().await;
    let store = replica(&server, "halves").await;
    let observer = replica(&server, "halves").await;
    let first = key_in_shard("halves", 0, "first");
    let second = key_in_shard("halves", 1, "second");
    store.set_and_wait(&second, &1).await.expect("set_and_wait");

    // The patch to shard 1 hangs (unprocessed) while shard 0's goes through.
    server.inject(
        FaultRule::new(Fault::Hang(Duration::from_secs(60)))
            .verb(Verb::Patch)
            .path_contains("/halves-1"),
    );
    store.set(&first, &2).expect("set");
    store.set(&second, &3).expect("set");
    let flushed = tokio::spawn({
        let store = store.clone();
        async move { store.flush().await }
    });
    until("shard 0's half to land", || {
        value(&observer, &first) == Some(2)
    })
    .await;
    assert_eq!(value(&observer, &second), Some(1), "shard 1's half is held");
    // The hung patch dies with its connection; the batch is sent again whole.
    server.clear_faults();
    server.restart().await.expect("restart");
    flushed
        .await
        .expect("task")
        .expect("flush survives the restart");

    let fresh = replica(&server, "halves").await;
    assert_eq!(value(&fresh, &first), Some(2));
    assert_eq!(value(&fresh, &second), Some(3));
    until("the observer to catch up", || {
        value(&observer, &second) == Some(3)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_stops_mid_flush_loses_only_what_was_never_acknowledged() {
    let server = fake_server().await;
    let store = replica(&server, "stopped").await;
    store
        .set_and_wait("waited", &1)
        .await
        .expect("set_and_wait");
    store.set("flushed", &2).expect("set");
    store.flush().await.expect("flush");
    store
        .update("counted", |n: Option<&u32>| n.copied().unwrap_or(0) + 3)
        .await
        .expect("update");

    server.pause();
    store.set("queued", &4).expect("set");
    store
        .set("waited", &5)
        .expect("an acknowledged key overwritten, queued");
    store
        .remove("flushed")
        .expect("an acknowledged key removed, queued");
    until("the flush to reach the paused API", || {
        server.paused_requests() > 0
    })
    .await;
    // The process stops: the store and its backend (and its client) go.
    drop(store);
    server.restart().await.expect("restart");
    server.resume();

    let fresh = replica(&server, "stopped").await;
    assert_eq!(value(&fresh, "counted"), Some(3));
    let queued = value(&fresh, "queued");
    assert!(matches!(queued, None | Some(4)), "{queued:?}");
    let waited = value(&fresh, "waited");
    assert!(matches!(waited, Some(1 | 5)), "{waited:?}");
    let flushed = value(&fresh, "flushed");
    assert!(matches!(flushed, None | Some(2)), "{flushed:?}");
    // Nothing appears that was never written.
    for key in fresh.keys() {
        assert!(
            ["counted", "queued", "waited", "flushed"].contains(&key.as_str()),
            "{key}"
        );
    }
}

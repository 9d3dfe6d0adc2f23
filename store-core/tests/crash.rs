//! Stores that stop without flushing: what was acknowledged stays, what was
//! only queued may be lost, and nothing else appears.
//!
//! Acknowledged means confirmed by `set_and_wait`, `remove_and_wait`,
//! `update`, `compare_and_set`, `clear`, or a `flush` or `close` that returned
//! `Ok` after the write was queued. A store whose last handle is dropped gives
//! its queued writes one attempt in the background and no more.

use std::time::Duration;

use store_conformance::Gated;
use store_core::{Backend, Error, MemoryBackend, Store};

async fn open(backend: impl Backend) -> Store {
    Store::builder()
        .backend(backend)
        .linked_hooks(false)
        .timeout(Duration::from_secs(10))
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(20))
        .open()
        .await
        .expect("store starts")
}

/// The value a fresh store on `backend` reads at `key`.
async fn stored(backend: &MemoryBackend, key: &str) -> Option<u32> {
    backend
        .read(key)
        .await
        .expect("read")
        .map(|entry| serde_json::from_str(entry.value().as_str()).expect("a number"))
}

/// Makes writes acknowledged in every way, then leaves more queued behind a
/// closed gate.
async fn acknowledged_then_queued(store: &Store, gate: &Gated<MemoryBackend>) {
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
    store
        .set_and_wait("removed", &4)
        .await
        .expect("set_and_wait");
    store
        .remove_and_wait("removed")
        .await
        .expect("remove_and_wait");
    gate.close();
    store.set("queued", &5).expect("set");
    store
        .set("waited", &6)
        .expect("an acknowledged key overwritten, queued");
    store
        .remove("flushed")
        .expect("an acknowledged key removed, queued");
}

/// Every acknowledged write is there unless a queued write replaced it; each
/// queued write is there or not, never anything else.
async fn check_after_the_stop(backend: &MemoryBackend) {
    assert_eq!(stored(backend, "counted").await, Some(3));
    assert_eq!(stored(backend, "removed").await, None);
    let queued = stored(backend, "queued").await;
    assert!(matches!(queued, None | Some(5)), "{queued:?}");
    let waited = stored(backend, "waited").await;
    assert!(matches!(waited, Some(1 | 6)), "{waited:?}");
    let flushed = stored(backend, "flushed").await;
    assert!(matches!(flushed, None | Some(2)), "{flushed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_dropped_without_flushing_keeps_every_acknowledged_write() {
    let memory = MemoryBackend::new();
    let gate = Gated::new(memory.clone());
    let store = open(gate.clone()).await;
    acknowledged_then_queued(&store, &gate).await;
    drop(store);
    gate.open();
    // The queued batch was already in flight: its one attempt goes through the
    // open gate. A fresh store sees the same as the backend.
    let fresh = open(memory.clone()).await;
    check_after_the_stop(&memory).await;
    assert_eq!(
        fresh.get::<u32>("counted").expect("get").as_deref(),
        Some(&3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_dropped_while_its_last_attempt_fails_loses_only_queued_writes() {
    let memory = MemoryBackend::new();
    let gate = Gated::new(memory.clone());
    let store = open(gate.clone()).await;
    acknowledged_then_queued(&store, &gate).await;
    gate.fail_next(1);
    drop(store);
    gate.open();
    // The one attempt fails and is not retried once the store stopped.
    check_after_the_stop(&memory).await;
    let fresh = open(memory.clone()).await;
    assert_eq!(
        fresh.get::<u32>("counted").expect("get").as_deref(),
        Some(&3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_closed_while_a_write_waits_reports_it_closed_or_acknowledged() {
    let memory = MemoryBackend::new();
    let gate = Gated::new(memory.clone());
    let store = open(gate.clone()).await;
    gate.close();
    let waiting = tokio::spawn({
        let store = store.clone();
        async move { store.set_and_wait("k", &7).await }
    });
    // The write must be queued before the close starts, or close finds nothing
    // to wait for.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.snapshot().pending == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the write was never queued"
        );
        tokio::task::yield_now().await;
    }
    let closing = tokio::spawn({
        let store = store.with_timeout(Duration::from_millis(50));
        async move { store.close().await }
    });
    let closed = closing.await.expect("task");
    assert!(matches!(closed, Err(Error::Timeout { .. })), "{closed:?}");
    gate.open();
    let outcome = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiter is answered")
        .expect("task");
    match outcome {
        Ok(_) => assert_eq!(stored(&memory, "k").await, Some(7)),
        Err(Error::Closed) => {
            let k = stored(&memory, "k").await;
            assert!(matches!(k, None | Some(7)), "{k:?}");
        }
        Err(other) => panic!("neither acknowledged nor closed: {other:?}"),
    }
    assert!(matches!(store.set("k", &8), Err(Error::Closed)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_that_returns_ok_has_landed_every_queued_write() {
    let memory = MemoryBackend::new();
    let gate = Gated::new(memory.clone());
    let store = open(gate.clone()).await;
    gate.fail_next(2);
    for i in 0..20u32 {
        store.set(format!("k{i}"), &i).expect("set");
    }
    store.remove("k3").expect("remove");
    store
        .close()
        .await
        .expect("close flushes through transient failures");
    for i in 0..20u32 {
        let expected = (i != 3).then_some(i);
        assert_eq!(stored(&memory, &format!("k{i}")).await, expected, "k{i}");
    }
}

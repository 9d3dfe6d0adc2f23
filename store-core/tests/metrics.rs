//! The figures a store exports through the `metrics` facade, read back from a
//! recorder installed while the store starts.

use std::time::Duration;

use store_conformance::Gated;
use store_conformance::figures::Figures;
use store_conformance::support::eventually;
use store_core::metrics::{
    BATCH_DURATION, BATCH_SIZE, BATCHES, CONFLICTS, READY, RETRIES, SET_AND_WAIT_DURATION,
    VIEW_LAG, WATCH_GAPS, WRITE_QUEUE_DEPTH, WRITES_QUEUED,
};
use store_core::{Backend, Error, MemoryBackend, Precondition, Store};

/// Opens a store named `name` whose figures go to `figures`.
async fn open(figures: &Figures, name: &str, backend: impl Backend) -> Store {
    let store = {
        let _installed = figures.install();
        Store::builder()
            .backend(backend)
            .name(name)
            .linked_hooks(false)
            .timeout(Duration::from_secs(10))
            .start()
    };
    store.ready().await.expect("store starts");
    store
}

#[tokio::test]
async fn sets_are_counted_when_queued_and_their_batches_add_up_to_them() {
    let figures = Figures::new();
    let store = open(&figures, "counted", MemoryBackend::new()).await;
    let this = [("store", "counted"), ("backend", "memory")];
    assert_eq!(figures.gauge(READY, &this), Some(1.0));

    for i in 0..200 {
        store.set(format!("key-{i}").as_str(), &i).expect("set");
    }
    store.remove("never-set").expect("remove");
    store.flush().await.expect("flush");

    assert_eq!(figures.counter(WRITES_QUEUED, &[("kind", "set")]), 200);
    assert_eq!(figures.counter(WRITES_QUEUED, &[("kind", "remove")]), 1);
    let sizes = figures.histogram(BATCH_SIZE, &this);
    assert_eq!(sizes.iter().sum::<f64>(), 201.0, "batch sizes {sizes:?}");
    let batches = u64::try_from(sizes.len()).expect("a count");
    assert_eq!(figures.counter(BATCHES, &[("outcome", "applied")]), batches);
    assert_eq!(figures.counter(BATCHES, &[("outcome", "failed")]), 0);
    assert_eq!(figures.histogram(BATCH_DURATION, &this).len(), sizes.len());
    assert_eq!(figures.gauge(WRITE_QUEUE_DEPTH, &this), Some(0.0));
    assert_eq!(
        figures.histogram(VIEW_LAG, &this).len(),
        sizes.len(),
        "one lag per acknowledged batch"
    );

    store
        .set_and_wait("waited", &1)
        .await
        .expect("set_and_wait");
    let waits = figures.histogram(SET_AND_WAIT_DURATION, &this);
    assert_eq!(waits.len(), 1);
    assert!(waits[0] > 0.0 && waits[0] < 10.0, "{waits:?}");

    store.close().await.expect("close");
    assert_eq!(figures.gauge(READY, &this), Some(0.0));
}

#[tokio::test]
async fn a_refused_compare_and_set_counts_one_conflict() {
    let figures = Figures::new();
    let store = open(&figures, "cas", MemoryBackend::new()).await;
    store.set_and_wait("taken", &1).await.expect("set");
    assert_eq!(figures.counter(CONFLICTS, &[("store", "cas")]), 0);

    let refused = store
        .compare_and_set("taken", Precondition::Absent, &2)
        .await;
    assert!(
        matches!(refused, Err(Error::Conflict { .. })),
        "{refused:?}"
    );

    assert_eq!(figures.counter(CONFLICTS, &[("store", "cas")]), 1);
    assert_eq!(
        figures.counter(WRITES_QUEUED, &[("store", "cas"), ("kind", "conditional")]),
        1
    );
}

#[tokio::test]
async fn an_update_that_loses_a_race_counts_a_conflict_and_a_retry() {
    let figures = Figures::new();
    let backend = MemoryBackend::new();
    let gated = Gated::new(backend.clone());
    let updater = open(&figures, "updater", gated.clone()).await;
    let other = open(&figures, "other", backend).await;
    other.set_and_wait("n", &1u32).await.expect("set");
    eventually("the updater to see n", || {
        updater.get::<u32>("n").ok().flatten().is_some()
    })
    .await;

    gated.close();
    let update = tokio::spawn({
        let updater = updater.clone();
        async move {
            updater
                .update("n", |n: Option<&u32>| n.copied().unwrap_or(0) + 10)
                .await
        }
    });
    eventually("the update's write to be queued", || {
        figures.counter(
            WRITES_QUEUED,
            &[("store", "updater"), ("kind", "conditional")],
        ) == 1
    })
    .await;
    other
        .set_and_wait("n", &2u32)
        .await
        .expect("the other write");
    gated.open();

    let updated = update.await.expect("joins").expect("update");
    assert_eq!(*updated.value, 12);
    assert_eq!(figures.counter(CONFLICTS, &[("store", "updater")]), 1);
    assert_eq!(
        figures.counter(RETRIES, &[("store", "updater"), ("reason", "conflict")]),
        1
    );
    assert_eq!(figures.counter(CONFLICTS, &[("store", "other")]), 0);
}

#[tokio::test]
async fn a_transient_failure_counts_one_retry_and_the_batch_once() {
    let figures = Figures::new();
    let gated = Gated::new(MemoryBackend::new());
    let store = open(&figures, "flaky", gated.clone()).await;

    gated.fail_next(1);
    store
        .set_and_wait("k", &1)
        .await
        .expect("set after a retry");

    let this = [("store", "flaky")];
    assert_eq!(
        figures.counter(RETRIES, &[("store", "flaky"), ("reason", "transient")]),
        1
    );
    assert_eq!(figures.counter(BATCHES, &this), 1);
    assert_eq!(figures.histogram(BATCH_SIZE, &this), [1.0]);
}

#[tokio::test]
async fn a_compacted_history_counts_one_gap() {
    let figures = Figures::new();
    let backend = MemoryBackend::with_history(4);
    let compacting = Gated::new(backend.clone());
    let reader = open(&figures, "reader", compacting.clone()).await;
    let writer = open(&figures, "writer", backend).await;
    assert_eq!(figures.counter(WATCH_GAPS, &[]), 0);

    compacting.compact().await.expect("compact");
    writer.set_and_wait("after", &1).await.expect("set");

    eventually("the reader to count the gap", || {
        figures.counter(WATCH_GAPS, &[("store", "reader")]) >= 1
    })
    .await;
    eventually("the reader to re-list", || {
        reader.get::<i32>("after").ok().flatten().is_some()
    })
    .await;
    assert_eq!(figures.counter(WATCH_GAPS, &[("store", "reader")]), 1);
    assert_eq!(figures.counter(WATCH_GAPS, &[("store", "writer")]), 0);
}

#[tokio::test]
async fn stores_sharing_a_label_add_up() {
    let figures = Figures::new();
    let backend = MemoryBackend::new();
    let open_shared = |name: &'static str| {
        let _installed = figures.install();
        Store::builder()
            .backend(backend.clone())
            .name(name)
            .metrics_label("shared")
            .linked_hooks(false)
            .start()
    };
    let (a, b) = (open_shared("a"), open_shared("b"));
    a.ready().await.expect("a starts");
    b.ready().await.expect("b starts");
    let shared = [("store", "shared"), ("backend", "memory")];
    assert_eq!(figures.gauge(READY, &shared), Some(2.0));

    a.set("x", &1).expect("set");
    b.set("y", &1).expect("set");
    b.set("z", &1).expect("set");
    a.flush().await.expect("flush");
    b.flush().await.expect("flush");
    assert_eq!(figures.counter(WRITES_QUEUED, &shared), 3);
    assert_eq!(figures.gauge(WRITE_QUEUE_DEPTH, &shared), Some(0.0));
    assert!(figures.label_values(WRITES_QUEUED, "store") == ["shared"]);

    a.close().await.expect("close");
    assert_eq!(figures.gauge(READY, &shared), Some(1.0));
    drop(b);
    eventually("the dropped store to stop counting", || {
        figures.gauge(READY, &shared) == Some(0.0)
    })
    .await;
}

#[tokio::test]
async fn the_queue_depth_counts_writes_waiting_behind_a_batch_in_flight() {
    let figures = Figures::new();
    let gated = Gated::new(MemoryBackend::new());
    let store = open(&figures, "depth", gated.clone()).await;
    let this = [("store", "depth")];
    gated.close();
    store.set("first", &0).expect("set");
    eventually("the first write to be taken for sending", || {
        figures.gauge(WRITE_QUEUE_DEPTH, &this) == Some(0.0)
    })
    .await;
    for i in 1..5 {
        store.set(format!("k{i}").as_str(), &i).expect("set");
    }
    store.set("k1", &10).expect("coalesces");
    assert_eq!(figures.gauge(WRITE_QUEUE_DEPTH, &this), Some(4.0));

    gated.open();
    store.flush().await.expect("flush");
    assert_eq!(figures.gauge(WRITE_QUEUE_DEPTH, &this), Some(0.0));
    assert_eq!(figures.counter(WRITES_QUEUED, &this), 6);
    assert_eq!(figures.histogram(BATCH_SIZE, &this), [1.0, 4.0]);
}

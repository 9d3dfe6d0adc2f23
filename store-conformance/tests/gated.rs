//! The fault layer on the memory backend: what each fault does to the calls
//! and watches that pass through it.

use futures_util::StreamExt;
use store_conformance::Gated;
use store_core::backend::{Batch, Op, WatchEvent};
use store_core::{Backend, Error, MemoryBackend, Payload, Revision};

fn put(key: &str) -> Batch {
    Batch {
        ops: vec![Op::put(key, Payload::from("1"))],
        atomic: false,
    }
}

#[tokio::test]
async fn compaction_ends_open_watches_with_a_gap() {
    let backend = Gated::new(MemoryBackend::new());
    let mut watch = backend.watch(Revision(0)).await.expect("watch");
    backend.compact().await.expect("compact");
    assert_eq!(
        watch.next().await.and_then(Result::ok),
        Some(WatchEvent::Gap)
    );
    assert!(watch.next().await.is_none(), "the watch ends after its gap");
}

#[tokio::test]
async fn a_watch_from_before_a_compaction_gets_a_gap_and_one_from_after_it_follows_on() {
    let backend = Gated::new(MemoryBackend::new());
    backend.apply(put("a")).await.expect("apply");
    backend.compact().await.expect("compact");
    let mut old = backend.watch(Revision(0)).await.expect("watch");
    assert_eq!(old.next().await.and_then(Result::ok), Some(WatchEvent::Gap));
    let current = backend.list("").await.expect("list").revision;
    let mut new = backend.watch(current).await.expect("watch");
    let applied = backend.apply(put("b")).await.expect("apply");
    match new.next().await {
        Some(Ok(WatchEvent::Changes {
            revision, changes, ..
        })) => {
            assert_eq!(revision, applied.revision);
            assert_eq!(changes[0].key(), "b");
        }
        other => panic!("expected the change to b, got {other:?}"),
    }
}

#[tokio::test]
async fn injected_failures_apply_nothing_and_then_stop() {
    let backend = Gated::new(MemoryBackend::new());
    backend.fail_next(2);
    for _ in 0..2 {
        let error = backend.apply(put("a")).await.expect_err("fails");
        assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
    }
    assert!(backend.read("a").await.expect("read").is_none());
    backend
        .apply(put("a"))
        .await
        .expect("the third batch applies");
    assert!(backend.read("a").await.expect("read").is_some());
}

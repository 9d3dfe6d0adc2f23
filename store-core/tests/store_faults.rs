//! Store behaviour under backend faults the conformance suite cannot force on
//! every backend: compacted history, lost answers, a backend that breaks the
//! contract.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use store_conformance::Gated;
use store_conformance::support::eventually;
use store_core::backend::{Applied, Batch, Entry, Listing, Outcome, WatchStream};
use store_core::{Backend, Capabilities, Error, MemoryBackend, Result, Revision, Store};

async fn open(backend: impl Backend) -> Store {
    Store::builder()
        .backend(backend)
        .linked_hooks(false)
        .timeout(Duration::from_secs(10))
        .open()
        .await
        .expect("store starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_history_makes_the_store_relist_and_tell_subscribers() {
    let backend = MemoryBackend::with_history(4);
    let compacting = Gated::new(backend.clone());
    let reader = open(compacting.clone()).await;
    let writer = open(backend.clone()).await;
    writer.set_and_wait("kept", &1).await.expect("set");
    writer.set_and_wait("removed", &1).await.expect("set");
    eventually("the reader to see both keys", || reader.len() == 2).await;
    let mut changes = reader.subscribe();

    compacting.compact().await.expect("compact");
    writer.remove_and_wait("removed").await.expect("remove");
    writer.set_and_wait("added", &2).await.expect("set");

    eventually("the reader to re-list", || {
        reader.keys() == ["added".to_owned(), "kept".to_owned()]
    })
    .await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(10), changes.next())
            .await
            .expect("a change")
            .expect("open")
            .expect("no lag");
        seen.push((event.key().to_owned(), event.is_removal()));
    }
    seen.sort();
    assert_eq!(
        seen,
        [("added".to_owned(), false), ("removed".to_owned(), true)]
    );
}

/// Applies every batch but loses the answer of the first `lose` of them.
#[derive(Clone)]
struct LosesAnswers {
    inner: MemoryBackend,
    lose: Arc<AtomicUsize>,
}

impl Backend for LosesAnswers {
    fn name(&self) -> &'static str {
        "loses-answers"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn read(&self, key: &str) -> impl Future<Output = Result<Option<Entry>>> + Send {
        self.inner.read(key)
    }
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Listing>> + Send {
        self.inner.list(prefix)
    }
    async fn apply(&self, batch: Batch) -> Result<Applied> {
        let applied = self.inner.apply(batch).await?;
        let lost = self
            .lose
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if lost {
            Err(Error::unavailable(
                "loses-answers",
                "connection reset after the write",
            ))
        } else {
            Ok(applied)
        }
    }
    fn watch(&self, from: Revision) -> impl Future<Output = Result<WatchStream>> + Send {
        self.inner.watch(from)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conditional_write_whose_answer_was_lost_says_its_outcome_is_unknown_and_applies_once() {
    let backend = LosesAnswers {
        inner: MemoryBackend::new(),
        lose: Arc::new(AtomicUsize::new(0)),
    };
    let store = open(backend.clone()).await;
    store.set_and_wait("n", &1u32).await.expect("set");
    backend.lose.store(1, Ordering::SeqCst);
    let updated = store
        .update("n", |n: Option<&u32>| n.copied().unwrap_or(0) + 1)
        .await;
    // The retry conflicts with the first attempt's own write, which the store
    // cannot tell from another writer's: it says so rather than guess either way.
    assert!(
        matches!(&updated, Err(Error::OutcomeUnknown { key, .. }) if key == "n"),
        "{updated:?}"
    );
    let entry = backend.inner.read("n").await.expect("read").expect("n");
    assert_eq!(entry.value().as_str(), "2", "applied once, not run again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_write_whose_answer_was_lost_is_retried_and_lands_once() {
    let backend = LosesAnswers {
        inner: MemoryBackend::new(),
        lose: Arc::new(AtomicUsize::new(2)),
    };
    let store = open(backend.clone()).await;
    let version = store.set_and_wait("k", &"v").await.expect("lands");
    let stored = backend
        .inner
        .read("k")
        .await
        .expect("read")
        .expect("present");
    assert_eq!(
        (stored.value().as_str(), stored.version()),
        ("\"v\"", version)
    );
}

/// Answers with the wrong number of outcomes.
struct BreaksContract(MemoryBackend);

impl Backend for BreaksContract {
    fn name(&self) -> &'static str {
        "breaks-contract"
    }
    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }
    fn read(&self, key: &str) -> impl Future<Output = Result<Option<Entry>>> + Send {
        self.0.read(key)
    }
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Listing>> + Send {
        self.0.list(prefix)
    }
    async fn apply(&self, _batch: Batch) -> Result<Applied> {
        Ok(Applied {
            revision: Revision(0),
            outcomes: vec![Outcome::Aborted; 3],
        })
    }
    fn watch(&self, from: Revision) -> impl Future<Output = Result<WatchStream>> + Send {
        self.0.watch(from)
    }
}

#[tokio::test]
async fn a_backend_that_breaks_the_contract_gives_a_typed_error_not_a_panic() {
    let store = open(BreaksContract(MemoryBackend::new())).await;
    let err = store.set_and_wait("k", &1).await.expect_err("bad answer");
    assert!(
        matches!(
            err,
            Error::Backend {
                backend: "breaks-contract",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        store.get::<i32>("k").expect("get"),
        None,
        "the failed write is not shown"
    );
}

#[tokio::test]
async fn a_failed_plain_write_is_reported_by_the_next_flush() {
    let store = open(BreaksContract(MemoryBackend::new())).await;
    store.set("k", &1).expect("queued");
    let err = store.flush().await.expect_err("the write failed");
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    store.flush().await.expect("reported once");
}

#[tokio::test]
async fn dropping_every_handle_stops_the_store_and_ends_subscriptions() {
    let store = open(MemoryBackend::new()).await;
    let mut changes = store.subscribe();
    drop(store);
    let end = tokio::time::timeout(Duration::from_secs(10), changes.next())
        .await
        .expect("the stream ends");
    assert!(end.is_none());
}

#[tokio::test]
async fn a_store_dropped_without_flushing_sends_its_queued_writes_once() {
    let backend = MemoryBackend::new();
    let store = open(backend.clone()).await;
    store.set("late", &1).expect("queued");
    drop(store);
    let mut changes = backend.watch(Revision(0)).await.expect("watch");
    let event = tokio::time::timeout(Duration::from_secs(10), changes.next())
        .await
        .expect("the last batch goes out");
    assert!(event.is_some());
    assert!(backend.read("late").await.expect("read").is_some());
}

/// Refuses for good every write to a key starting with `refused`, as a server's
/// validation would, and applies the others of the same batch.
#[derive(Clone)]
struct RefusesKeys(MemoryBackend);

impl RefusesKeys {
    fn refuses(key: &str) -> bool {
        key.starts_with("refused")
    }
}

impl Backend for RefusesKeys {
    fn name(&self) -> &'static str {
        "refuses-keys"
    }
    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }
    fn read(&self, key: &str) -> impl Future<Output = Result<Option<Entry>>> + Send {
        self.0.read(key)
    }
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Listing>> + Send {
        self.0.list(prefix)
    }
    async fn apply(&self, batch: Batch) -> Result<Applied> {
        let (refused, accepted): (Vec<_>, Vec<_>) = batch
            .ops
            .into_iter()
            .enumerate()
            .partition(|(_, op)| Self::refuses(&op.key));
        let indices: Vec<usize> = accepted.iter().map(|(i, _)| *i).collect();
        let applied = self
            .0
            .apply(Batch {
                ops: accepted.into_iter().map(|(_, op)| op).collect(),
                atomic: false,
            })
            .await?;
        let mut outcomes: Vec<Option<Outcome>> = vec![None; indices.len() + refused.len()];
        for (index, outcome) in indices.into_iter().zip(applied.outcomes) {
            outcomes[index] = Some(outcome);
        }
        for (index, op) in refused {
            outcomes[index] = Some(Outcome::Failed(Error::Rejected {
                key: op.key,
                reason: "refused by the server's validation".to_owned(),
            }));
        }
        Ok(Applied {
            revision: applied.revision,
            outcomes: outcomes.into_iter().flatten().collect(),
        })
    }
    fn watch(&self, from: Revision) -> impl Future<Output = Result<WatchStream>> + Send {
        self.0.watch(from)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_fails_its_own_caller_at_once_and_holds_up_no_other() {
    let store = open(RefusesKeys(MemoryBackend::new())).await;
    let err = store
        .set_and_wait("refused-empty", &"")
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, Error::Rejected { key, .. } if key == "refused-empty"),
        "{err:?}"
    );
    store
        .set_and_wait("after", &1)
        .await
        .expect("the next write lands");
    assert_eq!(store.get::<i32>("refused-empty").expect("get"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_reports_every_untold_failure_once_naming_every_key() {
    let backend = RefusesKeys(MemoryBackend::new());
    let store = open(backend.clone()).await;
    store.set("refused-1", &1).expect("queued");
    store.set("refused-2", &2).expect("queued");
    store.set("fine", &3).expect("queued");
    let err = store.flush().await.expect_err("two writes failed");
    let Error::WritesFailed { errors, more } = &err else {
        panic!("expected WritesFailed, got {err:?}");
    };
    let keys: Vec<_> = errors.iter().filter_map(Error::key).collect();
    assert_eq!(keys, ["refused-1", "refused-2"]);
    assert_eq!(*more, 0);
    let shown = err.to_string();
    assert!(
        shown.starts_with("2 writes failed") && shown.contains("refused-2"),
        "{shown}"
    );
    assert!(backend.0.read("fine").await.expect("read").is_some());
    store.flush().await.expect("each failure is reported once");

    store.set("refused-3", &1).expect("queued");
    let err = store.flush().await.expect_err("one write failed");
    assert!(
        matches!(&err, Error::Rejected { key, .. } if key == "refused-3"),
        "a single failure keeps its own type: {err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_told_to_its_caller_is_not_raised_again_by_flush_or_close() {
    let store = open(RefusesKeys(MemoryBackend::new())).await;
    store
        .set_and_wait("refused", &1)
        .await
        .expect_err("told to the caller");
    store.flush().await.expect("not raised again by flush");
    store.set("fine", &1).expect("queued");
    store.close().await.expect("nor by close");
}

#[tokio::test(start_paused = true)]
async fn a_write_gap_sends_the_first_write_at_once_and_gathers_the_rest() {
    let gap = Duration::from_millis(1250);
    let store = Store::builder()
        .backend(MemoryBackend::new())
        .linked_hooks(false)
        .min_write_gap(gap)
        .open()
        .await
        .expect("store starts");
    let start = tokio::time::Instant::now();
    store.set_and_wait("a", &1).await.expect("set");
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "the first write goes at once"
    );

    let second = tokio::time::Instant::now();
    for i in 0..10 {
        store.set("b", &i).expect("queued");
    }
    store.set_and_wait("c", &1).await.expect("set");
    assert!(
        second.elapsed() >= gap,
        "the next batch waits out the gap: {:?}",
        second.elapsed()
    );
    assert_eq!(store.get::<i32>("b").expect("get").as_deref(), Some(&9));

    // After a quiet gap, a write goes at once again.
    tokio::time::sleep(gap).await;
    let third = tokio::time::Instant::now();
    store.set_and_wait("d", &1).await.expect("set");
    assert_eq!(third.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn closing_sends_writes_gathering_behind_a_gap_at_once() {
    let store = Store::builder()
        .backend(MemoryBackend::new())
        .linked_hooks(false)
        .min_write_gap(Duration::from_secs(3600))
        .open()
        .await
        .expect("store starts");
    store.set_and_wait("a", &1).await.expect("set");
    store.set("b", &1).expect("queued");
    let start = tokio::time::Instant::now();
    store.close().await.expect("closing sends it");
    assert!(start.elapsed() < Duration::from_secs(3600));
}

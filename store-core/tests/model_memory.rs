//! Model-based test of the memory backend: random calls from three replicas
//! on one backend, with injected failures, held batches and compacted
//! history, checked against `store_conformance::model`.
//!
//! `STORE_MODEL_CASES` sets the number of cases (default 64) and
//! `PROPTEST_RNG_SEED` repeats a run; the summary line starts with `model:`.

use store_conformance::model::{self, MemoryModel, Runner};

#[test]
fn memory_replicas_agree_with_the_model_under_faults() {
    Runner::new(async || MemoryModel).run(model::cases(64), 256);
}

// Deviations the model found, replayed step by step, each with the
// documented behaviour the fix restored.

mod scripted {
    use std::future::Future;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::StreamExt;
    use store_core::backend::{Applied, Batch, Entry, Listing, WatchStream};
    use store_core::{Backend, Capabilities, Error, MemoryBackend, Result, Revision};
    use tokio::sync::watch;

    /// A memory backend whose batches, reads and watch events a test holds and
    /// fails on command, to replay one interleaving of a store's tasks.
    #[derive(Clone, Default)]
    pub(crate) struct Scripted {
        pub(crate) inner: MemoryBackend,
        switches: Arc<Switches>,
    }

    #[derive(Default)]
    struct Switches {
        hold_applies: watch::Sender<bool>,
        applies_entered: AtomicUsize,
        fail_next: AtomicUsize,
        refuse_next: AtomicUsize,
        fail_next_multi: AtomicUsize,
        hold_watch: watch::Sender<bool>,
        lists: AtomicUsize,
    }

    fn take_one(counter: &AtomicUsize) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    async fn wait_open(switch: &watch::Sender<bool>) {
        let mut held = switch.subscribe();
        // The sender outlives the wait: it lives in the backend.
        let _ = held.wait_for(|held| !held).await;
    }

    impl Scripted {
        pub(crate) fn hold_applies(&self, held: bool) {
            self.switches.hold_applies.send_replace(held);
        }
        pub(crate) fn applies_entered(&self) -> usize {
            self.switches.applies_entered.load(Ordering::SeqCst)
        }
        /// Fails the next `n` batches, applying nothing.
        pub(crate) fn fail_next(&self, n: usize) {
            self.switches.fail_next.store(n, Ordering::SeqCst);
        }
        /// Fails the next `n` batches, applying nothing, and says so
        /// ([`Error::not_applied`]).
        pub(crate) fn refuse_next(&self, n: usize) {
            self.switches.refuse_next.store(n, Ordering::SeqCst);
        }
        /// Fails the next batch of two or more writes, applying nothing.
        pub(crate) fn fail_next_multi(&self) {
            self.switches.fail_next_multi.store(1, Ordering::SeqCst);
        }
        /// Holds watch events (already open watches included) until released.
        pub(crate) fn hold_watch(&self, held: bool) {
            self.switches.hold_watch.send_replace(held);
        }
        pub(crate) fn lists(&self) -> usize {
            self.switches.lists.load(Ordering::SeqCst)
        }
    }

    impl Backend for Scripted {
        fn name(&self) -> &'static str {
            "scripted"
        }
        fn capabilities(&self) -> Capabilities {
            self.inner.capabilities()
        }
        fn read(&self, key: &str) -> impl Future<Output = Result<Option<Entry>>> + Send {
            self.inner.read(key)
        }
        fn list(&self, prefix: &str) -> impl Future<Output = Result<Listing>> + Send {
            self.switches.lists.fetch_add(1, Ordering::SeqCst);
            self.inner.list(prefix)
        }
        async fn apply(&self, batch: Batch) -> Result<Applied> {
            self.switches.applies_entered.fetch_add(1, Ordering::SeqCst);
            wait_open(&self.switches.hold_applies).await;
            let fail = take_one(&self.switches.fail_next)
                || (batch.ops.len() >= 2 && take_one(&self.switches.fail_next_multi));
            if fail {
                return Err(Error::unavailable("scripted", "injected failure"));
            }
            if take_one(&self.switches.refuse_next) {
                return Err(Error::not_applied("scripted", "injected refusal"));
            }
            self.inner.apply(batch).await
        }
        async fn watch(&self, from: Revision) -> Result<WatchStream> {
            let stream = self.inner.watch(from).await?;
            let switches = Arc::clone(&self.switches);
            Ok(Box::pin(stream.then(move |event| {
                let switches = Arc::clone(&switches);
                async move {
                    wait_open(&switches.hold_watch).await;
                    event
                }
            })))
        }
    }
}

mod deviations {
    use std::time::Duration;

    use futures_util::StreamExt;
    use store_core::{Backend, Error, Precondition, Store};

    use super::scripted::Scripted;
    use store_conformance::support::eventually;

    async fn open(backend: &Scripted) -> Store {
        Store::builder()
            .backend(backend.clone())
            .linked_hooks(false)
            .timeout(Duration::from_secs(10))
            .retry_backoff(Duration::from_millis(1), Duration::from_millis(5))
            .open()
            .await
            .expect("store starts")
    }

    /// A conditional write whose first attempt failed in a way that may have
    /// applied it, and whose retry conflicts, cannot tell its own success from
    /// another's write: it says so ([`Error::OutcomeUnknown`]) instead of
    /// taking the value it finds for its own (once seen by the model as
    /// `misreported_conflict`). A first attempt the backend says applied
    /// nothing keeps the answer definite.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retried_conditional_write_that_conflicts_is_never_taken_for_a_success() {
        let backend = Scripted::default();
        let store = open(&backend).await;
        store.set_and_wait("k", &1).await.expect("set");
        backend.fail_next(1);
        let outcome = store.compare_and_set("k", Precondition::Absent, &1).await;
        assert!(
            matches!(&outcome, Err(Error::OutcomeUnknown { key, expected: Precondition::Absent }) if key == "k"),
            "`k` existed all along, yet a write conditional on its absence answered {outcome:?}"
        );
        backend.refuse_next(1);
        let outcome = store.compare_and_set("k", Precondition::Absent, &1).await;
        assert!(
            matches!(&outcome, Err(Error::Conflict { key, .. }) if key == "k"),
            "a first attempt that applied nothing leaves a definite conflict: {outcome:?}"
        );
    }

    /// The same through `update`, where a guess would lose an increment: an
    /// update computed on a view that has not seen another replica's update
    /// writes the same value, conditional on the key's absence; its first
    /// attempt fails, the retry conflicts. Taken for a success, two increments
    /// from nothing would leave 1; the update ends in `OutcomeUnknown` instead,
    /// and the key holds what the answers say.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_increments_from_two_replicas_count_two_when_an_attempt_fails() {
        let backend = Scripted::default();
        let behind = open(&backend).await;
        let other = Store::builder()
            .backend(backend.inner.clone())
            .linked_hooks(false)
            .open()
            .await
            .expect("store starts");
        let increment = |n: Option<&u32>| n.copied().unwrap_or(0) + 1;
        // `behind` does not hear of the other replica's increment in time.
        backend.hold_watch(true);
        other.update("n", increment).await.expect("update");
        backend.fail_next(1);
        let updating = tokio::spawn({
            let behind = behind.clone();
            async move { behind.update("n", increment).await }
        });
        eventually("the update to end", || updating.is_finished()).await;
        backend.hold_watch(false);
        let outcome = updating.await.expect("task");
        assert!(
            matches!(&outcome, Err(Error::OutcomeUnknown { key, .. }) if key == "n"),
            "{outcome:?}"
        );
        let stored = backend
            .inner
            .read("n")
            .await
            .expect("read")
            .map(|e| e.value().as_str().to_owned());
        assert!(
            outcome.is_err() || stored.as_deref() == Some("2"),
            "both updates were reported, yet `n` holds {stored:?} ({outcome:?})"
        );
    }

    /// Seen by the model as `clear_survivor`. `clear` promises to remove the
    /// writes this handle queued before the call, but it turns only queued
    /// plain writes into removals (`store.rs`, `Store::clear`): a conditional
    /// write still queued (here from an `update` that timed out) lands after
    /// the listing and survives the `clear` that waited for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clear_removes_a_conditional_write_queued_before_it() {
        let backend = Scripted::default();
        let store = open(&backend).await;
        backend.hold_applies(true);
        let timed_out = store
            .with_timeout(Duration::from_millis(50))
            .update("k", |n: Option<&u32>| n.copied().unwrap_or(0) + 1)
            .await;
        assert!(
            matches!(timed_out, Err(Error::Timeout { .. })),
            "{timed_out:?}"
        );
        let lists = backend.lists();
        let clearing = tokio::spawn({
            let store = store.clone();
            async move { store.clear().await }
        });
        // A `clear` that lists before the held write lands does so at once; one
        // that waits for the write first never lists while it is held.
        let listed = async {
            while backend.lists() == lists {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_millis(500), listed).await;
        backend.hold_applies(false);
        clearing.await.expect("task").expect("clear");
        assert_eq!(
            backend
                .inner
                .read("k")
                .await
                .expect("read")
                .map(|e| e.value().clone()),
            None,
            "the update queued before `clear` survived it"
        );
    }

    /// Seen by the model as `stale_after_clear`. `clear` waits for the view to
    /// reach the acknowledgements of the removals it queued (`store.rs`,
    /// `Store::clear`), but not for the revision of the listing it worked from:
    /// when the listing holds nothing to remove, it returns at once, and a view
    /// that is behind still shows keys the listing no longer had. The
    /// conformance suite asserts that the clearing handle sees an empty store.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clear_returns_once_the_clearing_handle_no_longer_shows_what_was_removed() {
        let backend = Scripted::default();
        let clearer = open(&backend).await;
        let writer = Store::builder()
            .backend(backend.inner.clone())
            .linked_hooks(false)
            .open()
            .await
            .expect("store starts");
        writer.set_and_wait("k", &1).await.expect("set");
        eventually("the clearer to see `k`", || {
            clearer.get::<u32>("k").ok().flatten().is_some()
        })
        .await;
        backend.hold_watch(true);
        writer.remove_and_wait("k").await.expect("remove");
        let clearing = tokio::spawn({
            let clearer = clearer.clone();
            async move {
                clearer.clear().await?;
                clearer.get::<u32>("k").map(|v| v.as_deref().copied())
            }
        });
        // A `clear` that waits for its view cannot return while the watch is held.
        let returned = async {
            while !clearing.is_finished() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_millis(500), returned).await;
        backend.hold_watch(false);
        let seen = clearing.await.expect("task").expect("clear");
        assert_eq!(
            seen, None,
            "`clear` returned while its handle still showed `k`"
        );
    }

    /// Seen by the model as `stuck_overlay`, when `settle` read the backend
    /// to resolve an ambiguous conditional write: it took the view's revision
    /// before that read and recorded the batch's plain writes as acknowledged
    /// against it, so a plain write the watch delivered meanwhile stayed
    /// pending. Now an ambiguous conflict is answered without a read; the
    /// batch below (a plain write beside a conditional write whose first
    /// attempt failed and whose retry conflicts) leaves nothing pending.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_acknowledged_write_stops_being_pending_once_the_view_shows_it() {
        let backend = Scripted::default();
        let store = open(&backend).await;
        let mut changes = store.subscribe().key("p");
        store.set_and_wait("c", &0).await.expect("set");

        // One batch holding a plain write and a conditional write that will conflict.
        backend.hold_applies(true);
        let entered = backend.applies_entered();
        store.set("x", &1).expect("set");
        eventually("the flush task to send `x`", || {
            backend.applies_entered() > entered
        })
        .await;
        store.set("p", &1).expect("set");
        let mut conditional = Box::pin(store.compare_and_set("c", Precondition::Absent, &5));
        tokio::select! {
            biased;
            outcome = &mut conditional => panic!("answered while held: {outcome:?}"),
            () = std::future::ready(()) => {}
        }

        // Its first attempt fails, so the conditional write is ambiguous; the
        // retry applies `p` and conflicts on `c` while the watch is held.
        backend.fail_next_multi();
        backend.hold_watch(true);
        backend.hold_applies(false);
        let outcome = conditional.await;
        backend.hold_watch(false);
        let event = tokio::time::timeout(Duration::from_secs(5), changes.next())
            .await
            .expect("the view shows `p`")
            .expect("open")
            .expect("no lag");
        assert_eq!(event.value::<u32>().expect("decodes"), Some(1));
        assert!(
            matches!(&outcome, Err(Error::OutcomeUnknown { key, .. }) if key == "c"),
            "{outcome:?}"
        );
        store.flush().await.expect("flush");
        eventually("no write to show as pending", || {
            store.snapshot().pending == 0
        })
        .await;
    }
}

use super::keys::*;
use super::runner::*;
use super::stats::*;
use super::steps::*;
use super::*;
use store_core::{MemoryBackend, Revision, Store};

#[test]
fn a_queued_write_may_land_before_or_after_a_later_acknowledged_one() {
    let mut key = KeyModel::new(2);
    key.queue(0, Some(1));
    key.acknowledge(1, Some(2));
    assert_eq!(key.possible(), Possible::Values([Some(1), Some(2)].into()));
    key.settle(0);
    assert_eq!(key.possible(), Possible::Values([Some(1), Some(2)].into()));
}

#[test]
fn a_write_queued_after_every_acknowledgement_decides_the_key_once_flushed() {
    let mut key = KeyModel::new(2);
    key.acknowledge(1, Some(2));
    key.queue(0, Some(1));
    key.queue(0, Some(3));
    key.settle(0);
    assert_eq!(key.possible(), Possible::one(Some(3)));
}

#[test]
fn an_acknowledgement_covers_the_replicas_earlier_writes() {
    let mut key = KeyModel::new(2);
    key.queue(0, Some(1));
    key.queue(1, Some(5));
    key.acknowledge(0, Some(2));
    assert_eq!(key.possible(), Possible::Values([Some(2), Some(5)].into()));
}

#[test]
fn a_failed_call_allows_anything_until_its_replica_flushes_and_the_store_is_seen() {
    let mut key = KeyModel::new(2);
    key.unsure(0);
    key.acknowledge(1, Some(2));
    assert_eq!(
        key.possible(),
        Possible::Any,
        "the failed write may land later"
    );
    key.settle(0);
    assert_eq!(key.possible(), Possible::Any);
    key.adopt(Some(7));
    assert_eq!(key.possible(), Possible::one(Some(7)));
}

#[test]
fn decoding_covers_every_kind_and_stays_in_range() {
    let steps: Vec<Step> = (0..=255u8)
        .map(|b| Step::decode(usize::from(b), [b, b, b, b], 2))
        .collect();
    assert!(steps.iter().any(|s| matches!(s, Step::Checkpoint)));
    assert!(
        steps
            .iter()
            .any(|s| matches!(s, Step::Fault { fault: 1, .. }))
    );
    for step in &steps {
        match *step {
            Step::Op { replica, .. } => assert!(replica < REPLICAS),
            Step::Fault { fault, .. } => assert!(fault < 2),
            Step::Checkpoint => {}
        }
    }
    assert_eq!(
        Step::decode(0, [0; 4], 0),
        Step::Op {
            replica: 0,
            op: Op::Set { key: 0, value: 0 }
        }
    );
}

#[test]
fn the_summary_line_lists_every_figure() {
    let stats = Stats {
        cases: 2,
        faults: [("watch_drop", 3)].into(),
        ..Stats::default()
    };
    let line = stats.summary("memory", 7);
    assert!(line.starts_with("model: backend=memory seed=7 cases=2 "));
    assert!(line.contains(" faults=watch_drop:3 "));
    assert!(
        line.ends_with(" ambiguous=0 lost=0 panics=0 failed=0"),
        "{line}"
    );
}

/// Stores on a memory backend that acknowledges writes to `b` without
/// applying them; its one fault panics on a runtime thread.
struct Broken;

struct BrokenCase(Vec<Store>);

#[derive(Clone)]
struct ForgetsB(MemoryBackend);

impl store_core::Backend for ForgetsB {
    fn name(&self) -> &'static str {
        "forgets-b"
    }
    fn capabilities(&self) -> store_core::Capabilities {
        self.0.capabilities()
    }
    fn read(
        &self,
        key: &str,
    ) -> impl Future<Output = store_core::Result<Option<store_core::backend::Entry>>> + Send {
        self.0.read(key)
    }
    fn list(
        &self,
        prefix: &str,
    ) -> impl Future<Output = store_core::Result<store_core::backend::Listing>> + Send {
        self.0.list(prefix)
    }
    async fn apply(
        &self,
        mut batch: store_core::backend::Batch,
    ) -> store_core::Result<store_core::backend::Applied> {
        let count = batch.ops.len();
        batch.ops.retain(|op| op.key != "b");
        let mut applied = self.0.apply(batch).await?;
        let now = store_core::Version(applied.revision.0);
        applied
            .outcomes
            .resize(count, store_core::backend::Outcome::Applied(now));
        Ok(applied)
    }
    fn watch(
        &self,
        from: Revision,
    ) -> impl Future<Output = store_core::Result<store_core::backend::WatchStream>> + Send {
        self.0.watch(from)
    }
}

impl ModelHarness for Broken {
    type Case = BrokenCase;

    fn backend(&self) -> &str {
        "broken"
    }

    fn faults(&self) -> &[&'static str] {
        &["panic"]
    }

    async fn open(&self, replicas: usize) -> BrokenCase {
        let backend = ForgetsB(MemoryBackend::new());
        let mut stores = Vec::new();
        for _ in 0..replicas {
            stores.push(
                Store::builder()
                    .backend(backend.clone())
                    .linked_hooks(false)
                    .open()
                    .await
                    .expect("store starts"),
            );
        }
        BrokenCase(stores)
    }
}

impl ModelCase for BrokenCase {
    fn replicas(&self) -> &[Store] {
        &self.0
    }

    async fn inject(&self, _fault: usize, _replica: usize, _arg: u8) {
        let task = tokio::spawn(async { panic!("a background task broke") });
        let _ = task.await;
    }

    async fn heal(&self) {}
}

#[test]
fn an_acknowledged_write_that_never_landed_fails_the_case() {
    let runner = Runner::new(async || Broken);
    // One step: replica 0 `set_and_wait b = 1`.
    let outcome = runner.case(&[[44, 0, 1, 1]]);
    let error = outcome.expect_err("the write to `b` was acknowledged and lost");
    assert!(error.contains("shows b = absent"), "{error}");
    // One step: replica 0 `set b = 1`, acknowledged by the final checkpoint's
    // flush. The lie shows there, or earlier if the acknowledgement comes
    // before the replica reads its own write back.
    let outcome = runner.case(&[[0, 0, 1, 1]]);
    let error = outcome.expect_err("the write to `b` was flushed and lost");
    assert!(
        error.contains("b holds absent") || error.contains("b shows absent"),
        "{error}"
    );
    assert_eq!(runner.stats().failed, 2);
}

#[test]
fn a_panic_on_a_runtime_thread_fails_the_case() {
    let runner = Runner::new(async || Broken);
    let outcome = runner.case(&[[255, 0, 0, 0]]);
    let error = outcome.expect_err("a task panicked");
    assert!(error.contains("panic"), "{error}");
    assert_eq!(runner.stats().panics, 1);
}

#[test]
fn run_cases_passes_a_holding_property_and_shrinks_a_failing_one() {
    assert_eq!(
        run_cases::<u8>("run_cases test", 7, 8, 16, |_| Ok(())),
        Ok(())
    );

    let shortest = std::cell::Cell::new(usize::MAX);
    let outcome = run_cases::<u8>("run_cases test", 7, 64, 256, |raw| {
        if raw.len() < 3 {
            return Ok(());
        }
        shortest.set(shortest.get().min(raw.len()));
        Err(format!("{} steps", raw.len()))
    });
    let report = outcome.expect_err("a case of three or more steps fails");
    assert!(
        report.contains("3 steps"),
        "shrunk to the shortest: {report}"
    );
    assert_eq!(shortest.get(), 3);
}

//! The flush task: group commit.
//!
//! It sends whatever is queued as soon as the backend is idle, and while a
//! batch is in flight the next one gathers behind it, so by default no fixed
//! interval ever delays a write. Transient failures are retried with
//! exponential backoff and full jitter, the batch kept whole and in order; a
//! permanent failure fails exactly the writes of that batch.
//!
//! With a minimum gap ([`StoreBuilder::min_write_gap`](crate::StoreBuilder::min_write_gap),
//! on by default in the kube backend's Pepr mode) a batch leaves at once after
//! a quiet gap, and otherwise when the gap since the last one is over, so
//! peers that debounce watch events get to apply them.
//!
//! With an interval ([`StoreBuilder::flush_interval`](crate::StoreBuilder::flush_interval))
//! queued writes wait for the next tick of a fixed schedule instead, as Pepr's
//! store sends them; that policy exists only to compare with Pepr's behaviour.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use crate::backend::{Applied, Batch, Outcome, Revision, Version};
use crate::backoff::Backoff;
use crate::error::Error;
use crate::metrics::depth;
use crate::shared::Shared;
use crate::writes::{Ack, Slot};

/// When batches may leave.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pacing {
    /// A fixed schedule (Pepr's own behaviour, for comparison).
    pub(crate) interval: Option<Duration>,
    /// Quiet time to leave between two batches.
    pub(crate) gap: Option<Duration>,
}

pub(crate) async fn run(shared: Arc<Shared>, max_batch: usize, pacing: Pacing) {
    let epoch = Instant::now();
    let mut last_done: Option<Instant> = None;
    loop {
        if let Some(interval) = pacing.interval
            && shared.with_writes(|w| !w.is_empty())
        {
            next_tick(&shared, epoch, interval).await;
            // Everything queued at the tick goes now, in as many batches as it takes.
            let due = shared.with_writes(|w| w.last_seq());
            while let Some(slots) = take(&shared, max_batch) {
                let beyond = slots.iter().any(|s| s.seq > due);
                send(&shared, slots).await;
                if beyond {
                    break;
                }
            }
            continue;
        }
        if let (Some(gap), Some(done)) = (pacing.gap, last_done)
            && shared.with_writes(|w| !w.is_empty())
        {
            // Writes queued meanwhile gather and coalesce until the gap is over.
            until(&shared, done + gap).await;
        }
        if let Some(revision) = shared.with_writes(|w| w.hold_for.take()) {
            let_round_callers_join(&shared, revision).await;
        }
        match take(&shared, max_batch) {
            Some(slots) => {
                send(&shared, slots).await;
                last_done = Some(Instant::now());
            }
            None if shared.is_closed() => return,
            None => shared.wake_flusher.notified().await,
        }
    }
}

fn take(shared: &Shared, max_batch: usize) -> Option<Vec<Slot>> {
    let batch = shared.with_writes(|w| {
        if w.is_empty() {
            None
        } else {
            let batch = w.take_batch(max_batch);
            shared.metrics.unqueued(batch.len());
            Some(batch)
        }
    });
    // Outside the lock: this may move every slot.
    batch.map(Vec::from)
}

/// The longest the next batch waits for the view to show a round of updates.
const ROUND_HOLD: Duration = Duration::from_millis(20);

/// A round of updates was acknowledged at `revision`. Its callers return once
/// the view shows `revision` and, on a hot key, update again at once: the next
/// batch waits for the view (at most [`ROUND_HOLD`]) and lets them run first,
/// so their updates go in one round instead of one alone and the rest in the
/// next. Without it, callers split into groups taking turns, and a hot key
/// costs twice the requests.
async fn let_round_callers_join(shared: &Shared, revision: Revision) {
    let mut view = shared.revision.subscribe();
    let _ = tokio::time::timeout(ROUND_HOLD, view.wait_for(|r| *r >= revision)).await;
    // The callers were woken with the view; let them queue first.
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
}

/// Sleeps until the next tick of the schedule `epoch + k * interval`, or until the
/// store closes (queued writes then get their last attempt at once).
async fn next_tick(shared: &Shared, epoch: Instant, interval: Duration) {
    if interval.is_zero() {
        return;
    }
    let elapsed = epoch.elapsed().as_nanos();
    let step = interval.as_nanos();
    let ticks = u64::try_from(elapsed / step + 1).unwrap_or(u64::MAX);
    let at = Duration::from_nanos(
        u64::try_from(step)
            .unwrap_or(u64::MAX)
            .saturating_mul(ticks),
    );
    until(shared, epoch + at).await;
}

/// Sleeps until `at`, or until the store closes or starts closing.
async fn until(shared: &Shared, at: Instant) {
    let mut closed = shared.closed.subscribe();
    let mut draining = shared.draining.subscribe();
    tokio::select! {
        () = tokio::time::sleep_until(at) => {}
        _ = closed.wait_for(|c| *c) => {}
        _ = draining.wait_for(|d| *d) => {}
    }
}

async fn send(shared: &Shared, slots: Vec<Slot>) {
    let last_seq = slots.iter().map(|s| s.seq).max().unwrap_or(0);
    let (doomed, slots): (Vec<Slot>, Vec<Slot>) = slots
        .into_iter()
        .partition(|s| s.doomed.is_some() || s.after.is_some());
    if !doomed.is_empty() {
        // Rounds of updates whose round before them failed: they cannot apply.
        let failed = doomed
            .into_iter()
            .map(|slot| {
                let error = conflict(&slot, slot.doomed.flatten());
                (slot, error)
            })
            .collect();
        tell_failures(shared, failed);
    }
    if slots.is_empty() {
        shared.with_writes(|w| w.batch_failed(last_seq));
    } else {
        apply(shared, slots).await;
    }
    shared.settled.send_if_modified(|s| {
        let moved = *s < last_seq;
        *s = (*s).max(last_seq);
        moved
    });
}

async fn apply(shared: &Shared, mut slots: Vec<Slot>) {
    let mut backoff = Backoff::new(shared.retry);
    let metrics = &shared.metrics;
    metrics.batch_size.record(depth(slots.len()));
    let started = std::time::Instant::now();
    let span = tracing::debug_span!("flush", store = %shared.name, ops = slots.len());
    loop {
        let batch = Batch {
            ops: slots.iter().map(Slot::op).collect(),
            atomic: false,
        };
        let result = shared.backend.apply(batch).instrument(span.clone()).await;
        match result {
            Ok(applied) => {
                metrics.batches_applied.increment(1);
                metrics.batch_duration.record(started.elapsed());
                settle(shared, slots, applied).instrument(span).await;
                break;
            }
            Err(error) if error.is_transient() && !shared.is_closed() => {
                let asked = match &error {
                    Error::Unavailable { retry_after, .. } => *retry_after,
                    _ => None,
                };
                let delay = backoff.next_delay(asked);
                metrics.retries_transient.increment(1);
                tracing::warn!(parent: &span, %error, ?delay, "flush failed; retrying");
                if !error.is_not_applied() {
                    for slot in &mut slots {
                        // The attempt may have applied: a conditional write
                        // that conflicts on the retry cannot tell whether the
                        // conflict is its own earlier success.
                        slot.ambiguous |= slot.precondition.is_some();
                    }
                }
                tokio::time::sleep(delay).await;
            }
            Err(error) => {
                let error = if shared.is_closed() && error.is_transient() {
                    Error::Closed
                } else {
                    error
                };
                tracing::error!(parent: &span, %error, "flush failed; the batch's writes are dropped");
                metrics.batches_failed.increment(1);
                metrics.batch_duration.record(started.elapsed());
                fail(shared, slots, &error);
                break;
            }
        }
    }
}

fn fail(shared: &Shared, slots: Vec<Slot>, error: &Error) {
    shared.with_writes(|w| {
        for slot in &slots {
            w.failed(&slot.key, slot.seq);
            if slot.round {
                w.round_settled(&slot.key, slot.seq, Err(None));
            }
        }
        if let Some(last) = slots.last() {
            w.batch_failed(last.seq);
        }
    });
    tell_failures(
        shared,
        slots
            .into_iter()
            .map(|slot| (slot, error.clone()))
            .collect(),
    );
}

/// Hands each failed write's error to its waiters, logs it once (its key,
/// never its value), and keeps the ones no waiter took for the next `flush`.
fn tell_failures(shared: &Shared, failed: Vec<(Slot, Error)>) {
    let mut untold = Vec::new();
    for (slot, error) in failed {
        if matches!(error, Error::Conflict { .. }) {
            // A refused precondition is an answer for its caller, not a lost write.
            tracing::debug!(store = %shared.name, key = %slot.key, %error, "conditional write refused");
        } else {
            tracing::warn!(store = %shared.name, key = %slot.key, %error, "write failed");
        }
        let mut told = false;
        for waiter in slot.waiters {
            told |= waiter.send(Err(error.clone())).is_ok();
        }
        if !told {
            untold.push((slot.seq, error));
        }
    }
    if !untold.is_empty() {
        shared.with_writes(|w| {
            for (seq, error) in untold {
                w.untold(seq, error);
            }
        });
    }
}

async fn settle(shared: &Shared, slots: Vec<Slot>, applied: Applied) {
    if applied.outcomes.len() != slots.len() {
        let error = Error::backend(
            shared.backend.name(),
            format!(
                "backend answered {} outcomes for a batch of {} writes",
                applied.outcomes.len(),
                slots.len()
            ),
        );
        fail(shared, slots, &error);
        return;
    }
    let view_revision = shared.view_revision();
    let revision = applied.revision;
    let mut results = Vec::with_capacity(slots.len());
    for (slot, outcome) in slots.into_iter().zip(applied.outcomes) {
        let result = match outcome {
            Outcome::Applied(version) => Ok(version),
            Outcome::Conflict { .. } if slot.ambiguous => Err(Error::OutcomeUnknown {
                key: slot.key.to_string(),
                expected: slot
                    .precondition
                    .unwrap_or(crate::backend::Precondition::Absent),
            }),
            Outcome::Conflict { actual } => {
                shared.metrics.conflicts.increment(1);
                Err(conflict(&slot, actual))
            }
            Outcome::Aborted => Err(conflict(&slot, None)),
            Outcome::Failed(error) => Err(error),
        };
        results.push((slot, result));
    }
    // One lock for the whole batch: `set` callers queue behind the same lock.
    shared.with_writes(|w| {
        for (slot, result) in &results {
            if let (None, Err(_)) = (slot.precondition, result) {
                w.failed(&slot.key, slot.seq);
            }
            if slot.round {
                let outcome = match result {
                    Ok(version) => Ok((*version, revision.max(Revision(version.0)))),
                    Err(Error::Conflict { actual, .. }) => Err(*actual),
                    Err(_) => Err(None),
                };
                w.round_settled(&slot.key, slot.seq, outcome);
            }
        }
        if let Some((last, _)) = results.last() {
            w.acknowledged(last.seq, revision, view_revision);
        }
    });
    let mut failed = Vec::new();
    for (slot, result) in results {
        match result {
            Ok(version) => {
                let ack = Ack {
                    version,
                    revision: revision.max(Revision(version.0)),
                };
                for waiter in slot.waiters {
                    let _ = waiter.send(Ok(ack));
                }
            }
            Err(error) => failed.push((slot, error)),
        }
    }
    tell_failures(shared, failed);
}

fn conflict(slot: &Slot, actual: Option<Version>) -> Error {
    Error::Conflict {
        key: slot.key.to_string(),
        expected: slot
            .precondition
            .unwrap_or(crate::backend::Precondition::Absent),
        actual,
    }
}

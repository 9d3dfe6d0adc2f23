//! The write queue: writes waiting to be sent, coalesced per key, and the
//! overlay that makes them visible to this handle's reads before the backend
//! confirms them.
//!
//! Invariants:
//! - slots are sent in sequence order; a plain write to a key with a queued
//!   (not yet sent) plain slot replaces that slot's value, so the last call
//!   wins and a key never has two queued plain slots;
//! - conditional writes (compare-and-set) never coalesce and never show in the
//!   overlay: until the backend says yes they are not the truth;
//! - concurrent `update`s of one key combine instead: each key has at most one
//!   *round* of them queued, which later updates join (their change applied
//!   to the round's value, in order), and at most one in flight; a round
//!   queued behind one in flight writes on top of it, its precondition the
//!   version that one gets, and fails with it if it fails;
//! - an overlay entry stops counting when the view reaches the revision that
//!   acknowledged it, or at once when its write failed.
//!
//! The flush and sync tasks touch this state once per batch, not once per
//! write, so a caller queueing writes in a loop rarely waits for them or finds
//! its cache lines moved to their core: batches are taken whole, and overlay
//! entries are retired by a sequence-number watermark (`covered`) instead of
//! one by one. Retired entries stay in the map, ignored, until it is swept.

use std::collections::{BTreeMap, VecDeque};
use std::mem;
use std::time::{Duration, Instant};

use metrics::Histogram;
use tokio::sync::oneshot;

use crate::backend::{Op, OpKind, Payload, Precondition, Revision, SharedKey, Version};
use crate::error::{Error, Result};
use crate::view::KeyMap;

/// What a waiter learns when its write is acknowledged.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ack {
    pub(crate) version: Version,
    pub(crate) revision: Revision,
}

pub(crate) type Waiter = oneshot::Sender<Result<Ack>>;

/// One queued write.
pub(crate) struct Slot {
    pub(crate) seq: u64,
    pub(crate) key: SharedKey,
    pub(crate) kind: OpKind,
    pub(crate) precondition: Option<Precondition>,
    pub(crate) waiters: Vec<Waiter>,
    /// A conditional write whose earlier attempt may have applied (the attempt's
    /// outcome was lost to a transient error).
    pub(crate) ambiguous: bool,
    /// A round of updates (see [`Round`]).
    pub(crate) round: bool,
    /// A round queued behind the round with this sequence number, which was in
    /// flight: its precondition comes from that round's outcome.
    pub(crate) after: Option<u64>,
    /// That round failed, so this one cannot apply: the conflict it reported
    /// (`None` when it failed otherwise). Failed without being sent.
    pub(crate) doomed: Option<Option<Version>>,
}

impl Slot {
    pub(crate) fn op(&self) -> Op {
        Op {
            key: self.key.to_string(),
            kind: self.kind.clone(),
            precondition: self.precondition,
        }
    }
}

/// This handle's newest plain write to a key, not yet in the view.
pub(crate) struct Overlay {
    pub(crate) seq: u64,
    /// `None` for a pending removal.
    pub(crate) cell: Option<Payload>,
    /// Whether a later plain write may replace this one in its queued slot (no
    /// conditional write to the key was queued after it).
    coalesce: bool,
}

/// The newest round of `update`s of one key: one conditional write that
/// every concurrent update of the key joins while it is queued.
pub(crate) struct Round {
    pub(crate) seq: u64,
    /// The value it writes, decoded for whoever joins next.
    pub(crate) cell: Payload,
    /// Bumped by every join: a change computed from an older value must be
    /// computed again.
    pub(crate) generation: u64,
    /// The round in flight this one waits for, until its outcome is known.
    after: Option<u64>,
    pub(crate) outcome: RoundOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RoundOutcome {
    Pending,
    /// The backend took it: the key holds the round's value at this version.
    Applied(Version),
    Failed,
}

/// Where an `update` starts from (see [`Writes::basis`]).
pub(crate) enum Basis {
    /// No round is pending: the view's value, with this precondition.
    View,
    /// A round queued and open to join.
    Join {
        seq: u64,
        generation: u64,
        cell: Payload,
    },
    /// A round in flight: a new round goes on top of its value.
    Chain { seq: u64, cell: Payload },
    /// A round the backend took that the view does not show yet.
    Applied { cell: Payload, version: Version },
}

#[derive(Default)]
pub(crate) struct Writes {
    queue: VecDeque<Slot>,
    /// Every write up to this sequence number has been taken for sending.
    taken: u64,
    /// Every write up to this sequence number is in the view or failed: overlay
    /// entries at or below it are retired.
    covered: u64,
    /// The newest sequence number in the overlay.
    newest: u64,
    overlay: KeyMap<Overlay>,
    /// Batches acknowledged at a revision the view has not reached, oldest
    /// first, as (revision, the batch's last sequence number, when).
    acked: VecDeque<(Revision, u64, Instant)>,
    /// Where the time from an acknowledgement to the view showing it goes.
    lag: Lag,
    /// The newest revision the view was reported at.
    view_seen: Revision,
    next_seq: u64,
    /// Failed writes no caller was told about and no `flush` reported yet, by
    /// sequence number.
    failures: BTreeMap<u64, Error>,
    /// How many more failed past [`MAX_KEPT_FAILURES`].
    failures_beyond: u64,
    /// Highest revision any acknowledgement reported.
    pub(crate) last_ack: Revision,
    /// The newest round of updates per key, until the view shows its outcome.
    rounds: KeyMap<Round>,
    /// A round of updates was acknowledged at this revision: the flush task
    /// lets its callers (who wait for the view) queue their next updates
    /// before it sends more, so they go in one round.
    pub(crate) hold_for: Option<Revision>,
}

/// The view-lag histogram; a no-op one by default.
struct Lag(Histogram);

impl Default for Lag {
    fn default() -> Self {
        Lag(Histogram::noop())
    }
}

/// Failures kept whole for `flush` to report; past this only a count is kept.
const MAX_KEPT_FAILURES: usize = 1024;

/// Retired overlay entries are swept only past this many, so small stores never
/// pay for a sweep.
const SWEEP_AT: usize = 1024;

/// The queued slot `seq`. Every sequence number is pushed once at the back and
/// slots leave only from the front, so the queue holds consecutive numbers and
/// the slot's index is its distance from the front.
fn slot_mut(queue: &mut VecDeque<Slot>, seq: u64) -> Option<&mut Slot> {
    let first = queue.front()?.seq;
    let index = usize::try_from(seq.checked_sub(first)?).ok()?;
    queue.get_mut(index).filter(|slot| slot.seq == seq)
}

impl Writes {
    /// An empty queue recording view lag in `lag`.
    pub(crate) fn new(lag: Histogram) -> Self {
        Writes {
            lag: Lag(lag),
            ..Writes::default()
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Writes queued and not yet taken for sending.
    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The sequence number of the newest write so far (0 when none).
    pub(crate) fn last_seq(&self) -> u64 {
        self.next_seq
    }

    /// Whether any overlay entry still counts.
    pub(crate) fn has_overlay(&self) -> bool {
        self.newest > self.covered
    }

    /// This handle's pending write to `key`, if it still counts.
    pub(crate) fn overlay(&self, key: &str) -> Option<&Overlay> {
        self.overlay.get(key).filter(|o| o.seq > self.covered)
    }

    /// Every pending write that still counts.
    pub(crate) fn overlays(&self) -> impl Iterator<Item = (&SharedKey, &Overlay)> {
        let covered = self.covered;
        self.overlay.iter().filter(move |(_, o)| o.seq > covered)
    }

    /// Queues a plain put or delete, coalescing with a queued one on the same key.
    /// Returns the slot's sequence number and whether the queue was empty before.
    pub(crate) fn push_plain(
        &mut self,
        key: &str,
        kind: OpKind,
        waiter: Option<Waiter>,
    ) -> (u64, bool) {
        let was_empty = self.queue.is_empty();
        let cell = match &kind {
            OpKind::Put { value, .. } => Some(value.clone()),
            OpKind::Delete => None,
        };
        if let Some(entry) = self.overlay.get_mut(key)
            && entry.coalesce
            && entry.seq > self.taken
            && let Some(slot) = slot_mut(&mut self.queue, entry.seq)
        {
            slot.kind = kind;
            slot.waiters.extend(waiter);
            entry.cell = cell;
            return (entry.seq, was_empty);
        }
        self.next_seq += 1;
        let seq = self.next_seq;
        self.newest = seq;
        let entry = Overlay {
            seq,
            cell: None,
            coalesce: true,
        };
        let key = match self.overlay.get_key_value(key) {
            Some((name, _)) => name.clone(),
            None => SharedKey::from(key),
        };
        let entry = self.overlay.entry(key.clone()).or_insert(entry);
        entry.seq = seq;
        entry.cell = cell;
        entry.coalesce = true;
        self.queue.push_back(Slot {
            seq,
            key,
            kind,
            precondition: None,
            waiters: waiter.into_iter().collect(),
            ambiguous: false,
            round: false,
            after: None,
            doomed: None,
        });
        (seq, was_empty)
    }

    /// Queues a conditional write; it never coalesces.
    pub(crate) fn push_conditional(
        &mut self,
        key: &str,
        kind: OpKind,
        precondition: Precondition,
        waiter: Waiter,
    ) -> bool {
        let was_empty = self.queue.is_empty();
        self.next_seq += 1;
        // A later plain write must not coalesce into a slot queued before this one.
        if let Some(entry) = self.overlay.get_mut(key) {
            entry.coalesce = false;
        }
        let key = SharedKey::from(key);
        self.queue.push_back(Slot {
            seq: self.next_seq,
            key,
            kind,
            precondition: Some(precondition),
            waiters: vec![waiter],
            ambiguous: false,
            round: false,
            after: None,
            doomed: None,
        });
        was_empty
    }

    /// Where an update of `key` starts from: the round to join or build on,
    /// or the view when no round is pending. `view_version` is the view's
    /// version of the key: a round the view already shows is forgotten.
    pub(crate) fn basis(&mut self, key: &str, view_version: Option<Version>) -> Basis {
        let Some(round) = self.rounds.get(key) else {
            return Basis::View;
        };
        let cell = round.cell.clone();
        match round.outcome {
            RoundOutcome::Pending if round.seq > self.taken => Basis::Join {
                seq: round.seq,
                generation: round.generation,
                cell,
            },
            RoundOutcome::Pending => Basis::Chain {
                seq: round.seq,
                cell,
            },
            RoundOutcome::Applied(version) if view_version.is_none_or(|v| v < version) => {
                Basis::Applied { cell, version }
            }
            RoundOutcome::Applied(_) | RoundOutcome::Failed => {
                self.rounds.remove(key);
                Basis::View
            }
        }
    }

    /// Joins the queued round `seq` of `key` with `change` (its new value; `None`
    /// leaves the value, to learn the round's outcome only), if no one joined
    /// since `generation`. `false` when the round moved on: start again.
    /// Whatever the outcome, `waiter` hears the round's.
    pub(crate) fn join_round(
        &mut self,
        key: &str,
        seq: u64,
        generation: u64,
        change: Option<(OpKind, Payload)>,
        waiter: Waiter,
    ) -> bool {
        let taken = self.taken;
        let Some(round) = self.rounds.get_mut(key) else {
            return false;
        };
        if round.seq != seq
            || round.generation != generation
            || seq <= taken
            || round.outcome != RoundOutcome::Pending
        {
            return false;
        }
        let Some(slot) = slot_mut(&mut self.queue, seq) else {
            return false;
        };
        if let Some((kind, cell)) = change {
            slot.kind = kind;
            round.cell = cell;
            round.generation += 1;
        }
        slot.waiters.push(waiter);
        true
    }

    /// Queues a new round of updates of `key`: conditional on `precondition`,
    /// or on top of the round `after` (in flight). `None` when another round
    /// began meanwhile (start again); else its sequence number and whether the
    /// queue was empty.
    pub(crate) fn push_round(
        &mut self,
        key: &str,
        kind: OpKind,
        cell: Payload,
        base: RoundBase,
        waiter: Waiter,
    ) -> Option<(u64, bool)> {
        let (precondition, after) = match base {
            RoundBase::Precondition(p) => (Some(p), None),
            RoundBase::After(seq) => (None, Some(seq)),
        };
        let current = self.rounds.get(key).map(|r| (r.seq, r.outcome));
        let free = match (current, after) {
            (None, None) => true,
            (Some((_, RoundOutcome::Applied(_) | RoundOutcome::Failed)), None) => true,
            (Some((seq, RoundOutcome::Pending)), Some(after)) => seq == after && seq <= self.taken,
            _ => false,
        };
        if !free {
            return None;
        }
        let was_empty = self.queue.is_empty();
        self.next_seq += 1;
        let seq = self.next_seq;
        if let Some(entry) = self.overlay.get_mut(key) {
            entry.coalesce = false;
        }
        let name = SharedKey::from(key);
        self.rounds.insert(
            name.clone(),
            Round {
                seq,
                cell,
                generation: 0,
                after,
                outcome: RoundOutcome::Pending,
            },
        );
        self.queue.push_back(Slot {
            seq,
            key: name,
            kind,
            precondition,
            waiters: vec![waiter],
            ambiguous: false,
            round: true,
            after,
            doomed: None,
        });
        Some((seq, was_empty))
    }

    /// The round `seq` of `key` settled: `Ok` with the version it wrote at
    /// `revision`, or `Err` with the conflicting version if one was reported.
    /// A round queued on top of it gets its precondition, or is doomed.
    pub(crate) fn round_settled(
        &mut self,
        key: &str,
        seq: u64,
        outcome: std::result::Result<(Version, Revision), Option<Version>>,
    ) {
        let Some(round) = self.rounds.get_mut(key) else {
            return;
        };
        if round.seq == seq {
            round.outcome = match outcome {
                Ok((version, _)) => RoundOutcome::Applied(version),
                Err(_) => RoundOutcome::Failed,
            };
            if let Ok((_, revision)) = outcome {
                self.hold(revision);
            }
            return;
        }
        if round.after != Some(seq) {
            return;
        }
        round.after = None;
        let next = round.seq;
        if outcome.is_err() {
            round.outcome = RoundOutcome::Failed;
        }
        let Some(slot) = slot_mut(&mut self.queue, next) else {
            return;
        };
        slot.after = None;
        match outcome {
            Ok((version, revision)) => {
                slot.precondition = Some(Precondition::Version(version));
                self.hold(revision);
            }
            Err(actual) => slot.doomed = Some(actual),
        }
    }

    fn hold(&mut self, revision: Revision) {
        self.hold_for = Some(self.hold_for.unwrap_or_default().max(revision));
    }

    /// Forgets `key`'s round `seq` once the view shows what it wrote.
    pub(crate) fn forget_round(&mut self, key: &str, seq: u64) {
        if self
            .rounds
            .get(key)
            .is_some_and(|r| r.seq == seq && r.outcome != RoundOutcome::Pending)
        {
            self.rounds.remove(key);
        }
    }

    /// Takes up to `max` slots from the front of the queue for sending: the
    /// whole queue at once when it fits.
    pub(crate) fn take_batch(&mut self, max: usize) -> VecDeque<Slot> {
        let n = self.queue.len().min(max.max(1));
        let batch = if n == self.queue.len() {
            // The next batch likely grows as large: allocate once, not by doubling.
            mem::replace(&mut self.queue, VecDeque::with_capacity(n))
        } else {
            self.queue.drain(..n).collect()
        };
        if let Some(last) = batch.back() {
            self.taken = last.seq;
        }
        batch
    }

    /// Records an acknowledged batch whose last write is `last_seq`: its overlay
    /// entries count until the view reaches `revision`.
    pub(crate) fn acknowledged(
        &mut self,
        last_seq: u64,
        revision: Revision,
        view_revision: Revision,
    ) {
        self.last_ack = self.last_ack.max(revision);
        self.acked.push_back((revision, last_seq, Instant::now()));
        // `view_revision` was read before the batch settled; the view may have
        // moved on (and reported it) since.
        self.view_reached(view_revision.max(self.view_seen));
    }

    /// Retires the overlay entries the view now covers.
    pub(crate) fn view_reached(&mut self, revision: Revision) {
        self.view_seen = self.view_seen.max(revision);
        while let Some(&(acked, last_seq, at)) = self.acked.front() {
            if acked > revision {
                break;
            }
            self.acked.pop_front();
            self.lag.0.record(at.elapsed());
            self.covered = self.covered.max(last_seq);
        }
        self.sweep();
    }

    /// Drops retired overlay entries once there are many: all of them when none
    /// counts, else when at least half are retired. At most `newest - covered`
    /// entries still count, so after a pass the map must double in retired
    /// entries before the next: each entry is visited O(1) times.
    fn sweep(&mut self) {
        if self.overlay.len() < SWEEP_AT {
            return;
        }
        if !self.has_overlay() {
            self.overlay.clear();
            return;
        }
        let counting = usize::try_from(self.newest - self.covered).unwrap_or(usize::MAX);
        if self.overlay.len() / 2 >= counting {
            let covered = self.covered;
            self.overlay.retain(|_, o| o.seq > covered);
        }
    }

    /// Forgets a failed write so reads show the backend's truth again.
    pub(crate) fn failed(&mut self, key: &SharedKey, seq: u64) {
        if self.overlay.get(key).is_some_and(|o| o.seq == seq) {
            self.overlay.remove(key);
        }
    }

    /// Keeps the failure of a write no caller was told about, for the next
    /// `flush` to report. Past [`MAX_KEPT_FAILURES`] only a count is kept (each
    /// failure was logged when it happened).
    pub(crate) fn untold(&mut self, seq: u64, error: Error) {
        if self.failures.len() >= MAX_KEPT_FAILURES {
            self.failures_beyond += 1;
        } else {
            self.failures.insert(seq, error);
        }
    }

    /// A batch ending at `last_seq` failed as a whole: with nothing older waiting
    /// for the view, everything up to it is settled.
    pub(crate) fn batch_failed(&mut self, last_seq: u64) {
        if self.acked.is_empty() {
            self.covered = self.covered.max(last_seq);
        }
    }

    /// Takes every failure among writes up to `seq` that no caller was told
    /// about: one error when one write failed, [`Error::WritesFailed`] naming
    /// them all when several did. Each is reported once.
    pub(crate) fn take_failures(&mut self, seq: u64) -> Option<Error> {
        let later = self.failures.split_off(&(seq + 1));
        let reported = std::mem::replace(&mut self.failures, later);
        let beyond = std::mem::take(&mut self.failures_beyond);
        let mut errors: Vec<Error> = reported.into_values().collect();
        if errors.len() == 1 && beyond == 0 {
            return errors.pop();
        }
        (!errors.is_empty()).then(|| Error::WritesFailed {
            errors: errors.into(),
            more: beyond,
        })
    }
}

/// What a new round's write is conditional on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RoundBase {
    Precondition(Precondition),
    /// The outcome of the round with this sequence number, in flight.
    After(u64),
}

/// Builds the op kind for a put.
pub(crate) fn put(value: Payload, ttl: Option<Duration>) -> OpKind {
    OpKind::Put { value, ttl }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(v: &str) -> OpKind {
        put(Payload::from(v), None)
    }

    fn payload(kind: &OpKind) -> Option<&str> {
        match kind {
            OpKind::Put { value, .. } => Some(value.as_str()),
            OpKind::Delete => None,
        }
    }

    #[test]
    fn the_last_plain_write_per_key_wins_in_place() {
        let mut w = Writes::default();
        w.push_plain("a", value("1"), None);
        w.push_plain("b", value("1"), None);
        w.push_plain("a", value("2"), None);
        w.push_plain("a", value("1"), None);
        let batch = w.take_batch(100);
        assert_eq!(batch.len(), 2);
        assert_eq!(&*batch[0].key, "a");
        assert_eq!(payload(&batch[0].kind), Some("1"));
    }

    #[test]
    fn set_remove_set_ends_set() {
        let mut w = Writes::default();
        w.push_plain("a", value("1"), None);
        w.push_plain("a", OpKind::Delete, None);
        w.push_plain("a", value("3"), None);
        let batch = w.take_batch(100);
        assert_eq!(batch.len(), 1);
        assert_eq!(payload(&batch[0].kind), Some("3"));
    }

    fn cell(v: &str) -> Payload {
        Payload::from(v)
    }

    fn waiter() -> (Waiter, oneshot::Receiver<Result<Ack>>) {
        oneshot::channel()
    }

    #[test]
    fn updates_join_the_queued_round_and_the_next_goes_on_top_of_one_in_flight() {
        let mut w = Writes::default();
        let (a, _ra) = waiter();
        let base = RoundBase::Precondition(Precondition::Version(Version(7)));
        let (first, _) = w
            .push_round("k", value("1"), cell("1"), base, a)
            .expect("a new round");
        // A second update joins it: one slot, two waiters, the newer value.
        let Basis::Join {
            seq, generation, ..
        } = w.basis("k", Some(Version(7)))
        else {
            panic!("a queued round is joined");
        };
        let (b, _rb) = waiter();
        assert!(w.join_round("k", seq, generation, Some((value("2"), cell("2"))), b));
        // A change computed from the value before that join must be computed again.
        let (c, _rc) = waiter();
        assert!(!w.join_round("k", seq, generation, Some((value("2"), cell("2"))), c));
        let sent = w.take_batch(100);
        assert_eq!(sent.len(), 1);
        assert_eq!(payload(&sent[0].kind), Some("2"));
        assert_eq!(sent[0].waiters.len(), 2);
        // In flight: the next update queues on top of it.
        let Basis::Chain { seq, .. } = w.basis("k", Some(Version(7))) else {
            panic!("a round in flight is built on");
        };
        assert_eq!(seq, first);
        let (d, _rd) = waiter();
        let (next, _) = w
            .push_round("k", value("3"), cell("3"), RoundBase::After(seq), d)
            .expect("queued on top");
        w.round_settled("k", first, Ok((Version(9), Revision(9))));
        let queued = w.take_batch(100);
        assert_eq!(queued[0].seq, next);
        assert_eq!(
            queued[0].precondition,
            Some(Precondition::Version(Version(9)))
        );
        assert!(queued[0].after.is_none() && queued[0].doomed.is_none());
        assert_eq!(w.hold_for, Some(Revision(9)));
    }

    #[test]
    fn a_round_on_top_of_one_that_failed_is_doomed_with_its_conflict() {
        let mut w = Writes::default();
        let (a, _ra) = waiter();
        let base = RoundBase::Precondition(Precondition::Absent);
        let (first, _) = w
            .push_round("k", value("1"), cell("1"), base, a)
            .expect("a new round");
        w.take_batch(100);
        let (b, _rb) = waiter();
        w.push_round("k", value("2"), cell("2"), RoundBase::After(first), b)
            .expect("queued on top");
        w.round_settled("k", first, Err(Some(Version(4))));
        let queued = w.take_batch(100);
        assert_eq!(queued[0].doomed, Some(Some(Version(4))));
        // The next update starts from the view.
        assert!(matches!(w.basis("k", None), Basis::View));
    }

    #[test]
    fn a_write_after_a_sent_slot_opens_a_new_slot() {
        let mut w = Writes::default();
        w.push_plain("a", value("1"), None);
        let first = w.take_batch(100);
        w.push_plain("a", value("2"), None);
        let second = w.take_batch(100);
        assert_eq!((first.len(), second.len()), (1, 1));
        assert!(second[0].seq > first[0].seq);
    }

    #[test]
    fn a_conditional_write_splits_coalescing() {
        let mut w = Writes::default();
        let (tx, _rx) = oneshot::channel();
        w.push_plain("a", value("1"), None);
        w.push_conditional("a", value("2"), Precondition::Absent, tx);
        w.push_plain("a", value("3"), None);
        let batch = w.take_batch(100);
        let values: Vec<_> = batch.iter().map(|s| payload(&s.kind)).collect();
        assert_eq!(values, vec![Some("1"), Some("2"), Some("3")]);
    }

    #[test]
    fn overlay_entries_leave_when_the_view_catches_up() {
        let mut w = Writes::default();
        let (seq, _) = w.push_plain("a", value("1"), None);
        let batch = w.take_batch(100);
        assert_eq!(batch[0].seq, seq);
        w.acknowledged(seq, Revision(5), Revision(4));
        assert!(w.overlay("a").is_some());
        w.view_reached(Revision(5));
        assert!(w.overlay("a").is_none());
        assert!(!w.has_overlay());
    }

    #[test]
    fn a_failed_write_stops_showing_at_once_and_a_failed_batch_settles() {
        let mut w = Writes::default();
        let (seq, _) = w.push_plain("a", value("1"), None);
        let batch = w.take_batch(100);
        w.failed(&batch[0].key, seq);
        assert!(w.overlay("a").is_none());
        w.batch_failed(seq);
        assert!(!w.has_overlay());
    }

    #[test]
    fn retired_entries_are_swept_once_there_are_many() {
        let mut w = Writes::default();
        for i in 0..SWEEP_AT {
            w.push_plain(&format!("k{i}"), value("1"), None);
        }
        let last = w.take_batch(usize::MAX).back().map_or(0, |s| s.seq);
        w.acknowledged(last, Revision(2), Revision(1));
        assert_eq!(w.overlay.len(), SWEEP_AT, "not in the view yet");
        w.view_reached(Revision(2));
        assert!(w.overlay.is_empty());
    }

    #[test]
    fn a_plain_write_after_a_taken_slot_does_not_coalesce_into_it() {
        let mut w = Writes::default();
        let (first, _) = w.push_plain("a", value("1"), None);
        let _sent = w.take_batch(100);
        let (second, _) = w.push_plain("a", value("2"), None);
        assert!(second > first);
        let (third, _) = w.push_plain("a", value("3"), None);
        assert_eq!(third, second, "coalesces with the queued one");
        let batch = w.take_batch(100);
        assert_eq!(batch.len(), 1);
        assert_eq!(payload(&batch[0].kind), Some("3"));
    }

    #[test]
    fn an_older_ack_does_not_hide_a_newer_pending_write() {
        let mut w = Writes::default();
        let (seq, _) = w.push_plain("a", value("1"), None);
        let batch = w.take_batch(100);
        assert_eq!(batch[0].seq, seq);
        w.push_plain("a", value("2"), None);
        w.acknowledged(seq, Revision(5), Revision(5));
        assert!(w.overlay("a").is_some(), "the newer write still shows");
    }
}

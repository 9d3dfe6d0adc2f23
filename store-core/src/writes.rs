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
//! - an overlay entry leaves when the view reaches the revision that
//!   acknowledged it, or at once when its write failed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::backend::{Op, OpKind, Payload, Precondition, Revision, Version};
use crate::error::{Error, Result};
use crate::view::{Cell, KeyMap};

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
    pub(crate) key: Arc<str>,
    pub(crate) kind: OpKind,
    pub(crate) precondition: Option<Precondition>,
    pub(crate) waiters: Vec<Waiter>,
    /// A conditional write whose earlier attempt may have applied (the attempt's
    /// outcome was lost to a transient error).
    pub(crate) ambiguous: bool,
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
    pub(crate) cell: Option<Cell>,
}

#[derive(Default)]
pub(crate) struct Writes {
    queue: VecDeque<Slot>,
    /// Key to the sequence number of its queued plain slot.
    queued: KeyMap<u64>,
    pub(crate) overlay: KeyMap<Overlay>,
    /// Overlay entries acknowledged at a revision the view has not reached.
    acked: BTreeMap<Revision, Vec<(Arc<str>, u64)>>,
    next_seq: u64,
    /// Failed writes not yet reported by a `flush`, by sequence number.
    failures: BTreeMap<u64, Error>,
    /// Highest revision any acknowledgement reported.
    pub(crate) last_ack: Revision,
}

/// Failures kept for `flush` to report; older ones are dropped (and were logged).
const MAX_KEPT_FAILURES: usize = 256;

impl Writes {
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The sequence number of the newest write so far (0 when none).
    pub(crate) fn last_seq(&self) -> u64 {
        self.next_seq
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
            OpKind::Put { value, .. } => Some(Cell::new(value.clone())),
            OpKind::Delete => None,
        };
        if let Some(&seq) = self.queued.get(key)
            && let Some(slot) = self.slot_mut(seq)
        {
            slot.kind = kind;
            slot.waiters.extend(waiter);
            if let Some(entry) = self.overlay.get_mut(key) {
                entry.seq = seq;
                entry.cell = cell;
            }
            return (seq, was_empty);
        }
        self.next_seq += 1;
        let seq = self.next_seq;
        let key: Arc<str> = Arc::from(key);
        self.queued.insert(Arc::clone(&key), seq);
        self.overlay.insert(Arc::clone(&key), Overlay { seq, cell });
        self.queue.push_back(Slot {
            seq,
            key,
            kind,
            precondition: None,
            waiters: waiter.into_iter().collect(),
            ambiguous: false,
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
        let key: Arc<str> = Arc::from(key);
        // A later plain write must not coalesce into a slot queued before this one.
        self.queued.remove(&key);
        self.queue.push_back(Slot {
            seq: self.next_seq,
            key,
            kind,
            precondition: Some(precondition),
            waiters: vec![waiter],
            ambiguous: false,
        });
        was_empty
    }

    fn slot_mut(&mut self, seq: u64) -> Option<&mut Slot> {
        let index = self.queue.binary_search_by_key(&seq, |s| s.seq).ok()?;
        self.queue.get_mut(index)
    }

    /// Takes up to `max` slots from the front of the queue for sending.
    pub(crate) fn take_batch(&mut self, max: usize) -> Vec<Slot> {
        let n = self.queue.len().min(max.max(1));
        let batch: Vec<Slot> = self.queue.drain(..n).collect();
        for slot in &batch {
            if self.queued.get(&slot.key) == Some(&slot.seq) {
                self.queued.remove(&slot.key);
            }
        }
        batch
    }

    /// Records an acknowledged plain write: its overlay entry stays until the view
    /// reaches `revision`, unless the view is already there.
    pub(crate) fn acknowledged(
        &mut self,
        key: &Arc<str>,
        seq: u64,
        revision: Revision,
        view_revision: Revision,
    ) {
        self.last_ack = self.last_ack.max(revision);
        if revision <= view_revision {
            self.drop_overlay(key, seq);
        } else {
            self.acked
                .entry(revision)
                .or_default()
                .push((Arc::clone(key), seq));
        }
    }

    /// Drops the overlay entries the view now covers.
    pub(crate) fn view_reached(&mut self, revision: Revision) {
        while let Some(entry) = self.acked.first_entry() {
            if *entry.key() > revision {
                break;
            }
            for (key, seq) in entry.remove() {
                self.drop_overlay(&key, seq);
            }
        }
    }

    /// Forgets a failed write so reads show the backend's truth again, and keeps the
    /// error for the next `flush`.
    pub(crate) fn failed(&mut self, key: &Arc<str>, seq: u64, error: Error) {
        self.drop_overlay(key, seq);
        if self.failures.len() >= MAX_KEPT_FAILURES {
            self.failures.pop_first();
        }
        self.failures.insert(seq, error);
    }

    fn drop_overlay(&mut self, key: &Arc<str>, seq: u64) {
        if self.overlay.get(key).is_some_and(|o| o.seq == seq) {
            self.overlay.remove(key);
        }
    }

    /// Takes the first failure among writes up to `seq`, dropping the rest of them.
    pub(crate) fn take_failure(&mut self, seq: u64) -> Option<Error> {
        let later = self.failures.split_off(&(seq + 1));
        let reported = std::mem::replace(&mut self.failures, later);
        reported.into_values().next()
    }
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
        w.acknowledged(&batch[0].key, seq, Revision(5), Revision(4));
        assert!(w.overlay.contains_key("a"));
        w.view_reached(Revision(5));
        assert!(!w.overlay.contains_key("a"));
    }

    #[test]
    fn an_older_ack_does_not_hide_a_newer_pending_write() {
        let mut w = Writes::default();
        let (seq, _) = w.push_plain("a", value("1"), None);
        let batch = w.take_batch(100);
        w.push_plain("a", value("2"), None);
        w.acknowledged(&batch[0].key, seq, Revision(5), Revision(5));
        assert!(w.overlay.contains_key("a"), "the newer write still shows");
    }
}

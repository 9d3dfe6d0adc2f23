//! [`Transaction`]: writes to several keys that land together or not at all.

use serde::Serialize;
use tokio::time::Instant;

use crate::backend::{Batch, Op, OpKind, Outcome, Precondition, Revision, check_batch};
use crate::error::{Error, Result};
use crate::key::{AnyKey, AsKey};
use crate::store::Store;

/// Writes to several keys that land together or not at all; made by
/// [`Store::transaction`], sent by [`commit`](Self::commit).
///
/// A mistake in one write (a bad key, a value that cannot be encoded or is
/// too large) is kept and returned by `commit`, which then sends nothing.
/// Writing one key twice keeps the later write.
#[must_use = "a transaction does nothing until it is committed"]
#[derive(Debug)]
pub struct Transaction<'a> {
    store: &'a Store,
    ops: Vec<Op>,
    error: Option<Error>,
}

impl<'a> Transaction<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        Transaction {
            store,
            ops: Vec::new(),
            error: None,
        }
    }

    fn push(mut self, op: Result<Op>) -> Self {
        match op {
            Ok(op) if self.error.is_none() => {
                self.ops.retain(|earlier| earlier.key != op.key);
                self.ops.push(op);
            }
            Ok(_) => {}
            Err(error) => {
                self.error.get_or_insert(error);
            }
        }
        self
    }

    /// Writes `value` at `key`.
    pub fn set<T: Serialize + ?Sized>(self, key: impl AsKey<T>, value: &T) -> Self {
        let key = key.as_key();
        let op = self.store.encode_put(key, value, None).map(|kind| Op {
            key: key.to_owned(),
            kind,
            precondition: None,
        });
        self.push(op)
    }

    /// Writes `value` at `key` if `expected` holds there; otherwise the whole
    /// transaction fails with [`Error::Conflict`] for this key.
    pub fn set_if<T: Serialize + ?Sized>(
        self,
        key: impl AsKey<T>,
        expected: Precondition,
        value: &T,
    ) -> Self {
        let key = key.as_key();
        let op = self.store.encode_put(key, value, None).map(|kind| Op {
            key: key.to_owned(),
            kind,
            precondition: Some(expected),
        });
        self.push(op)
    }

    /// Removes `key` (nothing to do when it is absent).
    pub fn remove(self, key: impl AnyKey) -> Self {
        self.remove_op(key.key_name(), None)
    }

    /// Removes `key` if `expected` holds there; otherwise the whole
    /// transaction fails with [`Error::Conflict`] for this key.
    pub fn remove_if(self, key: impl AnyKey, expected: Precondition) -> Self {
        self.remove_op(key.key_name(), Some(expected))
    }

    fn remove_op(self, key: &str, precondition: Option<Precondition>) -> Self {
        let op = self.store.check_removable(key).map(|()| Op {
            key: key.to_owned(),
            kind: OpKind::Delete,
            precondition,
        });
        self.push(op)
    }

    /// Sends the writes as one atomic batch, after every write this handle
    /// queued before the call has its outcome, and returns once they are
    /// applied and visible in this handle's view, with the revision they
    /// share (an empty transaction returns the view's revision).
    ///
    /// Fails, with nothing written, with [`Error::Conflict`] naming the first
    /// key whose precondition failed, or [`Error::Unsupported`] on a backend
    /// without [`atomic_batch`](crate::Capabilities::atomic_batch) (or without
    /// compare-and-set, for conditional writes). The batch is sent once: after
    /// a transient failure ([`Error::Unavailable`]) or a timeout its outcome is
    /// unknown, as the answer may be what was lost, so read the keys before
    /// trying again.
    pub async fn commit(self) -> Result<Revision> {
        let store = self.store;
        store.check_open()?;
        if let Some(error) = self.error {
            return Err(error);
        }
        let shared = &store.shared;
        if self.ops.is_empty() {
            return Ok(shared.view_revision());
        }
        let batch = Batch {
            ops: self.ops,
            atomic: true,
        };
        check_batch(shared.backend.name(), &shared.caps, &batch)?;
        let deadline = Instant::now() + store.timeout();
        // This handle's earlier writes first, or one could land after the
        // transaction and undo part of it.
        let queued = shared.with_writes(|w| w.last_seq());
        shared.wake_flusher.notify_one();
        store
            .wait_seq(
                queued,
                deadline,
                "earlier writes to land before the transaction",
            )
            .await?;
        let keys: Vec<(String, Option<Precondition>)> = batch
            .ops
            .iter()
            .map(|op| (op.key.clone(), op.precondition))
            .collect();
        let applied = store
            .until(
                deadline,
                "the transaction to be applied",
                shared.backend.apply(batch),
            )
            .await?;
        // The write that stopped the batch; the others only report `Aborted`.
        let mut aborted = None;
        for ((key, expected), outcome) in keys.into_iter().zip(applied.outcomes) {
            match outcome {
                Outcome::Applied(_) => {}
                Outcome::Failed(error) => return Err(error),
                Outcome::Conflict { actual } => {
                    shared.metrics.conflicts.increment(1);
                    return Err(Error::Conflict {
                        key,
                        expected: expected.unwrap_or(Precondition::Absent),
                        actual,
                    });
                }
                Outcome::Aborted => {
                    aborted.get_or_insert(Error::Conflict {
                        key,
                        expected: expected.unwrap_or(Precondition::Absent),
                        actual: None,
                    });
                }
            }
        }
        if let Some(error) = aborted {
            return Err(error);
        }
        store
            .wait_revision(applied.revision, deadline, || {
                "the transaction to be visible".to_owned()
            })
            .await?;
        Ok(applied.revision)
    }
}

//! The model of one key: the values the backend may hold, and the writes still pending.

use std::collections::BTreeSet;
use std::fmt;

/// What a key may hold on the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Possible {
    /// Anything: a failed call may have written something unknown.
    Any,
    /// One of these values (`None`: absent).
    Values(BTreeSet<Option<u32>>),
}

impl Possible {
    pub(super) fn one(value: Option<u32>) -> Self {
        Possible::Values(BTreeSet::from([value]))
    }

    pub(super) fn allows(&self, value: Option<u32>) -> bool {
        match self {
            Possible::Any => true,
            Possible::Values(values) => values.contains(&value),
        }
    }

    pub(super) fn insert(&mut self, value: Option<u32>) {
        if let Possible::Values(values) = self {
            values.insert(value);
        }
    }
}

impl fmt::Display for Possible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Possible::Any => f.write_str("anything"),
            Possible::Values(values) => {
                let shown: Vec<String> = values.iter().map(|v| show(*v)).collect();
                write!(f, "{{{}}}", shown.join(", "))
            }
        }
    }
}

pub(super) fn show(value: Option<u32>) -> String {
    value.map_or_else(|| "absent".to_owned(), |v| v.to_string())
}

/// A queued write that may still land.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pending {
    pub(super) value: Option<u32>,
    /// The key's epoch when the write was queued.
    pub(super) epoch: u64,
}

/// The model of one key.
///
/// `base` is what the key may hold after the latest definite event (an
/// acknowledgement); `epoch` counts those events. Each replica's queued writes
/// may land at any moment until that replica's next acknowledgement covering
/// them; a queued write that lands after every definite event so far decides
/// the key alone, which is what the epoch tells. A replica marked `wild` may
/// still land something unknown (a failed conditional write, a failed
/// `clear`) until its next acknowledgement of the key.
#[derive(Debug, Clone)]
pub(super) struct KeyModel {
    pub(super) base: Possible,
    pub(super) epoch: u64,
    pub(super) pending: Vec<Vec<Pending>>,
    pub(super) wild: Vec<bool>,
}

impl KeyModel {
    pub(super) fn new(replicas: usize) -> Self {
        KeyModel {
            base: Possible::one(None),
            epoch: 0,
            pending: vec![Vec::new(); replicas],
            wild: vec![false; replicas],
        }
    }

    /// Every value the backend may hold now.
    pub(super) fn possible(&self) -> Possible {
        if self.wild.iter().any(|w| *w) {
            return Possible::Any;
        }
        let mut possible = self.base.clone();
        for pending in self.pending.iter().flatten() {
            possible.insert(pending.value);
        }
        possible
    }

    pub(super) fn has_pending(&self, replica: usize) -> bool {
        !self.pending[replica].is_empty() || self.wild[replica]
    }

    /// Replica `replica` queued `value`.
    pub(super) fn queue(&mut self, replica: usize, value: Option<u32>) {
        self.pending[replica].push(Pending {
            value,
            epoch: self.epoch,
        });
    }

    /// Replica `replica`'s write of `value` was acknowledged: it landed after
    /// every earlier write of that replica to the key.
    pub(super) fn acknowledge(&mut self, replica: usize, value: Option<u32>) {
        self.base = Possible::one(value);
        self.epoch += 1;
        self.pending[replica].clear();
        self.wild[replica] = false;
    }

    /// Every write replica `replica` queued for the key has landed.
    pub(super) fn settle(&mut self, replica: usize) {
        if std::mem::take(&mut self.wild[replica]) {
            self.pending[replica].clear();
            self.base = Possible::Any;
            self.epoch += 1;
            return;
        }
        let Some(last) = self.pending[replica].last().copied() else {
            return;
        };
        if last.epoch == self.epoch {
            self.base = Possible::one(last.value);
        } else {
            // Something was acknowledged after the write was queued: either may
            // have landed last.
            self.base.insert(last.value);
        }
        self.pending[replica].clear();
        self.epoch += 1;
    }

    /// A call of replica `replica` failed: it may have written something, now
    /// or later.
    pub(super) fn unsure(&mut self, replica: usize) {
        self.pending[replica].clear();
        self.wild[replica] = true;
    }

    /// The backend was seen to hold `value`, with nothing in flight.
    pub(super) fn adopt(&mut self, value: Option<u32>) {
        self.base = Possible::one(value);
        self.epoch += 1;
        for pending in &mut self.pending {
            pending.clear();
        }
        self.wild.fill(false);
    }
}

//! The steps of a case: one call on one replica, a fault or a checkpoint, decoded from proptest's raw bytes.

use std::fmt;

use super::*;

/// One call on one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `set`: queued, acknowledged by a later `flush`.
    Set {
        /// Index into [`KEYS`].
        key: usize,
        /// The value written.
        value: u32,
    },
    /// `set_and_wait`.
    SetAndWait {
        /// Index into [`KEYS`].
        key: usize,
        /// The value written.
        value: u32,
    },
    /// `remove`: queued, acknowledged by a later `flush`.
    Remove {
        /// Index into [`KEYS`].
        key: usize,
    },
    /// `remove_and_wait`.
    RemoveAndWait {
        /// Index into [`KEYS`].
        key: usize,
    },
    /// `flush`.
    Flush,
    /// `update`, adding one to the number (absent counts as zero).
    Update {
        /// Index into [`KEYS`].
        key: usize,
    },
    /// `compare_and_set` on absence.
    CasAbsent {
        /// Index into [`KEYS`].
        key: usize,
        /// The value written.
        value: u32,
    },
    /// `compare_and_set` on the version this replica's view shows (absence
    /// when it shows none).
    CasSeen {
        /// Index into [`KEYS`].
        key: usize,
        /// The value written.
        value: u32,
    },
    /// `compare_and_remove` at the version this replica's view shows (nothing
    /// when it shows none).
    CasRemoveSeen {
        /// Index into [`KEYS`].
        key: usize,
    },
    /// `clear`.
    Clear,
}

/// One step of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A call on replica `replica`.
    Op {
        /// Index of the replica.
        replica: usize,
        /// The call.
        op: Op,
    },
    /// Fault number `fault` of [`ModelHarness::faults`].
    Fault {
        /// Index into the harness's faults.
        fault: usize,
        /// A replica the fault may pick.
        replica: usize,
        /// A byte the fault may size itself by.
        arg: u8,
    },
    /// Flush every replica, wait until they agree, and check the model.
    Checkpoint,
}

/// What the first byte of a [`RawStep`] picks, by upper bound (exclusive).
/// Cheap, deterministic calls come first so shrinking favours them.
pub(super) const KINDS: [(u16, Kind); 12] = [
    (44, Kind::Set),
    (74, Kind::SetAndWait),
    (90, Kind::Remove),
    (104, Kind::RemoveAndWait),
    (126, Kind::Flush),
    (154, Kind::Update),
    (166, Kind::CasAbsent),
    (182, Kind::CasSeen),
    (192, Kind::CasRemoveSeen),
    (199, Kind::Clear),
    (210, Kind::Checkpoint),
    (256, Kind::Fault),
];

#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Set,
    SetAndWait,
    Remove,
    RemoveAndWait,
    Flush,
    Update,
    CasAbsent,
    CasSeen,
    CasRemoveSeen,
    Clear,
    Checkpoint,
    Fault,
}

impl Step {
    /// Decodes the step at `index` of a case whose harness knows `faults` faults.
    /// Values are small and repeating (`0..4`, so `set a=1; a=2; a=1` happens)
    /// or unique to the step (`100 + index`, so a resurrected old write shows).
    pub fn decode(index: usize, raw: RawStep, faults: usize) -> Step {
        let [kind, replica, key, value] = raw;
        let kind = KINDS
            .iter()
            .find(|(bound, _)| u16::from(kind) < *bound)
            .map_or(Kind::Fault, |(_, kind)| *kind);
        let replica = usize::from(replica) % REPLICAS;
        let key = usize::from(key) % KEYS.len();
        let value = if value < 160 {
            u32::from(value % 4)
        } else {
            100 + u32::try_from(index).unwrap_or(u32::MAX - 100)
        };
        let op = match kind {
            Kind::Set => Op::Set { key, value },
            Kind::SetAndWait => Op::SetAndWait { key, value },
            Kind::Remove => Op::Remove { key },
            Kind::RemoveAndWait => Op::RemoveAndWait { key },
            Kind::Flush => Op::Flush,
            Kind::Update => Op::Update { key },
            Kind::CasAbsent => Op::CasAbsent { key, value },
            Kind::CasSeen => Op::CasSeen { key, value },
            Kind::CasRemoveSeen => Op::CasRemoveSeen { key },
            Kind::Clear => Op::Clear,
            Kind::Checkpoint => return Step::Checkpoint,
            // A harness without faults gets a plain `set` instead.
            Kind::Fault if faults == 0 => Op::Set { key, value },
            Kind::Fault => {
                return Step::Fault {
                    fault: usize::from(raw[2]) % faults,
                    replica,
                    arg: raw[3],
                };
            }
        };
        Step::Op { replica, op }
    }

    /// Decodes a whole case.
    pub fn decode_all(raw: &[RawStep], faults: usize) -> Vec<Step> {
        raw.iter()
            .enumerate()
            .map(|(index, raw)| Step::decode(index, *raw, faults))
            .collect()
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Op::Set { key, value } => write!(f, "set {} = {value}", KEYS[key]),
            Op::SetAndWait { key, value } => write!(f, "set_and_wait {} = {value}", KEYS[key]),
            Op::Remove { key } => write!(f, "remove {}", KEYS[key]),
            Op::RemoveAndWait { key } => write!(f, "remove_and_wait {}", KEYS[key]),
            Op::Flush => f.write_str("flush"),
            Op::Update { key } => write!(f, "update {} += 1", KEYS[key]),
            Op::CasAbsent { key, value } => {
                write!(f, "compare_and_set {} = {value} if absent", KEYS[key])
            }
            Op::CasSeen { key, value } => {
                write!(
                    f,
                    "compare_and_set {} = {value} at the seen version",
                    KEYS[key]
                )
            }
            Op::CasRemoveSeen { key } => {
                write!(f, "compare_and_remove {} at the seen version", KEYS[key])
            }
            Op::Clear => f.write_str("clear"),
        }
    }
}

/// A step described with the harness's fault names.
pub(super) struct Described<'a>(pub(super) &'a Step, pub(super) &'a [&'static str]);

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self.0 {
            Step::Op { replica, op } => write!(f, "replica {replica}: {op}"),
            Step::Fault {
                fault,
                replica,
                arg,
            } => write!(
                f,
                "fault {} (replica {replica}, arg {arg})",
                self.1.get(fault).copied().unwrap_or("?")
            ),
            Step::Checkpoint => f.write_str("checkpoint"),
        }
    }
}

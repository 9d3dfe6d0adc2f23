//! Model-based tests: random operations from several replicas of one store,
//! with backend faults between them, checked against a model of what the
//! backend may hold.
//!
//! A case is a list of [`Step`]s run one at a time, each awaited: one call on
//! one replica, a fault, or a checkpoint. The model keeps, per key, the
//! values the backend may hold. An acknowledged write narrows them to its
//! value: `set_and_wait`, `remove_and_wait`, `update`, `compare_and_set` and
//! `clear` returning `Ok`, and a `flush` returning `Ok` for the `set`s and
//! `remove`s queued before it. A queued write may land at any moment until it
//! is acknowledged. A call that failed leaves its write possible either way,
//! and the model adopts what the backend shows at the next checkpoint. At a
//! checkpoint (and at the end of every case) each replica flushes, the runner
//! waits on a deadline until every view and every subscriber agree, checks
//! the agreed state against the model, and adopts it.
//!
//! Order is defined by acknowledgement: a write acknowledged before a step
//! starts happened before that step's write; queued writes are ordered
//! against nothing but the writes of their own replica.
//!
//! Where the store is known to break a promise, the runner counts the
//! deviation (see [`Stats::deviations`]) and carries on from what the backend
//! shows; `STORE_MODEL_STRICT=1` makes each one fail the case instead.
//!
//! A backend joins by implementing [`ModelHarness`]; its test feeds proptest's
//! inputs to [`Runner::case`] (see `store-core/tests/model_memory.rs`).
//! [`MemoryModel`] is the harness for [`MemoryBackend`]. Every run prints one
//! summary line starting with `model:` that `cargo xtask soak` adds up.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock, PoisonError};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio::time::Instant;

use crate::conformance::Gated;
use crate::{Error, MemoryBackend, Precondition, Revision, Store, Subscription};

/// The keys every case writes: plain names, a key family's shape, JSON
/// Pointer's escape characters, and non-ASCII text.
pub const KEYS: [&str; 6] = ["a", "b", "user/1", "user/2", "x~1y", "größe"];

/// Replicas every case opens.
pub const REPLICAS: usize = 3;

/// The most steps a case has.
pub const MAX_STEPS: usize = 40;

/// How long a checkpoint may take to flush and converge.
const QUIESCE: Duration = Duration::from_secs(60);

/// How long one step may take at most, whatever the store's own timeout.
const STEP_LIMIT: Duration = Duration::from_secs(120);

/// How long one case may take at most.
const CASE_LIMIT: Duration = Duration::from_secs(600);

/// A limit above, scaled by [`crate::conformance::DEADLINE_SCALE_ENV`].
fn limit(base: Duration) -> Duration {
    crate::conformance::deadline(base)
}

/// The raw input of one step, as proptest generates it: the operation, the
/// replica, the key and the value, each picked from one byte. Bytes shrink
/// toward zero, so a shrunk case is made of `set`s of small values.
pub type RawStep = [u8; 4];

/// The number of test cases: `STORE_MODEL_CASES` when set, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("STORE_MODEL_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The seed for proptest's generator: `PROPTEST_RNG_SEED` when set, else a
/// fresh random one (printed in the summary line, so a failing run can be
/// repeated).
pub fn seed() -> u64 {
    std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| fastrand::u64(..))
}

// Known deviations from the documented behaviour; see `Stats::deviations`.
const MISREPORTED_CONFLICT: &str = "misreported_conflict";
const CLEAR_SURVIVOR: &str = "clear_survivor";
const STALE_AFTER_CLEAR: &str = "stale_after_clear";
const STUCK_OVERLAY: &str = "stuck_overlay";

/// How long replicas that agree may still show acknowledged writes as pending
/// before that counts as the `stuck_overlay` deviation.
const STUCK_GRACE: Duration = Duration::from_secs(1);

/// Whether `STORE_MODEL_STRICT=1` makes known deviations fail the case.
fn strict() -> bool {
    std::env::var("STORE_MODEL_STRICT").is_ok_and(|v| v == "1")
}

/// Whether a deviation of this kind is counted rather than failing the case:
/// only the one still open (`misreported_conflict`), and not in strict mode.
/// The others are fixed; their counters stay in the summary and must read 0.
fn tolerated(kind: &str) -> bool {
    kind == MISREPORTED_CONFLICT && !strict()
}

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
const KINDS: [(u16, Kind); 12] = [
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
enum Kind {
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
struct Described<'a>(&'a Step, &'a [&'static str]);

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

/// How a test opens replicas of a fresh store on the backend under test and
/// injects faults into it.
pub trait ModelHarness {
    /// One case's store, replicas and fault switches.
    type Case: ModelCase;

    /// The backend's name in the summary line, such as `memory` or `kube-fake`.
    fn backend(&self) -> &str;

    /// The names of the faults [`ModelCase::inject`] knows, in its numbering;
    /// empty when the backend cannot be made to fail.
    fn faults(&self) -> &[&'static str];

    /// A fresh, empty store with `replicas` replicas: separate [`Store`]s (and
    /// where the backend has them, separate connections) on one shared store.
    fn open(&self, replicas: usize) -> impl Future<Output = Self::Case>;
}

/// One case's replicas and faults.
pub trait ModelCase {
    /// The replicas, each a ready [`Store`] with the timeout its calls use.
    fn replicas(&self) -> &[Store];

    /// Injects fault number `fault` of [`ModelHarness::faults`]; `replica` and
    /// `arg` may pick where and how much.
    fn inject(&self, fault: usize, replica: usize, arg: u8) -> impl Future<Output = ()>;

    /// Ends every lasting fault (held or slowed requests), before a checkpoint.
    fn heal(&self) -> impl Future<Output = ()>;
}

/// What a key may hold on the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Possible {
    /// Anything: a failed call may have written something unknown.
    Any,
    /// One of these values (`None`: absent).
    Values(BTreeSet<Option<u32>>),
}

impl Possible {
    fn one(value: Option<u32>) -> Self {
        Possible::Values(BTreeSet::from([value]))
    }

    fn allows(&self, value: Option<u32>) -> bool {
        match self {
            Possible::Any => true,
            Possible::Values(values) => values.contains(&value),
        }
    }

    fn insert(&mut self, value: Option<u32>) {
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

fn show(value: Option<u32>) -> String {
    value.map_or_else(|| "absent".to_owned(), |v| v.to_string())
}

/// A queued write that may still land.
#[derive(Debug, Clone, Copy)]
struct Pending {
    value: Option<u32>,
    /// The key's epoch when the write was queued.
    epoch: u64,
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
struct KeyModel {
    base: Possible,
    epoch: u64,
    pending: Vec<Vec<Pending>>,
    wild: Vec<bool>,
}

impl KeyModel {
    fn new(replicas: usize) -> Self {
        KeyModel {
            base: Possible::one(None),
            epoch: 0,
            pending: vec![Vec::new(); replicas],
            wild: vec![false; replicas],
        }
    }

    /// Every value the backend may hold now.
    fn possible(&self) -> Possible {
        if self.wild.iter().any(|w| *w) {
            return Possible::Any;
        }
        let mut possible = self.base.clone();
        for pending in self.pending.iter().flatten() {
            possible.insert(pending.value);
        }
        possible
    }

    fn has_pending(&self, replica: usize) -> bool {
        !self.pending[replica].is_empty() || self.wild[replica]
    }

    /// Replica `replica` queued `value`.
    fn queue(&mut self, replica: usize, value: Option<u32>) {
        self.pending[replica].push(Pending {
            value,
            epoch: self.epoch,
        });
    }

    /// Replica `replica`'s write of `value` was acknowledged: it landed after
    /// every earlier write of that replica to the key.
    fn acknowledge(&mut self, replica: usize, value: Option<u32>) {
        self.base = Possible::one(value);
        self.epoch += 1;
        self.pending[replica].clear();
        self.wild[replica] = false;
    }

    /// Every write replica `replica` queued for the key has landed.
    fn settle(&mut self, replica: usize) {
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
    fn unsure(&mut self, replica: usize) {
        self.pending[replica].clear();
        self.wild[replica] = true;
    }

    /// The backend was seen to hold `value`, with nothing in flight.
    fn adopt(&mut self, value: Option<u32>) {
        self.base = Possible::one(value);
        self.epoch += 1;
        for pending in &mut self.pending {
            pending.clear();
        }
        self.wild.fill(false);
    }
}

/// Figures for the summary line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Cases run, shrinking runs included.
    pub cases: u64,
    /// Steps run.
    pub steps: u64,
    /// Checkpoints passed or failed, the final one of each case included.
    pub checkpoints: u64,
    /// Faults injected, by name.
    pub faults: BTreeMap<&'static str, u64>,
    /// Writes acknowledged (`Ok` from a waiting call, or a key covered by a `flush`).
    pub acknowledged_writes: u64,
    /// Calls that failed, leaving their write to land or not.
    pub ambiguous: u64,
    /// Keys found holding a value the model rules out: an acknowledged write
    /// lost, or a write that should be gone back.
    pub lost: u64,
    /// Deviations from the documented behaviour, by kind. Only
    /// `misreported_conflict` is still tolerated (unless
    /// `STORE_MODEL_STRICT=1`); the other kinds fail the case and are listed so
    /// a summary shows them at 0: `misreported_conflict` (a conditional
    /// write retried after a failed attempt reported applied although its
    /// precondition failed, the key already holding the value it wrote; for
    /// `update` that loses an increment),
    /// `clear_survivor` (a conditional write queued before `clear` landed
    /// after it and survived), `stale_after_clear` (`clear` returned while its
    /// replica's view still showed a key the listing no longer had) and
    /// `stuck_overlay` (a replica kept showing an acknowledged write as
    /// pending, in [`Snapshot::pending`](crate::Snapshot::pending), after every
    /// replica agreed).
    pub deviations: BTreeMap<&'static str, u64>,
    /// Panics on the runner's threads (background tasks included).
    pub panics: u64,
    /// Cases that failed.
    pub failed: u64,
}

impl Stats {
    /// The summary line: `model: backend=<name> seed=<seed> cases=<n> ...`.
    pub fn summary(&self, backend: &str, seed: u64) -> String {
        format!(
            "model: backend={backend} seed={seed} cases={} steps={} checkpoints={} faults={} acknowledged_writes={} ambiguous={} deviations={} lost={} panics={} failed={}",
            self.cases,
            self.steps,
            self.checkpoints,
            join_counts(&self.faults),
            self.acknowledged_writes,
            self.ambiguous,
            join_counts(&self.deviations),
            self.lost,
            self.panics,
            self.failed,
        )
    }
}

/// `name:count` pairs, comma-separated.
fn join_counts(counts: &BTreeMap<&'static str, u64>) -> String {
    counts
        .iter()
        .map(|(name, count)| format!("{name}:{count}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Prefix of the runner's thread names; the panic hook counts panics on them.
const THREAD_PREFIX: &str = "store-model-";

type PanicCounters = Mutex<HashMap<u64, Arc<AtomicUsize>>>;

fn panic_counters() -> &'static PanicCounters {
    static COUNTERS: OnceLock<PanicCounters> = OnceLock::new();
    COUNTERS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Counts panics on runner threads, then hands over to the previous hook.
fn install_panic_hook() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let runner = std::thread::current()
                .name()
                .and_then(|name| name.strip_prefix(THREAD_PREFIX))
                .and_then(|id| id.parse::<u64>().ok());
            if let Some(id) = runner {
                let counters = panic_counters()
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if let Some(counter) = counters.get(&id) {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            }
            previous(info);
        }));
    });
}

/// Runs cases on one harness, on a runtime of its own, and keeps the figures.
///
/// Background tasks run on the runtime's worker threads; a panic on any of
/// them fails the case it happened in.
pub struct Runner<H: ModelHarness> {
    harness: H,
    runtime: tokio::runtime::Runtime,
    seed: u64,
    id: u64,
    panics: Arc<AtomicUsize>,
    stats: Mutex<Stats>,
}

impl<H: ModelHarness> fmt::Debug for Runner<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runner")
            .field("backend", &self.harness.backend())
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl<H: ModelHarness> Runner<H> {
    /// Builds a runtime (two worker threads) and the harness inside it.
    ///
    /// # Panics
    ///
    /// When the runtime cannot be built.
    pub fn new<M>(make: M) -> Self
    where
        M: AsyncFnOnce() -> H,
    {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        install_panic_hook();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let panics = Arc::new(AtomicUsize::new(0));
        panic_counters()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Arc::clone(&panics));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name_fn(move || format!("{THREAD_PREFIX}{id}"))
            .enable_all()
            .build()
            .expect("a Tokio runtime for the model runner");
        let harness = runtime.block_on(make());
        Runner {
            harness,
            runtime,
            seed: seed(),
            id,
            panics,
            stats: Mutex::new(Stats::default()),
        }
    }

    /// The harness.
    pub fn harness(&self) -> &H {
        &self.harness
    }

    /// The seed to give proptest (see [`seed`]).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The figures so far.
    pub fn stats(&self) -> Stats {
        self.lock_stats().clone()
    }

    fn lock_stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one case; `Err` describes the broken promise, the seed and the steps.
    pub fn case(&self, raw: &[RawStep]) -> Result<(), String> {
        let faults = self.harness.faults();
        let steps = Step::decode_all(raw, faults.len());
        let panics_before = self.panics.load(Ordering::SeqCst);
        let mut stats = Stats {
            faults: faults.iter().map(|name| (*name, 0)).collect(),
            deviations: [
                (MISREPORTED_CONFLICT, 0),
                (CLEAR_SURVIVOR, 0),
                (STALE_AFTER_CLEAR, 0),
                (STUCK_OVERLAY, 0),
            ]
            .into(),
            ..Stats::default()
        };
        let outcome = self.runtime.block_on(async {
            let case = self.harness.open(REPLICAS).await;
            let outcome = tokio::time::timeout(
                limit(CASE_LIMIT),
                run_case(&case, &steps, faults, &mut stats),
            )
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "the case did not finish within {:?}",
                    limit(CASE_LIMIT)
                ))
            });
            case.heal().await;
            outcome
        });
        let panics = self.panics.load(Ordering::SeqCst) - panics_before;
        stats.cases = 1;
        stats.panics = panics as u64;
        let outcome = match outcome {
            Ok(()) if panics > 0 => Err(format!("{panics} panic(s) on the store's threads")),
            other => other,
        };
        if outcome.is_err() {
            stats.failed = 1;
        }
        self.lock_stats().add(&stats);
        outcome.map_err(|error| {
            let listing: Vec<String> = steps
                .iter()
                .enumerate()
                .map(|(i, step)| format!("  {i:2}: {}", Described(step, faults)))
                .collect();
            format!(
                "{error}\nbackend {}, seed {} (PROPTEST_RNG_SEED), steps:\n{}",
                self.harness.backend(),
                self.seed,
                listing.join("\n")
            )
        })
    }

    /// Prints the summary line (to the process's standard output, past the test
    /// harness's capture) and fails the test when proptest found a failing case
    /// or anything panicked.
    ///
    /// # Panics
    ///
    /// When `outcome` is an error or a runner thread panicked.
    pub fn finish<E: fmt::Display>(self, outcome: Result<(), E>) {
        let stats = self.stats();
        let line = stats.summary(self.harness.backend(), self.seed);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
        drop(out);
        if let Err(error) = outcome {
            panic!("{error}\n{line}");
        }
        assert_eq!(stats.panics, 0, "a store thread panicked\n{line}");
        assert_eq!(stats.lost, 0, "{line}");
    }
}

impl<H: ModelHarness> Drop for Runner<H> {
    fn drop(&mut self) {
        panic_counters()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl Stats {
    fn add(&mut self, other: &Stats) {
        self.cases += other.cases;
        self.steps += other.steps;
        self.checkpoints += other.checkpoints;
        for (name, count) in &other.faults {
            *self.faults.entry(name).or_default() += count;
        }
        self.acknowledged_writes += other.acknowledged_writes;
        self.ambiguous += other.ambiguous;
        for (name, count) in &other.deviations {
            *self.deviations.entry(name).or_default() += count;
        }
        self.lost += other.lost;
        self.panics += other.panics;
        self.failed += other.failed;
    }
}

/// The model and the replicas' subscriptions during one case.
struct State {
    keys: Vec<KeyModel>,
    /// One per replica.
    listeners: Vec<Listener>,
}

/// A replica's subscription and what its events say the store holds.
struct Listener {
    subscription: Subscription,
    /// Each key's value as the events tell it (`None`: not a number).
    picture: Decoded,
    /// The revision of the last event.
    last: Revision,
}

async fn run_case<C: ModelCase>(
    case: &C,
    steps: &[Step],
    faults: &[&'static str],
    stats: &mut Stats,
) -> Result<(), String> {
    let replicas = case.replicas();
    let mut state = State {
        keys: vec![KeyModel::new(replicas.len()); KEYS.len()],
        listeners: replicas
            .iter()
            .map(|store| Listener {
                subscription: store.subscribe(),
                picture: Decoded::new(),
                last: Revision(0),
            })
            .collect(),
    };
    for (index, step) in steps.iter().enumerate() {
        stats.steps += 1;
        let described = Described(step, faults);
        let outcome = tokio::time::timeout(limit(STEP_LIMIT), async {
            match *step {
                Step::Op { replica, op } => {
                    let store = replicas
                        .get(replica)
                        .ok_or_else(|| format!("no replica {replica}"))?;
                    run_op(store, replica, op, &mut state, stats).await
                }
                Step::Fault {
                    fault,
                    replica,
                    arg,
                } => {
                    if let Some(name) = faults.get(fault) {
                        *stats.faults.entry(name).or_default() += 1;
                    }
                    case.inject(fault, replica % replicas.len(), arg).await;
                    Ok(())
                }
                Step::Checkpoint => checkpoint(case, &mut state, stats).await,
            }
        })
        .await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(format!("step {index} ({described}): {error}")),
            Err(_) => {
                return Err(format!(
                    "step {index} ({described}) did not finish within {:?}",
                    limit(STEP_LIMIT)
                ));
            }
        }
    }
    checkpoint(case, &mut state, stats)
        .await
        .map_err(|error| format!("final checkpoint: {error}"))
}

fn increment(n: Option<&u32>) -> u32 {
    n.copied().unwrap_or(0).wrapping_add(1)
}

/// What `store` shows at `key`, which must decode.
fn shown(store: &Store, key: usize) -> Result<Option<u32>, String> {
    store
        .get::<u32>(KEYS[key])
        .map(|v| v.as_deref().copied())
        .map_err(|e| format!("get {}: {e}", KEYS[key]))
}

/// After an acknowledgement the replica's view is at least as new as the write.
fn check_view(store: &Store, key: usize, model: &KeyModel) -> Result<(), String> {
    let value = shown(store, key)?;
    let possible = model.possible();
    if possible.allows(value) {
        Ok(())
    } else {
        Err(format!(
            "after the acknowledgement the replica shows {} = {}, but the backend may only hold {possible}",
            KEYS[key],
            show(value)
        ))
    }
}

async fn run_op(
    store: &Store,
    replica: usize,
    op: Op,
    state: &mut State,
    stats: &mut Stats,
) -> Result<(), String> {
    let keys = &mut state.keys;
    match op {
        Op::Set { key, value } => {
            store
                .set(KEYS[key], &value)
                .map_err(|e| format!("set refused: {e}"))?;
            expect_own(store, key, Some(value), &keys[key], replica)?;
            keys[key].queue(replica, Some(value));
        }
        Op::Remove { key } => {
            store
                .remove(KEYS[key])
                .map_err(|e| format!("remove refused: {e}"))?;
            expect_own(store, key, None, &keys[key], replica)?;
            keys[key].queue(replica, None);
        }
        Op::SetAndWait { key, value } => match store.set_and_wait(KEYS[key], &value).await {
            Ok(_) => {
                stats.acknowledged_writes += 1;
                keys[key].acknowledge(replica, Some(value));
                check_view(store, key, &keys[key])?;
            }
            Err(error) => {
                stats.ambiguous += 1;
                if matches!(error, Error::Timeout { .. }) {
                    // Still queued: it lands later.
                    keys[key].queue(replica, Some(value));
                } else {
                    keys[key].unsure(replica);
                }
            }
        },
        Op::RemoveAndWait { key } => match store.remove_and_wait(KEYS[key]).await {
            Ok(()) => {
                stats.acknowledged_writes += 1;
                keys[key].acknowledge(replica, None);
                check_view(store, key, &keys[key])?;
            }
            Err(error) => {
                stats.ambiguous += 1;
                if matches!(error, Error::Timeout { .. }) {
                    keys[key].queue(replica, None);
                } else {
                    keys[key].unsure(replica);
                }
            }
        },
        Op::Flush => flush(store, replica, keys, stats).await,
        Op::Update { key } => {
            let before = keys[key].possible();
            match store.update(KEYS[key], increment).await {
                Ok(written) => {
                    let value = *written.value;
                    let explained = match &before {
                        Possible::Any => true,
                        Possible::Values(values) => {
                            values.iter().any(|old| increment(old.as_ref()) == value)
                        }
                    };
                    if !explained {
                        let message = format!(
                            "update wrote {value}, but the key could only hold {before}: an update was lost or doubled"
                        );
                        // The retried conditional write of an update computed on a
                        // stale view conflicts, and is taken as applied because the key
                        // holds the value it writes: the increment is lost.
                        if !before.allows(Some(value)) || strict() {
                            return Err(message);
                        }
                        *stats.deviations.entry(MISREPORTED_CONFLICT).or_default() += 1;
                    }
                    stats.acknowledged_writes += 1;
                    keys[key].acknowledge(replica, Some(value));
                    check_view(store, key, &keys[key])?;
                }
                Err(_) => {
                    // Timed out or failed: the conditional write may still land.
                    stats.ambiguous += 1;
                    keys[key].unsure(replica);
                }
            }
        }
        Op::CasAbsent { key, value } => {
            let before = keys[key].possible();
            let outcome = store
                .compare_and_set(KEYS[key], Precondition::Absent, &value)
                .await;
            conditional(
                store,
                replica,
                key,
                None,
                Some(value),
                outcome.map(|_| ()),
                &before,
                keys,
                stats,
            )?;
        }
        Op::CasSeen { key, value } => {
            let seen = store
                .get_versioned::<u32>(KEYS[key])
                .map_err(|e| format!("get_versioned {}: {e}", KEYS[key]))?;
            let (precondition, expected) = match &seen {
                Some(seen) => (Precondition::Version(seen.version), Some(*seen.value)),
                None => (Precondition::Absent, None),
            };
            let before = keys[key].possible();
            let outcome = store.compare_and_set(KEYS[key], precondition, &value).await;
            conditional(
                store,
                replica,
                key,
                expected,
                Some(value),
                outcome.map(|_| ()),
                &before,
                keys,
                stats,
            )?;
        }
        Op::CasRemoveSeen { key } => {
            let seen = store
                .get_versioned::<u32>(KEYS[key])
                .map_err(|e| format!("get_versioned {}: {e}", KEYS[key]))?;
            if let Some(seen) = seen {
                let before = keys[key].possible();
                let outcome = store.compare_and_remove(KEYS[key], seen.version).await;
                conditional(
                    store,
                    replica,
                    key,
                    Some(*seen.value),
                    None,
                    outcome,
                    &before,
                    keys,
                    stats,
                )?;
            }
        }
        Op::Clear => match store.clear().await {
            Ok(()) => {
                stats.acknowledged_writes += 1;
                for (key, model) in keys.iter_mut().enumerate() {
                    // A failed conditional write of this replica may still have been
                    // queued; `clear` promises to remove it too, but it can land after
                    // the listing and survive.
                    let survivor = model.wild[replica] && tolerated(CLEAR_SURVIVOR);
                    model.acknowledge(replica, None);
                    if survivor {
                        if shown(store, key)?.is_some() {
                            *stats.deviations.entry(CLEAR_SURVIVOR).or_default() += 1;
                        }
                        model.base = Possible::Any;
                    }
                    if check_view(store, key, model).is_err() && tolerated(STALE_AFTER_CLEAR) {
                        // `clear` may return before the view reached the listing it
                        // worked from; the view still has to get there.
                        *stats.deviations.entry(STALE_AFTER_CLEAR).or_default() += 1;
                        catch_up(store, key, model).await?;
                    }
                    check_view(store, key, model)?;
                }
            }
            Err(_) => {
                stats.ambiguous += 1;
                for model in keys.iter_mut() {
                    model.unsure(replica);
                }
            }
        },
    }
    Ok(())
}

/// Waits until the replica's view of `key` shows a value the model allows.
async fn catch_up(store: &Store, key: usize, model: &KeyModel) -> Result<(), String> {
    let deadline = Instant::now() + limit(QUIESCE);
    while check_view(store, key, model).is_err() {
        if Instant::now() >= deadline {
            return check_view(store, key, model);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// A `set` or `remove` shows at once to the replica that made it, unless
/// another replica's write, queued earlier but not acknowledged (so unordered
/// against this one), landed after it and the view already shows that.
fn expect_own(
    store: &Store,
    key: usize,
    value: Option<u32>,
    model: &KeyModel,
    replica: usize,
) -> Result<(), String> {
    let seen = shown(store, key)?;
    let overtaken = (0..model.pending.len())
        .filter(|r| *r != replica)
        .any(|r| model.wild[r] || model.pending[r].iter().any(|pending| pending.value == seen));
    if seen == value || overtaken {
        Ok(())
    } else {
        Err(format!(
            "the replica's own write is not visible: {} shows {} instead of {}",
            KEYS[key],
            show(seen),
            show(value)
        ))
    }
}

/// Accounts for a conditional write that expected `expected` and wrote `written`.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site per conditional kind"
)]
fn conditional(
    store: &Store,
    replica: usize,
    key: usize,
    expected: Option<u32>,
    written: Option<u32>,
    outcome: crate::Result<()>,
    before: &Possible,
    keys: &mut [KeyModel],
    stats: &mut Stats,
) -> Result<(), String> {
    match outcome {
        Ok(()) => {
            if !before.allows(expected) {
                let message = format!(
                    "a conditional write expecting {} = {} succeeded, but the key could only hold {before}",
                    KEYS[key],
                    show(expected)
                );
                // A conditional write retried after a failed attempt is taken as
                // applied when the key holds what it writes, even if that value was
                // there before: counted, and fatal only in strict mode.
                if !before.allows(written) || strict() {
                    return Err(message);
                }
                *stats.deviations.entry(MISREPORTED_CONFLICT).or_default() += 1;
            }
            stats.acknowledged_writes += 1;
            keys[key].acknowledge(replica, written);
            check_view(store, key, &keys[key])
        }
        Err(Error::Conflict { actual, .. }) => {
            if expected.is_none() && *before == Possible::one(None) {
                return Err(format!(
                    "a write conditional on {} being absent was refused (found version {}), but no replica can have written it",
                    KEYS[key],
                    actual.map_or_else(|| "none".to_owned(), |v| v.to_string())
                ));
            }
            // Nothing written; the replica's earlier writes to the key went first.
            keys[key].settle(replica);
            Ok(())
        }
        Err(_) => {
            stats.ambiguous += 1;
            keys[key].unsure(replica);
            Ok(())
        }
    }
}

async fn flush(store: &Store, replica: usize, keys: &mut [KeyModel], stats: &mut Stats) {
    match store.flush().await {
        Ok(()) => {
            for model in keys.iter_mut() {
                if model.has_pending(replica) {
                    stats.acknowledged_writes += 1;
                }
                model.settle(replica);
            }
        }
        // Still queued: they land later.
        Err(Error::Timeout { .. }) => stats.ambiguous += 1,
        Err(_) => {
            stats.ambiguous += 1;
            for model in keys.iter_mut() {
                if model.has_pending(replica) {
                    model.unsure(replica);
                }
            }
        }
    }
}

/// Flushes every replica, waits until views and subscribers agree, checks the
/// agreed state against the model and adopts it.
async fn checkpoint<C: ModelCase>(
    case: &C,
    state: &mut State,
    stats: &mut Stats,
) -> Result<(), String> {
    stats.checkpoints += 1;
    case.heal().await;
    let replicas = case.replicas();
    for (replica, store) in replicas.iter().enumerate() {
        let store = store.with_timeout(limit(QUIESCE));
        let mut failures = 0;
        loop {
            match store.flush().await {
                Ok(()) => {
                    for model in &mut state.keys {
                        if model.has_pending(replica) {
                            stats.acknowledged_writes += 1;
                        }
                        model.settle(replica);
                    }
                    break;
                }
                Err(error @ Error::Timeout { .. }) => {
                    return Err(format!("replica {replica} could not flush: {error}"));
                }
                Err(error) => {
                    // A write failed for good; flush reports each failure once.
                    failures += 1;
                    if failures > 3 {
                        return Err(format!("replica {replica} keeps failing to flush: {error}"));
                    }
                    for model in &mut state.keys {
                        if model.has_pending(replica) {
                            model.unsure(replica);
                        }
                    }
                }
            }
        }
    }
    let (agreed, stuck) = converge(replicas, &mut state.listeners).await?;
    *stats.deviations.entry(STUCK_OVERLAY).or_default() += stuck as u64;
    let mut observed: BTreeMap<usize, u32> = BTreeMap::new();
    for (key, value) in &agreed {
        let index = KEYS
            .iter()
            .position(|k| k == key)
            .ok_or_else(|| format!("the store holds a key no replica wrote: {key:?}"))?;
        let value = value.ok_or_else(|| format!("{key} does not decode as a number"))?;
        observed.insert(index, value);
    }
    let mut broken = Vec::new();
    for (index, model) in state.keys.iter().enumerate() {
        let actual = observed.get(&index).copied();
        let possible = model.possible();
        if !possible.allows(actual) {
            broken.push(format!(
                "{} holds {}, but the model allows only {possible}",
                KEYS[index],
                show(actual)
            ));
        }
    }
    stats.lost += broken.len() as u64;
    if !broken.is_empty() {
        return Err(broken.join("; "));
    }
    for (replica, store) in replicas.iter().enumerate() {
        let keys: Vec<String> = agreed.keys().cloned().collect();
        if store.keys() != keys || store.len() != keys.len() {
            return Err(format!(
                "replica {replica}: keys() {:?} and len() {} disagree with its snapshot {keys:?}",
                store.keys(),
                store.len()
            ));
        }
        for (index, _) in KEYS.iter().enumerate() {
            let value = shown(store, index)?;
            if value != observed.get(&index).copied() {
                return Err(format!(
                    "replica {replica}: get {} gives {} but its snapshot holds {}",
                    KEYS[index],
                    show(value),
                    show(observed.get(&index).copied())
                ));
            }
        }
    }
    for (index, model) in state.keys.iter_mut().enumerate() {
        model.adopt(observed.get(&index).copied());
    }
    Ok(())
}

type Decoded = BTreeMap<String, Option<u32>>;

/// Waits until every replica's view (with nothing pending) and every
/// subscriber's running picture agree; returns the agreed keys and values
/// (`None` for a value that does not decode as a number) and how many
/// replicas still show acknowledged writes as pending.
async fn converge(
    replicas: &[Store],
    listeners: &mut [Listener],
) -> Result<(Decoded, usize), String> {
    let deadline = Instant::now() + limit(QUIESCE);
    let mut agreed_at: Option<Instant> = None;
    loop {
        let snapshots: Vec<_> = replicas.iter().map(Store::snapshot).collect();
        let views: Vec<Decoded> = snapshots
            .iter()
            .map(|s| {
                s.entries
                    .keys()
                    .map(|k| (k.clone(), s.get::<u32>(k).ok().flatten()))
                    .collect()
            })
            .collect();
        for (replica, listener) in listeners.iter_mut().enumerate() {
            let Listener {
                subscription,
                picture,
                last,
            } = listener;
            while let Some(Some(event)) = subscription.next().now_or_never() {
                let event = event.map_err(|e| format!("replica {replica}'s subscriber: {e}"))?;
                if event.revision() < *last {
                    return Err(format!(
                        "replica {replica}'s subscriber got revision {} after {}",
                        event.revision(),
                        last
                    ));
                }
                *last = event.revision();
                let value = event.value::<u32>().ok().flatten();
                if event.is_removal() {
                    picture.remove(event.key());
                } else {
                    picture.insert(event.key().to_owned(), value);
                }
            }
        }
        let settled = snapshots.iter().all(|s| s.pending == 0);
        let agreed = views.windows(2).all(|w| w[0] == w[1]);
        let heard = listeners
            .iter()
            .zip(&views)
            .all(|(listener, view)| listener.picture == *view);
        if agreed && heard {
            let now = Instant::now();
            let since = *agreed_at.get_or_insert(now);
            // Acknowledged writes may show as pending a moment longer; an entry
            // that stays is a known deviation (see `Stats::deviations`).
            if settled || (now - since >= STUCK_GRACE && tolerated(STUCK_OVERLAY)) {
                let stuck = snapshots.iter().filter(|s| s.pending > 0).count();
                return Ok((views.into_iter().next().unwrap_or_default(), stuck));
            }
        } else {
            agreed_at = None;
        }
        if Instant::now() >= deadline {
            let describe = |map: &Decoded| {
                map.iter()
                    .map(|(k, v)| format!("{k}={}", show(*v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let mut report = Vec::new();
            for (replica, (snapshot, view)) in snapshots.iter().zip(&views).enumerate() {
                report.push(format!(
                    "replica {replica} at revision {} ({} pending): {}; its subscriber heard: {}",
                    snapshot.revision,
                    snapshot.pending,
                    describe(view),
                    describe(&listeners[replica].picture)
                ));
            }
            return Err(format!(
                "replicas did not converge within {:?}:\n{}",
                limit(QUIESCE),
                report.join("\n")
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Faults [`MemoryModel`] injects, in [`ModelCase::inject`]'s numbering.
const MEMORY_FAULTS: &[&str] = &[
    "apply_failures",
    "replica_failures",
    "replica_held",
    "history_compacted",
];

/// The harness for [`MemoryBackend`]: the replicas share one backend, each
/// through a [`Gated`] wrapper of its own.
///
/// Faults: the next 1 to 3 batches of any replica fail (`apply_failures`) or of
/// one replica (`replica_failures`); one replica's batches are held for up to
/// 200 ms (`replica_held`), longer than its calls' 150 ms timeout; the
/// backend forgets its history, so every watch re-lists (`history_compacted`).
#[derive(Debug, Default)]
pub struct MemoryModel;

/// One case of [`MemoryModel`].
#[derive(Debug)]
pub struct MemoryCase {
    backend: MemoryBackend,
    gates: Vec<Gated<MemoryBackend>>,
    replicas: Vec<Store>,
}

/// How long a memory replica's calls wait; a held replica's calls time out.
const MEMORY_TIMEOUT: Duration = Duration::from_millis(150);

impl ModelHarness for MemoryModel {
    type Case = MemoryCase;

    fn backend(&self) -> &str {
        "memory"
    }

    fn faults(&self) -> &[&'static str] {
        MEMORY_FAULTS
    }

    async fn open(&self, replicas: usize) -> MemoryCase {
        let backend = MemoryBackend::new();
        let mut gates = Vec::with_capacity(replicas);
        let mut stores = Vec::with_capacity(replicas);
        for _ in 0..replicas {
            let gate = Gated::new(backend.clone());
            let store = Store::builder()
                .backend(gate.clone())
                .linked_hooks(false)
                .timeout(MEMORY_TIMEOUT)
                .retry_backoff(Duration::from_millis(1), Duration::from_millis(20))
                .start();
            store
                .with_timeout(limit(QUIESCE))
                .ready()
                .await
                .expect("a memory replica starts");
            gates.push(gate);
            stores.push(store);
        }
        MemoryCase {
            backend,
            gates,
            replicas: stores,
        }
    }
}

impl ModelCase for MemoryCase {
    fn replicas(&self) -> &[Store] {
        &self.replicas
    }

    async fn inject(&self, fault: usize, replica: usize, arg: u8) {
        let count = 1 + usize::from(arg % 3);
        match fault {
            0 => self.backend.fail_next_applies(count),
            1 => self.gates[replica].fail_next(count),
            2 => {
                let gate = self.gates[replica].clone();
                gate.close();
                let held = Duration::from_millis(25 * (1 + u64::from(arg % 8)));
                tokio::spawn(async move {
                    tokio::time::sleep(held).await;
                    gate.open();
                });
            }
            _ => self.backend.compact(),
        }
    }

    async fn heal(&self) {
        for gate in &self.gates {
            gate.open();
            gate.fail_next(0);
        }
        self.backend.fail_next_applies(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            line.ends_with(" deviations= lost=0 panics=0 failed=0"),
            "{line}"
        );
    }

    /// Stores on a memory backend that acknowledges writes to `b` without
    /// applying them; its one fault panics on a runtime thread.
    struct Broken;

    struct BrokenCase(Vec<Store>);

    #[derive(Clone)]
    struct ForgetsB(MemoryBackend);

    impl crate::Backend for ForgetsB {
        fn name(&self) -> &'static str {
            "forgets-b"
        }
        fn capabilities(&self) -> crate::Capabilities {
            self.0.capabilities()
        }
        fn read(
            &self,
            key: &str,
        ) -> impl Future<Output = crate::Result<Option<crate::backend::Entry>>> + Send {
            self.0.read(key)
        }
        fn list(
            &self,
            prefix: &str,
        ) -> impl Future<Output = crate::Result<crate::backend::Listing>> + Send {
            self.0.list(prefix)
        }
        async fn apply(
            &self,
            mut batch: crate::backend::Batch,
        ) -> crate::Result<crate::backend::Applied> {
            let count = batch.ops.len();
            batch.ops.retain(|op| op.key != "b");
            let mut applied = self.0.apply(batch).await?;
            let now = crate::Version(applied.revision.0);
            applied
                .outcomes
                .resize(count, crate::backend::Outcome::Applied(now));
            Ok(applied)
        }
        fn watch(
            &self,
            from: Revision,
        ) -> impl Future<Output = crate::Result<crate::backend::WatchStream>> + Send {
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
}

//! Runs cases: the steps on the replicas, the checkpoints, the panic accounting.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock, PoisonError};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio::time::Instant;

use store_core::{Error, Precondition, Revision, Store, Subscription};

use super::keys::*;
use super::stats::*;
use super::steps::*;
use super::*;

/// Prefix of the runner's thread names; the panic hook counts panics on them.
pub(super) const THREAD_PREFIX: &str = "store-model-";

pub(super) type PanicCounters = Mutex<HashMap<u64, Arc<AtomicUsize>>>;

pub(super) fn panic_counters() -> &'static PanicCounters {
    static COUNTERS: OnceLock<PanicCounters> = OnceLock::new();
    COUNTERS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Counts panics on runner threads, then hands over to the previous hook.
pub(super) fn install_panic_hook() {
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
    pub(super) harness: H,
    pub(super) runtime: tokio::runtime::Runtime,
    pub(super) seed: u64,
    pub(super) id: u64,
    pub(super) panics: Arc<AtomicUsize>,
    pub(super) stats: Mutex<Stats>,
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

    pub(super) fn lock_stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one case; `Err` describes the broken promise, the seed and the steps.
    pub fn case(&self, raw: &[RawStep]) -> Result<(), String> {
        let faults = self.harness.faults();
        let steps = Step::decode_all(raw, faults.len());
        let panics_before = self.panics.load(Ordering::SeqCst);
        let mut stats = Stats {
            faults: faults.iter().map(|name| (*name, 0)).collect(),
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

    /// Runs `cases` cases with [`run_cases`], then [`finish`](Self::finish)es.
    ///
    /// # Panics
    ///
    /// As [`finish`](Self::finish) does.
    pub fn run(self, cases: u32, max_shrink_iters: u32) {
        // Not `model: backend=`: that starts the summary line `cargo xtask soak` adds up.
        let label = format!("model run: backend={}", self.harness.backend());
        let outcome = run_cases(&label, self.seed, cases, max_shrink_iters, |raw| {
            self.case(raw)
        });
        self.finish(outcome);
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
        say(&mut std::io::stdout(), &line);
        if let Err(error) = outcome {
            panic!("{error}\n{line}");
        }
        assert_eq!(stats.panics, 0, "a store thread panicked\n{line}");
        assert_eq!(stats.lost, 0, "{line}");
    }
}

/// Runs `cases` cases of up to [`MAX_STEPS`] random steps (`T`s) with
/// proptest from `seed`, shrinking a failing one at most `max_shrink_iters`
/// times and for at most [`MAX_SHRINK_TIME`]; `Err` is proptest's report.
///
/// Says `label` and the seed first, and shows the first failing case as soon
/// as it fails, both past the test harness's capture: shrinking reruns
/// failing cases, each up to its deadlines, and a run stopped meanwhile can
/// still be repeated.
pub fn run_cases<T>(
    label: &str,
    seed: u64,
    cases: u32,
    max_shrink_iters: u32,
    case: impl Fn(&[T]) -> Result<(), String>,
) -> Result<(), String>
where
    T: proptest::arbitrary::Arbitrary + fmt::Debug,
{
    use proptest::collection::vec;
    use proptest::prelude::any;
    use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

    say(
        &mut std::io::stdout(),
        &format!("{label} seed={seed} cases={cases} (PROPTEST_RNG_SEED={seed} repeats it)"),
    );
    let mut proptest = TestRunner::new(Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters,
        max_shrink_time: u32::try_from(MAX_SHRINK_TIME.as_millis()).unwrap_or(u32::MAX),
        ..Config::default()
    });
    let first_failure = Once::new();
    proptest
        .run(&vec(any::<T>(), 1..=MAX_STEPS), |raw| {
            case(&raw).map_err(|error| {
                first_failure.call_once(|| {
                    say(
                        &mut std::io::stderr(),
                        &format!("{label} seed={seed}: a case failed, shrinking it now: {error}"),
                    );
                });
                TestCaseError::fail(error)
            })
        })
        .map_err(|error| error.to_string())
}

/// Writes `line` to `out` directly: the test harness captures `print!`, not this.
fn say(out: &mut impl Write, line: &str) {
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

impl<H: ModelHarness> Drop for Runner<H> {
    fn drop(&mut self) {
        panic_counters()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// The model and the replicas' subscriptions during one case.
pub(super) struct State {
    pub(super) keys: Vec<KeyModel>,
    /// One per replica.
    pub(super) listeners: Vec<Listener>,
}

/// A replica's subscription and what its events say the store holds.
pub(super) struct Listener {
    pub(super) subscription: Subscription,
    /// Each key's value as the events tell it (`None`: not a number).
    pub(super) picture: Decoded,
    /// The revision of the last event.
    pub(super) last: Revision,
}

pub(super) async fn run_case<C: ModelCase>(
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

pub(super) fn increment(n: Option<&u32>) -> u32 {
    n.copied().unwrap_or(0).wrapping_add(1)
}

/// What `store` shows at `key`, which must decode.
pub(super) fn shown(store: &Store, key: usize) -> Result<Option<u32>, String> {
    store
        .get::<u32>(KEYS[key])
        .map(|v| v.as_deref().copied())
        .map_err(|e| format!("get {}: {e}", KEYS[key]))
}

/// After an acknowledgement the replica's view is at least as new as the write.
pub(super) fn check_view(store: &Store, key: usize, model: &KeyModel) -> Result<(), String> {
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

pub(super) async fn run_op(
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
                        return Err(format!(
                            "update wrote {value}, but the key could only hold {before}: an update was lost or doubled"
                        ));
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
                    // `clear` removes this replica's failed conditional writes
                    // too, and returns once its view shows the keys gone.
                    model.acknowledge(replica, None);
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

/// A `set` or `remove` shows at once to the replica that made it, unless
/// another replica's write, queued earlier but not acknowledged (so unordered
/// against this one), landed after it and the view already shows that.
pub(super) fn expect_own(
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
pub(super) fn conditional(
    store: &Store,
    replica: usize,
    key: usize,
    expected: Option<u32>,
    written: Option<u32>,
    outcome: store_core::Result<()>,
    before: &Possible,
    keys: &mut [KeyModel],
    stats: &mut Stats,
) -> Result<(), String> {
    match outcome {
        Ok(()) => {
            if !before.allows(expected) {
                return Err(format!(
                    "a conditional write expecting {} = {} succeeded, but the key could only hold {before}",
                    KEYS[key],
                    show(expected)
                ));
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

pub(super) async fn flush(store: &Store, replica: usize, keys: &mut [KeyModel], stats: &mut Stats) {
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
pub(super) async fn checkpoint<C: ModelCase>(
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
    let agreed = converge(replicas, &mut state.listeners).await?;
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

pub(super) type Decoded = BTreeMap<String, Option<u32>>;

/// Waits until every replica's view (with nothing pending) and every
/// subscriber's running picture agree; returns the agreed keys and values
/// (`None` for a value that does not decode as a number).
pub(super) async fn converge(
    replicas: &[Store],
    listeners: &mut [Listener],
) -> Result<Decoded, String> {
    let deadline = Instant::now() + limit(QUIESCE);
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
        if settled && agreed && heard {
            return Ok(views.into_iter().next().unwrap_or_default());
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

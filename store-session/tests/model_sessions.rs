//! Model-based test of one session across two replicas: two registries on
//! one durable backend (two connections), random steps on either (open,
//! write, update, read, end, reset) while the second one's view is now and
//! then held back for a few steps,
//! checked against what each generation of the session can hold.
//!
//! - A handle only ever reads its own generation's data: the default or a
//!   value written through a handle of that generation (every write carries
//!   a value no other write uses).
//! - No write after an end or a reset survives: once both replicas agree on
//!   the current generation, each key holds the default or a value written in
//!   it, both replicas read the same, and no key of an earlier generation is
//!   left on the backend.
//!
//! Runs on memory, on the kube backend over the fake API server and over a
//! real control plane (reported as ignored where none was found at build
//! time), and on Redis. `STORE_MODEL_CASES` sets the number of cases (default
//! 32 on memory, 8 on the others) and `PROPTEST_RNG_SEED` repeats a run.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::replicas::{Held, Pair, kube_pair, memory_pair, real_pair, redis_pair};
use store_conformance::model;
use store_core::Backend;
use store_session::{DurableHandle, Error, Session, Sessions, layout};

const SESSION: &str = "s";
const KEYS: [&str; 2] = ["a", "b"];

/// How long a replica's calls wait: short, since a held view makes waiting
/// calls on the second replica time out (a failure the model allows).
const TIMEOUT: Duration = Duration::from_secs(2);

/// How long an earlier generation's keys may stay on the backend once both
/// replicas are in the current one.
const FREED_WITHIN: Duration = Duration::from_secs(5);

/// One step: what to do (`kind`), on which replica and which key.
type RawStep = (u8, bool, bool);

/// What a run knows: the values each generation's keys may hold.
#[derive(Default)]
struct Model {
    /// Values written (or maybe written) per generation and key.
    possible: BTreeMap<(u64, &'static str), BTreeSet<u64>>,
    generations: BTreeSet<u64>,
    next: u64,
}

impl Model {
    fn fresh_value(&mut self) -> u64 {
        self.next += 1000;
        self.next
    }

    fn allow(&mut self, generation: u64, key: &'static str, value: u64) {
        self.possible
            .entry((generation, key))
            .or_default()
            .insert(value);
    }

    fn check(
        &self,
        generation: u64,
        key: &'static str,
        value: u64,
        how: &str,
    ) -> Result<(), String> {
        let allowed = self.possible.get(&(generation, key));
        if value == 0 || allowed.is_some_and(|set| set.contains(&value)) {
            return Ok(());
        }
        let other = self
            .possible
            .iter()
            .find(|(_, values)| values.contains(&value))
            .map(|((generation, _), _)| *generation);
        Err(format!(
            "{how}: `{key}` of generation {generation} holds {value}, written in generation {other:?}; it may hold 0 or {allowed:?}"
        ))
    }
}

/// Errors a step may end with while the other replica ends or resets the
/// session, or while this replica's view is held back (a wait that times out
/// leaves its write free to land or not; the model allows its value).
fn expected(error: &Error) -> bool {
    matches!(
        error,
        Error::Outdated { .. }
            | Error::SessionEnded { .. }
            | Error::NotFound { .. }
            | Error::Store(
                store_core::Error::Timeout { .. } | store_core::Error::OutcomeUnknown { .. }
            )
    )
}

/// One replica: its registry, its open session and a handle per key.
struct Replica {
    sessions: Sessions,
    open: Option<Session>,
    handles: Vec<Option<(u64, DurableHandle<u64>)>>,
}

impl Replica {
    async fn open(&mut self, model: &mut Model) -> Result<(), String> {
        let session = match self.sessions.open(SESSION).await {
            Ok(session) => session,
            Err(e) if expected(&e) => return Ok(()),
            Err(e) => return Err(format!("open: {e}")),
        };
        self.handles.clear();
        for key in KEYS {
            let handle = async {
                let generation = session.generation()?;
                let handle = session
                    .global()?
                    .durable()
                    .await?
                    .use_value(key, 0_u64)
                    .await?;
                Ok::<_, Error>((generation, handle))
            }
            .await;
            match handle {
                Ok((generation, handle)) => {
                    model.generations.insert(generation);
                    self.handles.push(Some((generation, handle)));
                }
                // Ended or reset from the other replica meanwhile.
                Err(e) if expected(&e) => self.handles.push(None),
                Err(e) => return Err(format!("use_value({key}): {e}")),
            }
        }
        self.open = Some(session);
        Ok(())
    }
}

/// A case's two replicas; the second one's view can be held back.
async fn run_case<A: Backend, B: Backend>(
    pair: &Pair<A, Held<B>>,
    raw: &[RawStep],
    log: &Log,
) -> Result<(), String> {
    let (one, two) = (
        Sessions::builder()
            .shared_backend(Arc::clone(&pair.one))
            .timeout(TIMEOUT)
            .build(),
        Sessions::builder()
            .shared_backend(Arc::clone(&pair.two))
            .timeout(TIMEOUT)
            .build(),
    );
    let mut replicas = [one, two].map(|sessions| Replica {
        sessions,
        open: None,
        handles: Vec::new(),
    });
    let mut model = Model::default();
    // Steps left before a held view is let go.
    let mut held = 0_u8;
    for (index, &(kind, second, other_key)) in raw.iter().enumerate() {
        if held > 0 {
            held -= 1;
            if held == 0 {
                pair.two.release();
            }
        }
        let r = usize::from(second);
        let k = usize::from(other_key);
        let key = KEYS[k];
        let replica = &mut replicas[r];
        let handle = replica.handles.get(k).and_then(Option::as_ref);
        log.push(format!("{index}: kind {kind} replica {r} key {key}"));
        let fail = |message: String| log.failure(&message);
        match kind % 10 {
            0 | 1 => replica.open(&mut model).await.map_err(fail)?,
            2 | 3 => {
                if let Some((generation, handle)) = handle {
                    let value = model.fresh_value();
                    model.allow(*generation, key, value);
                    match handle.set_and_wait(value).await {
                        Ok(_) => {}
                        Err(e) if expected(&e) => {}
                        Err(e) => return Err(fail(format!("set {key}: {e}"))),
                    }
                }
            }
            4 => {
                if let Some((generation, handle)) = handle {
                    let seen = Mutex::new(Vec::new());
                    let outcome = handle
                        .update(|n| {
                            seen.lock().unwrap_or_else(|p| p.into_inner()).push(*n);
                            *n += 1;
                        })
                        .await;
                    for old in seen.into_inner().unwrap_or_else(|p| p.into_inner()) {
                        model
                            .check(*generation, key, old, "an update started from")
                            .map_err(fail)?;
                        model.allow(*generation, key, old + 1);
                    }
                    match outcome {
                        Ok(()) => {}
                        Err(e) if expected(&e) => {}
                        Err(e) => return Err(fail(format!("update {key}: {e}"))),
                    }
                }
            }
            5 | 6 => {
                if let Some((generation, handle)) = handle {
                    match handle.get() {
                        Ok(value) => model
                            .check(*generation, key, *value, "a read")
                            .map_err(fail)?,
                        Err(e) if expected(&e) => {}
                        Err(e) => return Err(fail(format!("get {key}: {e}"))),
                    }
                }
            }
            7 => match replica.sessions.end(SESSION).await {
                Ok(_) => {}
                Err(e) if expected(&e) => {}
                Err(e) => return Err(fail(format!("end: {e}"))),
            },
            8 => {
                if let Some(session) = &replica.open {
                    match session.reset().await {
                        Ok(teardown) => drop(teardown),
                        Err(e) if expected(&e) => {}
                        Err(e) => return Err(fail(format!("reset: {e}"))),
                    }
                }
            }
            _ => {
                // The second replica's watch is held for a few steps.
                pair.two.hold();
                held = 1 + kind % 4;
            }
        }
    }
    pair.two.release();

    // Both replicas reach one generation, read alike, and hold nothing of
    // earlier ones.
    log.push("the final checks".to_owned());
    let fail = |message: String| log.failure(&message);
    let deadline = tokio::time::Instant::now() + FREED_WITHIN * 6;
    let (generation, values) = loop {
        let mut seen = Vec::new();
        for replica in &replicas {
            seen.push(final_read(&replica.sessions).await);
        }
        match (&seen[0], &seen[1]) {
            (Ok(one), Ok(two)) if one == two => break one.clone(),
            _ if tokio::time::Instant::now() >= deadline => {
                return Err(fail(format!(
                    "the replicas do not agree on the session: {seen:?}"
                )));
            }
            // Polling two registries, which have no joint notification.
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    model.generations.insert(generation);
    for (key, value) in KEYS.iter().zip(values) {
        model
            .check(generation, key, value, "at the end")
            .map_err(fail)?;
    }
    for earlier in model.generations.iter().filter(|g| **g < generation) {
        let prefix = layout::generation_prefix("", SESSION, *earlier);
        let deadline = tokio::time::Instant::now() + FREED_WITHIN;
        loop {
            let left: Vec<String> = pair
                .one
                .list(&prefix)
                .await
                .map_err(|e| e.to_string())?
                .entries
                .into_iter()
                .map(|entry| entry.key().to_string())
                .collect();
            if left.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(fail(format!(
                    "generation {earlier} was not freed (now {generation}): {left:?} left"
                )));
            }
            // Polling the backend, which has no notification to wait on here.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for replica in &replicas {
        let _ = replica.sessions.end(SESSION).await;
    }
    Ok(())
}

/// A replica's generation of the session and its keys' values, read
/// through fresh handles.
async fn final_read(sessions: &Sessions) -> Result<(u64, Vec<u64>), String> {
    let session = sessions.open(SESSION).await.map_err(|e| e.to_string())?;
    let generation = session.generation().map_err(|e| e.to_string())?;
    let scope = session
        .global()
        .map_err(|e| e.to_string())?
        .durable()
        .await
        .map_err(|e| e.to_string())?;
    let mut values = Vec::new();
    for key in KEYS {
        let handle = scope
            .use_value(key, 0_u64)
            .await
            .map_err(|e| e.to_string())?;
        values.push(*handle.get().map_err(|e| e.to_string())?);
    }
    Ok((generation, values))
}

/// The steps a case has taken, kept outside it so a case that never ends can
/// still say where it stopped.
#[derive(Default)]
struct Log(Mutex<Vec<String>>);

impl Log {
    fn push(&self, step: String) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(step);
    }

    fn failure(&self, message: &str) -> String {
        let steps = self.0.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
        format!("{message}\nsteps:\n{steps}")
    }
}

/// A case's steps each wait at most [`TIMEOUT`] (a few of them twice), and
/// its final checks at most `FREED_WITHIN` six times for agreement and once
/// per earlier generation: a case still running after this is stuck, and
/// fails with the steps it took.
const CASE_DEADLINE: Duration = Duration::from_secs(300);

fn run<A: Backend, B: Backend>(
    name: &str,
    default_cases: u32,
    start: impl AsyncFn() -> Pair<A, Held<B>>,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let seed = model::seed();
    let label = format!("sessions model run: backend={name}");
    let outcome = model::run_cases(&label, seed, model::cases(default_cases), 64, |raw| {
        let log = Log::default();
        runtime.block_on(async {
            let pair = start().await;
            tokio::time::timeout(CASE_DEADLINE, run_case(&pair, raw, &log))
                .await
                .unwrap_or_else(|_| {
                    Err(log.failure(&format!(
                        "the case did not end within {CASE_DEADLINE:?}; its last step never returned"
                    )))
                })
        })
    });
    if let Err(e) = outcome {
        panic!("{name}, seed {seed} (PROPTEST_RNG_SEED repeats it): {e}");
    }
}

#[test]
fn sessions_on_two_replicas_over_memory_agree_with_the_model() {
    run("memory", 32, async || memory_pair());
}

#[test]
fn sessions_on_two_replicas_over_kube_fake_agree_with_the_model() {
    run("kube-fake", 8, kube_pair);
}

#[test]
#[cfg_attr(
    not(real_control_plane),
    ignore = "no control plane found at build time: run `cargo xtask envtest`"
)]
fn sessions_on_two_replicas_over_a_real_control_plane_agree_with_the_model() {
    run("kube-real", 8, real_pair);
}

#[test]
fn sessions_on_two_replicas_over_redis_agree_with_the_model() {
    run("redis", 8, redis_pair);
}

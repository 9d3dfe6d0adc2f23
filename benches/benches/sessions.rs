//! B7 and B8: the session layer.
//!
//! - B7: `use_value` + `update` on the live tier, from 1 and from 2 threads on
//!   one scope, beside three maps doing the same (find or insert the typed
//!   entry, then change it in place): a `Mutex<HashMap<String, Box<dyn Any>>>`,
//!   a `DashMap` of the same entries, and a `moka::sync::Cache` of shared,
//!   locked entries.
//! - B8: ending a session of 10,000 keys (5,000 live entries and 5,000 durable
//!   keys, its durable scope open) while 999 other sessions are open, each with
//!   10 live entries and 100 durable keys in an open durable scope, beside the
//!   same end with that session alone in its registry. Hand-timed: setting a
//!   session up costs far more than ending it, which criterion cannot budget.
//!   Then, beside the same 999 sessions and alone: creating 2,000 keys one by
//!   one (`use_value`, each a compare-and-set) in one more session's durable
//!   scope.

use std::any::Any;
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Barrier, Mutex, PoisonError};
use std::time::{Duration, Instant};

use criterion::Criterion;
use dashmap::DashMap;
use store_benches::{Samples, keys, repetitions, report, runtime, selected};
use store_core::backend::{Batch, Op};
use store_core::{Backend, MemoryBackend, Payload};
use store_session::{ScopeKind, Session, Sessions, layout};

const B7_KEYS: usize = 1000;

fn main() {
    let mut c = store_benches::criterion();
    if selected("B7") {
        b7_live(&mut c);
    }
    c.final_summary();
    if selected("B8") {
        b8_end();
    }
}

type AnyMap = Mutex<HashMap<String, Box<dyn Any + Send + Sync>>>;

/// The baseline's `use_value(key, 0)` + `update(|n| *n += 1)`.
fn baseline_op(map: &AnyMap, key: &str) {
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    match map.get_mut(key).and_then(|v| v.downcast_mut::<u64>()) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.to_owned(), Box::new(0_u64));
        }
    }
}

/// A `DashMap` of the same entries as [`AnyMap`]: a sharded map, each shard
/// behind its own reader-writer lock.
type AnyDashMap = DashMap<String, Box<dyn Any + Send + Sync>>;

/// The `DashMap` baseline's `use_value(key, 0)` + `update(|n| *n += 1)`: the
/// entry found (or inserted, the key copied only then) and changed in place
/// under its shard's write lock.
fn dashmap_op(map: &AnyDashMap, key: &str) {
    let mut entry = match map.get_mut(key) {
        Some(entry) => entry,
        None => map.entry(key.to_owned()).or_insert_with(|| Box::new(0_u64)),
    };
    if let Some(n) = entry.downcast_mut::<u64>() {
        *n += 1;
    }
}

/// A shared, locked entry, as a handle of the live tier holds one.
type AnyCell = Arc<Mutex<dyn Any + Send>>;

/// A `moka::sync::Cache` of entries: values are cloned out of the cache, so
/// each is an `Arc` of a locked value, as the live tier's are. No capacity
/// bound and no expiry, so the cache never evicts during the run; it still
/// records every access for its eviction policy (a clock read and a channel
/// send per hit), as the live tier records use for its idle expiry.
type AnyCache = moka::sync::Cache<String, AnyCell>;

/// The `moka` baseline's `use_value(key, 0)` + `update(|n| *n += 1)`: the
/// entry's `Arc` taken from the cache (inserted when missing, the key copied
/// only then), then the value changed under the entry's lock.
fn moka_op(cache: &AnyCache, key: &str) {
    let cell = cache.get_with_by_ref(key, || Arc::new(Mutex::new(0_u64)) as AnyCell);
    let mut value = cell.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(n) = value.downcast_mut::<u64>() {
        *n += 1;
    }
}

#[expect(
    clippy::expect_used,
    reason = "a benchmark that cannot set up has nothing to measure"
)]
fn b7_live(c: &mut Criterion) {
    let rt = runtime(1);
    let sessions = Sessions::new();
    let session = rt.block_on(sessions.open("bench")).expect("open");
    let scope = session.local("env").expect("scope");
    let keys = keys("counter/", B7_KEYS);
    let map: AnyMap = Mutex::new(HashMap::new());
    let dash: AnyDashMap = DashMap::new();
    let cache: AnyCache = moka::sync::Cache::builder()
        .initial_capacity(B7_KEYS)
        .build();
    for key in &keys {
        scope.use_value(key, 0_u64).expect("use_value");
        baseline_op(&map, key);
        dashmap_op(&dash, key);
        moka_op(&cache, key);
    }
    let session_op = |key: &str| {
        scope
            .use_value(key, 0_u64)
            .and_then(|h| h.update(|n| *n += 1))
            .expect("use_value + update");
    };

    let mut group = c.benchmark_group("B7");
    group.throughput(criterion::Throughput::Elements(1));
    group.bench_function("session_1t", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % B7_KEYS;
            session_op(black_box(&keys[i]));
        });
    });
    let baselines: [(&str, &KeyOp<'_>); 3] = [
        ("mutex_map", &|k: &str| baseline_op(&map, k)),
        ("dashmap", &|k: &str| dashmap_op(&dash, k)),
        ("moka", &|k: &str| moka_op(&cache, k)),
    ];
    for (name, op) in baselines {
        group.bench_function(format!("{name}_1t"), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % B7_KEYS;
                op(black_box(&keys[i]));
            });
        });
    }
    // Per-thread time per op: both threads run `iters` ops; the slower one counts.
    group.bench_function("session_2t", |b| {
        b.iter_custom(|iters| on_two_threads(iters, &keys, &session_op));
    });
    for (name, op) in baselines {
        group.bench_function(format!("{name}_2t"), |b| {
            b.iter_custom(|iters| on_two_threads(iters, &keys, op));
        });
    }
    group.finish();
    drop(session);
    drop(rt);
}

/// One operation on a key, callable from several threads.
type KeyOp<'a> = dyn Fn(&str) + Sync + 'a;

/// Runs `iters` calls of `op` on each of two threads at once, over `keys` from
/// opposite ends; returns the time from the common start to the last finish.
fn on_two_threads(iters: u64, keys: &[String], op: &KeyOp<'_>) -> Duration {
    let start = Barrier::new(2);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|t| {
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    let began = Instant::now();
                    let mut i = t * keys.len() / 2;
                    for _ in 0..iters {
                        i = (i + 1) % keys.len();
                        op(black_box(&keys[i]));
                    }
                    (began, Instant::now())
                })
            })
            .collect();
        workers.into_iter().filter_map(|w| w.join().ok()).collect()
    });
    let first = spans.iter().map(|s| s.0).min();
    let last = spans.iter().map(|s| s.1).max();
    match (first, last) {
        (Some(first), Some(last)) => last - first,
        _ => Duration::ZERO,
    }
}

const B8_LIVE: usize = 5_000;
const B8_DURABLE: usize = 5_000;
const OTHER_SESSIONS: usize = 999;
const OTHER_LIVE: usize = 10;
const OTHER_DURABLE: usize = 100;
const B8_WRITES: usize = 2_000;

/// Writes `n` durable keys straight into a scope's prefix on the backend, in
/// batches the backend takes.
async fn seed(backend: &MemoryBackend, prefix: &str, n: usize) -> store_core::Result<()> {
    let ops: Vec<Op> = (0..n)
        .map(|i| Op::put(format!("{prefix}k{i}"), Payload::from(format!("{i}"))))
        .collect();
    for chunk in ops.chunks(1000) {
        backend
            .apply(Batch {
                ops: chunk.to_vec(),
                atomic: false,
            })
            .await?;
    }
    Ok(())
}

/// Opens session `id` with `live` live entries and `durable` durable keys in its
/// global scope, the durable scope open (its store running, as in use).
async fn populate(
    sessions: &Sessions,
    backend: &MemoryBackend,
    id: &str,
    live: usize,
    durable: usize,
) -> store_session::Result<Session> {
    let session = sessions.open(id).await?;
    let prefix = layout::scope_prefix("", id, session.generation()?, &ScopeKind::Global);
    seed(backend, &prefix, durable).await?;
    let global = session.global()?;
    for i in 0..live {
        global.use_value(&format!("live{i}"), i as u64)?;
    }
    let scope = global.durable().await?;
    assert_eq!(
        scope.keys()?.len(),
        durable,
        "the durable scope sees its keys"
    );
    Ok(session)
}

#[expect(
    clippy::expect_used,
    reason = "a benchmark that cannot set up has nothing to measure"
)]
fn b8_end() {
    let rt = runtime(2);
    let crowded_backend = Arc::new(MemoryBackend::new());
    let alone_backend = Arc::new(MemoryBackend::new());
    let crowded = Sessions::builder()
        .shared_backend(Arc::clone(&crowded_backend))
        .build();
    let alone = Sessions::builder()
        .shared_backend(Arc::clone(&alone_backend))
        .build();
    let others = OTHER_SESSIONS;
    let setup = Instant::now();
    let _others: Vec<Session> = rt.block_on(async {
        let mut out = Vec::with_capacity(others);
        for s in 0..others {
            let id = format!("other-{s}");
            let session = populate(&crowded, &crowded_backend, &id, OTHER_LIVE, OTHER_DURABLE)
                .await
                .expect("other session");
            out.push(session);
        }
        out
    });
    eprintln!(
        "B8: {} other sessions set up in {:.1?}",
        others,
        setup.elapsed()
    );

    let write_keys = keys("written/", B8_WRITES);
    let reps = repetitions(21, 5);
    let mut with_others = Samples::new();
    let mut by_itself = Samples::new();
    rt.block_on(async {
        for rep in 0..reps {
            // Alternate, so drift on a shared machine hits both sides alike.
            for (sessions, backend, samples) in [
                (&crowded, &crowded_backend, &mut with_others),
                (&alone, &alone_backend, &mut by_itself),
            ] {
                let id = format!("ending-{rep}");
                let session = populate(sessions, backend, &id, B8_LIVE, B8_DURABLE)
                    .await
                    .expect("session under test");
                let began = Instant::now();
                let ended = session.end().await.expect("end");
                samples.push_ms(began.elapsed());
                assert_eq!(ended.live_entries, B8_LIVE);
                assert_eq!(ended.durable_keys, B8_DURABLE);
            }
        }
    });
    let write_reps = repetitions(41, 2);
    let mut writes_with_others = Samples::new();
    let mut writes_by_itself = Samples::new();
    rt.block_on(async {
        for rep in 0..write_reps {
            // Alternate which side goes first, too.
            let mut sides = [
                (&crowded, &mut writes_with_others),
                (&alone, &mut writes_by_itself),
            ];
            if rep % 2 == 1 {
                sides.reverse();
            }
            for (sessions, samples) in sides {
                let session = sessions
                    .open(&format!("writing-{rep}"))
                    .await
                    .expect("open");
                let scope = session
                    .global()
                    .expect("scope")
                    .durable()
                    .await
                    .expect("durable scope");
                let began = Instant::now();
                for key in &write_keys {
                    scope.use_value(key, 0_u64).await.expect("use_value");
                }
                samples.push_ms(began.elapsed());
                let ended = session.end().await.expect("end");
                assert_eq!(ended.durable_keys, B8_WRITES);
            }
        }
    });
    assert_eq!(crowded.len(), others);
    report("B8", "writes_with_others_ms", writes_with_others.median());
    report("B8", "writes_alone_ms", writes_by_itself.median());
    report("B8", "keys_written", B8_WRITES as f64);
    report("B8", "end_with_others_ms", with_others.median());
    report("B8", "end_alone_ms", by_itself.median());
    report("B8", "other_sessions", others as f64);
    report("B8", "repetitions", with_others.len() as f64);
}

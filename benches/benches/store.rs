//! B1 and B2: the typed front-end's hot paths on the in-memory backend.
//!
//! - B1: a typed `get` of a small struct from the local view, beside a
//!   `HashMap<String, Arc<T>>` lookup and clone.
//! - B2: `set` enqueue throughput from one thread, the flush task draining the
//!   queue on the runtime's worker meanwhile.
//! - B10: what the store's metrics cost: the `set` enqueue (flush task parked)
//!   and `get` on a store started with no recorder, beside the same on a store
//!   started with a recorder (a `metrics-util` registry of atomics, the
//!   storage the Prometheus exporter keeps its figures in).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::Criterion;
use store_benches::{Profile, keys, runtime, selected};
use store_conformance::figures::Figures;
use store_core::Store;

const KEYS: usize = 1000;

fn main() {
    let mut c = store_benches::criterion();
    if selected("B1") {
        b1_get(&mut c);
    }
    if selected("B2") {
        b2_set(&mut c);
    }
    if selected("B10") {
        b10_metrics(&mut c);
    }
    c.final_summary();
}

#[expect(
    clippy::expect_used,
    reason = "a benchmark that cannot set up has nothing to measure"
)]
fn b1_get(c: &mut Criterion) {
    let rt = runtime(1);
    let store = rt.block_on(Store::memory()).expect("store");
    let keys = keys("profile/", KEYS);
    for (i, key) in keys.iter().enumerate() {
        store
            .set(key.as_str(), &Profile::sample(i as u64))
            .expect("set");
    }
    rt.block_on(store.flush()).expect("flush");
    assert_eq!(store.snapshot().pending, 0, "reads must come from the view");
    let baseline: HashMap<String, Arc<Profile>> = keys
        .iter()
        .map(|key| {
            let value = store
                .get::<Profile>(key.as_str())
                .expect("get")
                .expect("present");
            (key.clone(), value)
        })
        .collect();

    let mut group = c.benchmark_group("B1");
    group.bench_function("store_get", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % KEYS;
            store.get::<Profile>(black_box(keys[i].as_str()))
        });
    });
    group.bench_function("hashmap_get", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % KEYS;
            baseline.get(black_box(keys[i].as_str())).cloned()
        });
    });
    group.finish();
    drop(store);
    drop(rt);
}

#[expect(
    clippy::expect_used,
    reason = "a benchmark that cannot set up has nothing to measure"
)]
fn b2_set(c: &mut Criterion) {
    let rt = runtime(1);
    let store = rt.block_on(Store::memory()).expect("store");
    let keys = keys("profile/", KEYS);
    let values: Vec<Profile> = (0..KEYS as u64).map(Profile::sample).collect();

    let mut group = c.benchmark_group("B2");
    group.throughput(criterion::Throughput::Elements(1));
    group.bench_function("store_set", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % KEYS;
            store.set(black_box(keys[i].as_str()), black_box(&values[i]))
        });
    });
    // Diagnostic: the same calls with the flush task parked (a runtime nobody drives).
    let parked = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let idle = parked.block_on(Store::memory()).expect("store");
    group.bench_function("store_set_flusher_parked", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % KEYS;
            idle.set(black_box(keys[i].as_str()), black_box(&values[i]))
        });
    });
    group.finish();
    rt.block_on(store.flush()).expect("flush");
    drop(store);
    drop(rt);
}

#[expect(
    clippy::expect_used,
    reason = "a benchmark that cannot set up has nothing to measure"
)]
fn b10_metrics(c: &mut Criterion) {
    let keys = keys("profile/", KEYS);
    let values: Vec<Profile> = (0..KEYS as u64).map(Profile::sample).collect();
    let figures = Figures::new();
    // Each store takes its metric handles from the recorder installed when
    // it starts, and records there from then on, on any thread.
    let start = |rt: &tokio::runtime::Runtime, recorded: bool| {
        let _installed = recorded.then(|| figures.install());
        rt.block_on(Store::memory()).expect("store")
    };
    let mut group = c.benchmark_group("B10");

    // `set` as in B2's diagnostic: on runtimes nobody drives once the stores
    // are open, so the flush task stays parked and only the call is timed.
    let parked = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt")
    };
    let (plain_rt, recorded_rt) = (parked(), parked());
    let plain = start(&plain_rt, false);
    let recorded = start(&recorded_rt, true);
    for (name, store) in [("set_no_recorder", &plain), ("set_recorder", &recorded)] {
        group.bench_function(name, |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % KEYS;
                store.set(black_box(keys[i].as_str()), black_box(&values[i]))
            });
        });
    }

    // `get` as in B1: from the view, every write acknowledged.
    let rt = runtime(1);
    let plain = start(&rt, false);
    let recorded = start(&rt, true);
    for store in [&plain, &recorded] {
        for (i, key) in keys.iter().enumerate() {
            store.set(key.as_str(), &values[i]).expect("set");
        }
        rt.block_on(store.flush()).expect("flush");
        assert_eq!(store.snapshot().pending, 0, "reads must come from the view");
    }
    for (name, store) in [("get_no_recorder", &plain), ("get_recorder", &recorded)] {
        group.bench_function(name, |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % KEYS;
                store.get::<Profile>(black_box(keys[i].as_str()))
            });
        });
    }
    group.finish();
    assert!(
        figures.counter(store_core::metrics::WRITES_QUEUED, &[("kind", "set")]) > 0,
        "the recorded stores recorded their writes"
    );
    drop((plain, recorded));
    drop(rt);
}

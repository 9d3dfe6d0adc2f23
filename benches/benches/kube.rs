//! B3, B4, B5, B6 and B9: the kube backend on the in-process fake API server,
//! every request delayed by [`LATENCY`]. All hand-timed (`@figure` lines):
//! they count requests, take percentiles of waits, or time one cold start.
//!
//! - B3: API requests for 10,000 `set` calls on 1,000 keys, beside a naive
//!   writer (one PATCH per call) and a Pepr-style writer (one batch every 4 s).
//! - B4: `set_and_wait` p50 and p99, beside the API's floor (one JSON Patch
//!   round trip plus its watch event reaching a plain kube-rs watcher) and a
//!   simulation of Pepr's timing (writes sent on a 4 s schedule, seen through
//!   a 1 s receive debounce).
//! - B5: a write on replica A visible on replica B (p50), beside the floor.
//! - B4 and B5 again on a real etcd + kube-apiserver when their binaries are
//!   found, with Pepr's own store code (npm `pepr` in Node, see
//!   [`PeprPeer`]) beside ours when it is installed.
//! - B6: cold start to `ready()` with 100,000 keys over shards.
//! - B9: the live heap a replica holds for those 100,000 keys (the backend's
//!   cache and index, which the store's view shares), beside the raw payload bytes (keys plus values)
//!   and one `HashMap<String, String>` of the same keys and values.
//!   Counted by `stats_alloc` around the system allocator.
//! - B11: a hot key. 8 tasks sharing one store each `update` one counter
//!   1,000 times: API requests and increments per second, beside kube-rs's
//!   own way, 8 tasks each doing `Api::entry` + `commit` (a GET, then a PUT
//!   carrying the resourceVersion) and starting again on a 409.

use std::alloc::System;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kube::api::entry::{CommitError, Entry};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use store_benches::{Samples, repetitions, report, runtime, selected, size};
use store_core::Store;
use store_kube::KubeBackend;
use store_kube::resource::{pepr_store_crd, store_shard_crd, store_shard_resource};
use store_kube_testing::{ControlPlane, ControlPlaneAssets, FakeApiServer, PeprPeer, Verb};
use tokio::sync::Notify;

/// Every allocation is counted, so B9 reads the live heap a replica holds.
#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Live heap bytes of the whole process.
fn live_bytes() -> isize {
    let stats = ALLOCATOR.stats();
    // A reallocation's growth or shrink is already in these two.
    stats.bytes_allocated as isize - stats.bytes_deallocated as isize
}

/// Added to every request the fake API server answers.
const LATENCY: Duration = Duration::from_millis(1);
/// Pepr's store sends queued writes on this schedule.
const PEPR_SEND_INTERVAL: Duration = Duration::from_secs(4);
/// Pepr's store applies what it receives after this much quiet.
const PEPR_RECEIVE_DEBOUNCE: Duration = Duration::from_secs(1);
/// Keys of the cold-start and memory figures.
const COLD_KEYS: usize = 100_000;
/// Shard capacity for them: 100,000 small keys need several objects.
const COLD_CAPACITY: usize = 16 * 1024 * 1024;
/// No wait in this suite may take longer.
const DEADLINE: Duration = Duration::from_secs(120);

type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

fn main() -> Result<()> {
    let rt = runtime(2);
    if selected("B3") {
        rt.block_on(b3_requests())?;
    }
    if selected("B4") || selected("B5") {
        rt.block_on(b4_b5_against_the_floor())?;
    }
    if selected("B6") || selected("B9") {
        rt.block_on(b6_b9_cold_start())?;
    }
    if selected("B11") {
        rt.block_on(b11_hot_key())?;
    }
    Ok(())
}

async fn server() -> Result<FakeApiServer> {
    let server = FakeApiServer::start().await?;
    server.apply_crd(&store_shard_crd())?;
    Ok(server)
}

async fn backend(server: &FakeApiServer, store: &str, capacity: usize) -> Result<KubeBackend> {
    backend_on(server.client()?, store, capacity).await
}

async fn backend_on(client: kube::Client, store: &str, capacity: usize) -> Result<KubeBackend> {
    Ok(KubeBackend::builder(client, store)
        .namespace("default")
        .capacity(capacity)
        .build()
        .await?)
}

/// A store on `backend`; with `interval`, writes go out on that schedule as
/// Pepr's do instead of as soon as the backend is idle.
async fn open(backend: KubeBackend, interval: Option<Duration>) -> Result<Store> {
    let mut builder = Store::builder()
        .backend(backend)
        .linked_hooks(false)
        .timeout(DEADLINE);
    if let Some(interval) = interval {
        builder = builder.flush_interval(interval);
    }
    Ok(builder.open().await?)
}

/// Requests that change or read data, leaving out the long-running watches.
fn data_requests(server: &FakeApiServer) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.verb.is_some_and(|v| v != Verb::Watch))
        .count()
}

/// B3's keys: 1,000 (fewer in a smoke run).
fn keys_per_round() -> u32 {
    u32::try_from(size(1000)).unwrap_or(1000)
}

/// 10 rounds over 1,000 keys.
fn ten_thousand_sets(store: &Store) -> Result<()> {
    for round in 0..10_u32 {
        for key in 0..keys_per_round() {
            store.set(format!("counter/{key}"), &(round * 1000 + key))?;
        }
    }
    Ok(())
}

async fn b3_requests() -> Result<()> {
    let server = server().await?;

    let store = open(backend(&server, "b3", 1 << 20).await?, None).await?;
    server.set_latency(LATENCY);
    server.clear_requests();
    ten_thousand_sets(&store)?;
    store.flush().await?;
    let store_requests = data_requests(&server);
    store.close().await?;
    server.set_latency(Duration::ZERO);

    let pepr = open(
        backend(&server, "b3-pepr", 1 << 20).await?,
        Some(PEPR_SEND_INTERVAL),
    )
    .await?;
    server.set_latency(LATENCY);
    server.clear_requests();
    ten_thousand_sets(&pepr)?;
    pepr.flush().await?;
    let pepr_requests = data_requests(&server);
    pepr.close().await?;

    // Pepr's own store doing the same sets, when Node and npm `pepr` are here.
    if let Some(peer) = pepr_peer("B3") {
        server.set_latency(Duration::ZERO);
        server.apply_crd(&pepr_store_crd())?;
        create_namespace(server.client()?, "pepr-system").await?;
        let mut pepr = PeprPeer::start(&peer, server.kubeconfig_path(), "b3", &["cap"]).await?;
        server.set_latency(LATENCY);
        server.clear_requests();
        for round in 0..10_u32 {
            for key in 0..keys_per_round() {
                let value = (round * 1000 + key).to_string();
                pepr.send(json!({"op": "set", "cap": "cap", "key": format!("counter-{key}"), "value": value}))
                        .await?;
            }
        }
        // Sent after the others, so once it is stored they are too.
        match pepr.set_and_wait("cap", "done", "yes").await {
            Ok(()) => report("B3", "fake_pepr_requests", data_requests(&server) as f64),
            // Pepr sends everything queued as one JSON Patch, and the API
            // refuses one of more than 10,000 operations (413).
            Err(error) => {
                let refused = server.requests().iter().filter(|r| r.status >= 400).count();
                println!(
                    "B3: Pepr's own store did not store the sets: {error}; {refused} requests refused"
                );
                report("B3", "fake_pepr_refused", refused as f64);
                report(
                    "B3",
                    "fake_pepr_failed_requests",
                    data_requests(&server) as f64,
                );
            }
        }
    }

    let naive_requests = naive_writer(&server).await?;

    report("B3", "store_requests", store_requests as f64);
    report("B3", "naive_requests", naive_requests as f64);
    report("B3", "pepr_requests", pepr_requests as f64);
    Ok(())
}

/// The same 10,000 writes as one merge PATCH each on one object, 16 in flight.
/// Returns the requests the server answered.
async fn naive_writer(server: &FakeApiServer) -> Result<usize> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(server.client()?, "default", &store_shard_resource());
    let mut object = DynamicObject::new("naive", &store_shard_resource());
    object.data = json!({ "spec": { "store": "naive", "shard": 0, "shards": 1, "data": {} } });
    api.create(&PostParams::default(), &object).await?;
    server.clear_requests();
    let keys = keys_per_round();
    let writes = (0..10_u32).flat_map(move |round| (0..keys).map(move |key| (round, key)));
    let results: Vec<Result<(), kube::Error>> = futures_util::stream::iter(writes)
        .map(|(round, key)| {
            let api = api.clone();
            async move {
                let patch = json!({ "spec": { "data": {
                    format!("counter/{key}"): (round * 1000 + key).to_string()
                } } });
                api.patch("naive", &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(drop)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok(data_requests(server))
}

/// B4 and B5 on the fake API server (with [`LATENCY`]) and, when its binaries
/// are found, on a real etcd + kube-apiserver, each beside that API's floor:
/// one JSON Patch round trip plus its watch event reaching a plain kube-rs
/// watcher.
async fn b4_b5_against_the_floor() -> Result<()> {
    let server = server().await?;
    let fake = server.client()?;
    server.set_latency(LATENCY);
    let floor = api_floor(fake.clone()).await?;
    report("B4", "floor_p50_ms", floor);
    report("B5", "floor_p50_ms", floor);
    if selected("B4") {
        let (waits, floor) = beside_store_floor(&fake, "b4", Ours::SetAndWait).await?;
        report("B4", "p50_ms", waits.median());
        report("B4", "p99_ms", waits.percentile(99.0));
        report("B4", "store_floor_p50_ms", floor);
        let pepr = pepr_style_ms(&server).await?;
        report("B4", "pepr_p50_ms", pepr.median());
        report("B4", "pepr_p99_ms", pepr.percentile(99.0));
    }
    if selected("B5") {
        let (seen, floor) = beside_store_floor(&fake, "b5", Ours::Visibility).await?;
        report("B5", "p50_ms", seen.median());
        report("B5", "store_floor_p50_ms", floor);
        report("B5", "latency_ms", LATENCY.as_secs_f64() * 1e3);
    }
    // Pepr's own store on the same fake API server, with the same latency.
    let peer = pepr_peer("B4, B5");
    if let Some(peer) = &peer {
        server.apply_crd(&pepr_store_crd())?;
        pepr_figures(fake.clone(), server.kubeconfig_path(), peer, "fake").await?;
    }
    drop(server);

    let assets = match ControlPlaneAssets::discover() {
        Ok(assets) => assets,
        Err(error) => {
            println!("B4, B5: not measured on a real control plane: {error}");
            return Ok(());
        }
    };
    let plane = ControlPlane::start_with(&assets).await?;
    plane.apply_crd(&store_shard_crd()).await?;
    let real = plane.client()?;
    let floor = api_floor(real.clone()).await?;
    report("B4", "real_floor_p50_ms", floor);
    report("B5", "real_floor_p50_ms", floor);
    if selected("B4") {
        let (waits, floor) = beside_store_floor(&real, "b4", Ours::SetAndWait).await?;
        report("B4", "real_p50_ms", waits.median());
        report("B4", "real_store_floor_p50_ms", floor);
    }
    if selected("B5") {
        let (seen, floor) = beside_store_floor(&real, "b5", Ours::Visibility).await?;
        report("B5", "real_p50_ms", seen.median());
        report("B5", "real_store_floor_p50_ms", floor);
    }
    if let Some(peer) = &peer {
        plane.apply_crd(&pepr_store_crd()).await?;
        pepr_figures(plane.client()?, plane.kubeconfig_path(), peer, "real").await?;
    }
    Ok(())
}

/// Where Pepr's own store code is installed (`npm ci` in
/// `store-kube/tests/pepr`), or `None`, saying why, for `rows`.
fn pepr_peer(rows: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../store-kube/tests/pepr");
    match PeprPeer::unavailable(&dir) {
        Some(why) => {
            println!("{rows}: Pepr's own store not measured: {why}");
            None
        }
        None => Some(dir),
    }
}

/// Creates namespace `name` (Pepr's stores live in `pepr-system`).
async fn create_namespace(client: kube::Client, name: &str) -> Result<()> {
    let namespaces = ApiResource {
        group: String::new(),
        version: "v1".to_owned(),
        api_version: "v1".to_owned(),
        kind: "Namespace".to_owned(),
        plural: "namespaces".to_owned(),
    };
    let namespace: DynamicObject = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    )?;
    Api::<DynamicObject>::all_with(client, &namespaces)
        .create(&PostParams::default(), &namespace)
        .await?;
    Ok(())
}

/// Pepr's own store code (npm `pepr` 1.1.4 in Node, two pods of one module)
/// on one API (the fake's kubeconfig or the control plane's):
/// `setItemAndWait` on one, and how long a `setItem` on one takes to read
/// back on the other. Figures are named `<api>_pepr_..`.
async fn pepr_figures(
    client: kube::Client,
    kubeconfig: &Path,
    dir: &Path,
    api: &str,
) -> Result<()> {
    create_namespace(client, "pepr-system").await?;
    let mut a = PeprPeer::start(dir, kubeconfig, "bench", &["cap"]).await?;
    let mut b = PeprPeer::start(dir, kubeconfig, "bench", &["cap"]).await?;
    if selected("B4") {
        let mut waits = Samples::new();
        for i in 0..repetitions(10, 2) {
            let started = Instant::now();
            a.set_and_wait("cap", &format!("wait-{i}"), &i.to_string())
                .await?;
            waits.push_ms(started.elapsed());
        }
        report("B4", &format!("{api}_pepr_p50_ms"), waits.median());
        report("B4", &format!("{api}_pepr_p99_ms"), waits.percentile(99.0));
    }
    if selected("B5") {
        let mut seen = Samples::new();
        for i in 0..repetitions(10, 2) {
            let (key, value) = (format!("seen-{i}"), i.to_string());
            let started = Instant::now();
            a.send(json!({"op": "set", "cap": "cap", "key": key, "value": value}))
                .await?;
            b.wait_for_value("cap", &key, &value).await?;
            seen.push_ms(started.elapsed());
        }
        report("B5", &format!("{api}_pepr_p50_ms"), seen.median());
    }
    Ok(())
}

/// The floor on a one-key object: p50 of a JSON Patch of it until a plain
/// kube-rs watcher of it receives the change, the least any write on this API
/// costs.
async fn api_floor(client: kube::Client) -> Result<f64> {
    let api: Api<DynamicObject> = Api::namespaced_with(client, "default", &store_shard_resource());
    let mut object = DynamicObject::new("floor", &store_shard_resource());
    object.data = json!({ "spec": { "store": "floor", "shard": 0, "shards": 1,
        "data": { "k": "0" } } });
    api.create(&PostParams::default(), &object).await?;
    let mut floor = Samples::new();
    floor_on(
        &api,
        "floor",
        "/spec/data/k",
        0..repetitions(400, 60),
        &mut floor,
    )
    .await?;
    api.delete("floor", &Default::default()).await?;
    Ok(floor.median())
}

/// The floor on the fullest of `store`'s own objects, as a run of the store
/// left it: the same JSON Patch and plain watcher, on an object of the size
/// the store's writes patch. The API's cost of a write grows with the object
/// (a real kube-apiserver re-reads every field and its `managedFields` entry).
async fn store_floor(
    client: kube::Client,
    store: &str,
    rounds: Range<usize>,
    samples: &mut Samples,
) -> Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(client, "default", &store_shard_resource());
    let objects = api.list(&ListParams::default()).await?;
    let fullest = objects
        .items
        .iter()
        .filter(|o| o.data["spec"]["store"] == json!(store))
        .filter_map(|o| {
            let data = o.data["spec"]["data"].as_object()?;
            let key = data.keys().next()?;
            Some((data.len(), o.metadata.name.clone()?, key.clone()))
        })
        .max()
        .ok_or_else(|| format!("store `{store}` has no object with data"))?;
    let (_, name, key) = fullest;
    let pointer = format!("/spec/data/{}", key.replace('~', "~0").replace('/', "~1"));
    floor_on(&api, &name, &pointer, rounds, samples).await
}

/// Times of a JSON Patch replacing the string at `pointer` in object `name`
/// until a plain kube-rs watcher of the object receives the change, one per
/// round. The string is a number's JSON, never one a round of the store's
/// own writes makes, so a store reading the key decodes it and reads on.
async fn floor_on(
    api: &Api<DynamicObject>,
    name: &str,
    pointer: &str,
    rounds: Range<usize>,
    samples: &mut Samples,
) -> Result<()> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(watcher(api.clone(), config).applied_objects());
    // The watcher has listed once it reports the object.
    tokio::time::timeout(DEADLINE, events.next())
        .await
        .map_err(|_| "the floor's watcher never listed")?;
    for i in rounds {
        let value = (FLOOR_VALUES + i).to_string();
        let patch: json_patch::Patch = serde_json::from_value(json!([
            { "op": "replace", "path": pointer, "value": value }
        ]))?;
        let started = Instant::now();
        api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await?;
        tokio::time::timeout(DEADLINE, async {
            while let Some(object) = events.next().await {
                if object?.data.pointer(pointer) == Some(&json!(value)) {
                    return Ok(());
                }
            }
            Err::<(), Box<dyn std::error::Error + Send + Sync>>("the floor's watcher ended".into())
        })
        .await
        .map_err(|_| "the floor's watcher never saw a patch")??;
        samples.push_ms(started.elapsed());
    }
    Ok(())
}

/// Where the floor's values start: above every value a store's round writes.
const FLOOR_VALUES: usize = 1_000_000_000;

/// Blocks [`beside_store_floor`] takes of each side, in turns.
const BLOCKS: usize = 8;

/// What is timed beside the floor.
#[derive(Clone, Copy)]
enum Ours {
    /// `set_and_wait` on one store (B4).
    SetAndWait,
    /// A write on one replica until another reads it (B5).
    Visibility,
}

/// Our times (ms) and the floor's p50 on the store's own object, taken in
/// turns, a block of each at a time, so drift on a shared machine (the other
/// core, etcd's disk) hits both alike. The stores are closed while the floor
/// is timed, as a process of their own would not be there.
async fn beside_store_floor(
    client: &kube::Client,
    store: &str,
    ours: Ours,
) -> Result<(Samples, f64)> {
    let per_block = repetitions(400, 60).div_ceil(BLOCKS);
    let (mut times, mut floor) = (Samples::new(), Samples::new());
    for block in 0..BLOCKS {
        let rounds = block * per_block..(block + 1) * per_block;
        let (mut ours_now, mut floor_now) = (Samples::new(), Samples::new());
        match ours {
            Ours::SetAndWait => {
                set_and_wait_ms(client, store, rounds.clone(), &mut ours_now).await?
            }
            Ours::Visibility => visibility_ms(client, store, rounds.clone(), &mut ours_now).await?,
        }
        store_floor(client.clone(), store, rounds, &mut floor_now).await?;
        // Not a figure: how the two sides moved from block to block.
        eprintln!(
            "{store} block {block}: p50 {:.3} ms, floor p50 {:.3} ms",
            ours_now.median(),
            floor_now.median()
        );
        times.append(&ours_now);
        floor.append(&floor_now);
    }
    Ok((times, floor.median()))
}

/// One replica of `store` for B4 and B5: its own backend on `client`, the
/// store sending at once.
async fn replica(client: &kube::Client, store: &str) -> Result<Store> {
    open(backend_on(client.clone(), store, 1 << 20).await?, None).await
}

/// `set_and_wait` times of one store, in ms, one per round.
async fn set_and_wait_ms(
    client: &kube::Client,
    store: &str,
    rounds: Range<usize>,
    waits: &mut Samples,
) -> Result<()> {
    let store = replica(client, store).await?;
    // A store's first write after it opens is not what is timed.
    store.set_and_wait("warm", &rounds.start).await?;
    for i in rounds {
        let started = Instant::now();
        store.set_and_wait(format!("wait/{}", i % 50), &i).await?;
        waits.push_ms(started.elapsed());
    }
    store.close().await?;
    Ok(())
}

/// Pepr-style timing: writes sent on a 4 s schedule and seen through a 1 s
/// receive debounce.
async fn pepr_style_ms(server: &FakeApiServer) -> Result<Samples> {
    let pepr = open(
        backend(server, "b4-pepr", 1 << 20).await?,
        Some(PEPR_SEND_INTERVAL),
    )
    .await?;
    let debounced = DebouncedView::start(&pepr, PEPR_RECEIVE_DEBOUNCE);
    let mut pepr_waits = Samples::new();
    for i in 0..repetitions(6, 2) {
        let key = format!("wait/{i}");
        let started = Instant::now();
        pepr.set(key.as_str(), &i)?;
        debounced.until_present(&key).await?;
        pepr_waits.push_ms(started.elapsed());
    }
    pepr.close().await?;
    Ok(pepr_waits)
}

/// Keys a subscriber has applied, applied only after `debounce` without
/// further changes, as Pepr's store applies what its watch receives.
struct DebouncedView {
    applied: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    changed: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl DebouncedView {
    fn start(store: &Store, debounce: Duration) -> Self {
        let applied = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
        let changed = Arc::new(Notify::new());
        let mut changes = store.subscribe();
        let task = tokio::spawn({
            let applied = Arc::clone(&applied);
            let changed = Arc::clone(&changed);
            async move {
                let mut received = Vec::new();
                loop {
                    let next = if received.is_empty() {
                        changes.next().await
                    } else {
                        match tokio::time::timeout(debounce, changes.next()).await {
                            Ok(next) => next,
                            Err(_quiet) => {
                                let mut set = applied
                                    .lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                                set.extend(received.drain(..));
                                drop(set);
                                changed.notify_waiters();
                                continue;
                            }
                        }
                    };
                    match next {
                        Some(Ok(change)) => received.push(change.key().to_owned()),
                        Some(Err(_lagged)) => {}
                        None => return,
                    }
                }
            }
        });
        DebouncedView {
            applied,
            changed,
            task,
        }
    }

    async fn until_present(&self, key: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let notified = self.changed.notified();
            if self
                .applied
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(key)
            {
                return Ok(());
            }
            tokio::time::timeout_at(deadline, notified)
                .await
                .map_err(|_| format!("`{key}` never reached the debounced view"))?;
        }
    }
}

impl Drop for DebouncedView {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Times, in ms, from a `set` on replica A until replica B reads the value,
/// one per round.
async fn visibility_ms(
    client: &kube::Client,
    store: &str,
    rounds: Range<usize>,
    seen: &mut Samples,
) -> Result<()> {
    let a = replica(client, store).await?;
    let b = replica(client, store).await?;
    // A store's first write after it opens is not what is timed.
    a.set_and_wait("warm", &rounds.start).await?;
    for i in rounds {
        let key = format!("seen/{}", i % 50);
        let mut changes = b.subscribe();
        let started = Instant::now();
        a.set(key.as_str(), &i)?;
        tokio::time::timeout(DEADLINE, async {
            while b.get::<usize>(key.as_str())?.as_deref() != Some(&i) {
                if changes.next().await.is_none() {
                    return Err("replica B closed".into());
                }
            }
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        })
        .await
        .map_err(|_| format!("replica B never saw `{key}`"))??;
        seen.push_ms(started.elapsed());
    }
    a.close().await?;
    b.close().await?;
    Ok(())
}

/// The heap one `HashMap<String, String>` of B9's keys and values holds, each
/// string allocated at its exact size (as parsing JSON gives them).
fn plain_map_bytes(keys: usize) -> isize {
    let before = live_bytes();
    let map: std::collections::HashMap<String, String> = (0..keys)
        .map(|i| {
            (
                format!("item/{i:06}").into_boxed_str().into_string(),
                json!({ "id": i, "ok": true })
                    .to_string()
                    .into_boxed_str()
                    .into_string(),
            )
        })
        .collect();
    let bytes = live_bytes() - before;
    drop(std::hint::black_box(map));
    bytes
}

async fn b6_b9_cold_start() -> Result<()> {
    let keys = size(COLD_KEYS);
    // B9's baseline first, while nothing else runs in the process: the heap is
    // counted process-wide, so memory another task frees meanwhile (a store
    // closing) would be taken off it.
    let map_bytes = plain_map_bytes(keys);
    let server = server().await?;
    // The writer runs on a runtime of its own, dropped before measuring: its
    // tasks and caches are then gone, not freed while the replica starts.
    let config = server.config();
    let payload_bytes = tokio::task::spawn_blocking(move || -> Result<usize> {
        let writer_runtime = runtime(1);
        let written = writer_runtime.block_on(async {
            let client = kube::Client::try_from(config)?;
            let writer = open(backend_on(client, "b6", COLD_CAPACITY).await?, None).await?;
            let mut payload_bytes = 0_usize;
            for i in 0..keys {
                let key = format!("item/{i:06}");
                let value = json!({ "id": i, "ok": true });
                payload_bytes += key.len() + value.to_string().len();
                writer.set(key.as_str(), &value)?;
            }
            writer.flush().await?;
            writer.close().await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(payload_bytes)
        });
        drop(writer_runtime);
        written
    })
    .await??;
    server.set_latency(LATENCY);

    let before = live_bytes();
    let started = Instant::now();
    let cold = backend(&server, "b6", COLD_CAPACITY).await?;
    let shards = cold.objects().len();
    let reader = open(cold.clone(), None).await?;
    reader.ready().await?;
    let ready = started.elapsed();
    let held = live_bytes() - before;
    // Diagnostic: a second store on the same backend instance shares its
    // cache, history and index, so what it adds is a store's own state.
    let second = open(cold, None).await?;
    second.ready().await?;
    let second_store = live_bytes() - before - held;
    second.close().await?;
    drop(second);
    println!(
        "B9: a second store on the same backend changed the heap by {:+.0} KiB (its view shares the backend's index)",
        second_store as f64 / 1024.0
    );
    let len = reader.len();
    if len != keys {
        return Err(format!("the cold replica sees {len} keys of {keys}").into());
    }
    // Diagnostic: a typed read, keys in a scattered order. A kube-backed
    // store reads through the backend's shared index: a binary search in the
    // object its key is routed to, where a store on the memory backend (B1)
    // does a hash lookup in a table of its own.
    let names: Vec<String> = (0..keys)
        .map(|i| format!("item/{:06}", i * 7919 % keys))
        .collect();
    let mut started = Instant::now();
    // The first pass decodes each value; the second reads the decoded ones.
    for _ in 0..2 {
        started = Instant::now();
        for name in &names {
            let value: Option<Arc<serde_json::Value>> = reader.get(name.as_str())?;
            std::hint::black_box(value.ok_or("a key is missing")?);
        }
    }
    println!(
        "B9: a typed get from this store's view: {:.0} ns",
        started.elapsed().as_nanos() as f64 / keys as f64
    );
    println!(
        "B6/B9: {keys} keys, {shards} shards; ready in {:.2} s; {:.1} MiB held for {:.1} MiB of payload",
        ready.as_secs_f64(),
        held as f64 / 1048576.0,
        payload_bytes as f64 / 1048576.0
    );
    reader.close().await?;
    // More cold starts for a median, and B6's baseline on the same objects:
    // kube-rs listing them a page of 500 at a time (the page size of
    // kube-runtime's watcher, which our backend lists through), each parsed
    // into a `DynamicObject`. The two take turns, so drift on a shared
    // machine hits both alike; the first cold start above (after the writes,
    // with B9's counting) is B9's, not counted here.
    let api: Api<DynamicObject> =
        Api::namespaced_with(server.client()?, "default", &store_shard_resource());
    let mut ours = Samples::new();
    let mut listing = Samples::new();
    for _ in 0..repetitions(5, 3) {
        let started = Instant::now();
        let store = open(backend(&server, "b6", COLD_CAPACITY).await?, None).await?;
        store.ready().await?;
        ours.push_ms(started.elapsed());
        store.close().await?;
        drop(store);

        let started = Instant::now();
        let mut params = ListParams::default().limit(500);
        let mut objects = 0;
        loop {
            let page = api.list(&params).await?;
            objects += page.items.len();
            match page.metadata.continue_.filter(|token| !token.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        listing.push_ms(started.elapsed());
        if objects != shards {
            return Err(format!("the baseline listed {objects} objects of {shards}").into());
        }
    }
    println!(
        "B6: cold start p50 {:.2} s; kube-rs paginated LIST of the same {shards} objects p50 {:.2} s",
        ours.median() / 1000.0,
        listing.median() / 1000.0
    );
    report("B6", "ready_s", ours.median() / 1000.0);
    report("B6", "list_s", listing.median() / 1000.0);
    report("B6", "keys", keys as f64);
    report("B9", "view_bytes", held as f64);
    report("B9", "payload_bytes", payload_bytes as f64);
    report("B9", "second_store_bytes", second_store as f64);
    report("B9", "map_bytes", map_bytes as f64);
    Ok(())
}

/// B11's writers, and increments each (fewer in a smoke run).
const B11_TASKS: usize = 8;

fn b11_each() -> usize {
    size(1000)
}

async fn b11_hot_key() -> Result<()> {
    let each = b11_each();
    let total = B11_TASKS * each;

    let server = server().await?;
    let store = open(backend(&server, "b11", 1 << 20).await?, None).await?;
    server.set_latency(LATENCY);
    server.clear_requests();
    let started = Instant::now();
    let tasks: Vec<_> = (0..B11_TASKS)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut seen = Vec::with_capacity(each);
                for _ in 0..each {
                    let updated = store
                        .update("counter", |n: Option<&u64>| n.copied().unwrap_or(0) + 1)
                        .await?;
                    seen.push(*updated.value);
                }
                Ok::<_, store_core::Error>(seen)
            })
        })
        .collect();
    let mut seen = Vec::with_capacity(total);
    for task in tasks {
        seen.extend(task.await??);
    }
    let store_elapsed = started.elapsed();
    let store_requests = data_requests(&server);
    seen.sort_unstable();
    seen.dedup();
    let stored = store.get::<u64>("counter")?.map(|n| *n);
    if seen.len() != total || stored != Some(total as u64) {
        return Err(format!(
            "B11: {} distinct results and {stored:?} stored for {total} increments",
            seen.len()
        )
        .into());
    }
    store.close().await?;
    server.set_latency(Duration::ZERO);

    let (entry_elapsed, entry_requests) = entry_counter(&server, each).await?;

    report("B11", "store_requests", store_requests as f64);
    report(
        "B11",
        "store_per_s",
        total as f64 / store_elapsed.as_secs_f64(),
    );
    report("B11", "entry_requests", entry_requests as f64);
    report(
        "B11",
        "entry_per_s",
        total as f64 / entry_elapsed.as_secs_f64(),
    );
    report("B11", "increments", total as f64);
    Ok(())
}

/// kube-rs's read-modify-write: 8 tasks each adding 1 to a counter in one
/// object `each` times with `Api::entry` + `commit`, again on a 409.
/// Returns the time taken and the requests the server answered.
async fn entry_counter(server: &FakeApiServer, each: usize) -> Result<(Duration, usize)> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(server.client()?, "default", &store_shard_resource());
    let mut object = DynamicObject::new("entry", &store_shard_resource());
    object.data = json!({ "spec": { "store": "entry", "shard": 0, "shards": 1,
        "data": { "counter": "0" } } });
    api.create(&PostParams::default(), &object).await?;
    server.set_latency(LATENCY);
    server.clear_requests();
    let started = Instant::now();
    let tasks: Vec<_> = (0..B11_TASKS)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move {
                for _ in 0..each {
                    loop {
                        let Entry::Occupied(entry) = api.entry("entry").await? else {
                            return Err("B11: the counter object is gone".into());
                        };
                        let mut entry = entry.and_modify(|object| {
                            let counter = &mut object.data["spec"]["data"]["counter"];
                            let n: u64 = counter.as_str().and_then(|n| n.parse().ok()).unwrap_or(0);
                            *counter = json!((n + 1).to_string());
                        });
                        match entry.commit(&PostParams::default()).await {
                            Ok(()) => break,
                            Err(CommitError::Save(kube::Error::Api(status)))
                                if status.is_conflict() => {}
                            Err(error) => return Err(error.into()),
                        }
                    }
                }
                Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    let requests = data_requests(server);
    server.set_latency(Duration::ZERO);
    let counter = api.get("entry").await?.data["spec"]["data"]["counter"].clone();
    if counter != json!((B11_TASKS * each).to_string()) {
        return Err(format!("B11: kube-rs's counter ended at {counter}").into());
    }
    Ok((elapsed, requests))
}

//! Model-based test of the durable tier: three replicas of one session scope
//! (each a store on a [`ScopedBackend`] of the scope's prefix, over its own
//! connection to one inner backend), with faults of the inner backend, failed
//! and held batches per replica, and writes to the same keys in neighbouring
//! scopes between the calls, checked against `store_conformance::model`. A key
//! leaking in from a neighbour shows as a value the model rules out.
//!
//! Runs over the memory backend and over the kube backend on the fake API
//! server. `STORE_MODEL_CASES` sets the number of cases (default 24 over
//! memory, a quarter of that over kube) and `PROPTEST_RNG_SEED` repeats a run;
//! the summary lines start with `model:`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use store_conformance::Gated;
use store_conformance::model::{self, KEYS, ModelCase, ModelHarness, Runner};
use store_core::backend::{Batch, Op};
use store_core::{Backend, MemoryBackend, Payload, Store};
use store_kube::KubeBackend;
use store_kube::resource::store_shard_crd;
use store_kube_testing::{FakeApiServer, Fault};
use store_session::{ScopeKind, ScopedBackend, layout};

/// The inner backend of one case: how to reach it and how to make it fail.
trait Inner: Sized {
    /// One connection to the inner store.
    type Backend: Backend + Clone;
    /// The harness's name in the summary line.
    const NAME: &'static str;
    /// The inner backend's own faults, numbered after the common ones.
    const FAULTS: &'static [&'static str];
    /// How long a replica's calls wait.
    const TIMEOUT: Duration;
    /// A fresh, empty inner store.
    fn start() -> impl Future<Output = Self>;
    /// A new connection to it.
    fn connect(&self) -> impl Future<Output = Self::Backend>;
    /// Injects own fault number `fault`.
    fn inject(&self, fault: usize, arg: u8) -> impl Future<Output = ()>;
    /// Ends lasting faults.
    fn heal(&self);
}

/// Faults every inner backend gets, numbered first.
const COMMON_FAULTS: &[&str] = &["replica_failures", "replica_held", "neighbour_writes"];

struct OnMemory(Gated<MemoryBackend>);

impl Inner for OnMemory {
    type Backend = Gated<MemoryBackend>;
    const NAME: &'static str = "durable-memory";
    const FAULTS: &'static [&'static str] = &["apply_failures", "history_compacted"];
    const TIMEOUT: Duration = Duration::from_millis(150);

    async fn start() -> Self {
        OnMemory(Gated::new(MemoryBackend::new()))
    }

    async fn connect(&self) -> Gated<MemoryBackend> {
        self.0.clone()
    }

    async fn inject(&self, fault: usize, arg: u8) {
        match fault {
            0 => self.0.fail_next(1 + usize::from(arg % 3)),
            _ => self.0.compact().await.expect("the memory backend lists"),
        }
    }

    fn heal(&self) {
        self.0.fail_next(0);
    }
}

struct OnKubeFake(FakeApiServer);

const KUBE_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

impl Inner for OnKubeFake {
    type Backend = KubeBackend;
    const NAME: &'static str = "durable-kube-fake";
    const FAULTS: &'static [&'static str] = &[
        "watch_drop",
        "status_409",
        "status_429",
        "status_500",
        "latency",
        "restart",
    ];
    const TIMEOUT: Duration = Duration::from_secs(5);

    async fn start() -> Self {
        let server = FakeApiServer::start()
            .await
            .expect("fake API server starts");
        server.apply_crd(&store_shard_crd()).expect("CRD applies");
        OnKubeFake(server)
    }

    async fn connect(&self) -> KubeBackend {
        KubeBackend::builder(self.0.client().expect("client"), "sessions")
            .namespace("default")
            .shards(2)
            .request_timeout(KUBE_REQUEST_TIMEOUT)
            .build()
            .await
            .expect("backend starts")
    }

    async fn inject(&self, fault: usize, arg: u8) {
        let count = 1 + usize::from(arg % 3);
        let server = &self.0;
        match fault {
            0 => server.drop_watches(),
            1 => server.fail_next(count, Fault::Conflict),
            2 => server.fail_next(
                count,
                Fault::TooManyRequests {
                    retry_after: Duration::from_secs(1),
                },
            ),
            3 => server.fail_next(count, Fault::InternalError),
            4 => server.set_latency(Duration::from_millis(1 + u64::from(arg % 30))),
            _ => server.restart().await.expect("the API restarts"),
        }
    }

    fn heal(&self) {
        self.0.clear_faults();
    }
}

/// The durable tier over inner backend `I`; the scope kind changes from case
/// to case.
struct DurableModel<I> {
    faults: Vec<&'static str>,
    cases: AtomicUsize,
    _inner: std::marker::PhantomData<fn() -> I>,
}

impl<I: Inner> DurableModel<I> {
    fn new() -> Self {
        DurableModel {
            faults: COMMON_FAULTS.iter().chain(I::FAULTS).copied().collect(),
            cases: AtomicUsize::new(0),
            _inner: std::marker::PhantomData,
        }
    }
}

const SESSION: &str = "s~1/x";

fn kinds() -> [ScopeKind; 4] {
    [
        ScopeKind::Global,
        ScopeKind::Realm("realm/~r".to_owned()),
        ScopeKind::Local {
            realm: None,
            env: "env-a".to_owned(),
        },
        ScopeKind::Local {
            realm: Some("realm/~r".to_owned()),
            env: "env-a".to_owned(),
        },
    ]
}

/// Prefixes next to `mine`: the session's other scopes, the next generation,
/// and sessions whose names extend or escape into this one.
fn neighbours(mine: &str) -> Vec<String> {
    let mut prefixes: Vec<String> = kinds()
        .iter()
        .map(|kind| layout::scope_prefix("", SESSION, 0, kind))
        .filter(|p| p != mine)
        .collect();
    for session in [
        format!("{SESSION}x"),
        format!("{SESSION}/"),
        format!("{SESSION}~"),
    ] {
        prefixes.push(layout::scope_prefix("", &session, 0, &ScopeKind::Global));
    }
    prefixes.push(layout::scope_prefix("", SESSION, 1, &ScopeKind::Global));
    prefixes.push(layout::meta_key("", SESSION));
    prefixes
}

struct DurableCase<I: Inner> {
    inner: I,
    noise: I::Backend,
    neighbours: Vec<String>,
    gates: Vec<Gated<ScopedBackend<I::Backend>>>,
    replicas: Vec<Store>,
}

impl<I: Inner> ModelHarness for DurableModel<I> {
    type Case = DurableCase<I>;

    fn backend(&self) -> &str {
        I::NAME
    }

    fn faults(&self) -> &[&'static str] {
        &self.faults
    }

    async fn open(&self, replicas: usize) -> DurableCase<I> {
        let turn = self.cases.fetch_add(1, Ordering::Relaxed);
        let kinds = kinds();
        let prefix = layout::scope_prefix("", SESSION, 0, &kinds[turn % kinds.len()]);
        let inner = I::start().await;
        let mut gates = Vec::with_capacity(replicas);
        let mut stores = Vec::with_capacity(replicas);
        for _ in 0..replicas {
            let scoped = ScopedBackend::new(Arc::new(inner.connect().await), prefix.clone());
            let gate = Gated::new(scoped);
            stores.push(
                Store::builder()
                    .backend(gate.clone())
                    .linked_hooks(false)
                    .timeout(I::TIMEOUT)
                    .retry_backoff(Duration::from_millis(2), Duration::from_millis(200))
                    .open()
                    .await
                    .expect("a replica starts"),
            );
            gates.push(gate);
        }
        DurableCase {
            noise: inner.connect().await,
            neighbours: neighbours(&prefix),
            inner,
            gates,
            replicas: stores,
        }
    }
}

impl<I: Inner> ModelCase for DurableCase<I> {
    fn replicas(&self) -> &[Store] {
        &self.replicas
    }

    async fn inject(&self, fault: usize, replica: usize, arg: u8) {
        match fault {
            0 => self.gates[replica].fail_next(1 + usize::from(arg % 3)),
            1 => {
                let gate = self.gates[replica].clone();
                gate.close();
                let held = Duration::from_millis(25 * (1 + u64::from(arg % 8)));
                tokio::spawn(async move {
                    tokio::time::sleep(held).await;
                    gate.open();
                });
            }
            2 => {
                // The model's keys, next door: puts of text (never a number) and deletes.
                let ops = self
                    .neighbours
                    .iter()
                    .flat_map(|prefix| {
                        KEYS.iter().enumerate().map(move |(i, key)| {
                            let key = format!("{prefix}{key}");
                            if (usize::from(arg) + i) % 3 == 0 {
                                Op::delete(key)
                            } else {
                                Op::put(key, Payload::from(format!("\"noise {arg}\"")))
                            }
                        })
                    })
                    .collect();
                // An injected fault may refuse it; the noise is optional.
                let _ = self.noise.apply(Batch { ops, atomic: false }).await;
            }
            own => self.inner.inject(own - COMMON_FAULTS.len(), arg).await,
        }
    }

    async fn heal(&self) {
        for gate in &self.gates {
            gate.open();
            gate.fail_next(0);
        }
        self.inner.heal();
    }
}

fn run<I: Inner>(default_cases: u32) {
    Runner::new(async || DurableModel::<I>::new()).run(default_cases, 128);
}

#[test]
fn durable_replicas_over_memory_agree_with_the_model_under_faults() {
    run::<OnMemory>(model::cases(24));
}

#[test]
fn durable_replicas_over_the_kube_fake_agree_with_the_model_under_faults() {
    run::<OnKubeFake>(model::cases(24).div_ceil(4));
}

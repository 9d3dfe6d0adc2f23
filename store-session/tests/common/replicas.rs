//! Replicas of a session server sharing one durable backend: two registries on
//! one memory backend, on two kube backends of one store on the in-process
//! fake API server or on a real control plane, or on two Redis backends of
//! one store on a real `redis-server`, and a wrapper that can hold a
//! replica's watch back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use store_core::backend::{Applied, Batch, Entry, Listing, Outcome, WatchStream};
use store_core::{Backend, Capabilities, MemoryBackend, Result, Revision};
use store_kube::KubeBackend;
use store_kube_testing::{FakeApiServer, TestCluster};
use store_redis::RedisBackend;
use store_session::{Sessions, SessionsBuilder};
use tokio::sync::{Notify, watch};

use super::redis::{RedisServer, redis_backend};

/// A backend whose watch events can be held back (the replica's view then
/// lags the backend), counting the conditional writes it saw refused.
pub(crate) struct Held<B> {
    inner: Arc<B>,
    held: watch::Sender<bool>,
    conflicts: AtomicUsize,
    conflicted: Notify,
    /// Watch events delivered to this replica, every watcher counted.
    pub(crate) delivered: Arc<AtomicUsize>,
    /// Run after the next read or listing of this key, before it returns.
    after_read: Mutex<Option<(String, BoxFuture<'static, ()>)>>,
}

impl<B: Backend> Held<B> {
    pub(crate) fn new(inner: Arc<B>) -> Self {
        Held {
            inner,
            held: watch::Sender::new(false),
            conflicts: AtomicUsize::new(0),
            conflicted: Notify::new(),
            delivered: Arc::new(AtomicUsize::new(0)),
            after_read: Mutex::new(None),
        }
    }

    /// Runs `then` after the next read of `key` (or listing of it as a
    /// prefix) has read, before it returns: what it does lands between the
    /// read and what the reader does next.
    pub(crate) fn after_next_read(
        &self,
        key: String,
        then: impl Future<Output = ()> + Send + 'static,
    ) {
        *self.after_read.lock().unwrap_or_else(|p| p.into_inner()) = Some((key, Box::pin(then)));
    }

    /// Runs the hook set by [`after_next_read`](Self::after_next_read) if it is for `key`.
    async fn run_after_read(&self, key: &str) {
        let then = {
            let mut after = self.after_read.lock().unwrap_or_else(|p| p.into_inner());
            match after.take() {
                Some((wanted, then)) if wanted == key => Some(then),
                other => {
                    *after = other;
                    None
                }
            }
        };
        if let Some(then) = then {
            then.await;
        }
    }

    /// From now on, watch events wait until [`release`](Self::release).
    pub(crate) fn hold(&self) {
        self.held.send_replace(true);
    }

    pub(crate) fn release(&self) {
        self.held.send_replace(false);
    }

    /// Waits until a conditional write was refused (at most 10 s).
    pub(crate) async fn conflicted(&self) {
        let wait = async {
            loop {
                let notified = self.conflicted.notified();
                if self.conflicts.load(Ordering::SeqCst) > 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("a conditional write is refused within 10 s");
    }

    fn gate(&self, stream: WatchStream) -> WatchStream {
        let held = self.held.subscribe();
        let delivered = Arc::clone(&self.delivered);
        Box::pin(stream.then(move |event| {
            let mut held = held.clone();
            let delivered = Arc::clone(&delivered);
            async move {
                let _ = held.wait_for(|h| !*h).await;
                delivered.fetch_add(1, Ordering::SeqCst);
                event
            }
        }))
    }
}

impl<B: Backend> Backend for Held<B> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn read(&self, key: &str) -> Result<Option<Entry>> {
        let entry = self.inner.read(key).await?;
        self.run_after_read(key).await;
        Ok(entry)
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        let listing = self.inner.list(prefix).await?;
        self.run_after_read(prefix).await;
        Ok(listing)
    }

    async fn apply(&self, batch: Batch) -> Result<Applied> {
        let applied = self.inner.apply(batch).await?;
        let refused = applied
            .outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Conflict { .. }))
            .count();
        if refused > 0 {
            self.conflicts.fetch_add(refused, Ordering::SeqCst);
            self.conflicted.notify_waiters();
        }
        Ok(applied)
    }

    async fn watch(&self, from: Revision) -> Result<WatchStream> {
        Ok(self.gate(self.inner.watch(from).await?))
    }

    async fn watch_prefix(&self, from: Revision, prefix: &str) -> Result<WatchStream> {
        Ok(self.gate(self.inner.watch_prefix(from, prefix).await?))
    }
}

/// Two replicas' durable backends on one shared store, kept alive with
/// whatever serves them.
pub(crate) struct Pair<A, B> {
    pub(crate) one: Arc<A>,
    pub(crate) two: Arc<B>,
    _server: Option<FakeApiServer>,
    _redis: Option<RedisServer>,
}

/// Two kube backends (two clients, two watches) on one store in a namespace
/// of its own on the real control plane the test binary shares, the second
/// through [`Held`].
pub(crate) async fn real_pair() -> Pair<KubeBackend, Held<KubeBackend>> {
    let cluster = TestCluster::real().await.expect("real control plane");
    cluster
        .apply_crd(&store_kube::resource::store_shard_crd())
        .await
        .expect("CRD served");
    let namespace = cluster
        .create_namespace("sessions")
        .await
        .expect("namespace");
    let one = kube_backend_in(cluster.client().expect("client"), &namespace).await;
    let two = kube_backend_in(cluster.client().expect("client"), &namespace).await;
    Pair {
        one: Arc::new(one),
        two: Arc::new(Held::new(Arc::new(two))),
        _server: None,
        _redis: None,
    }
}

impl<A: Backend, B: Backend> Pair<A, B> {
    /// A registry on each backend.
    pub(crate) fn registries(&self) -> (Sessions, Sessions) {
        self.registries_with(|builder| builder)
    }

    /// A registry on each backend, both configured by `configure`.
    pub(crate) fn registries_with(
        &self,
        configure: impl Fn(SessionsBuilder) -> SessionsBuilder,
    ) -> (Sessions, Sessions) {
        let builder = || Sessions::builder().timeout(Duration::from_secs(10));
        (
            configure(builder().shared_backend(Arc::clone(&self.one))).build(),
            configure(builder().shared_backend(Arc::clone(&self.two))).build(),
        )
    }
}

/// One memory backend seen by both replicas, the second through [`Held`].
pub(crate) fn memory_pair() -> Pair<MemoryBackend, Held<MemoryBackend>> {
    let backend = Arc::new(MemoryBackend::new());
    Pair {
        one: Arc::clone(&backend),
        two: Arc::new(Held::new(backend)),
        _server: None,
        _redis: None,
    }
}

/// A kube backend on one store of the fake API server.
pub(crate) async fn kube_backend(server: &FakeApiServer) -> KubeBackend {
    kube_backend_in(server.client().expect("client"), "default").await
}

/// A kube backend on the `sessions` store in `namespace`.
async fn kube_backend_in(client: kube::Client, namespace: &str) -> KubeBackend {
    KubeBackend::builder(client, "sessions")
        .namespace(namespace)
        .shards(2)
        .request_timeout(Duration::from_secs(5))
        .build()
        .await
        .expect("backend starts")
}

/// Two kube backends (two clients, two watches) on one store of one fake API
/// server, the second through [`Held`].
pub(crate) async fn kube_pair() -> Pair<KubeBackend, Held<KubeBackend>> {
    let server = FakeApiServer::start()
        .await
        .expect("fake API server starts");
    server
        .apply_crd(&store_kube::resource::store_shard_crd())
        .expect("CRD applies");
    let one = kube_backend(&server).await;
    let two = kube_backend(&server).await;
    Pair {
        one: Arc::new(one),
        two: Arc::new(Held::new(Arc::new(two))),
        _server: Some(server),
        _redis: None,
    }
}

/// Two Redis backends (two connections, two watches) on one store of one
/// `redis-server` started for the test, the second through [`Held`].
pub(crate) async fn redis_pair() -> Pair<RedisBackend, Held<RedisBackend>> {
    let server = RedisServer::start();
    let one = redis_backend(&server, "sessions").await;
    let two = redis_backend(&server, "sessions").await;
    Pair {
        one: Arc::new(one),
        two: Arc::new(Held::new(Arc::new(two))),
        _server: None,
        _redis: Some(server),
    }
}

#[allow(unused_imports, reason = "each test binary uses a different subset")]
pub(crate) use store_conformance::support::{eventually, eventually_async};

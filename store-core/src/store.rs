//! The typed front-end every application calls.
//!
//! A [`Store`] is a cheap-to-clone handle on shared state: the local view
//! (fed by the sync task from the backend's watch), the write queue (drained by
//! the flush task), and the channels waiters and subscribers listen on. When
//! the last handle is dropped both tasks stop; queued writes get one last
//! attempt.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, broadcast, oneshot, watch};
use tokio::time::Instant;

use crate::backend::{
    Backend, Capabilities, DynBackend, OpKind, Payload, Precondition, Revision, Version,
};
use crate::backoff::RetryPolicy;
use crate::error::{BoxError, Error, Result};
use crate::hooks::{self, Hook};
use crate::key::{self, AnyKey, AsKey};
use crate::metrics::StoreMetrics;
use crate::readiness::Readiness;
use crate::shared::{Held, Shared, lock, read};
use crate::subscribe::Subscription;
use crate::value;
use crate::view::{View, decode, with_decoded};
use crate::writes::{self, Ack, Basis, RoundBase, Writes};
use crate::{flush, sync};

/// How long waits take at most unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A value read together with the version it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// The version the backend gave it.
    pub version: Version,
}

/// Everything the store holds at one revision, as this handle sees it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The backend revision the view reflects.
    pub revision: Revision,
    /// Keys of this handle's own writes included below but not yet at `revision`.
    pub pending: usize,
    /// Every key with its encoded value, in key order.
    pub entries: BTreeMap<String, Payload>,
    /// The backend keeps values as text ([`Capabilities::text_values`]).
    text_values: bool,
}

impl Snapshot {
    /// Decodes the value at `key`, `None` when absent.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.entries
            .get(key)
            .map(|payload| value::decode_stored(key, payload, self.text_values, None))
            .transpose()
    }
}

/// Stops the background tasks when the last handle goes.
struct Guard {
    shared: Arc<Shared>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// A typed key-value store on some [`Backend`].
///
/// Cheap to clone; every clone is the same store. See the crate docs for
/// the semantics of each call.
///
/// # Which writes are safe
///
/// A write is known to be on the backend once it is acknowledged:
/// [`set_and_wait`](Self::set_and_wait), [`remove_and_wait`](Self::remove_and_wait),
/// [`update`](Self::update), [`compare_and_set`](Self::compare_and_set),
/// [`compare_and_remove`](Self::compare_and_remove) or [`clear`](Self::clear)
/// returned `Ok`, or a [`flush`](Self::flush) or [`close`](Self::close) that
/// started after the write was queued returned `Ok`. Dropping the last handle
/// stops the store without waiting: writes still queued get one attempt in the
/// background and are lost if it fails, so call `close().await` (or
/// `flush().await`) first to keep them. A call that timed out has not
/// cancelled its write, which may still land.
#[derive(Clone)]
pub struct Store {
    pub(crate) shared: Arc<Shared>,
    _guard: Arc<Guard>,
    timeout: Duration,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("name", &self.shared.name)
            .field("backend", &self.shared.backend.name())
            .field("revision", &self.shared.view_revision())
            .finish_non_exhaustive()
    }
}

/// Configures and starts a [`Store`].
#[must_use = "a builder does nothing until `start` or `open` is called"]
pub struct StoreBuilder {
    backend: Option<Arc<dyn DynBackend>>,
    name: Option<String>,
    timeout: Duration,
    hooks: Vec<Hook>,
    linked_hooks: bool,
    subscriber_capacity: usize,
    max_value_size: Option<usize>,
    max_batch_ops: usize,
    retry: RetryPolicy,
    flush_interval: Option<Duration>,
    min_write_gap: Option<Duration>,
    metrics_label: Option<String>,
}

impl std::fmt::Debug for StoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreBuilder")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Default for StoreBuilder {
    fn default() -> Self {
        StoreBuilder {
            backend: None,
            name: None,
            timeout: DEFAULT_TIMEOUT,
            hooks: Vec::new(),
            linked_hooks: true,
            subscriber_capacity: 1024,
            max_value_size: None,
            max_batch_ops: 1000,
            retry: RetryPolicy {
                initial: Duration::from_millis(20),
                max: Duration::from_secs(5),
            },
            flush_interval: None,
            min_write_gap: None,
            metrics_label: None,
        }
    }
}

impl StoreBuilder {
    /// The backend to sit on; the in-memory backend when not set.
    pub fn backend(mut self, backend: impl Backend) -> Self {
        self.backend = Some(Arc::new(backend));
        self
    }

    /// The store's name, used to pick `#[on_ready(store = "...")]` hooks and in
    /// logs. By default the backend's name for its store
    /// ([`Backend::store_name`]: `KubeBackend::builder(client, "ops")` is
    /// `"ops"`), else `"default"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The `store` label on this store's metrics (default: its name). Stores
    /// that share a label add up (see [`metrics`](crate::metrics)): give
    /// many short-lived stores one label, so the number of series stays
    /// bounded.
    pub fn metrics_label(mut self, label: impl Into<String>) -> Self {
        self.metrics_label = Some(label.into());
        self
    }

    /// How long every wait (`set_and_wait`, `flush`, `ready`, ...) may take
    /// (default [`DEFAULT_TIMEOUT`]). [`Store::with_timeout`] changes it per handle.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Adds an on-ready hook. It gets a handle on the store and runs once, after the
    /// initial sync and before [`Store::ready`] resolves.
    pub fn on_ready<F, Fut, E>(mut self, name: impl Into<String>, hook: F) -> Self
    where
        F: Fn(Store) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.hooks.push(Hook::closure(name.into(), 0, hook));
        self
    }

    /// Like [`on_ready`](Self::on_ready) with an explicit position: lower runs first
    /// (`#[on_ready]` hooks default to 0).
    pub fn on_ready_ordered<F, Fut, E>(
        mut self,
        name: impl Into<String>,
        order: i32,
        hook: F,
    ) -> Self
    where
        F: Fn(Store) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.hooks.push(Hook::closure(name.into(), order, hook));
        self
    }

    /// Whether `#[on_ready]` hooks linked into the program run on this store
    /// (default `true`).
    pub fn linked_hooks(mut self, enabled: bool) -> Self {
        self.linked_hooks = enabled;
        self
    }

    /// How many changes a subscriber may fall behind before it gets
    /// [`Error::Lagged`] (default 1024).
    pub fn subscriber_capacity(mut self, capacity: usize) -> Self {
        self.subscriber_capacity = capacity.max(1);
        self
    }

    /// Refuse values larger than this many bytes (encoded) at the call, below any
    /// limit of the backend's own.
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.max_value_size = Some(bytes);
        self
    }

    /// The most writes sent to the backend in one batch (default 1000; the backend's
    /// own limit applies too).
    pub fn max_batch(mut self, ops: usize) -> Self {
        self.max_batch_ops = ops.max(1);
        self
    }

    /// Backoff after a transient backend failure: starts at `initial`, doubles up to
    /// `max`, with full jitter (defaults 20 ms and 5 s).
    pub fn retry_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.retry = RetryPolicy {
            initial,
            max: max.max(initial),
        };
        self
    }

    /// Sends queued writes on a fixed schedule, once every `interval`, instead of
    /// as soon as the backend is idle.
    ///
    /// There is no fixed interval by default: writes go out by group commit, the
    /// next batch gathering while one is in flight, so nothing waits on a timer.
    /// An interval policy exists only to compare with Pepr's behaviour (its store
    /// sends every 4 s): writes made between two ticks coalesce per key and leave
    /// together at the next one, so a write waits up to `interval` before it is
    /// sent. Closing the store sends what is queued at once.
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = (!interval.is_zero()).then_some(interval);
        self
    }

    /// Leaves at least `gap` between two batches sent to the backend: the
    /// first write after a quiet `gap` goes at once; writes made sooner gather,
    /// coalesce per key, and leave together when `gap` has passed since the
    /// last batch was acknowledged. `Duration::ZERO` turns pacing off.
    ///
    /// Without this call the backend's wish applies
    /// ([`Capabilities::min_write_gap`]): none for most backends, a gap in the
    /// kube backend's Pepr mode, because a TypeScript Pepr pod applies a watch
    /// event only after a second without another, so a store writing more
    /// often would keep every Pepr pod's view stale. Closing the store sends
    /// what is queued at once.
    pub fn min_write_gap(mut self, gap: Duration) -> Self {
        self.min_write_gap = Some(gap);
        self
    }

    /// Starts the store's background tasks and returns at once; call
    /// [`Store::ready`] to wait for the initial sync and the on-ready hooks.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn start(self) -> Store {
        let backend = self
            .backend
            .unwrap_or_else(|| Arc::new(crate::MemoryBackend::new()));
        let caps = backend.capabilities();
        let name = self
            .name
            .or_else(|| backend.store_name().map(str::to_owned))
            .unwrap_or_else(|| "default".to_owned());
        let max_value_size = match (self.max_value_size, caps.max_value_size) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let max_batch = caps
            .max_batch_ops
            .map_or(self.max_batch_ops, |b| b.min(self.max_batch_ops));
        let (changes, _) = broadcast::channel(self.subscriber_capacity);
        let metrics = StoreMetrics::new(
            self.metrics_label.as_deref().unwrap_or(&name),
            backend.name(),
        );
        let shared = Arc::new(Shared {
            name,
            backend,
            caps,
            max_value_size,
            retry: self.retry,
            view: RwLock::new(View::default()),
            writes: Mutex::new(Writes::new(metrics.view_lag.clone())),
            pending: AtomicUsize::new(0),
            wake_flusher: Notify::new(),
            revision: watch::Sender::new(Revision(0)),
            settled: watch::Sender::new(0),
            changes,
            held: Mutex::new(Held::Listing),
            readiness: watch::Sender::new(Readiness::Starting),
            is_closed: AtomicBool::new(false),
            closed: watch::Sender::new(false),
            draining: watch::Sender::new(false),
            metrics,
        });
        let store = Store {
            _guard: Arc::new(Guard {
                shared: Arc::clone(&shared),
            }),
            shared: Arc::clone(&shared),
            timeout: self.timeout,
        };
        let hooks = hooks::plan(&store.shared.name, self.linked_hooks, self.hooks);
        let (synced_tx, synced_rx) = oneshot::channel();
        tokio::spawn(sync::run(Arc::clone(&shared), synced_tx));
        let pacing = flush::Pacing {
            interval: self.flush_interval,
            gap: self
                .min_write_gap
                .or(caps.min_write_gap)
                .filter(|gap| !gap.is_zero()),
        };
        tokio::spawn(flush::run(Arc::clone(&shared), max_batch, pacing));
        // The hook runner holds a handle only until the hooks are done.
        let runner = store.clone();
        tokio::spawn(async move {
            if synced_rx.await.is_err() {
                return;
            }
            let outcome = match hooks::run_all(&hooks, &runner).await {
                Ok(()) => Readiness::Ready,
                Err(e) => {
                    tracing::error!(store = %runner.shared.name, error = %e, "start-up failed");
                    Readiness::Failed(e)
                }
            };
            runner.shared.started(outcome);
        });
        store
    }

    /// Starts the store and waits until it is [ready](Store::ready).
    pub async fn open(self) -> Result<Store> {
        let store = self.start();
        store.ready().await?;
        Ok(store)
    }
}

impl Store {
    /// A builder for a store.
    pub fn builder() -> StoreBuilder {
        StoreBuilder::default()
    }

    /// A ready store on a fresh in-memory backend: the embedded default.
    pub async fn memory() -> Result<Store> {
        Store::builder().open().await
    }

    /// The store's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// What the backend can do.
    pub fn capabilities(&self) -> Capabilities {
        self.shared.caps
    }

    /// The same store, with waits bounded by `timeout` on the returned handle.
    pub fn with_timeout(&self, timeout: Duration) -> Store {
        Store {
            timeout,
            ..self.clone()
        }
    }

    /// The timeout this handle's waits use.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.shared.is_closed() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// The value at `key`, from the local view: no backend call. Sees this
    /// handle's own writes before the backend confirms them.
    ///
    /// Values are shared, immutable snapshots: decoding happens once per value
    /// and type, and every later read clones an `Arc`.
    pub fn get<T>(&self, key: impl AsKey<T>) -> Result<Option<Arc<T>>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let name = key.as_key();
        self.check_open()?;
        if self.shared.pending.load(Ordering::Acquire) > 0 {
            let writes = lock(&self.shared.writes);
            if let Some(entry) = writes.overlay(name) {
                return match &entry.cell {
                    Some(cell) => {
                        decode(cell, name, key.validator(), self.shared.caps.text_values).map(Some)
                    }
                    None => Ok(None),
                };
            }
        }
        let view = read(&self.shared.view);
        match view.get(name) {
            Some(entry) => decode(
                entry.value(),
                name,
                key.validator(),
                self.shared.caps.text_values,
            )
            .map(Some),
            None => {
                drop(view);
                key::validate(name)?;
                Ok(None)
            }
        }
    }

    /// The value at `key` with its version, as the backend last confirmed it.
    ///
    /// Unlike [`get`](Self::get) this does not show this handle's unconfirmed
    /// writes: it is for [`compare_and_set`](Self::compare_and_set), which needs a
    /// version the backend knows.
    pub fn get_versioned<T>(&self, key: impl AsKey<T>) -> Result<Option<Versioned<Arc<T>>>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let name = key.as_key();
        self.check_open()?;
        key::validate(name)?;
        let view = read(&self.shared.view);
        view.get(name)
            .map(|entry| {
                Ok(Versioned {
                    value: decode(
                        entry.value(),
                        name,
                        key.validator(),
                        self.shared.caps.text_values,
                    )?,
                    version: entry.version(),
                })
            })
            .transpose()
    }

    pub(crate) fn encode_put<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<OpKind> {
        self.check_open()?;
        key::validate(key)?;
        if ttl.is_some() && !self.shared.caps.ttl {
            return Err(Error::Unsupported {
                backend: self.shared.backend.name(),
                operation: "time to live",
            });
        }
        let payload = value::encode(key, value, self.shared.max_value_size)?;
        if self.shared.caps.text_values && payload.as_str() == "\"\"" {
            // Empty text is no value in a text store: Pepr reads it as missing,
            // and the Kubernetes API server refuses it (it arrives as null).
            return Err(Error::Rejected {
                key: key.to_owned(),
                reason: format!(
                    "the {} backend keeps values as text and cannot hold an empty string",
                    self.shared.backend.name()
                ),
            });
        }
        Ok(writes::put(payload, ttl))
    }

    fn push_plain(&self, key: &str, kind: OpKind, waiter: Option<writes::Waiter>) {
        let metrics = &self.shared.metrics;
        match kind {
            OpKind::Put { .. } => metrics.queued_set.increment(1),
            OpKind::Delete => metrics.queued_remove.increment(1),
        }
        let was_empty = self.shared.with_writes(|w| {
            let before = w.queued();
            let (_, was_empty) = w.push_plain(key, kind, waiter);
            metrics.queued(w.queued() - before);
            was_empty
        });
        if was_empty {
            self.shared.wake_flusher.notify_one();
        }
    }

    /// Queues `value` at `key` and returns at once.
    ///
    /// The key and the value are checked here (invalid key, encoding, size), so
    /// nothing fails later for a reason known now. Writes to one key coalesce in
    /// call order; the last one wins. The write is sent in the background; use
    /// [`set_and_wait`](Self::set_and_wait) or [`flush`](Self::flush) to know it
    /// landed.
    pub fn set<T: Serialize + ?Sized>(&self, key: impl AsKey<T>, value: &T) -> Result<()> {
        let key = key.as_key();
        let kind = self.encode_put(key, value, None)?;
        self.push_plain(key, kind, None);
        Ok(())
    }

    /// Like [`set`](Self::set), expiring the key `ttl` after the write lands
    /// (needs [`Capabilities::ttl`], else [`Error::Unsupported`]).
    pub fn set_with_ttl<T: Serialize + ?Sized>(
        &self,
        key: impl AsKey<T>,
        value: &T,
        ttl: Duration,
    ) -> Result<()> {
        let key = key.as_key();
        let kind = self.encode_put(key, value, Some(ttl))?;
        self.push_plain(key, kind, None);
        Ok(())
    }

    /// Writes `value` at `key` and waits until the backend acknowledged it and
    /// the local view shows it. Returns the new version.
    ///
    /// If a later write to the same key coalesces with this one before it is
    /// sent, this resolves when that later write is acknowledged.
    pub async fn set_and_wait<T: Serialize + ?Sized>(
        &self,
        key: impl AsKey<T>,
        value: &T,
    ) -> Result<Version> {
        let started = std::time::Instant::now();
        let key = key.as_key();
        let result = async {
            let kind = self.encode_put(key, value, None)?;
            let (tx, rx) = oneshot::channel();
            self.push_plain(key, kind, Some(tx));
            self.await_ack(key, rx).await
        }
        .await;
        self.shared.metrics.set_and_wait.record(started.elapsed());
        result
    }

    /// Queues the removal of `key` and returns at once. Removing a missing key is
    /// not an error.
    ///
    /// A key the store lists can always be removed, even one another writer
    /// stored that breaks this library's [key rules](crate::key) (a control
    /// character, over 1,024 bytes): only keys the view does not hold are
    /// checked.
    pub fn remove(&self, key: impl AnyKey) -> Result<()> {
        let key = key.key_name();
        self.check_open()?;
        self.check_removable(key)?;
        self.push_plain(key, OpKind::Delete, None);
        Ok(())
    }

    /// Removes `key` and waits until the backend acknowledged it and the local view
    /// shows it gone.
    /// Like [`remove`](Self::remove), any key the store lists is accepted.
    pub async fn remove_and_wait(&self, key: impl AnyKey) -> Result<()> {
        let key = key.key_name();
        self.check_open()?;
        self.check_removable(key)?;
        let (tx, rx) = oneshot::channel();
        self.push_plain(key, OpKind::Delete, Some(tx));
        self.await_ack(key, rx).await.map(|_| ())
    }

    /// Writes `value` at `key` only if `expected` holds on the backend; otherwise
    /// [`Error::Conflict`] with the version found. Needs
    /// [`Capabilities::compare_and_set`].
    ///
    /// If an attempt failed in a way that may have applied it and the retry
    /// conflicts, the answer is [`Error::OutcomeUnknown`], never a guess.
    pub async fn compare_and_set<T: Serialize + ?Sized>(
        &self,
        key: impl AsKey<T>,
        expected: Precondition,
        value: &T,
    ) -> Result<Version> {
        let key = key.as_key();
        self.require_cas()?;
        let kind = self.encode_put(key, value, None)?;
        self.conditional(key, kind, expected).await
    }

    /// Removes `key` only if it is at version `expected`; otherwise
    /// [`Error::Conflict`].
    pub async fn compare_and_remove(&self, key: impl AnyKey, expected: Version) -> Result<()> {
        let key = key.key_name();
        self.require_cas()?;
        self.check_open()?;
        self.check_removable(key)?;
        self.conditional(key, OpKind::Delete, Precondition::Version(expected))
            .await
            .map(|_| ())
    }

    /// A key may be removed when it follows the key rules or when the view
    /// holds it (another writer may store keys these rules refuse).
    pub(crate) fn check_removable(&self, key: &str) -> Result<()> {
        match key::validate(key) {
            Err(_) if read(&self.shared.view).contains(key) => Ok(()),
            checked => checked,
        }
    }

    fn require_cas(&self) -> Result<()> {
        if self.shared.caps.compare_and_set {
            Ok(())
        } else {
            Err(Error::Unsupported {
                backend: self.shared.backend.name(),
                operation: "compare-and-set",
            })
        }
    }

    async fn conditional(
        &self,
        key: &str,
        kind: OpKind,
        expected: Precondition,
    ) -> Result<Version> {
        let (tx, rx) = oneshot::channel();
        let metrics = &self.shared.metrics;
        metrics.queued_conditional.increment(1);
        let was_empty = self
            .shared
            .with_writes(|w| w.push_conditional(key, kind, expected, tx));
        metrics.queued(1);
        if was_empty {
            self.shared.wake_flusher.notify_one();
        }
        self.await_ack(key, rx).await
    }

    /// Read-modify-write without lost updates: reads the confirmed value, computes
    /// the new one with `f`, and writes it only if the key did not change meanwhile;
    /// otherwise waits for the newer value and calls `f` again. `f` may therefore run
    /// more than once. Returns the value written with its version.
    ///
    /// Every call writes, even a value equal to the current one; use
    /// [`update_if`](Self::update_if) to leave the key alone when nothing changes.
    ///
    /// An attempt whose answer was lost ends the call with
    /// [`Error::OutcomeUnknown`] when its retry conflicts: the change may
    /// already be in the store, so it is not made again.
    ///
    /// Concurrent updates of one key through this store (any of its handles)
    /// combine: while one conditional write of the key is queued, later
    /// updates apply their change to the value it will write, in call order,
    /// and ride in it; the next one queues behind a write in flight, on top of
    /// its value. A hot key so costs one request per round, not one per
    /// update, with nothing lost or doubled: each caller gets the value its
    /// own change made, and all of a round's callers the version the round
    /// wrote (the version of the last caller's value). Subscribers and other
    /// replicas see a round as one change. If a round fails, every update in
    /// it starts again from the newer value.
    pub async fn update<T, F>(&self, key: impl AsKey<T>, mut f: F) -> Result<Versioned<Arc<T>>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: FnMut(Option<&T>) -> T,
    {
        let updated = self.update_if(key, |current| Some(f(current))).await?;
        // `f` always gives a value, so a write always happens.
        updated.ok_or(Error::Closed)
    }

    /// Like [`update`](Self::update), but `f` may decline: returning `None`
    /// leaves the key as it is, sends nothing to the backend and makes no new
    /// version (as `fetch_update` on an atomic). Returns the value written with
    /// its version, or `None` when `f` declined.
    ///
    /// `f` decides on this handle's view of the key, the same value `update`
    /// would start from; a decline is not checked against the backend. A
    /// decline on the value of a round of updates still pending waits for the
    /// round, and decides again if it failed.
    ///
    /// ```
    /// # use store_core::Store;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> store_core::Result<()> {
    /// let store = Store::memory().await?;
    /// let record = |ns: &str| {
    ///     let ns = ns.to_owned();
    ///     move |current: Option<&Vec<String>>| {
    ///         let mut list = current.cloned().unwrap_or_default();
    ///         if list.contains(&ns) {
    ///             return None; // already recorded: write nothing
    ///         }
    ///         list.push(ns.clone());
    ///         Some(list)
    ///     }
    /// };
    /// assert!(store.update_if("exempt", record("kube-system")).await?.is_some());
    /// assert!(store.update_if("exempt", record("kube-system")).await?.is_none());
    /// # Ok(()) }
    /// ```
    pub async fn update_if<T, F>(
        &self,
        key: impl AsKey<T>,
        mut f: F,
    ) -> Result<Option<Versioned<Arc<T>>>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: FnMut(Option<&T>) -> Option<T>,
    {
        let validator = key.validator();
        let key = key.as_key();
        self.require_cas()?;
        self.check_open()?;
        key::validate(key)?;
        let deadline = Instant::now() + self.timeout;
        let text = self.shared.caps.text_values;
        let metrics = &self.shared.metrics;
        loop {
            // Where to start: a round of this key's updates pending in this
            // store, or the view. Both locks, view first, as everywhere.
            let (basis, view_entry, seen) = {
                let view = read(&self.shared.view);
                let entry = view
                    .get(key)
                    .map(|e| (decode::<T>(e.value(), key, validator, text), e.version()));
                let version = entry.as_ref().map(|(_, version)| *version);
                let basis = self.shared.with_writes(|w| w.basis(key, version));
                (basis, entry, view.revision)
            };
            let (current, base) = match &basis {
                Basis::View => match view_entry {
                    Some((value, version)) => (Some(value?), Some(Precondition::Version(version))),
                    None => (None, Some(Precondition::Absent)),
                },
                Basis::Join { cell, .. } | Basis::Chain { cell, .. } => {
                    (Some(decode::<T>(cell, key, validator, text)?), None)
                }
                Basis::Applied { cell, version } => (
                    Some(decode::<T>(cell, key, validator, text)?),
                    Some(Precondition::Version(*version)),
                ),
            };
            let next = f(current.as_deref()).map(Arc::new);
            let (tx, rx) = oneshot::channel();
            let change = match &next {
                Some(next) => {
                    let kind = self.encode_put(key, &**next, None)?;
                    let OpKind::Put { value, .. } = &kind else {
                        unreachable!("encode_put makes a put")
                    };
                    let cell = with_decoded(value.clone(), Arc::clone(next));
                    Some((kind, cell))
                }
                None => None,
            };
            let placed = match (&basis, change) {
                // Declined on the confirmed value: nothing to write.
                (Basis::View | Basis::Applied { .. }, None) => return Ok(None),
                // Declined on a value not confirmed yet: decide again once it is.
                (Basis::Chain { seq, .. }, None) => {
                    self.wait_seq(*seq, deadline, &format!("`{key}` to update"))
                        .await?;
                    continue;
                }
                (
                    Basis::Join {
                        seq, generation, ..
                    },
                    change,
                ) => self
                    .shared
                    .with_writes(|w| w.join_round(key, *seq, *generation, change, tx))
                    .then_some((*seq, false)),
                (Basis::Chain { seq, .. }, Some((kind, cell))) => {
                    let after = RoundBase::After(*seq);
                    self.shared
                        .with_writes(|w| w.push_round(key, kind, cell, after, tx))
                }
                (Basis::View | Basis::Applied { .. }, Some((kind, cell))) => {
                    let base = RoundBase::Precondition(base.unwrap_or(Precondition::Absent));
                    self.shared
                        .with_writes(|w| w.push_round(key, kind, cell, base, tx))
                }
            };
            // Another update of the key got in first: start from its round.
            let Some((round, was_empty)) = placed else {
                continue;
            };
            metrics.queued_conditional.increment(1);
            if matches!(
                basis,
                Basis::View | Basis::Applied { .. } | Basis::Chain { .. }
            ) {
                metrics.queued(1);
            }
            if was_empty {
                self.shared.wake_flusher.notify_one();
            }
            let attempt = self.await_ack(key, rx);
            match tokio::time::timeout_at(deadline, attempt).await {
                Err(_) => return Err(self.timeout_error(format!("`{key}` to update"))),
                Ok(Ok(version)) => {
                    // The view shows it now: the next update starts from there.
                    self.shared.with_writes(|w| w.forget_round(key, round));
                    return Ok(next.map(|value| Versioned { value, version }));
                }
                Ok(Err(Error::Conflict { actual, .. })) => {
                    metrics.retries_conflict.increment(1);
                    match (actual, &basis) {
                        // Someone else wrote first: wait until the view shows their write.
                        (Some(actual), _) => {
                            let target = Revision(actual.0);
                            self.wait_revision(target, deadline, || format!("`{key}` to update"))
                                .await?;
                        }
                        (None, Basis::View) => {
                            let target = Revision(seen.0 + 1);
                            self.wait_revision(target, deadline, || format!("`{key}` to update"))
                                .await?;
                        }
                        // The round this one built on failed: start again from the view.
                        (None, _) => {}
                    }
                }
                Ok(Err(other)) => return Err(other),
            }
        }
    }

    /// Removes every key the backend holds for this store, including keys this
    /// handle never saw, and waits until that is done. Writes this handle queued
    /// before the call are removed too.
    pub async fn clear(&self) -> Result<()> {
        self.check_open()?;
        let deadline = Instant::now() + self.timeout;
        let metrics = &self.shared.metrics;
        let started = self.shared.with_writes(|w| {
            let start = w.last_seq();
            let before = w.queued();
            let pending: Vec<String> = w.overlays().map(|(k, _)| k.to_string()).collect();
            metrics.queued_remove.increment(pending.len() as u64);
            for key in pending {
                w.push_plain(&key, OpKind::Delete, None);
            }
            metrics.queued(w.queued() - before);
            start
        });
        // Writes queued before the call (a conditional one among them may create
        // a key) must land before the listing, or they would survive the clear.
        self.shared.wake_flusher.notify_one();
        self.wait_seq(started, deadline, "earlier writes to land before the clear")
            .await?;
        let listing = loop {
            match tokio::time::timeout_at(deadline, self.shared.backend.list("")).await {
                Err(_) => return Err(self.timeout_error("the store to be listed".to_owned())),
                Ok(Ok(listing)) => break listing,
                Ok(Err(e)) if e.is_transient() => {
                    tracing::warn!(store = %self.shared.name, error = %e, "listing for clear failed; retrying");
                    tokio::time::sleep(self.shared.retry.initial).await;
                }
                Ok(Err(e)) => return Err(e),
            }
        };
        let target = self.shared.with_writes(|w| {
            let before = w.queued();
            for entry in &listing.entries {
                // Keys written through this handle since clear began stay.
                let newer = w.overlay(entry.key()).is_some_and(|o| o.seq > started);
                if !newer {
                    metrics.queued_remove.increment(1);
                    w.push_plain(entry.key(), OpKind::Delete, None);
                }
            }
            metrics.queued(w.queued() - before);
            w.last_seq()
        });
        self.shared.wake_flusher.notify_one();
        self.wait_settled(target, deadline, "the clear to be acknowledged")
            .await?;
        // With nothing left to remove, nothing above waited for the view to show
        // the listing: this handle must not go on showing what was removed.
        self.wait_revision(listing.revision, deadline, || {
            "the clear to be visible".to_owned()
        })
        .await
    }

    /// Starts writes to several keys that land together or not at all:
    /// `store.transaction().set("a", &1).remove("b").commit().await`. See
    /// [`Transaction`](crate::Transaction). Needs
    /// [`Capabilities::atomic_batch`]: the memory and Redis backends have it;
    /// the kube backend, whose keys live in several objects, does not.
    pub fn transaction(&self) -> crate::Transaction<'_> {
        crate::Transaction::new(self)
    }

    /// Waits until every write queued before the call is acknowledged and visible
    /// in the view.
    ///
    /// Reports every write that failed for good since the last `flush` and
    /// that no caller was told about: its own error when one failed,
    /// [`Error::WritesFailed`] naming all of them when several did. A failure
    /// already returned to a [`set_and_wait`](Self::set_and_wait) (or another
    /// waiting call) is not reported again, and none is reported twice. Each
    /// failed write is also logged once, at WARN, with its key (never its value).
    pub async fn flush(&self) -> Result<()> {
        self.check_open()?;
        let target = self.shared.with_writes(|w| w.last_seq());
        let deadline = Instant::now() + self.timeout;
        self.wait_settled(target, deadline, "queued writes to be acknowledged")
            .await
    }

    /// Waits until every write up to `target` has its outcome.
    pub(crate) async fn wait_seq(&self, target: u64, deadline: Instant, what: &str) -> Result<()> {
        let mut settled = self.shared.settled.subscribe();
        self.until(deadline, what, async {
            settled
                .wait_for(|s| *s >= target)
                .await
                .map(|_| ())
                .map_err(|_| Error::Closed)
        })
        .await
    }

    /// Waits until every write up to `target` has its outcome and the view shows
    /// them; reports those that failed for good and no caller was told about.
    async fn wait_settled(&self, target: u64, deadline: Instant, what: &str) -> Result<()> {
        self.wait_seq(target, deadline, what).await?;
        let (failure, last_ack) = self
            .shared
            .with_writes(|w| (w.take_failures(target), w.last_ack));
        if let Some(error) = failure {
            return Err(error);
        }
        self.wait_revision(last_ack, deadline, || what.to_owned())
            .await
    }

    /// Waits for the initial sync and the on-ready hooks. Resolves at once when
    /// already ready; fails with the hook's error when one failed.
    pub async fn ready(&self) -> Result<()> {
        let mut readiness = self.shared.readiness.subscribe();
        let deadline = Instant::now() + self.timeout;
        let state = self
            .until(deadline, "the store to be ready", async {
                readiness
                    .wait_for(|r| !matches!(r, Readiness::Starting))
                    .await
                    .map(|r| r.clone())
                    .map_err(|_| Error::Closed)
            })
            .await?;
        match state {
            Readiness::Failed(e) => Err(e),
            _ => Ok(()),
        }
    }

    /// Changes to the store as the backend confirms them, in order, from now on.
    /// Delivery starts once the store is ready; a subscription made while the
    /// store starts also gets every change made since the initial listing (the
    /// on-ready hooks' writes among them), so it doesn't matter how far start-up
    /// got before `subscribe` was called. The initial listing itself is the
    /// starting state, read with [`get`](Self::get), not a change. Narrow it with
    /// [`Subscription::key`] or [`Subscription::prefix`].
    pub fn subscribe(&self) -> Subscription {
        Subscription::new(
            self.shared.changes.subscribe(),
            self.shared.readiness.subscribe(),
            self.shared.closed.subscribe(),
        )
    }

    /// Every key, in order, including this handle's unconfirmed writes.
    pub fn keys(&self) -> Vec<String> {
        self.snapshot().entries.into_keys().collect()
    }

    /// How many keys the store holds, including this handle's unconfirmed writes.
    pub fn len(&self) -> usize {
        let view = read(&self.shared.view);
        let mut len = view.len();
        if self.shared.pending.load(Ordering::Acquire) > 0 {
            self.shared.with_writes(|w| {
                for (key, overlay) in w.overlays() {
                    match (view.contains(key), overlay.cell.is_some()) {
                        (false, true) => len += 1,
                        (true, false) => len -= 1,
                        _ => {}
                    }
                }
            });
        }
        len
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every key and value at the view's revision, with this handle's unconfirmed
    /// writes applied on top (counted in [`Snapshot::pending`]).
    pub fn snapshot(&self) -> Snapshot {
        let (mut entries, revision) = {
            let view = read(&self.shared.view);
            let entries: BTreeMap<String, Payload> = view
                .iter()
                .map(|e| (e.key().to_owned(), e.value().clone()))
                .collect();
            (entries, view.revision)
        };
        let pending = self.shared.with_writes(|w| {
            let mut touched = BTreeSet::new();
            for (key, overlay) in w.overlays() {
                touched.insert(key.to_string());
                match &overlay.cell {
                    Some(cell) => entries.insert(key.to_string(), cell.clone()),
                    None => entries.remove(&**key),
                };
            }
            touched.len()
        });
        Snapshot {
            revision,
            pending,
            entries,
            text_values: self.shared.caps.text_values,
        }
    }

    /// Sends what is queued, waits for it like [`flush`](Self::flush), and stops the
    /// store: every later call on any handle returns [`Error::Closed`].
    pub async fn close(&self) -> Result<()> {
        self.shared.draining.send_replace(true);
        let flushed = self.flush().await;
        self.shared.close();
        flushed
    }

    async fn await_ack(&self, key: &str, rx: oneshot::Receiver<Result<Ack>>) -> Result<Version> {
        let deadline = Instant::now() + self.timeout;
        let what = || format!("`{key}` to be acknowledged");
        let ack = self
            .until(deadline, &what(), async {
                rx.await.map_err(|_| Error::Closed)?
            })
            .await?;
        self.wait_revision(ack.revision, deadline, what).await?;
        Ok(ack.version)
    }

    pub(crate) async fn wait_revision(
        &self,
        target: Revision,
        deadline: Instant,
        what: impl FnOnce() -> String,
    ) -> Result<()> {
        let mut revision = self.shared.revision.subscribe();
        if *revision.borrow() >= target {
            return Ok(());
        }
        self.until(deadline, &what(), async {
            revision
                .wait_for(|r| *r >= target)
                .await
                .map(|_| ())
                .map_err(|_| Error::Closed)
        })
        .await
    }

    /// Runs `fut` until `deadline`, failing with [`Error::Timeout`] then, or with
    /// [`Error::Closed`] if the store closes first.
    pub(crate) async fn until<T>(
        &self,
        deadline: Instant,
        what: &str,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let mut closed = self.shared.closed.subscribe();
        tokio::select! {
            out = tokio::time::timeout_at(deadline, fut) => match out {
                Ok(result) => result,
                Err(_) => Err(self.timeout_error(what.to_owned())),
            },
            _ = closed.wait_for(|c| *c) => Err(Error::Closed),
        }
    }

    pub(crate) fn timeout_error(&self, waiting_for: String) -> Error {
        Error::Timeout {
            waiting_for,
            timeout: self.timeout,
        }
    }
}

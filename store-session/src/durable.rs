//! The durable tier: serde values kept through a [`store_core::Store`] on the
//! registry's backend, one store per scope on a [`ScopedBackend`](crate::ScopedBackend)
//! of that scope's prefix.
//!
//! Reads come from the store's local view; writes go through it (queued and
//! coalesced, or acknowledged and compare-and-set). Quotas are kept here: the
//! size of each key as this process last wrote or loaded it. Updates from this
//! process to one key take a local lock first, so they queue instead of
//! racing each other on the backend; other processes are kept out by
//! compare-and-set.

use std::any::type_name;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::Mutex;

use futures_util::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use store_core::{PlainKey, Precondition, Store, Subscription, Version};
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::instance::Instance;
use crate::layout::{self, ScopeKind};
use crate::{lock, outdated};

/// What the durable tier stores: serde values that can be copied for an update.
///
/// Implemented for every type with these bounds.
pub trait DurableValue: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> DurableValue for T {}

/// One scope's durable store and its bookkeeping.
pub(crate) struct DurableState {
    kind: ScopeKind,
    prefix: String,
    pub(crate) store: Store,
    /// Encoded size of each key, for the byte quota.
    sizes: Mutex<HashMap<String, usize>>,
    /// The Rust type each key was first used with in this process.
    types: Mutex<HashMap<String, &'static str>>,
    /// Serialises this process's updates per key.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The `store` label of every durable scope's metrics in the registry
/// rooted at `root` (see `store_core::metrics`).
pub(crate) fn metrics_label(root: &str) -> String {
    if root.is_empty() {
        "sessions".to_owned()
    } else {
        root.to_owned()
    }
}

fn encoded_len<T: Serialize>(value: &T) -> usize {
    serde_json::to_string(value).map_or(0, |s| s.len())
}

impl DurableState {
    pub(crate) async fn open(instance: &Arc<Instance>, kind: &ScopeKind) -> Result<Arc<Self>> {
        let config = &instance.config;
        let prefix =
            layout::scope_prefix(&config.root, &instance.session, instance.generation, kind);
        let store = config
            .inner
            .scoped(prefix.clone())
            // One metrics label per registry, not one per scope: sessions are many.
            .metrics_label(metrics_label(&config.root))
            .timeout(config.timeout)
            .open()
            .await?;
        let sizes: HashMap<String, usize> = store
            .snapshot()
            .entries
            .into_iter()
            .map(|(key, payload)| (key, payload.len()))
            .collect();
        instance.adopt(sizes.len(), sizes.values().sum());
        Ok(Arc::new(DurableState {
            kind: kind.clone(),
            prefix,
            store,
            sizes: Mutex::new(sizes),
            types: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
        }))
    }

    /// Refuses `T` at `key` if this process used another type there.
    fn check_type<T>(&self, key: &str) -> Result<()> {
        match lock(&self.types).get(key) {
            Some(stored) if *stored != type_name::<T>() => Err(Error::TypeMismatch {
                key: key.to_owned(),
                stored,
                requested: type_name::<T>(),
            }),
            _ => Ok(()),
        }
    }

    fn bind_type<T>(&self, key: &str) {
        lock(&self.types)
            .entry(key.to_owned())
            .or_insert_with(type_name::<T>);
    }

    /// Records `key` at `size` bytes (`None`: removed), within the quotas.
    /// Returns the previous record, to put back if the write fails.
    fn account(
        &self,
        instance: &Instance,
        key: &str,
        size: Option<usize>,
    ) -> Result<Option<usize>> {
        let mut sizes = lock(&self.sizes);
        let previous = sizes.get(key).copied();
        match (previous, size) {
            (None, Some(new)) => {
                instance.reserve_entry(key)?;
                if let Err(e) = instance.reserve_bytes(key, new) {
                    instance.release_entries(1);
                    return Err(e);
                }
            }
            (Some(old), Some(new)) if new > old => instance.reserve_bytes(key, new - old)?,
            (Some(old), Some(new)) => instance.release_bytes(old - new),
            (Some(old), None) => {
                instance.release_entries(1);
                instance.release_bytes(old);
            }
            (None, None) => {}
        }
        match size {
            Some(new) => sizes.insert(key.to_owned(), new),
            None => sizes.remove(key),
        };
        Ok(previous)
    }

    /// Puts a record back after a failed write.
    fn restore(&self, instance: &Instance, key: &str, previous: Option<usize>) {
        // Going back never needs more than was held before, so the quota holds.
        let current = lock(&self.sizes).get(key).copied();
        if current != previous {
            let _ = self.account(instance, key, previous);
        }
    }

    fn key_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(lock(&self.locks).entry(key.to_owned()).or_default())
    }

    fn forget(&self, key: &str) {
        lock(&self.types).remove(key);
        lock(&self.locks).remove(key);
    }

    pub(crate) fn snapshot(&self) -> Value {
        let mut map = Map::new();
        for (key, payload) in self.store.snapshot().entries {
            let value = serde_json::from_str(payload.as_str())
                .unwrap_or_else(|_| Value::String(payload.as_str().to_owned()));
            map.insert(key, value);
        }
        Value::Object(map)
    }
}

/// The durable tier of one scope; see [`Scope::durable`](crate::Scope::durable).
///
/// Values are serde types ([`DurableValue`]) kept on the registry's backend
/// under this scope's prefix, so they survive a restart of the process when the
/// backend does. Cheap to clone.
#[derive(Clone)]
pub struct DurableScope {
    instance: Arc<Instance>,
    state: Arc<DurableState>,
}

impl std::fmt::Debug for DurableScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableScope")
            .field("session", &self.instance.session)
            .field("kind", &self.state.kind)
            .field("prefix", &self.state.prefix)
            .finish_non_exhaustive()
    }
}

impl DurableScope {
    pub(crate) fn new(instance: Arc<Instance>, state: Arc<DurableState>) -> Self {
        DurableScope { instance, state }
    }

    /// Which part of the session this scope covers.
    pub fn kind(&self) -> &ScopeKind {
        &self.state.kind
    }

    /// Where this scope's keys live on the registry's backend.
    pub fn prefix(&self) -> &str {
        &self.state.prefix
    }

    fn store_error(&self, key: &str, error: store_core::Error) -> Error {
        match error {
            store_core::Error::Closed => outdated(key),
            other => Error::Store(other),
        }
    }

    /// A handle on the durable value at `key`, writing `default` first (with a
    /// compare-and-set on absence, so two processes agree on one default) if the
    /// key is missing.
    ///
    /// Fails with [`Error::TypeMismatch`] when this process used the key with
    /// another type, with a decode error ([`Error::Store`]) when the stored JSON
    /// does not fit `T`, and with [`Error::QuotaExceeded`] when a new entry would
    /// pass a quota.
    pub async fn use_value<T: DurableValue>(
        &self,
        key: &str,
        default: T,
    ) -> Result<DurableHandle<T>> {
        self.use_with(key, move || default).await
    }

    /// Like [`use_value`](Self::use_value), building the default with `init` only
    /// when the key is missing.
    pub async fn use_with<T, F>(&self, key: &str, init: F) -> Result<DurableHandle<T>>
    where
        T: DurableValue,
        F: FnOnce() -> T,
    {
        self.instance.check_read(key)?;
        self.state.check_type::<T>(key)?;
        let store = &self.state.store;
        let handle = DurableHandle {
            key: Arc::from(key),
            scope: self.clone(),
            ty: PhantomData,
        };
        let deadline = Instant::now() + store.timeout();
        let mut init = Some(init);
        let mut value: Option<T> = None;
        let mut lost = false;
        loop {
            // Subscribed before looking, so a value created by another process
            // cannot slip by between the look and the wait.
            let mut changes = store.subscribe().key(key);
            if let Some(theirs) = store.get::<T>(key).map_err(|e| self.store_error(key, e))? {
                if !lock(&self.state.sizes).contains_key(key) {
                    let _ = self
                        .state
                        .account(&self.instance, key, Some(encoded_len(&*theirs)));
                }
                self.state.bind_type::<T>(key);
                return Ok(handle);
            }
            self.instance.check_write(key)?;
            if Instant::now() >= deadline {
                return Err(Error::Store(store_core::Error::Timeout {
                    waiting_for: format!("`{key}` to be created"),
                    timeout: store.timeout(),
                }));
            }
            if lost {
                // Another process created the key first and this view does not
                // show it yet: "not seen yet" is not "gone", so wait for it
                // rather than hand out a handle that reads nothing.
                if tokio::time::timeout_at(deadline, changes.next())
                    .await
                    .is_err()
                {
                    return Err(Error::Store(store_core::Error::Timeout {
                        waiting_for: format!("`{key}`, created by another process, to be seen"),
                        timeout: store.timeout(),
                    }));
                }
                lost = false;
                continue;
            }
            let next = match (value.take(), init.take()) {
                (Some(v), _) => v,
                (None, Some(make)) => make(),
                (None, None) => return Err(outdated(key)),
            };
            let previous = self
                .state
                .account(&self.instance, key, Some(encoded_len(&next)))?;
            let written = if store.capabilities().compare_and_set {
                store
                    .compare_and_set(key, Precondition::Absent, &next)
                    .await
            } else {
                store.set_and_wait(key, &next).await
            };
            match written {
                Ok(_) => {
                    self.state.bind_type::<T>(key);
                    return Ok(handle);
                }
                Err(store_core::Error::Conflict { .. }) => {
                    // Theirs stands; ours is kept in case theirs is removed again.
                    self.state.restore(&self.instance, key, previous);
                    value = Some(next);
                    lost = true;
                }
                Err(e) => {
                    self.state.restore(&self.instance, key, previous);
                    return Err(self.store_error(key, e));
                }
            }
        }
    }

    /// The type's own durable slot, keyed by its type name and starting at
    /// `T::default()`. The key changes when the type is renamed or moved, so for
    /// data that must outlive a release prefer [`use_typed`](Self::use_typed).
    pub async fn use_default<T: DurableValue + Default>(&self) -> Result<DurableHandle<T>> {
        self.use_with(type_name::<T>(), T::default).await
    }

    /// The value of a [`StoreValue`](store_core::StoreValue) type at its own key (`T::KEY`), starting at
    /// `T::default()`. Only for a type with one key ([`PlainKey`]).
    pub async fn use_typed<T: PlainKey + Clone + Default>(&self) -> Result<DurableHandle<T>> {
        self.use_with(T::KEY, T::default).await
    }

    /// Removes `key` and waits until the backend acknowledged it; handles on it
    /// then find nothing ([`Error::Outdated`]). Removing a missing key is fine.
    pub async fn remove(&self, key: &str) -> Result<()> {
        self.instance.check_write(key)?;
        self.state
            .store
            .remove_and_wait(key)
            .await
            .map_err(|e| self.store_error(key, e))?;
        let _ = self.state.account(&self.instance, key, None);
        self.state.forget(key);
        Ok(())
    }

    /// The keys, sorted, as this process sees them (its view of the backend plus
    /// its own unconfirmed writes).
    pub fn keys(&self) -> Result<Vec<String>> {
        self.instance.check_read("")?;
        Ok(self.state.store.keys())
    }

    /// Removes every key of this scope on the backend, including keys other
    /// processes wrote, and waits until that is done.
    pub async fn clear(&self) -> Result<()> {
        self.instance.check_write("")?;
        self.state
            .store
            .clear()
            .await
            .map_err(|e| self.store_error("", e))?;
        let keys: Vec<String> = lock(&self.state.sizes).keys().cloned().collect();
        for key in keys {
            let _ = self.state.account(&self.instance, &key, None);
            self.state.forget(&key);
        }
        Ok(())
    }

    /// Every confirmed change to this scope, in order; narrow it with
    /// [`Subscription::key`] or [`Subscription::prefix`].
    pub fn subscribe(&self) -> Subscription {
        self.state.store.subscribe()
    }

    /// Waits until every write queued through this scope is acknowledged.
    pub async fn flush(&self) -> Result<()> {
        self.state
            .store
            .flush()
            .await
            .map_err(|e| self.store_error("", e))
    }
}

/// A handle on one durable value; see [`DurableScope::use_value`].
///
/// Cheap to clone. Calls fail with [`Error::Outdated`] once the key is removed
/// or the session instance is retired (writes) or freed (everything).
pub struct DurableHandle<T> {
    key: Arc<str>,
    scope: DurableScope,
    ty: PhantomData<fn() -> T>,
}

impl<T> Clone for DurableHandle<T> {
    fn clone(&self) -> Self {
        DurableHandle {
            key: Arc::clone(&self.key),
            scope: self.scope.clone(),
            ty: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for DurableHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DurableHandle<{}>({:?})", type_name::<T>(), self.key)
    }
}

impl<T: DurableValue> DurableHandle<T> {
    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    fn instance(&self) -> &Instance {
        &self.scope.instance
    }

    fn store(&self) -> &Store {
        &self.scope.state.store
    }

    fn error(&self, error: store_core::Error) -> Error {
        self.scope.store_error(&self.key, error)
    }

    /// The value, from the local view (this process's unconfirmed writes
    /// included). A shared snapshot: cloning it is an `Arc` clone.
    pub fn get(&self) -> Result<Arc<T>> {
        self.instance().check_read(&self.key)?;
        self.store()
            .get::<T>(&*self.key)
            .map_err(|e| self.error(e))?
            .ok_or_else(|| outdated(&self.key))
    }

    /// Queues `value` and returns at once (see [`Store::set`]); reads through
    /// this process see it immediately.
    pub fn set(&self, value: T) -> Result<()> {
        self.instance().check_write(&self.key)?;
        let previous =
            self.scope
                .state
                .account(self.instance(), &self.key, Some(encoded_len(&value)))?;
        self.store().set(&*self.key, &value).map_err(|e| {
            self.scope
                .state
                .restore(self.instance(), &self.key, previous);
            self.error(e)
        })
    }

    /// Writes `value` and waits until the backend acknowledged it; returns the
    /// new version.
    pub async fn set_and_wait(&self, value: T) -> Result<Version> {
        self.instance().check_write(&self.key)?;
        let previous =
            self.scope
                .state
                .account(self.instance(), &self.key, Some(encoded_len(&value)))?;
        match self.store().set_and_wait(&*self.key, &value).await {
            Ok(version) => Ok(version),
            Err(e) => {
                self.scope
                    .state
                    .restore(self.instance(), &self.key, previous);
                Err(self.error(e))
            }
        }
    }

    /// Changes the value atomically, across processes: reads the confirmed
    /// value, runs `f` on a copy and writes it back only if the key did not
    /// change meanwhile (compare-and-set), else runs `f` again on the newer value.
    /// `f` may run more than once; what it returned last is returned.
    ///
    /// Fails with [`Error::Outdated`] if the key was removed, and with
    /// [`Error::QuotaExceeded`] (writing nothing) if the new value is too large.
    pub async fn update<R>(&self, mut f: impl FnMut(&mut T) -> R) -> Result<R> {
        self.instance().check_write(&self.key)?;
        let lock = self.scope.state.key_lock(&self.key);
        let _local = lock.lock().await;
        let deadline = Instant::now() + self.store().timeout();
        loop {
            // Subscribe before reading, so a newer value cannot slip by unseen.
            let mut changes = self.store().subscribe().key(&*self.key);
            let (mut next, version) = self.confirmed()?;
            let out = f(&mut next);
            match self.write_at(version, &next).await {
                Ok(_) => return Ok(out),
                Err(Error::Store(store_core::Error::Conflict { .. })) => {
                    if tokio::time::timeout_at(deadline, changes.next())
                        .await
                        .is_err()
                    {
                        return Err(Error::Store(store_core::Error::Timeout {
                            waiting_for: format!("`{}` to update", self.key),
                            timeout: self.store().timeout(),
                        }));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The confirmed value and its version.
    fn confirmed(&self) -> Result<(T, Version)> {
        self.instance().check_write(&self.key)?;
        let current = self
            .store()
            .get_versioned::<T>(&*self.key)
            .map_err(|e| self.error(e))?
            .ok_or_else(|| outdated(&self.key))?;
        Ok(((*current.value).clone(), current.version))
    }

    /// Writes `value` if the key is still at `version`.
    async fn write_at(&self, version: Version, value: &T) -> Result<Version> {
        self.instance().check_write(&self.key)?;
        let state = &self.scope.state;
        let previous = state.account(self.instance(), &self.key, Some(encoded_len(value)))?;
        match self
            .store()
            .compare_and_set(&*self.key, Precondition::Version(version), value)
            .await
        {
            Ok(version) => Ok(version),
            Err(e) => {
                state.restore(self.instance(), &self.key, previous);
                Err(self.error(e))
            }
        }
    }

    /// Locks the key against this process's other updates and guards and hands
    /// out a copy of the confirmed value to change in place; nothing is written
    /// until [`DurableGuard::commit`], which fails with a conflict if another
    /// process changed the key meanwhile. Dropping the guard discards the change.
    pub async fn lock(&self) -> Result<DurableGuard<T>> {
        self.instance().check_write(&self.key)?;
        let local = self.scope.state.key_lock(&self.key).lock_owned().await;
        let (value, version) = self.confirmed()?;
        Ok(DurableGuard {
            handle: self.clone(),
            value,
            version,
            _local: local,
        })
    }

    /// The version the backend gave the value last confirmed in this process.
    pub fn version(&self) -> Result<Version> {
        self.instance().check_read(&self.key)?;
        self.store()
            .get_versioned::<T>(&*self.key)
            .map_err(|e| self.error(e))?
            .map(|v| v.version)
            .ok_or_else(|| outdated(&self.key))
    }

    /// Every later confirmed change to this key (from any process), in order.
    pub fn changes(&self) -> Subscription {
        self.store().subscribe().key(&*self.key)
    }
}

/// A copy of a durable value to change in place; see [`DurableHandle::lock`].
pub struct DurableGuard<T> {
    handle: DurableHandle<T>,
    value: T,
    version: Version,
    _local: OwnedMutexGuard<()>,
}

impl<T> std::fmt::Debug for DurableGuard<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DurableGuard<{}>({:?} at {})",
            type_name::<T>(),
            self.handle.key,
            self.version
        )
    }
}

impl<T> Deref for DurableGuard<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for DurableGuard<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T: DurableValue> DurableGuard<T> {
    /// The version the value had when locked.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Writes the changed value if the key is still at the locked version and
    /// waits for the backend; returns the new version. A change by another
    /// process meanwhile fails with a conflict ([`Error::Store`]) and writes nothing.
    pub async fn commit(self) -> Result<Version> {
        self.handle.write_at(self.version, &self.value).await
    }
}

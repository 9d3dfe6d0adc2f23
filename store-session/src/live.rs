//! The live tier: any `Send + Sync + 'static` value, in memory, mutated in place.
//!
//! Each entry is a typed cell behind a type-erased slot; a handle holds the cell
//! itself, so a read or write touches one mutex and never the scope's map, and
//! updating one entry of a large map held in the store is O(1). A cell removed
//! from its scope is marked retired, and its handles fail with `Outdated`.
//!
//! A change costs nothing beyond the entry's lock; watchers are woken only when there are
//! any, so the common case (nobody watching) takes no further lock.
//!
//! The scope's map is split into shards, each behind a spin lock that yields
//! the thread while it waits. A shard is held only to find, insert or remove
//! entries (never while user code runs: `init` and changes run outside it),
//! and a spin lock releases with a plain store where a parking mutex needs an
//! atomic exchange to look for sleepers. On `use_value` + `update` that
//! exchange was one of six atomic operations, which took nearly all of the
//! call's time; without it the call is about 13% faster.

use std::any::{Any, type_name};
use std::hash::BuildHasher;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use hashbrown::HashTable;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::instance::{Gate, Instance};
use crate::outdated;

type ToJson<T> = fn(&T) -> Value;

/// One shard's entries. The key's hash, computed once per call, picks the
/// shard and finds the entry in it.
type Entries = HashTable<(Arc<str>, Arc<dyn Slot>)>;

/// The value and its version, changed together under the cell's lock (so a
/// change costs no atomic operation beyond the lock's own).
struct Versioned<T> {
    value: T,
    version: u64,
}

/// One live value with its version.
pub(crate) struct LiveCell<T> {
    key: Arc<str>,
    /// The instance's gate, checked on every call.
    gate: Arc<Gate>,
    value: Mutex<Versioned<T>>,
    /// Wakes watchers; sent to only while one exists.
    watchers: watch::Sender<()>,
    retired: AtomicBool,
    to_json: OnceLock<ToJson<T>>,
}

impl<T> LiveCell<T> {
    fn new(key: Arc<str>, gate: Arc<Gate>, value: T, to_json: Option<ToJson<T>>) -> Self {
        let cell = LiveCell {
            key,
            gate,
            value: Mutex::new(Versioned { value, version: 1 }),
            watchers: watch::Sender::new(()),
            retired: AtomicBool::new(false),
            to_json: OnceLock::new(),
        };
        if let Some(f) = to_json {
            let _ = cell.to_json.set(f);
        }
        cell
    }

    fn value(&self) -> MutexGuard<'_, Versioned<T>> {
        self.value.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the value as one change: a new version, watchers woken.
    fn change<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let out = {
            let mut cell = self.value();
            cell.version += 1;
            f(&mut cell.value)
        };
        self.wake();
        out
    }

    /// Runs `f` on a copy of the value and puts the copy in when `f` returns,
    /// as one change; a panic in `f` leaves the cell untouched.
    fn change_copy<R>(&self, f: impl FnOnce(&mut T) -> R) -> R
    where
        T: Clone,
    {
        let out = {
            let mut cell = self.value();
            let mut next = cell.value.clone();
            // Caught here so the lock is released normally, not poisoned.
            let out = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut next)))
            {
                Ok(out) => out,
                Err(panic) => {
                    drop(cell);
                    std::panic::resume_unwind(panic);
                }
            };
            cell.value = next;
            cell.version += 1;
            out
        };
        self.wake();
        out
    }

    fn wake(&self) {
        if self.watchers.receiver_count() > 0 {
            self.watchers.send_replace(());
        }
    }
}

/// What the scope's map holds: a cell whose type is known only at run time.
trait Slot: Send + Sync {
    fn key(&self) -> &str;
    fn gate(&self) -> &Gate;
    fn retire(&self);
    fn is_retired(&self) -> bool;
    fn version(&self) -> u64;
    fn type_name(&self) -> &'static str;
    fn to_json(&self) -> Value;
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<T: Send + Sync + 'static> Slot for LiveCell<T> {
    fn key(&self) -> &str {
        &self.key
    }

    fn gate(&self) -> &Gate {
        &self.gate
    }

    fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        // Wake watchers so they see the entry is gone.
        self.wake();
    }

    fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    fn version(&self) -> u64 {
        self.value().version
    }

    fn type_name(&self) -> &'static str {
        type_name::<T>()
    }

    fn to_json(&self) -> Value {
        match self.to_json.get() {
            Some(f) => f(&self.value().value),
            None => serde_json::json!({ "$type": type_name::<T>() }),
        }
    }

    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// The live entries of one scope.
#[derive(Default)]
pub(crate) struct LiveScope {
    /// Sharded by key, so threads using different keys of one scope rarely
    /// wait for each other.
    shards: [ShardLock; SHARDS],
    hasher: foldhash::fast::FixedState,
}

/// Lock shards per scope.
const SHARDS: usize = 16;

/// A shard's lock (see the module docs for why it spins).
type ShardLock = spin::mutex::SpinMutex<Entries, spin::relax::Yield>;

impl LiveScope {
    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The shard for a key's hash: bits below the top seven, which the table
    /// keeps in its control bytes, and above those that pick its buckets.
    fn shard(&self, hash: u64) -> &ShardLock {
        &self.shards[(hash >> 53) as usize % SHARDS]
    }
}

/// The entry at `key` in a shard.
fn find<'a>(entries: &'a Entries, hash: u64, key: &str) -> Option<&'a Arc<dyn Slot>> {
    entries
        .find(hash, |(k, _)| &**k == key)
        .map(|(_, slot)| slot)
}

fn downcast<T: Send + Sync + 'static>(key: &str, slot: &Arc<dyn Slot>) -> Result<Arc<LiveCell<T>>> {
    Arc::clone(slot)
        .as_any()
        .downcast::<LiveCell<T>>()
        .map_err(|_| Error::TypeMismatch {
            key: key.to_owned(),
            stored: slot.type_name(),
            requested: type_name::<T>(),
        })
}

impl LiveScope {
    pub(crate) fn use_with<T, F>(
        &self,
        instance: &Arc<Instance>,
        key: &str,
        init: F,
        to_json: Option<ToJson<T>>,
    ) -> Result<Handle<T>>
    where
        T: Send + Sync + 'static,
        F: FnOnce() -> T,
    {
        instance.check_read(key)?;
        let hash = self.hash(key);
        let shard = self.shard(hash);
        if let Some(slot) = find(&shard.lock(), hash, key) {
            // Only a valid key was ever inserted.
            return Ok(Handle {
                cell: downcast::<T>(key, slot)?,
            });
        }
        store_core::key::validate(key)?;
        instance.check_write(key)?;
        // Built outside the lock: `init` may use this scope itself.
        let name: Arc<str> = Arc::from(key);
        let cell = LiveCell::new(
            Arc::clone(&name),
            Arc::clone(&instance.gate),
            init(),
            to_json,
        );
        let cell: Arc<LiveCell<T>> = Arc::new(cell);
        let mut entries = shard.lock();
        if let Some(slot) = find(&entries, hash, key) {
            // Someone created it meanwhile; theirs wins, ours is dropped.
            return Ok(Handle {
                cell: downcast::<T>(key, slot)?,
            });
        }
        instance.check_write(key)?;
        instance.reserve_entry(key)?;
        entries.insert_unique(
            hash,
            (name, Arc::clone(&cell) as Arc<dyn Slot>),
            |(k, _)| self.hash(k),
        );
        Ok(Handle { cell })
    }

    pub(crate) fn remove(&self, instance: &Instance, key: &str) -> bool {
        let hash = self.hash(key);
        let removed = match self
            .shard(hash)
            .lock()
            .find_entry(hash, |(k, _)| &**k == key)
        {
            Ok(entry) => Some(entry.remove().0.1),
            Err(_) => None,
        };
        match removed {
            Some(slot) => {
                slot.retire();
                instance.release_entries(1);
                true
            }
            None => false,
        }
    }

    pub(crate) fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .shards
            .iter()
            .flat_map(|shard| {
                shard
                    .lock()
                    .iter()
                    .map(|(k, _)| k.to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        keys.sort();
        keys
    }

    pub(crate) fn clear(&self, instance: &Instance) -> usize {
        let n = self.retire_all();
        instance.release_entries(n);
        n
    }

    /// Retires and drops every entry; returns how many there were.
    pub(crate) fn retire_all(&self) -> usize {
        let drained: Vec<_> = self
            .shards
            .iter()
            .flat_map(|shard| {
                shard
                    .lock()
                    .drain()
                    .map(|(_, slot)| slot)
                    .collect::<Vec<_>>()
            })
            .collect();
        for slot in &drained {
            slot.retire();
        }
        drained.len()
    }

    pub(crate) fn snapshot(&self) -> Value {
        let slots: Vec<(String, Arc<dyn Slot>)> = self
            .shards
            .iter()
            .flat_map(|shard| {
                shard
                    .lock()
                    .iter()
                    .map(|(k, s)| (k.to_string(), Arc::clone(s)))
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut map = Map::new();
        for (key, slot) in slots {
            map.insert(key, slot.to_json());
        }
        Value::Object(map)
    }
}

/// A handle on one live value of a scope.
///
/// Cheap to clone. Every call checks that the entry and its session instance
/// are still there and fails with [`Error::Outdated`] otherwise, so a handle
/// kept past a reset or an end never writes into nothing.
pub struct Handle<T> {
    cell: Arc<LiveCell<T>>,
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        Handle {
            cell: Arc::clone(&self.cell),
        }
    }
}

impl<T> std::fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Handle<{}>({:?})", type_name::<T>(), self.cell.key)
    }
}

impl<T: Send + Sync + 'static> Handle<T> {
    /// The key.
    pub fn key(&self) -> &str {
        &self.cell.key
    }

    fn check_read(&self) -> Result<()> {
        self.cell.gate.check_read(&self.cell.key)?;
        if self.cell.retired.load(Ordering::Acquire) {
            return Err(outdated(&self.cell.key));
        }
        Ok(())
    }

    fn check_write(&self) -> Result<()> {
        self.cell.gate.check_write(&self.cell.key)?;
        if self.cell.retired.load(Ordering::Acquire) {
            return Err(outdated(&self.cell.key));
        }
        Ok(())
    }

    /// A copy of the value.
    pub fn get(&self) -> Result<T>
    where
        T: Clone,
    {
        self.read(T::clone)
    }

    /// Runs `f` on the value without copying it.
    pub fn read<R>(&self, f: impl FnOnce(&T) -> R) -> Result<R> {
        self.check_read()?;
        Ok(f(&self.cell.value().value))
    }

    /// Replaces the value.
    pub fn set(&self, value: T) -> Result<()> {
        self.check_write()?;
        self.cell.change(|current| *current = value);
        Ok(())
    }

    /// Changes the value atomically: no other call on this entry runs between
    /// the read and the write, and `f` works on a copy that replaces the value
    /// only when `f` returns. If `f` panics, the value, its version and its
    /// watchers are left as they were and the panic goes on to the caller.
    /// Returns what `f` returns.
    ///
    /// For a value too large to copy, or not `Clone`, change it in place
    /// through [`lock`](Self::lock).
    pub fn update<R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R>
    where
        T: Clone,
    {
        self.check_write()?;
        Ok(self.cell.change_copy(f))
    }

    /// Locks the value for in-place mutation; the change counts (a new version,
    /// watchers woken) when the guard drops. Keep it short: it blocks every other
    /// call on this entry, and it cannot be held across an `.await`.
    pub fn lock(&self) -> Result<LiveGuard<'_, T>> {
        self.check_write()?;
        Ok(LiveGuard {
            guard: self.cell.value(),
            cell: &self.cell,
        })
    }

    /// The entry's version: 1 when created, one more per change.
    pub fn version(&self) -> Result<u64> {
        self.check_read()?;
        Ok(self.cell.value().version)
    }

    /// A watcher woken by every later change to this entry.
    pub fn changes(&self) -> Changes {
        Changes {
            rx: self.cell.watchers.subscribe(),
            cell: Arc::clone(&self.cell) as Arc<dyn Slot>,
        }
    }

    /// Shows this entry as JSON in [`Session::snapshot`](crate::Session::snapshot)
    /// rather than as its type name.
    pub fn show_in_snapshot(&self)
    where
        T: Serialize,
    {
        let _ = self.cell.to_json.set(json_of::<T>);
    }
}

/// A lock on one live value; see [`Handle::lock`].
pub struct LiveGuard<'a, T> {
    guard: MutexGuard<'a, Versioned<T>>,
    cell: &'a LiveCell<T>,
}

impl<T> std::fmt::Debug for LiveGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LiveGuard<{}>", type_name::<T>())
    }
}

impl<T> Deref for LiveGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard.value
    }
}

impl<T> DerefMut for LiveGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard.value
    }
}

impl<T> Drop for LiveGuard<'_, T> {
    fn drop(&mut self) {
        self.guard.version += 1;
        self.cell.wake();
    }
}

/// Change notifications for one live entry; see [`Handle::changes`].
pub struct Changes {
    rx: watch::Receiver<()>,
    cell: Arc<dyn Slot>,
}

impl std::fmt::Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changes")
            .field("key", &self.cell.key())
            .finish_non_exhaustive()
    }
}

impl Changes {
    /// Waits for the next change and returns the entry's new version. Changes made
    /// while nobody waited are folded into one wake-up. Fails with
    /// [`Error::Outdated`] once the entry is removed or its session freed.
    pub async fn changed(&mut self) -> Result<u64> {
        if self.is_retired() {
            return Err(outdated(self.cell.key()));
        }
        // The sender lives in the cell this watcher holds, so this cannot fail.
        let _ = self.rx.changed().await;
        self.rx.mark_unchanged();
        if self.is_retired() {
            return Err(outdated(self.cell.key()));
        }
        Ok(self.cell.version())
    }

    fn is_retired(&self) -> bool {
        self.cell.gate().is_freed() || self.cell.is_retired()
    }
}

pub(crate) fn json_of<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_else(
        |error| serde_json::json!({ "$type": type_name::<T>(), "$error": error.to_string() }),
    )
}

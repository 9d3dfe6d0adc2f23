//! The state every handle of one store and its two background tasks (sync
//! and flush) share, and where start-up stands. Tasks import this, not the
//! front door (`store.rs`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::sync::{Notify, broadcast, watch};

use crate::backend::{Capabilities, DynBackend, Revision};
use crate::backoff::RetryPolicy;
use crate::metrics::StoreMetrics;
use crate::readiness::Readiness;
use crate::subscribe::ChangeEvent;
use crate::view::View;
use crate::writes::Writes;

/// State shared by every handle and the background tasks.
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) backend: Arc<dyn DynBackend>,
    pub(crate) caps: Capabilities,
    pub(crate) max_value_size: Option<usize>,
    pub(crate) retry: RetryPolicy,
    pub(crate) view: RwLock<View>,
    pub(crate) writes: Mutex<Writes>,
    /// 1 while any overlay entry counts, so reads skip the write lock when none does.
    pub(crate) pending: AtomicUsize,
    pub(crate) wake_flusher: Notify,
    /// The view's revision.
    pub(crate) revision: watch::Sender<Revision>,
    /// Highest write sequence number whose outcome is settled.
    pub(crate) settled: watch::Sender<u64>,
    pub(crate) changes: broadcast::Sender<ChangeEvent>,
    /// Changes held back from subscribers until start-up ends.
    pub(crate) held: Mutex<Held>,
    pub(crate) readiness: watch::Sender<Readiness>,
    pub(crate) is_closed: AtomicBool,
    pub(crate) closed: watch::Sender<bool>,
    /// Set by `close`: queued writes go at once, whatever the pacing.
    pub(crate) draining: watch::Sender<bool>,
    pub(crate) metrics: StoreMetrics,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Writes still queued leave with the store: they count no more.
        let queued = lock(&self.writes).queued();
        self.metrics.unqueued(queued);
        self.metrics.set_ready(false);
    }
}

/// Where changes go while the store starts (see [`Shared::deliver`]).
pub(crate) enum Held {
    /// Before the initial listing is in the view: nothing to hold.
    Listing,
    /// While the on-ready hooks run: held for subscribers made before `ready`.
    Hooks(Vec<ChangeEvent>),
    /// Started: straight to subscribers.
    Open,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Runs `f` on the write queue and keeps the pending counter in step.
    pub(crate) fn with_writes<R>(&self, f: impl FnOnce(&mut Writes) -> R) -> R {
        let mut writes = lock(&self.writes);
        let out = f(&mut writes);
        // Stored only on a change: readers on other cores keep the line cached.
        let pending = usize::from(writes.has_overlay());
        if self.pending.load(Ordering::Relaxed) != pending {
            self.pending.store(pending, Ordering::Release);
        }
        out
    }

    /// Hands `events` to subscribers, or holds them while the store starts.
    pub(crate) fn deliver(&self, events: Vec<ChangeEvent>) {
        if events.is_empty() {
            return;
        }
        let mut held = lock(&self.held);
        match &mut *held {
            // The initial listing is the starting state, not a change.
            Held::Listing => {}
            Held::Hooks(waiting) => waiting.extend(events),
            Held::Open => {
                for event in events {
                    // No receivers is fine: nobody subscribed.
                    let _ = self.changes.send(event);
                }
            }
        }
    }

    /// The initial listing is in the view: changes from now on reach subscribers
    /// once the hooks are done.
    pub(crate) fn synced(&self) {
        let mut held = lock(&self.held);
        if matches!(*held, Held::Listing) {
            *held = Held::Hooks(Vec::new());
        }
    }

    /// Start-up ended with `outcome`: subscribers get the changes held so far,
    /// in order and ahead of any later one, or end when start-up failed.
    pub(crate) fn started(&self, outcome: Readiness) {
        let mut held = lock(&self.held);
        let waiting = match std::mem::replace(&mut *held, Held::Open) {
            Held::Hooks(waiting) => waiting,
            Held::Listing | Held::Open => Vec::new(),
        };
        let ready = matches!(outcome, Readiness::Ready);
        if ready {
            self.metrics.set_ready(true);
            if self.is_closed() {
                self.metrics.set_ready(false);
            }
        }
        self.readiness.send_replace(outcome);
        if ready {
            for event in waiting {
                let _ = self.changes.send(event);
            }
        }
    }

    pub(crate) fn view_revision(&self) -> Revision {
        *self.revision.borrow()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.is_closed.load(Ordering::Acquire)
    }

    pub(crate) fn close(&self) {
        self.is_closed.store(true, Ordering::Release);
        self.metrics.set_ready(false);
        self.closed.send_replace(true);
        self.wake_flusher.notify_one();
    }
}

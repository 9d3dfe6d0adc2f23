//! One life of a session ([`Instance`]) and the gate every call on it checks
//! first ([`Gate`]): whether the instance still takes reads and writes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tokio::sync::OnceCell;

use crate::activity::Activity;
use crate::durable::DurableState;
use crate::error::{Error, QuotaKind, Result};
use crate::layout::ScopeKind;
use crate::live::LiveScope;
use crate::quota::{Usage, release, reserve};
use crate::registry::Config;
use crate::{lock, outdated};

pub(crate) const ACTIVE: u8 = 0;
pub(crate) const RETIRING: u8 = 1;
pub(crate) const FREED: u8 = 2;

/// What every call on an instance checks first: whether the instance still
/// takes reads and writes, and the session's activity. Shared with each live
/// entry, so a handle carries one `Arc` (its entry) and no cycle forms.
pub(crate) struct Gate {
    state: AtomicU8,
    activity: Arc<Activity>,
}

impl Gate {
    pub(crate) fn touch(&self) {
        self.activity.touch();
    }

    /// Reads are allowed on the current and on a retiring instance.
    pub(crate) fn check_read(&self, key: &str) -> Result<()> {
        self.touch();
        match self.state.load(Ordering::Acquire) {
            FREED => Err(outdated(key)),
            _ => Ok(()),
        }
    }

    /// Writes are allowed on the current instance only.
    pub(crate) fn check_write(&self, key: &str) -> Result<()> {
        self.touch();
        match self.state.load(Ordering::Acquire) {
            ACTIVE => Ok(()),
            _ => Err(outdated(key)),
        }
    }

    pub(crate) fn is_freed(&self) -> bool {
        self.state.load(Ordering::Acquire) == FREED
    }
}

/// One life of a session: its scopes, its live entries and its durable stores.
pub(crate) struct Instance {
    pub(crate) session: Arc<str>,
    pub(crate) generation: u64,
    pub(crate) config: Arc<Config>,
    pub(crate) gate: Arc<Gate>,
    entries: AtomicUsize,
    durable_bytes: AtomicUsize,
    live: Mutex<HashMap<ScopeKind, Arc<LiveScope>>>,
    durable: Mutex<HashMap<ScopeKind, Arc<OnceCell<Arc<DurableState>>>>>,
}

impl Instance {
    pub(crate) fn new(
        session: Arc<str>,
        generation: u64,
        config: Arc<Config>,
        activity: Arc<Activity>,
    ) -> Self {
        Instance {
            session,
            generation,
            config,
            gate: Arc::new(Gate {
                state: AtomicU8::new(ACTIVE),
                activity,
            }),
            entries: AtomicUsize::new(0),
            durable_bytes: AtomicUsize::new(0),
            live: Mutex::new(HashMap::new()),
            durable: Mutex::new(HashMap::new()),
        }
    }

    /// Reads are allowed on the current and on a retiring instance.
    pub(crate) fn check_read(&self, key: &str) -> Result<()> {
        self.gate.check_read(key)
    }

    /// Writes are allowed on the current instance only.
    pub(crate) fn check_write(&self, key: &str) -> Result<()> {
        self.gate.check_write(key)
    }

    pub(crate) fn is_freed(&self) -> bool {
        self.gate.is_freed()
    }

    /// Takes one entry out of the session's quota.
    pub(crate) fn reserve_entry(&self, key: &str) -> Result<()> {
        reserve(&self.entries, 1, self.config.limits.max_entries)
            .map_err(|requested| self.quota_error(key, QuotaKind::Entries, requested))
    }

    /// Gives `n` entries back to the quota.
    pub(crate) fn release_entries(&self, n: usize) {
        release(&self.entries, n);
    }

    /// Counts entries and bytes found on the backend, whatever the quota says.
    pub(crate) fn adopt(&self, entries: usize, bytes: usize) {
        self.entries.fetch_add(entries, Ordering::AcqRel);
        self.durable_bytes.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Takes `bytes` more durable bytes out of the quota.
    pub(crate) fn reserve_bytes(&self, key: &str, bytes: usize) -> Result<()> {
        reserve(
            &self.durable_bytes,
            bytes,
            self.config.limits.max_durable_bytes,
        )
        .map_err(|requested| self.quota_error(key, QuotaKind::DurableBytes, requested))
    }

    /// Gives `bytes` durable bytes back.
    pub(crate) fn release_bytes(&self, bytes: usize) {
        release(&self.durable_bytes, bytes);
    }

    pub(crate) fn quota_error(&self, key: &str, kind: QuotaKind, requested: usize) -> Error {
        let limit = match kind {
            QuotaKind::Entries => self.config.limits.max_entries,
            QuotaKind::DurableBytes => self.config.limits.max_durable_bytes,
        };
        Error::QuotaExceeded {
            session: self.session.to_string(),
            key: key.to_owned(),
            kind,
            limit: limit.unwrap_or(usize::MAX),
            requested,
        }
    }

    pub(crate) fn usage(&self) -> Usage {
        Usage {
            entries: self.entries.load(Ordering::Acquire),
            durable_bytes: self.durable_bytes.load(Ordering::Acquire),
        }
    }

    /// The live entries of one scope, created on first use.
    pub(crate) fn live_scope(&self, kind: &ScopeKind) -> Arc<LiveScope> {
        Arc::clone(
            lock(&self.live)
                .entry(kind.clone())
                .or_insert_with(|| Arc::new(LiveScope::default())),
        )
    }

    /// The durable store of one scope, opened on first use.
    pub(crate) async fn durable_scope(
        self: &Arc<Self>,
        kind: &ScopeKind,
    ) -> Result<Arc<DurableState>> {
        self.check_read("")?;
        let cell = Arc::clone(lock(&self.durable).entry(kind.clone()).or_default());
        let state = cell
            .get_or_try_init(|| DurableState::open(self, kind))
            .await?;
        if self.is_freed() {
            // Freed while opening: do not leave a store running for it.
            let _ = state.store.close().await;
            return Err(outdated(""));
        }
        Ok(Arc::clone(state))
    }

    /// Refuses writes from now on; reads go on until the instance is freed.
    pub(crate) fn retire(&self) {
        let _ =
            self.gate
                .state
                .compare_exchange(ACTIVE, RETIRING, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Frees the live tier and closes the durable stores (flushing what they
    /// queued, so nothing lands after the caller removes the keys). Returns how
    /// many live entries were freed. Work is proportional to this instance's keys.
    pub(crate) async fn free(&self) -> usize {
        let live = self.free_live();
        let stores: Vec<_> = lock(&self.durable)
            .drain()
            .filter_map(|(_, cell)| cell.get().cloned())
            .collect();
        for state in stores {
            if let Err(error) = state.store.close().await {
                tracing::warn!(session = %self.session, %error, "closing a durable scope failed");
            }
        }
        live
    }

    pub(crate) fn free_live(&self) -> usize {
        self.gate.state.store(FREED, Ordering::Release);
        let scopes: Vec<_> = lock(&self.live).drain().map(|(_, scope)| scope).collect();
        let freed: usize = scopes.iter().map(|scope| scope.retire_all()).sum();
        self.entries.store(0, Ordering::Release);
        self.durable_bytes.store(0, Ordering::Release);
        freed
    }

    /// The debug snapshot of this instance.
    pub(crate) fn snapshot(&self) -> Value {
        let mut scopes = Map::new();
        let live: Vec<_> = lock(&self.live)
            .iter()
            .map(|(kind, scope)| (kind.clone(), Arc::clone(scope)))
            .collect();
        for (kind, scope) in live {
            let entry = scopes
                .entry(kind.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(map) = entry {
                map.insert("live".into(), scope.snapshot());
            }
        }
        let durable: Vec<_> = lock(&self.durable)
            .iter()
            .filter_map(|(kind, cell)| Some((kind.clone(), Arc::clone(cell.get()?))))
            .collect();
        for (kind, state) in durable {
            let entry = scopes
                .entry(kind.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(map) = entry {
                map.insert("durable".into(), state.snapshot());
            }
        }
        let usage = self.usage();
        serde_json::json!({
            "session": &*self.session,
            "generation": self.generation,
            "entries": usage.entries,
            "durable_bytes": usage.durable_bytes,
            "scopes": scopes,
        })
    }
}

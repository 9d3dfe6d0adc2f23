//! A session and its instances.
//!
//! A session holds one current [`Instance`]; a reset swaps in a fresh one and
//! hands the old one to a [`Teardown`], which can still read it (writes are
//! refused) until it finishes and frees it. Every handle and scope is bound to
//! the instance it came from, so once that instance is retired or freed the
//! handle fails with [`Error::Outdated`] instead of writing into nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak};
use std::time::Duration;

use serde_json::{Map, Value};
use store_core::Revision;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::durable::DurableState;
use crate::error::{Error, QuotaKind, Result};
use crate::layout::{self, ScopeKind};
use crate::live::LiveScope;
use crate::registry::{Config, Registry};
use crate::scope::Scope;

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

const ACTIVE: u8 = 0;
const RETIRING: u8 = 1;
const FREED: u8 = 2;

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
    fn new(
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

    fn quota_error(&self, key: &str, kind: QuotaKind, requested: usize) -> Error {
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
    fn retire(&self) {
        let _ =
            self.gate
                .state
                .compare_exchange(ACTIVE, RETIRING, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Frees the live tier and closes the durable stores (flushing what they
    /// queued, so nothing lands after the caller removes the keys). Returns how
    /// many live entries were freed. Work is proportional to this instance's keys.
    async fn free(&self) -> usize {
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

    fn free_live(&self) -> usize {
        self.gate.state.store(FREED, Ordering::Release);
        let scopes: Vec<_> = lock(&self.live).drain().map(|(_, scope)| scope).collect();
        let freed: usize = scopes.iter().map(|scope| scope.retire_all()).sum();
        self.entries.store(0, Ordering::Release);
        self.durable_bytes.store(0, Ordering::Release);
        freed
    }

    /// The debug snapshot of this instance.
    fn snapshot(&self) -> Value {
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

/// When a session was last seen in use, for idle expiry.
///
/// Kept off the hot path: a call only raises a flag (a plain read once it is
/// up, so threads using one session don't fight over a cache line, and no
/// clock read), and the expiry task turns a raised flag into a time when it
/// looks (see [`seen`](Self::seen)). A use is therefore dated up to one of the
/// task's checks late, never early.
pub(crate) struct Activity {
    used: AtomicBool,
    /// Nanoseconds after the registry's epoch.
    last_seen: AtomicU64,
}

impl Activity {
    fn new(config: &Config) -> Self {
        let activity = Activity {
            used: AtomicBool::new(false),
            last_seen: AtomicU64::new(0),
        };
        activity.seen(config, Instant::now());
        activity
    }

    /// Marks the session as used.
    pub(crate) fn touch(&self) {
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
    }

    /// The last time the session was seen in use, counting a use since the last
    /// look as happening at `now`.
    pub(crate) fn seen(&self, config: &Config, now: Instant) -> Instant {
        if self.used.swap(false, Ordering::AcqRel) {
            let nanos = now.saturating_duration_since(config.epoch).as_nanos();
            self.last_seen
                .store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Release);
        }
        config.epoch + Duration::from_nanos(self.last_seen.load(Ordering::Acquire))
    }
}

pub(crate) fn outdated(key: &str) -> Error {
    Error::Outdated {
        key: key.to_owned(),
    }
}

/// Adds `n` to `counter` unless that passes `limit`; on refusal, what it would have been.
fn reserve(
    counter: &AtomicUsize,
    n: usize,
    limit: Option<usize>,
) -> std::result::Result<(), usize> {
    let Some(limit) = limit else {
        counter.fetch_add(n, Ordering::AcqRel);
        return Ok(());
    };
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
            current.checked_add(n).filter(|next| *next <= limit)
        })
        .map(|_| ())
        .map_err(|current| current.saturating_add(n))
}

fn release(counter: &AtomicUsize, n: usize) {
    let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
        Some(current.saturating_sub(n))
    });
}

/// What a session holds against its quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Entries, live and durable together.
    pub entries: usize,
    /// Bytes of encoded JSON in the durable tier.
    pub durable_bytes: usize,
}

/// What ending a session (or finishing a teardown) freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[must_use]
pub struct Ended {
    /// Live entries dropped.
    pub live_entries: usize,
    /// Durable keys removed from the backend.
    pub durable_keys: usize,
}

/// The registry's record of one session.
pub(crate) struct SessionCore {
    id: Arc<str>,
    config: Arc<Config>,
    registry: Weak<Registry>,
    current: RwLock<Arc<Instance>>,
    ended: AtomicBool,
    activity: Arc<Activity>,
    /// Serialises resets and ends of this session.
    pub(crate) transition: tokio::sync::Mutex<()>,
}

impl SessionCore {
    pub(crate) fn new(
        id: &str,
        generation: u64,
        config: Arc<Config>,
        registry: Weak<Registry>,
    ) -> Arc<Self> {
        let id: Arc<str> = Arc::from(id);
        let activity = Arc::new(Activity::new(&config));
        let instance = Instance::new(
            Arc::clone(&id),
            generation,
            Arc::clone(&config),
            Arc::clone(&activity),
        );
        Arc::new(SessionCore {
            id,
            config,
            registry,
            current: RwLock::new(Arc::new(instance)),
            ended: AtomicBool::new(false),
            activity,
            transition: tokio::sync::Mutex::new(()),
        })
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn touch(&self) {
        self.activity.touch();
    }

    /// The last time the session was seen in use (see [`Activity`]).
    pub(crate) fn last_used(&self, now: Instant) -> Instant {
        self.activity.seen(&self.config, now)
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    fn current(&self) -> Result<Arc<Instance>> {
        if self.is_ended() {
            return Err(Error::SessionEnded {
                session: self.id.to_string(),
            });
        }
        self.touch();
        Ok(Arc::clone(
            &self.current.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }

    /// Another replica ended this session: its generation record was removed at
    /// `revision`. A removal from before this life of the id (whose first
    /// generation is a later revision) is not about it.
    pub(crate) async fn ended_elsewhere(self: &Arc<Self>, revision: Revision) {
        let _transition = self.transition.lock().await;
        let instance = Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner));
        if self.is_ended() || revision.0 <= instance.generation {
            return;
        }
        self.ended.store(true, Ordering::Release);
        let live_entries = instance.free().await;
        // Writes made here before the news arrived may have landed after the
        // other replica's clean-up; no later life uses this generation, so
        // removing them touches nothing else.
        if let Err(error) = remove_generation(&instance).await {
            tracing::warn!(session = %self.id, %error, "removing late writes of an ended session failed");
        }
        if let Some(registry) = self.registry.upgrade() {
            registry.forget(self);
        }
        tracing::debug!(session = %self.id, live_entries, "session ended on another replica");
    }

    /// Another replica reset this session to `generation`: the instance here is
    /// freed (the resetting replica's teardown owns the retired durable keys)
    /// and a fresh one takes its place.
    pub(crate) async fn reset_elsewhere(self: &Arc<Self>, generation: u64) {
        let _transition = self.transition.lock().await;
        let old = Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner));
        if self.is_ended() || generation <= old.generation {
            return;
        }
        let fresh = Arc::new(Instance::new(
            Arc::clone(&self.id),
            generation,
            Arc::clone(&self.config),
            Arc::clone(&self.activity),
        ));
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        old.retire();
        old.free().await;
        tracing::debug!(session = %self.id, generation, "session reset on another replica");
    }

    pub(crate) async fn end(self: &Arc<Self>) -> Result<Ended> {
        let _transition = self.transition.lock().await;
        if self.ended.swap(true, Ordering::AcqRel) {
            return Err(Error::SessionEnded {
                session: self.id.to_string(),
            });
        }
        let instance = Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner));
        let live_entries = instance.free().await;
        let removed = self
            .config
            .remove_prefix(
                &layout::session_prefix(&self.config.root, &self.id),
                Some(layout::meta_key(&self.config.root, &self.id)),
            )
            .await;
        // Only now may the id be opened afresh: a new session must not have its
        // first writes removed by this one's clean-up.
        if let Some(registry) = self.registry.upgrade() {
            registry.forget(self);
        }
        let durable_keys = removed?;
        tracing::debug!(session = %self.id, live_entries, durable_keys, "session ended");
        Ok(Ended {
            live_entries,
            durable_keys,
        })
    }
}

/// A handle on one open session. Cheap to clone; every clone is the same session.
///
/// A session ends only when asked ([`end`](Session::end), [`Sessions::end`](crate::Sessions::end))
/// or when idle for the registry's time to live; dropping every `Session` keeps it
/// open (find it again with [`Sessions::get`](crate::Sessions::get)).
#[derive(Clone)]
pub struct Session {
    core: Arc<SessionCore>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.core.id)
            .field("ended", &self.core.is_ended())
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn from_core(core: Arc<SessionCore>) -> Self {
        Session { core }
    }

    /// The session's id.
    pub fn id(&self) -> &str {
        &self.core.id
    }

    /// Whether the session has ended.
    pub fn is_ended(&self) -> bool {
        self.core.is_ended()
    }

    /// The current instance's generation: one more after each reset. A session
    /// opened afresh starts at the backend's revision then (0 on a new backend),
    /// so no two lives of one id share a generation.
    pub fn generation(&self) -> Result<u64> {
        Ok(self.core.current()?.generation)
    }

    /// What the current instance holds against the quotas.
    pub fn usage(&self) -> Result<Usage> {
        Ok(self.core.current()?.usage())
    }

    /// The scope of the whole session.
    pub fn global(&self) -> Result<Scope> {
        Ok(Scope::new(self.core.current()?, ScopeKind::Global))
    }

    /// The scope of one realm of the session.
    pub fn realm(&self, realm: &str) -> Result<Scope> {
        layout::check_name("realm", realm)?;
        Ok(Scope::new(
            self.core.current()?,
            ScopeKind::Realm(realm.to_owned()),
        ))
    }

    /// The scope of one target environment, in no realm.
    pub fn local(&self, env: &str) -> Result<Scope> {
        layout::check_name("environment", env)?;
        Ok(Scope::new(
            self.core.current()?,
            ScopeKind::Local {
                realm: None,
                env: env.to_owned(),
            },
        ))
    }

    /// The scope of one target environment inside a realm.
    pub fn local_in(&self, realm: &str, env: &str) -> Result<Scope> {
        layout::check_name("realm", realm)?;
        layout::check_name("environment", env)?;
        Ok(Scope::new(
            self.core.current()?,
            ScopeKind::Local {
                realm: Some(realm.to_owned()),
                env: env.to_owned(),
            },
        ))
    }

    /// A scope of any kind.
    pub fn scope(&self, kind: ScopeKind) -> Result<Scope> {
        match &kind {
            ScopeKind::Global => {}
            ScopeKind::Realm(realm) => layout::check_name("realm", realm)?,
            ScopeKind::Local { realm, env } => {
                if let Some(realm) = realm {
                    layout::check_name("realm", realm)?;
                }
                layout::check_name("environment", env)?;
            }
        }
        Ok(Scope::new(self.core.current()?, kind))
    }

    /// Starts a fresh, empty instance of the session and returns the old one as a
    /// [`Teardown`]: it can still be read (every write to it, through old handles
    /// too, fails with [`Error::Outdated`]) until the teardown finishes or is
    /// dropped, which frees it.
    ///
    /// Every other registry sharing the durable backend moves to the fresh
    /// instance too, freeing its own copy of the old one.
    pub async fn reset(&self) -> Result<Teardown> {
        let _transition = self.core.transition.lock().await;
        let old = self.core.current()?;
        let generation = old.generation + 1;
        self.core
            .config
            .store_generation(&self.core.id, generation)
            .await?;
        let fresh = Arc::new(Instance::new(
            Arc::clone(&self.core.id),
            generation,
            Arc::clone(&self.core.config),
            Arc::clone(&self.core.activity),
        ));
        *self
            .core
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = fresh;
        old.retire();
        tracing::debug!(session = %self.core.id, generation, "session reset");
        Ok(Teardown {
            instance: Some(old),
        })
    }

    /// Ends the session: removes it from the registry, frees its live entries,
    /// removes its durable keys from the backend (listing only this session's
    /// prefix), and makes every handle and scope of it fail with
    /// [`Error::Outdated`]. Work is proportional to this session's keys.
    ///
    /// Every other registry sharing the durable backend ends the session too
    /// once its watch delivers the news (see the crate docs on replicas).
    pub async fn end(&self) -> Result<Ended> {
        self.core.end().await
    }

    /// A JSON picture of the session for debugging: each scope's live entries
    /// (values made serializable through [`Handle::show_in_snapshot`](crate::Handle::show_in_snapshot)
    /// or [`Scope::use_typed`] appear as JSON, others as `{"$type": "<type name>"}`)
    /// and the durable entries of the scopes this process opened.
    pub fn snapshot(&self) -> Result<Value> {
        Ok(self.core.current()?.snapshot())
    }
}

/// The retired instance of a session after [`Session::reset`].
///
/// Its scopes can be read (writes fail with [`Error::Outdated`]); it is freed by
/// [`finish`](Teardown::finish), or on drop (the durable keys are then removed in
/// a background task).
pub struct Teardown {
    instance: Option<Arc<Instance>>,
}

impl std::fmt::Debug for Teardown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Teardown");
        if let Some(instance) = &self.instance {
            d.field("session", &instance.session)
                .field("generation", &instance.generation);
        }
        d.finish_non_exhaustive()
    }
}

impl Teardown {
    fn instance(&self) -> Result<Arc<Instance>> {
        self.instance.clone().ok_or_else(|| outdated(""))
    }

    /// The retired instance's generation.
    pub fn generation(&self) -> u64 {
        self.instance.as_ref().map_or(0, |i| i.generation)
    }

    /// The retired instance's global scope.
    pub fn global(&self) -> Result<Scope> {
        Ok(Scope::new(self.instance()?, ScopeKind::Global))
    }

    /// The retired instance's scope of a realm.
    pub fn realm(&self, realm: &str) -> Result<Scope> {
        layout::check_name("realm", realm)?;
        Ok(Scope::new(
            self.instance()?,
            ScopeKind::Realm(realm.to_owned()),
        ))
    }

    /// The retired instance's scope of a target environment in no realm.
    pub fn local(&self, env: &str) -> Result<Scope> {
        layout::check_name("environment", env)?;
        Ok(Scope::new(
            self.instance()?,
            ScopeKind::Local {
                realm: None,
                env: env.to_owned(),
            },
        ))
    }

    /// The retired instance's scope of a target environment in a realm.
    pub fn local_in(&self, realm: &str, env: &str) -> Result<Scope> {
        layout::check_name("realm", realm)?;
        layout::check_name("environment", env)?;
        Ok(Scope::new(
            self.instance()?,
            ScopeKind::Local {
                realm: Some(realm.to_owned()),
                env: env.to_owned(),
            },
        ))
    }

    /// A JSON picture of the retired instance (see [`Session::snapshot`]).
    pub fn snapshot(&self) -> Result<Value> {
        Ok(self.instance()?.snapshot())
    }

    /// Frees the retired instance: live entries and durable keys (listing only
    /// its generation's prefix).
    pub async fn finish(mut self) -> Result<Ended> {
        let Some(instance) = self.instance.take() else {
            return Ok(Ended::default());
        };
        let live_entries = instance.free().await;
        let durable_keys = remove_generation(&instance).await?;
        Ok(Ended {
            live_entries,
            durable_keys,
        })
    }
}

async fn remove_generation(instance: &Instance) -> Result<usize> {
    let config = &instance.config;
    config
        .remove_prefix(
            &layout::generation_prefix(&config.root, &instance.session, instance.generation),
            None,
        )
        .await
}

impl Drop for Teardown {
    fn drop(&mut self) {
        let Some(instance) = self.instance.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    instance.free().await;
                    if let Err(error) = remove_generation(&instance).await {
                        tracing::warn!(session = %instance.session, %error, "removing a retired instance failed");
                    }
                });
            }
            Err(_) => {
                instance.free_live();
            }
        }
    }
}

//! The registry: which sessions are open, and the inner backend the durable
//! tier of all of them sits on.
//!
//! The registry index maps a session id to its state and nothing else, so
//! opening, finding and ending a session is one map operation plus work on
//! that session's own keys; no call walks other sessions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use store_core::backend::{Applied, Batch, Change, Entry, Listing, Op, Outcome};
use store_core::{
    Backend, BoxBackend, Capabilities, MemoryBackend, Payload, Precondition, Revision,
    StoreBuilder, Version,
};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::fanout::{Listener, SharedWatch};
use crate::layout::{self, MetaKey};
use crate::scoped::ScopedBackend;
use crate::session::{Ended, Session, SessionCore};

/// The inner backend, type-erased so sessions and handles are not generic
/// over it, and the one watch every durable scope of the registry shares.
pub(crate) struct DurableBackend {
    backend: Arc<BoxBackend>,
    watch: tokio::sync::OnceCell<SharedWatch<BoxBackend>>,
}

impl DurableBackend {
    fn new(backend: BoxBackend) -> Self {
        DurableBackend {
            backend: Arc::new(backend),
            watch: tokio::sync::OnceCell::new(),
        }
    }

    pub(crate) fn capabilities(&self) -> Capabilities {
        self.backend.capabilities()
    }

    pub(crate) async fn read(&self, key: &str) -> store_core::Result<Option<Entry>> {
        self.backend.read(key).await
    }

    pub(crate) async fn list(&self, prefix: &str) -> store_core::Result<Listing> {
        self.backend.list(prefix).await
    }

    pub(crate) async fn apply(&self, batch: Batch) -> store_core::Result<Applied> {
        self.backend.apply(batch).await
    }

    /// Starts the one watch every durable scope of the registry shares,
    /// telling `listener` of changes under `listen` (once; later calls wait for
    /// the first).
    pub(crate) async fn start(
        &self,
        root: &str,
        listen: String,
        listener: impl FnOnce() -> Arc<dyn Listener>,
    ) -> store_core::Result<()> {
        self.watch
            .get_or_try_init(|| async {
                let watch = SharedWatch::start(Arc::clone(&self.backend), root).await?;
                watch.listen(listen, listener());
                Ok::<_, store_core::Error>(watch)
            })
            .await?;
        Ok(())
    }

    /// A store builder on the scoped view of `prefix`.
    pub(crate) fn scoped(&self, prefix: String) -> StoreBuilder {
        let backend = match self.watch.get() {
            Some(watch) => watch.scoped(prefix.clone()),
            None => ScopedBackend::new(Arc::clone(&self.backend), prefix.clone()),
        };
        StoreBuilder::default()
            .backend(backend)
            .name(prefix)
            .linked_hooks(false)
    }
}

/// Per-session limits; `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) max_entries: Option<usize>,
    pub(crate) max_durable_bytes: Option<usize>,
}

/// Settings every session of a registry shares.
pub(crate) struct Config {
    pub(crate) inner: Arc<DurableBackend>,
    pub(crate) root: String,
    pub(crate) limits: Limits,
    pub(crate) idle_ttl: Option<Duration>,
    pub(crate) timeout: Duration,
    /// What idle times are measured from.
    pub(crate) epoch: Instant,
}

/// What a session's generation record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record {
    /// There is none: the session was ended, at or before this revision.
    Ended(Revision),
    /// It holds this generation, written at this revision.
    Generation(u64, Revision),
}

pub(crate) struct Registry {
    pub(crate) config: Arc<Config>,
    index: Mutex<Index>,
    /// Set once the shared watch starts (see [`Follower`]).
    follower: OnceLock<Follower>,
}

#[derive(Default)]
struct Index {
    /// The open sessions.
    sessions: HashMap<String, Arc<SessionCore>>,
    /// Sessions being opened (see [`Opening`]).
    opening: HashMap<String, Opening>,
}

/// What the watch said of a session's record while the session was being
/// opened: between reading the record and indexing the session there is no
/// session to tell, so the news is kept here and handed over, in order, once
/// there is.
#[derive(Default)]
struct Opening {
    /// Opens of the id under way in this registry.
    openers: usize,
    /// Records the watch handed over meanwhile, oldest first.
    records: Vec<Record>,
    /// The watch had a gap meanwhile: the record must be read again.
    gap: bool,
}

/// Follows the generation records every replica writes, so a session ended or
/// reset on another replica sharing the backend ends or resets here too.
///
/// The watch hands records over in revision order; one task acts on them in
/// that order, so an end followed by a new life of the id is never taken for a
/// reset.
#[derive(Clone)]
struct Follower {
    registry: Weak<Registry>,
    tx: tokio::sync::mpsc::UnboundedSender<(Arc<SessionCore>, Record)>,
}

impl Follower {
    fn start(registry: Weak<Registry>) -> Arc<dyn Listener> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let follower = Follower { registry, tx };
        if let Some(registry) = follower.registry.upgrade() {
            let _ = registry.follower.set(follower.clone());
        }
        tokio::spawn(async move {
            while let Some((core, record)) = rx.recv().await {
                let core: Arc<SessionCore> = core;
                core.follow(record).await;
            }
        });
        Arc::new(follower)
    }

    /// What a change to session `id`'s generation record says.
    fn record(id: &str, change: &Change, revision: Revision) -> Option<Record> {
        match change.value() {
            None => Some(Record::Ended(revision)),
            Some(value) => match store_core::decode::<u64>(change.key(), value) {
                Ok(generation) => Some(Record::Generation(generation, revision)),
                Err(error) => {
                    tracing::warn!(session = id, %error, "unreadable generation record");
                    None
                }
            },
        }
    }

    fn send(&self, core: Arc<SessionCore>, record: Record) {
        // Fails only once the registry is gone, when nothing is left to follow.
        let _ = self.tx.send((core, record));
    }

    /// Reads the records of `cores` again, in a task of its own, and acts on
    /// them after whatever the watch handed over before.
    fn reread(&self, config: &Arc<Config>, cores: Vec<Arc<SessionCore>>) {
        let config = Arc::clone(config);
        let follower = self.clone();
        tokio::spawn(async move {
            for core in cores {
                match config.record(core.id()).await {
                    Ok(record) => follower.send(core, record),
                    Err(error) => {
                        tracing::warn!(session = core.id(), %error, "re-reading a generation record failed");
                    }
                }
            }
        });
    }
}

impl Listener for Follower {
    fn changes(&self, revision: Revision, changes: &[Change]) {
        let Some(registry) = self.registry.upgrade() else {
            return;
        };
        let prefix = layout::meta_prefix(&registry.config.root);
        let mut index = registry.index();
        for change in changes {
            let Some(tail) = change.key().strip_prefix(&prefix) else {
                continue;
            };
            let id = match layout::meta_key_of(tail) {
                Some(MetaKey::Record(id)) => id,
                Some(MetaKey::Used(id)) => {
                    // Another replica (or this one) used the session lately.
                    if let Change::Put(mark) = change
                        && let Some(core) = index.sessions.get(&*id)
                    {
                        core.heard_use(mark.version());
                    }
                    continue;
                }
                None => continue,
            };
            // Records of sessions neither open nor being opened here are not read.
            if let Some(core) = index.sessions.get(&*id) {
                if let Some(record) = Self::record(&id, change, revision) {
                    self.send(Arc::clone(core), record);
                }
            } else if let Some(opening) = index.opening.get_mut(&*id)
                && let Some(record) = Self::record(&id, change, revision)
            {
                opening.records.push(record);
            }
        }
    }

    /// Changes may have been missed: read every open session's record again,
    /// and those of sessions being opened once they are.
    fn gap(&self) {
        let Some(registry) = self.registry.upgrade() else {
            return;
        };
        let cores: Vec<_> = {
            let mut index = registry.index();
            for opening in index.opening.values_mut() {
                opening.gap = true;
            }
            index.sessions.values().cloned().collect()
        };
        self.reread(&registry.config, cores);
    }
}

impl Registry {
    fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops `core` from the index if it is still the entry for its id.
    pub(crate) fn forget(&self, core: &Arc<SessionCore>) {
        let sessions = &mut self.index().sessions;
        if sessions
            .get(core.id())
            .is_some_and(|found| Arc::ptr_eq(found, core))
        {
            sessions.remove(core.id());
        }
    }
}

impl Config {
    /// The session's current generation, recorded on the backend so a restarted
    /// process (or another replica) finds the same durable data.
    ///
    /// A session opened afresh takes the backend's current revision as its
    /// first generation: revisions only grow, and every generation a former
    /// life of the id used was recorded at an earlier revision, so a late write
    /// into a former life's keys is never seen by this one.
    async fn load_generation(&self, session: &str) -> Result<u64> {
        let key = layout::meta_key(&self.root, session);
        loop {
            if let Some(entry) = self.inner.read(&key).await? {
                return store_core::decode::<u64>(&key, entry.value()).map_err(Error::from);
            }
            // A listing says which revision the backend is at.
            let generation = match self.record(session).await? {
                Record::Generation(generation, _) => return Ok(generation),
                Record::Ended(revision) => revision.0,
            };
            if self
                .put_record(&key, generation, Precondition::Absent)
                .await?
            {
                return Ok(generation);
            }
            // Another process created it first: read theirs.
        }
    }

    /// Writes `generation` to the record at `key` if `when` holds (on a
    /// backend with compare-and-set; a plain put otherwise): `false` when it
    /// did not.
    async fn put_record(&self, key: &str, generation: u64, when: Precondition) -> Result<bool> {
        let mut op = Op::put(key, Payload::from(generation.to_string()));
        if self.inner.capabilities().compare_and_set {
            op = op.when(when);
        }
        match self.apply_one(op).await? {
            Some(Outcome::Conflict { .. } | Outcome::Aborted) => Ok(false),
            Some(Outcome::Failed(error)) => Err(error.into()),
            Some(Outcome::Applied(_)) | None => Ok(true),
        }
    }

    /// Writes the session's use mark ([`layout::use_key`]): its current
    /// `generation` and the writer's clock, so that every write changes the
    /// mark (a backend keeps a write of the same value as no change) and
    /// every replica hears it. The mark's new version, if written.
    pub(crate) async fn mark_use(&self, session: &str, generation: u64) -> Result<Option<Version>> {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        let op = Op::put(
            layout::use_key(&self.root, session),
            Payload::from(format!("[{generation},{clock}]")),
        );
        match self.apply_one(op).await? {
            Some(Outcome::Applied(version)) => Ok(Some(version)),
            Some(Outcome::Failed(error)) => Err(error.into()),
            Some(Outcome::Conflict { .. } | Outcome::Aborted) | None => Ok(None),
        }
    }

    /// Removes the session's use mark if it is still the one written at
    /// `version` (a later one is another replica's, or a new life's). On a
    /// backend without compare-and-set it is left: a stray mark only counts
    /// as a use while the session is open.
    pub(crate) async fn unmark_use(&self, session: &str, version: Version) -> Result<()> {
        if !self.inner.capabilities().compare_and_set {
            return Ok(());
        }
        let op =
            Op::delete(layout::use_key(&self.root, session)).when(Precondition::Version(version));
        self.apply_one(op).await?;
        Ok(())
    }

    /// Applies one write; its outcome.
    async fn apply_one(&self, op: Op) -> Result<Option<Outcome>> {
        let applied = self
            .inner
            .apply(Batch {
                ops: vec![op],
                atomic: false,
            })
            .await?;
        Ok(applied.outcomes.into_iter().next())
    }

    /// Reads the session's generation record (through a listing, which says
    /// which revision the backend is at when there is none).
    pub(crate) async fn record(&self, session: &str) -> Result<Record> {
        let key = layout::meta_key(&self.root, session);
        let listing = self.inner.list(&key).await?;
        Ok(match listing.entries.iter().find(|e| e.key() == key) {
            None => Record::Ended(listing.revision),
            Some(entry) => Record::Generation(
                store_core::decode::<u64>(&key, entry.value())?,
                // A record's own version says when it was written.
                Revision(entry.version().0),
            ),
        })
    }

    /// Records the generation after `from` as the session's current one,
    /// unless the record says the session has moved past `from` without this
    /// replica (reset or ended on another one): then nothing is written and
    /// that record is returned.
    ///
    /// The write is conditional on the record's version as read, so a replica
    /// that has not yet heard of a reset, or of an end and a new life of the
    /// id, never takes the record back to a generation of its own. (A record
    /// older than `from` can only have been written that way; it is
    /// overwritten.) On a backend without compare-and-set the write is a plain
    /// put, and a reset racing another replica's reset or end can still do so.
    pub(crate) async fn advance_generation(
        &self,
        session: &str,
        from: u64,
    ) -> Result<Option<Record>> {
        let key = layout::meta_key(&self.root, session);
        loop {
            let written = match self.record(session).await? {
                Record::Generation(generation, written) if generation <= from => written,
                moved => return Ok(Some(moved)),
            };
            let when = Precondition::Version(Version(written.0));
            if self.put_record(&key, from + 1, when).await? {
                return Ok(None);
            }
            // Written by another replica since it was read: read it again.
        }
    }

    /// Removes every key under `prefix` (and the `extra` keys); lists only that
    /// prefix. Returns how many keys under `prefix` were removed.
    pub(crate) async fn remove_prefix(&self, prefix: &str, extra: Vec<String>) -> Result<usize> {
        self.remove_prefix_since(prefix, extra, None).await
    }

    /// Like [`remove_prefix`](Self::remove_prefix), removing only keys
    /// written after `since` when given.
    pub(crate) async fn remove_prefix_since(
        &self,
        prefix: &str,
        extra: Vec<String>,
        since: Option<Revision>,
    ) -> Result<usize> {
        let mut listing = self.inner.list(prefix).await?;
        if let Some(since) = since {
            listing.entries.retain(|entry| entry.version().0 > since.0);
        }
        let count = listing.entries.len();
        let mut ops: Vec<Op> = listing
            .entries
            .into_iter()
            .map(|entry| Op::delete(entry.key()))
            .collect();
        ops.extend(extra.into_iter().map(Op::delete));
        self.apply_all(ops).await?;
        Ok(count)
    }

    /// Removes the session's generation record if it is still the one
    /// written at `written` (on a backend with compare-and-set; a plain delete
    /// otherwise): `false` when another replica wrote or removed it since.
    pub(crate) async fn remove_record(&self, session: &str, written: Revision) -> Result<bool> {
        let mut op = Op::delete(layout::meta_key(&self.root, session));
        if self.inner.capabilities().compare_and_set {
            op = op.when(Precondition::Version(Version(written.0)));
        }
        match self.apply_one(op).await? {
            Some(Outcome::Conflict { .. } | Outcome::Aborted) => Ok(false),
            Some(Outcome::Failed(error)) => Err(error.into()),
            Some(Outcome::Applied(_)) | None => Ok(true),
        }
    }

    /// Removes what one life of a session, ended at `generation`, holds: its
    /// keys of that generation and older ones (retired instances), and its use
    /// mark. A newer life of the id, opened by another replica once the record
    /// was removed, keeps its keys. Returns how many durable keys were removed.
    pub(crate) async fn remove_life(&self, session: &str, generation: u64) -> Result<usize> {
        let prefix = layout::session_prefix(&self.root, session);
        let listing = self.inner.list(&prefix).await?;
        let mut ops: Vec<Op> = listing
            .entries
            .iter()
            .map(Entry::key)
            .filter(|key| {
                // `<generation>/…` after the prefix; anything else is ours to clear.
                key[prefix.len()..]
                    .split_once('/')
                    .and_then(|(of, _)| of.parse::<u64>().ok())
                    .is_none_or(|of| of <= generation)
            })
            .map(Op::delete)
            .collect();
        let count = ops.len();
        ops.push(Op::delete(layout::use_key(&self.root, session)));
        self.apply_all(ops).await?;
        Ok(count)
    }

    /// Applies `ops`, as many to a batch as the backend takes.
    async fn apply_all(&self, mut ops: Vec<Op>) -> Result<()> {
        let chunk = self
            .inner
            .capabilities()
            .max_batch_ops
            .unwrap_or(1000)
            .max(1);
        while !ops.is_empty() {
            let rest = ops.split_off(ops.len().min(chunk));
            self.inner.apply(Batch { ops, atomic: false }).await?;
            ops = rest;
        }
        Ok(())
    }
}

/// A registry of sessions, with their durable tier on one backend.
///
/// Cheap to clone; every clone is the same registry. Sessions end explicitly
/// ([`Session::end`], [`Sessions::end`]) or after the idle time to live; dropping
/// handles never ends a session, so a session's durable data survives a crash or
/// a restart of the process and is found again by [`open`](Sessions::open).
#[derive(Clone)]
pub struct Sessions {
    registry: Arc<Registry>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("open", &self.len())
            .field("root", &self.registry.config.root)
            .finish_non_exhaustive()
    }
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new()
    }
}

impl Sessions {
    /// A registry whose durable tier is a fresh in-memory backend, with no limits
    /// and no idle expiry.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder for a registry.
    pub fn builder() -> SessionsBuilder {
        SessionsBuilder::default()
    }

    /// The session `id`, opened if it is not open yet.
    ///
    /// Opening reads the session's generation from the backend, so a session
    /// whose process restarted finds its durable data again.
    pub async fn open(&self, id: &str) -> Result<Session> {
        layout::check_name("session", id)?;
        let config = &self.registry.config;
        config
            .inner
            .start(
                &config.root,
                layout::meta_prefix(&config.root),
                Box::new(|| Follower::start(Arc::downgrade(&self.registry))),
            )
            .await?;
        loop {
            let found = self.registry.index().sessions.get(id).cloned();
            match found {
                Some(core) if core.is_ended() => {
                    // Ending right now: wait for its clean-up, then open afresh.
                    drop(core.transition.lock().await);
                    self.registry.forget(&core);
                }
                Some(core) => {
                    core.touch();
                    return Ok(Session::from_core(core));
                }
                None => break,
            }
        }
        let opening = OpeningGuard::new(&self.registry, id);
        let generation = self.registry.config.load_generation(id).await?;
        let core = {
            let mut index = self.registry.index();
            if let Some(core) = index.sessions.get(id) {
                // Another task opened it meanwhile.
                return Ok(Session::from_core(Arc::clone(core)));
            }
            let core = SessionCore::new(
                id,
                generation,
                Arc::clone(&self.registry.config),
                Arc::downgrade(&self.registry),
            );
            index.sessions.insert(id.to_owned(), Arc::clone(&core));
            // Under the index's lock, so they go before anything the watch
            // hands over next.
            let missed = index
                .opening
                .get_mut(id)
                .map(|o| (std::mem::take(&mut o.records), std::mem::take(&mut o.gap)));
            if let (Some((records, gap)), Some(follower)) = (missed, self.registry.follower.get()) {
                for record in records {
                    follower.send(Arc::clone(&core), record);
                }
                if gap {
                    follower.reread(&self.registry.config, vec![Arc::clone(&core)]);
                }
            }
            core
        };
        drop(opening);
        if let Some(ttl) = self.registry.config.idle_ttl {
            tokio::spawn(expire_when_idle(
                Arc::downgrade(&core),
                Arc::clone(&self.registry.config),
                id.to_owned(),
                ttl,
            ));
        }
        tracing::debug!(session = id, generation, "session opened");
        Ok(Session::from_core(core))
    }

    /// The open session `id`, or [`Error::NotFound`].
    pub fn get(&self, id: &str) -> Result<Session> {
        self.registry
            .index()
            .sessions
            .get(id)
            .filter(|core| !core.is_ended())
            .map(|core| {
                core.touch();
                Session::from_core(Arc::clone(core))
            })
            .ok_or_else(|| Error::NotFound {
                session: id.to_owned(),
            })
    }

    /// Ends session `id` (see [`Session::end`]). A session not open in this
    /// process still has its durable data removed, so a server can clean up after
    /// a restart.
    pub async fn end(&self, id: &str) -> Result<Ended> {
        layout::check_name("session", id)?;
        let found = self.registry.index().sessions.get(id).cloned();
        match found {
            Some(core) => core.end().await,
            None => {
                let config = &self.registry.config;
                let durable_keys = config
                    .remove_prefix(
                        &layout::session_prefix(&config.root, id),
                        layout::session_records(&config.root, id),
                    )
                    .await?;
                Ok(Ended {
                    live_entries: 0,
                    durable_keys,
                })
            }
        }
    }

    /// Whether session `id` is open.
    pub fn contains(&self, id: &str) -> bool {
        self.registry.index().sessions.contains_key(id)
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        self.registry.index().sessions.len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Marks a session as being opened (see [`Opening`]) until dropped.
struct OpeningGuard<'a> {
    registry: &'a Registry,
    id: &'a str,
}

impl<'a> OpeningGuard<'a> {
    fn new(registry: &'a Registry, id: &'a str) -> Self {
        let mut index = registry.index();
        index.opening.entry(id.to_owned()).or_default().openers += 1;
        OpeningGuard { registry, id }
    }
}

impl Drop for OpeningGuard<'_> {
    fn drop(&mut self) {
        let mut index = self.registry.index();
        if let Some(opening) = index.opening.get_mut(self.id) {
            opening.openers -= 1;
            if opening.openers == 0 {
                index.opening.remove(self.id);
            }
        }
    }
}

/// Ends the session once it has been idle for `ttl` on every replica.
///
/// Looks every sixteenth of `ttl` (at least every 10 ms): uses are dated at the
/// look that first sees them (see [`Activity`](crate::activity::Activity)), so
/// on one replica a session ends between `ttl` and `ttl` plus two looks after
/// its last use. A use here is told to the other replicas through the
/// session's use mark, written at most once a quarter of `ttl`; a replica
/// that hears of it counts it as a use at the time it hears. So a session in
/// use on any replica stays open on all, and ends at most a quarter of `ttl`
/// (plus the looks and the watch's delay) later than on one replica alone.
async fn expire_when_idle(weak: Weak<SessionCore>, config: Arc<Config>, id: String, ttl: Duration) {
    let look = (ttl / 16).max(Duration::from_millis(10));
    let tell_every = ttl / 4;
    // When this replica last wrote the use mark, and the mark's version then.
    let mut told: Option<(Instant, Version)> = None;
    let mut untold = false;
    loop {
        tokio::time::sleep(look).await;
        let core = weak.upgrade().filter(|core| !core.is_ended());
        let Some(core) = core else {
            // Ended (here, where the mark went with the session's keys, or
            // elsewhere, which may have raced a mark written here): take back
            // a mark of this replica's that is still there.
            if let Some((_, version)) = told
                && let Err(error) = config.unmark_use(&id, version).await
            {
                tracing::debug!(session = %id, %error, "removing a use mark failed");
            }
            return;
        };
        let now = Instant::now();
        let (last_used, used_here) = core.last_used(now);
        untold |= used_here;
        if last_used + ttl <= now {
            tracing::info!(
                session = core.id(),
                ?ttl,
                "session expired after being idle"
            );
            match core.end().await {
                // Ended meanwhile, here or on another replica.
                Ok(_) | Err(Error::SessionEnded { .. }) => {}
                Err(error) => {
                    tracing::warn!(session = core.id(), %error, "ending an idle session failed");
                }
            }
            return;
        }
        if untold && told.is_none_or(|(at, _)| at + tell_every <= now) {
            match core.tell_use().await {
                Ok(Some(version)) => {
                    told = Some((now, version));
                    untold = false;
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(session = core.id(), %error, "writing a use mark failed; trying again");
                }
            }
        }
    }
}

/// Configures a [`Sessions`] registry.
#[must_use = "a builder does nothing until `build` is called"]
pub struct SessionsBuilder {
    inner: Option<Arc<DurableBackend>>,
    root: String,
    limits: Limits,
    idle_ttl: Option<Duration>,
    timeout: Duration,
}

impl std::fmt::Debug for SessionsBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionsBuilder")
            .field("root", &self.root)
            .field("limits", &self.limits)
            .field("idle_ttl", &self.idle_ttl)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Default for SessionsBuilder {
    fn default() -> Self {
        SessionsBuilder {
            inner: None,
            root: String::new(),
            limits: Limits::default(),
            idle_ttl: None,
            timeout: store_core::DEFAULT_TIMEOUT,
        }
    }
}

impl SessionsBuilder {
    /// Keeps the durable tier on `backend` (default: a fresh [`MemoryBackend`]).
    pub fn backend<B: Backend>(self, backend: B) -> Self {
        self.shared_backend(Arc::new(backend))
    }

    /// Like [`backend`](Self::backend), for a backend the caller keeps using too.
    pub fn shared_backend<B: Backend>(mut self, backend: Arc<B>) -> Self {
        self.inner = Some(Arc::new(DurableBackend::new(BoxBackend::new(backend))));
        self
    }

    /// Puts every key this registry writes under `root` on the backend (default:
    /// none), so several registries can share one backend. Give each a root that
    /// is not a prefix of another's, such as `"sessions/a/"` and `"sessions/b/"`.
    pub fn root(mut self, root: impl Into<String>) -> Self {
        self.root = root.into();
        self
    }

    /// At most `entries` entries per session, live and durable together.
    pub fn max_entries(mut self, entries: usize) -> Self {
        self.limits.max_entries = Some(entries);
        self
    }

    /// At most `bytes` bytes of encoded JSON per session in the durable tier.
    pub fn max_durable_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_durable_bytes = Some(bytes);
        self
    }

    /// Ends a session once nothing used it for `ttl` (measured with Tokio's clock,
    /// so `tokio::time::pause` drives it in tests). Use is noticed at checks a
    /// sixteenth of `ttl` apart (at least 10 ms), so no call reads the clock: the
    /// session ends between `ttl` and `ttl` plus two such steps after its last use.
    ///
    /// Uses on other replicas count too: a replica using a session writes the
    /// session's use mark ([`layout::use_key`](crate::layout::use_key)) at most
    /// once a quarter of `ttl`, and every replica that hears of it counts it as
    /// a use. With replicas, a session therefore ends up to a quarter of `ttl`
    /// (and the watch's delay) later than its last use; give every replica the
    /// same `ttl`. The cost is one small write per quarter of `ttl` for each
    /// session in use, by each replica using it.
    pub fn idle_ttl(mut self, ttl: Duration) -> Self {
        self.idle_ttl = Some(ttl);
        self
    }

    /// Bounds every wait of the durable tier (default [`store_core::DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The registry.
    pub fn build(self) -> Sessions {
        let inner = self.inner.unwrap_or_else(|| {
            Arc::new(DurableBackend::new(BoxBackend::new(MemoryBackend::new())))
        });
        Sessions {
            registry: Arc::new(Registry {
                config: Arc::new(Config {
                    inner,
                    root: self.root,
                    limits: self.limits,
                    idle_ttl: self.idle_ttl,
                    timeout: self.timeout,
                    epoch: Instant::now(),
                }),
                index: Mutex::new(Index::default()),
                follower: OnceLock::new(),
            }),
        }
    }
}

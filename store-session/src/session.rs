//! A session and its instances.
//!
//! A session holds one current [`Instance`]; a reset swaps in a fresh one and
//! hands the old one to a [`Teardown`], which can still read it (writes are
//! refused) until it finishes and frees it. Every handle and scope is bound to
//! the instance it came from, so once that instance is retired or freed the
//! handle fails with [`Error::Outdated`] instead of writing into nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};

use serde_json::Value;
use store_core::{Revision, Version};
use tokio::time::Instant;

use crate::activity::Activity;
use crate::error::{Error, Result};
use crate::instance::Instance;
use crate::layout::{self, ScopeKind};
use crate::outdated;
use crate::quota::Usage;
use crate::registry::{Config, Record, Registry};
use crate::scope::Scope;

/// What ending a session (or finishing a teardown) freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[must_use]
pub struct Ended {
    /// Live entries dropped.
    pub live_entries: usize,
    /// Durable keys removed from the backend by this call. (Once a session's
    /// record is gone, other replicas remove the keys they wrote to it late,
    /// and may remove some before this call gets to them.)
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
    /// The revision of the newest generation record acted on (see [`follow`](Self::follow)).
    followed: tokio::sync::watch::Sender<Revision>,
    /// The version of the use mark this replica wrote last (0: none), so its
    /// own marks, when the watch brings them back, are not taken for uses elsewhere.
    told: AtomicU64,
}

impl SessionCore {
    pub(crate) fn new(
        id: &str,
        generation: u64,
        config: Arc<Config>,
        registry: Weak<Registry>,
    ) -> Arc<Self> {
        let id: Arc<str> = Arc::from(id);
        let activity = Arc::new(Activity::new(config.epoch));
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
            followed: tokio::sync::watch::Sender::new(Revision(0)),
            told: AtomicU64::new(0),
        })
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn touch(&self) {
        self.activity.touch();
    }

    /// The last time the session was seen in use, here or (as heard)
    /// elsewhere, and whether it was used here since the last look (see
    /// [`Activity`]).
    pub(crate) fn last_used(&self, now: Instant) -> (Instant, bool) {
        self.activity.seen(self.config.epoch, now)
    }

    /// The session's use mark changed, to `version`: another replica used
    /// the session lately, unless this one wrote that mark.
    pub(crate) fn heard_use(&self, version: Version) {
        if self.told.load(Ordering::Acquire) != version.0 {
            self.activity.heard(self.config.epoch, Instant::now());
        }
    }

    /// Tells the other replicas this one used the session lately: writes the
    /// session's use mark. Its new version, if written.
    pub(crate) async fn tell_use(&self) -> Result<Option<Version>> {
        let generation = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .generation;
        let told = self.config.mark_use(&self.id, generation).await?;
        if let Some(version) = told {
            self.told.store(version.0, Ordering::Release);
        }
        Ok(told)
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

    /// Acts on what the session's generation record says: another replica
    /// ended or reset the session.
    pub(crate) async fn follow(self: &Arc<Self>, record: Record) {
        let revision = match record {
            Record::Ended(revision) => {
                self.ended_elsewhere(revision).await;
                revision
            }
            Record::Generation(generation, revision) => {
                self.reset_elsewhere(generation, revision).await;
                revision
            }
        };
        self.followed
            .send_modify(|followed| *followed = revision.max(*followed));
    }

    /// The record says the session moved on from `generation` (reset or ended
    /// elsewhere, written at `revision`) without this replica: waits until this
    /// replica's watch has delivered that and it has been acted on. Acting on
    /// the record as read could take an end and a new life of the id for a
    /// reset; the watch tells them apart.
    async fn catch_up(&self, generation: u64, revision: Revision) -> Result<()> {
        let moved_on = || {
            self.is_ended()
                || self
                    .current
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .generation
                    != generation
        };
        let mut followed = self.followed.subscribe();
        let timeout = self.config.timeout;
        let waited = tokio::time::timeout(
            timeout,
            followed.wait_for(|followed| *followed >= revision || moved_on()),
        )
        .await;
        if waited.is_err() {
            return Err(Error::Store(store_core::Error::Timeout {
                waiting_for: format!(
                    "the watch to deliver session `{}`'s record of revision {revision}",
                    self.id
                ),
                timeout,
            }));
        }
        if !moved_on() {
            // Not reached with records written by this crate; never spin.
            return Err(outdated(""));
        }
        Ok(())
    }

    /// Another replica ended this session: its generation record was removed at
    /// `revision`. A removal from before this life of the id (whose first
    /// generation is a later revision) is not about it.
    async fn ended_elsewhere(self: &Arc<Self>, revision: Revision) {
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

    /// Another replica reset this session to `generation`, recorded at
    /// `revision`: the instance here is freed and a fresh one takes its place.
    /// The resetting replica's teardown owns the retired durable keys; only
    /// writes made here before the news arrived that landed after the reset
    /// (which its teardown may have missed) are removed here.
    async fn reset_elsewhere(self: &Arc<Self>, generation: u64, revision: Revision) {
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
        // Closing the old stores lands (or fails) every write queued here.
        old.free().await;
        let late = self
            .config
            .remove_prefix_since(
                &layout::generation_prefix(&self.config.root, &self.id, old.generation),
                Vec::new(),
                Some(revision),
            )
            .await;
        if let Err(error) = late {
            tracing::warn!(session = %self.id, %error, "removing late writes of a reset session failed");
        }
        tracing::debug!(session = %self.id, generation, "session reset on another replica");
    }

    pub(crate) async fn end(self: &Arc<Self>) -> Result<Ended> {
        let (_transition, instance) = loop {
            let transition = self.transition.lock().await;
            let instance = self.current()?;
            match self.config.record(&self.id).await? {
                Record::Generation(generation, written) if generation <= instance.generation => {
                    // Removed only as read: a reset, or an end and a new
                    // life, on another replica since makes this read again.
                    if self.config.remove_record(&self.id, written).await? {
                        break (transition, instance);
                    }
                }
                Record::Ended(revision) | Record::Generation(_, revision) => {
                    drop(transition);
                    self.catch_up(instance.generation, revision).await?;
                }
            }
        };
        self.ended.store(true, Ordering::Release);
        let live_entries = instance.free().await;
        // Only this life: with the record gone, another replica may open a
        // new life of the id at once.
        let removed = self.config.remove_life(&self.id, instance.generation).await;
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
    ///
    /// The backend's record of the session's generation is only moved on from
    /// the generation this replica holds. If another replica reset or ended the
    /// session since this one last heard, the reset waits (at most the
    /// registry's [`timeout`](crate::SessionsBuilder::timeout)) until this
    /// replica's watch has delivered that news and it has been acted on, then:
    /// after a reset elsewhere, resets the instance that one made (two resets
    /// made at once on two replicas are two resets, one after the other, as on
    /// one replica); after an end elsewhere, fails with
    /// [`Error::SessionEnded`], leaving alone any new life of the id opened
    /// since.
    pub async fn reset(&self) -> Result<Teardown> {
        loop {
            let transition = self.core.transition.lock().await;
            let old = self.core.current()?;
            let moved = self
                .core
                .config
                .advance_generation(&self.core.id, old.generation)
                .await?;
            if let Some(Record::Ended(revision) | Record::Generation(_, revision)) = moved {
                drop(transition);
                self.core.catch_up(old.generation, revision).await?;
                continue;
            }
            let generation = old.generation + 1;
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
            return Ok(Teardown {
                instance: Some(old),
            });
        }
    }

    /// Ends the session: removes it from the registry, frees its live entries,
    /// removes its durable keys from the backend (listing only this session's
    /// prefix), and makes every handle and scope of it fail with
    /// [`Error::Outdated`]. Work is proportional to this session's keys.
    ///
    /// Every other registry sharing the durable backend ends the session too
    /// once its watch delivers the news (see the crate docs on replicas). If
    /// the session was reset elsewhere since this replica last heard, the end
    /// waits (at most the registry's timeout) until this replica has moved to
    /// that instance, and ends it; if it was ended elsewhere, it fails with
    /// [`Error::SessionEnded`] and leaves any new life of the id alone.
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
            Vec::new(),
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

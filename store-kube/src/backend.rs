//! [`KubeBackend`]: a `store-core` backend on namespaced custom resources.
//!
//! Reads never reach the API: the `Store` front-end keeps a view fed by this
//! backend's feed (one kube-runtime watcher per backend: list, then watch,
//! re-list on 410, bookmarks, backoff; see `feed`). Writes arrive as batches and go out as one JSON Patch
//! per object (see `writer`), objects in parallel.
//!
//! A store object deleted by someone else is noticed on the watch: the store
//! is told to re-list (so its keys read as removed and subscribers see the
//! removals) and the object is recreated empty at once, so service goes on.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::runtime::watcher;
use serde_json::json;
use store_core::backend::{Applied, Batch, Entry, Listing, Op, Outcome, WatchStream, check_batch};
use store_core::{Backend, Capabilities, Error, Precondition, Result, Revision, Version};
use tracing::Instrument;

use crate::cache::{Cache, parse_object, parse_revision};
use crate::error::{self, NAME};
use crate::feed::{self, Feed};
use crate::layout::{Layout, PEPR_PLACEHOLDER};
use crate::resource::{STORE_LABEL, pepr_store_resource, store_shard_resource};
use crate::writer::{self, Base, Limits};

/// How many times one object's writes are re-planned after the server rejected a
/// patch before the batch is handed back to be retried later.
const MAX_REPLANS: usize = 16;

/// The default namespace of a Pepr-compatible store.
pub const PEPR_NAMESPACE: &str = "pepr-system";

/// The quiet time a Pepr-mode store leaves between two batches by default.
///
/// A TypeScript Pepr pod applies a watch event on its store only after a
/// second without another, so a writer that sends more often keeps every Pepr
/// pod's view stale. See [`KubeBackendBuilder::pepr_write_gap`].
pub const PEPR_WRITE_GAP: Duration = Duration::from_millis(1250);

/// Configures a [`KubeBackend`].
#[derive(Clone)]
#[must_use = "a builder does nothing until `build` is awaited"]
pub struct KubeBackendBuilder {
    client: kube::Client,
    namespace: Option<String>,
    store: String,
    shards: u32,
    limits: Limits,
    request_timeout: Duration,
    field_manager: String,
    pepr: Option<(String, String)>,
    other_capabilities: Vec<String>,
    pepr_write_gap: Duration,
    v1_removal_delay: Duration,
}

/// A store kept in Kubernetes custom resources, shared by every process that
/// opens the same store name in the same namespace.
#[derive(Clone)]
pub struct KubeBackend {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) api: Api<DynamicObject>,
    resource: ApiResource,
    pub(crate) namespace: String,
    pub(crate) layout: Layout,
    limits: Limits,
    request_timeout: Duration,
    field_manager: String,
    /// Asked of the store between batches (Pepr mode).
    write_gap: Option<Duration>,
    cache: Mutex<Cache>,
    feed: Mutex<Feed>,
    /// Woken whenever the feed moved, for listings waiting on it.
    pub(crate) advanced: Notify,
    /// Dropped with the backend, which stops the feed's watcher.
    _stop: tokio::sync::watch::Sender<()>,
}

impl std::fmt::Debug for KubeBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeBackend")
            .field("namespace", &self.inner.namespace)
            .field("layout", &self.inner.layout)
            .finish_non_exhaustive()
    }
}

impl KubeBackend {
    /// A builder for a store named `store` (a DNS label: lowercase letters, digits
    /// and `-`, at most 50 characters) in the client's default namespace.
    pub fn builder(client: kube::Client, store: impl Into<String>) -> KubeBackendBuilder {
        KubeBackendBuilder {
            client,
            namespace: None,
            store: store.into(),
            shards: 1,
            limits: Limits::default(),
            request_timeout: Duration::from_secs(10),
            field_manager: "typed-store".to_owned(),
            pepr: None,
            other_capabilities: Vec::new(),
            pepr_write_gap: PEPR_WRITE_GAP,
            v1_removal_delay: Duration::from_secs(30),
        }
    }

    /// The namespace the store lives in.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The names of the store's objects.
    pub fn objects(&self) -> Vec<String> {
        self.inner.layout.objects()
    }
}

impl std::fmt::Debug for KubeBackendBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeBackendBuilder")
            .field("namespace", &self.namespace)
            .field("store", &self.store)
            .field("shards", &self.shards)
            .field("pepr", &self.pepr)
            .finish_non_exhaustive()
    }
}

impl KubeBackendBuilder {
    /// The namespace (default: the client's default namespace; `pepr-system` in
    /// Pepr-compatible mode).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Spreads keys over `shards` objects (default 1). Every replica must use the
    /// same count; a store keeps the count it was created with.
    pub fn shards(mut self, shards: u32) -> Self {
        self.shards = shards.clamp(1, 10_000);
        self
    }

    /// Picks the shard count for a store of `bytes` of data. Keys are spread by
    /// hash, so objects fill unevenly: the count aims at 60% of each object's
    /// budget (counted as at most 1 MiB, so the count never changes with the
    /// default budget), which leaves room for the skew of many small values
    /// (values near the budget's size fill single objects early whatever the
    /// count).
    pub fn capacity(mut self, bytes: usize) -> Self {
        // Counted on at most 1 MiB per object, the budget this count was first
        // defined with: every replica must keep arriving at the same count.
        let per_object = (self.limits.object_budget.min(1024 * 1024) * 6 / 10).max(1);
        self.shards = u32::try_from(bytes.div_ceil(per_object))
            .unwrap_or(u32::MAX)
            .clamp(1, 10_000);
        self
    }

    /// Bytes of JSON one object may grow to, `managedFields` included (default
    /// 1,568,768: etcd's 1.5 MiB request limit less 4 KiB for the etcd key and
    /// metadata the server adds). A write that would grow an object past it is
    /// refused with `StoreFull`.
    pub fn object_budget(mut self, bytes: usize) -> Self {
        self.limits.object_budget = bytes.max(4096);
        self.limits.max_value = self
            .limits
            .object_budget
            .saturating_sub(16 * 1024)
            .max(1024);
        self
    }

    /// How long one API request may take before it counts as failed and is
    /// retried (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The field manager named on writes (default `typed-store`).
    pub fn field_manager(mut self, manager: impl Into<String>) -> Self {
        self.field_manager = manager.into();
        self
    }

    /// Pepr-compatible mode: read and write the `PeprStore` object
    /// `pepr-<module_uuid>-store` as the capability `capability`, so Rust and
    /// TypeScript Pepr pods share one store. The namespace defaults to
    /// `pepr-system`; keys are `<capability>-v2-<key>`; v1 keys of this
    /// capability are migrated to v2 at start-up.
    ///
    /// A capability named like another one followed by `-v2` (`hello-v2`,
    /// `hello-v2-x`) would share that one's keys, so `build` refuses it, and
    /// refuses such a name among [`pepr_capabilities`](Self::pepr_capabilities)
    /// when it extends this capability.
    pub fn pepr(mut self, module_uuid: impl Into<String>, capability: impl Into<String>) -> Self {
        self.pepr = Some((module_uuid.into(), capability.into()));
        self
    }

    /// Other capabilities sharing the Pepr object. The v1-to-v2 migration never
    /// touches keys that belong to them: a v1 key belongs to the longest
    /// capability it starts with, so where this capability's name is a prefix of
    /// theirs (`hello`, `hello-pepr`), declaring them keeps `hello-pepr-old`
    /// theirs.
    pub fn pepr_capabilities<I, S>(mut self, capabilities: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.other_capabilities = capabilities.into_iter().map(Into::into).collect();
        self
    }

    /// In Pepr mode, the quiet time the store leaves between two batches
    /// (default [`PEPR_WRITE_GAP`], longer than the one second a TypeScript
    /// Pepr pod waits for quiet before it applies a watch event).
    ///
    /// The first write after a quiet gap is sent at once; writes made sooner
    /// coalesce and leave together when the gap is over, so a Rust replica
    /// writing all the time still lets Pepr pods see its writes, at the cost
    /// of up to one gap of latency for a `set_and_wait`. `Duration::ZERO`
    /// sends as soon as the API server is idle, as the native layout does
    /// (right when no TypeScript pod shares the store). A store can override
    /// it too, with `StoreBuilder::min_write_gap`.
    pub fn pepr_write_gap(mut self, gap: Duration) -> Self {
        self.pepr_write_gap = gap;
        self
    }

    /// How long after start-up the Pepr v1 originals of migrated keys are
    /// removed (default 30 s). Their v2 copies are made and read at once; the
    /// originals stay a while so that a TypeScript Pepr pod starting beside
    /// this one, whose migration patch removes every v1 key it read and fails
    /// whole if one is gone, still completes its migration of every capability.
    pub fn pepr_v1_removal_delay(mut self, delay: Duration) -> Self {
        self.v1_removal_delay = delay;
        self
    }

    /// Checks the configuration, creates the store's objects where missing
    /// (replicas starting together do not race: creation is idempotent), checks
    /// the shard count, and copies Pepr v1 keys to v2 (retrying refused or
    /// failed patches for up to a minute, then failing with an error).
    pub async fn build(self) -> Result<KubeBackend> {
        let (layout, resource, default_namespace) = match &self.pepr {
            Some((uuid, capability)) => {
                if capability.is_empty() {
                    return Err(config_error("the Pepr capability name must not be empty"));
                }
                let named = std::iter::once(capability).chain(&self.other_capabilities);
                for name in named {
                    let overlap = crate::layout::pepr_capability_overlap(name)
                        .filter(|other| name == capability || *other == capability.as_str());
                    if let Some(other) = overlap {
                        return Err(config_error(format!(
                            "Pepr capabilities {name:?} and {other:?} would share keys \
                             (`{name}-v2-<key>` is also a key of {other:?}); rename one"
                        )));
                    }
                }
                (
                    Layout::Pepr {
                        object: format!("pepr-{uuid}-store"),
                        capability: capability.clone(),
                    },
                    pepr_store_resource(),
                    PEPR_NAMESPACE.to_owned(),
                )
            }
            None => {
                if !is_dns_label(&self.store, 50) {
                    return Err(config_error(format!(
                        "store name {:?} must be a DNS label of at most 50 characters",
                        self.store
                    )));
                }
                (
                    Layout::Native {
                        store: self.store.clone(),
                        shards: self.shards,
                    },
                    store_shard_resource(),
                    self.client.default_namespace().to_owned(),
                )
            }
        };
        let namespace = self.namespace.unwrap_or(default_namespace);
        let api = Api::namespaced_with(self.client, &namespace, &resource);
        let (stop, stopped) = tokio::sync::watch::channel(());
        let backend = KubeBackend {
            inner: Arc::new(Inner {
                api,
                resource,
                namespace,
                layout,
                limits: self.limits,
                request_timeout: self.request_timeout,
                field_manager: self.field_manager,
                write_gap: self
                    .pepr
                    .is_some()
                    .then_some(self.pepr_write_gap)
                    .filter(|gap| !gap.is_zero()),
                cache: Mutex::new(Cache::default()),
                feed: Mutex::new(Feed::default()),
                advanced: Notify::new(),
                _stop: stop,
            }),
        };
        for name in backend.inner.layout.objects() {
            let object = backend.inner.ensure_object(&name).await?;
            backend.inner.check_shard_count(&object)?;
        }
        if let Layout::Pepr { capability, object } = &backend.inner.layout {
            backend
                .inner
                .migrate_step(object, capability, &self.other_capabilities, true)
                .await?;
            crate::migration::remove_v1_later(
                Arc::downgrade(&backend.inner),
                stopped.clone(),
                object.clone(),
                capability.clone(),
                self.other_capabilities.clone(),
                self.v1_removal_delay,
            );
        }
        tokio::spawn(feed::run(Arc::downgrade(&backend.inner), stopped));
        Ok(backend)
    }
}

fn config_error(message: impl Into<String>) -> Error {
    Error::backend(NAME, message.into())
}

fn is_dns_label(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

pub(crate) fn now_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

impl Inner {
    pub(crate) fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn feed(&self) -> MutexGuard<'_, Feed> {
        self.feed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The field manager named on writes.
    pub(crate) fn field_manager(&self) -> &str {
        &self.field_manager
    }

    /// Runs one API call under the request timeout.
    pub(crate) async fn call<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = kube::Result<T>>,
    ) -> std::result::Result<T, kube::Error> {
        match tokio::time::timeout(self.request_timeout, fut).await {
            Ok(result) => result,
            Err(_) => Err(kube::Error::Service(
                format!("{what} timed out after {:?}", self.request_timeout).into(),
            )),
        }
    }

    pub(crate) fn to_json(object: &DynamicObject) -> Result<serde_json::Value> {
        serde_json::to_value(object).map_err(|e| Error::backend(NAME, e))
    }

    /// The object as a new, empty one of this layout.
    fn empty_object(&self, name: &str) -> serde_json::Value {
        match &self.layout {
            Layout::Native { store, shards } => {
                let shard: u32 = name
                    .rsplit('-')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                json!({
                    "apiVersion": self.resource.api_version,
                    "kind": self.resource.kind,
                    "metadata": {
                        "name": name,
                        "namespace": self.namespace,
                        "labels": { STORE_LABEL: store },
                    },
                    "spec": { "store": store, "shard": shard, "shards": shards, "keys": 0, "bytes": 0, "data": {} },
                })
            }
            Layout::Pepr { .. } => json!({
                "apiVersion": self.resource.api_version,
                "kind": self.resource.kind,
                "metadata": {
                    "name": name,
                    "namespace": self.namespace,
                    "labels": { "pepr.dev-cacheID": now_millis().to_string() },
                },
                "data": { PEPR_PLACEHOLDER: "k-thx-bye" },
            }),
        }
    }

    /// Gets the object, creating it when missing. Creation is idempotent: a
    /// replica that loses the race to create reads the winner's object.
    pub(crate) async fn ensure_object(&self, name: &str) -> Result<serde_json::Value> {
        match self.call("get", self.api.get(name)).await {
            Ok(object) => return Self::to_json(&object),
            Err(e) if error::is_not_found(&e) => {}
            Err(e) => return Err(error::from_kube(e)),
        }
        let body: DynamicObject =
            serde_json::from_value(self.empty_object(name)).map_err(|e| Error::backend(NAME, e))?;
        let created = match &self.layout {
            // Pepr creates its store with server-side apply as the `pepr` manager; do the same
            // so both kinds of pod own the same fields.
            Layout::Pepr { .. } => {
                let params = PatchParams::apply("pepr");
                self.call("apply", self.api.patch(name, &params, &Patch::Apply(&body)))
                    .await
            }
            Layout::Native { .. } => {
                let params = PostParams {
                    field_manager: Some(self.field_manager.clone()),
                    ..PostParams::default()
                };
                self.call("create", self.api.create(&params, &body)).await
            }
        };
        match created {
            Ok(object) => {
                tracing::info!(object = name, namespace = %self.namespace, "created store object");
                Self::to_json(&object)
            }
            Err(e) if error::is_already_exists(&e) => {
                let object = self
                    .call("get", self.api.get(name))
                    .await
                    .map_err(error::from_kube)?;
                Self::to_json(&object)
            }
            Err(e) => Err(error::from_kube(e)),
        }
    }

    fn check_shard_count(&self, object: &serde_json::Value) -> Result<()> {
        if let Layout::Native { store, shards } = &self.layout {
            let found = object
                .pointer("/spec/shards")
                .and_then(serde_json::Value::as_u64);
            if let Some(found) = found
                && found != u64::from(*shards)
            {
                return Err(config_error(format!(
                    "store {store:?} was created with {found} shards; this replica asks for {shards}"
                )));
            }
        }
        Ok(())
    }

    fn list_params(&self) -> ListParams {
        match &self.layout {
            Layout::Native { store, .. } => {
                ListParams::default().labels(&format!("{STORE_LABEL}={store}"))
            }
            Layout::Pepr { object, .. } => {
                ListParams::default().fields(&format!("metadata.name={object}"))
            }
        }
    }

    pub(crate) fn watcher_config(&self) -> watcher::Config {
        match &self.layout {
            Layout::Native { store, .. } => {
                watcher::Config::default().labels(&format!("{STORE_LABEL}={store}"))
            }
            Layout::Pepr { object, .. } => {
                watcher::Config::default().fields(&format!("metadata.name={object}"))
            }
        }
    }

    /// Writes to one object; every write gets an outcome. `Err` only for failures
    /// worth retrying the whole batch for.
    async fn write_object(
        &self,
        name: &str,
        writes: Vec<(usize, Op)>,
    ) -> Result<(Vec<(usize, Outcome)>, u64)> {
        let mut outcomes = Vec::with_capacity(writes.len());
        let mut remaining: VecDeque<(usize, Op)> = writes.into();
        // The base to plan on, and whether it came from the server (a GET or a
        // patch's answer) rather than the watch, which may lag behind.
        let mut base = self
            .cache()
            .shards
            .get(name)
            .map(|shard| (Base::from_shard(shard), false));
        let mut revision = 0;
        let mut replans = 0;
        // While a refusal that names no write is being narrowed down: how many
        // writes the next patch may carry (halved on each such refusal).
        let mut cap: Option<usize> = None;
        let params = PatchParams {
            field_manager: Some(self.field_manager.clone()),
            ..PatchParams::default()
        };
        while !remaining.is_empty() {
            let (current, fresh) = match base.take() {
                Some(base) => base,
                None => (
                    Base::from_seen(parse_object(
                        &self.layout,
                        &self.ensure_object(name).await?,
                    )?),
                    true,
                ),
            };
            revision = revision.max(current.revision);
            let plan = {
                let cache = self.cache();
                let pending = remaining.make_contiguous();
                let pending = &pending[..cap.map_or(pending.len(), |c| c.min(pending.len()))];
                writer::plan(
                    &self.layout,
                    cache.shards.get(name),
                    &current,
                    pending,
                    &self.limits,
                    now_millis(),
                )
            };
            // The watch may lag the server: a key it still shows may be gone, a
            // shard it shows full may have been emptied. Refuse a write
            // conditional on absence, or one that would not fit, only on the
            // server's word.
            let refused_on_hearsay = !fresh
                && plan.decided.iter().any(|(index, outcome)| match outcome {
                    Outcome::Conflict { .. } => remaining
                        .iter()
                        .any(|(i, op)| i == index && op.precondition == Some(Precondition::Absent)),
                    Outcome::Failed(Error::StoreFull { .. }) => true,
                    _ => false,
                });
            if refused_on_hearsay {
                continue;
            }
            outcomes.extend(plan.decided);
            let covered: Vec<(usize, Op)> = remaining.drain(..plan.covered).collect();
            if plan.patch.is_empty() {
                base = Some((current, fresh));
                continue;
            }
            let sent: Vec<(usize, Op, Option<String>)> = plan
                .sent
                .into_iter()
                .filter_map(|(index, stored)| {
                    covered
                        .iter()
                        .find(|(i, _)| *i == index)
                        .map(|(_, op)| (index, op.clone(), stored))
                })
                .collect();
            let patch: json_patch::Patch =
                serde_json::from_value(serde_json::Value::Array(plan.patch))
                    .map_err(|e| Error::backend(NAME, e))?;
            let result = self
                .call(
                    "patch",
                    self.api.patch(name, &params, &Patch::Json::<()>(patch)),
                )
                .instrument(tracing::debug_span!(
                    "patch",
                    object = name,
                    writes = sent.len()
                ))
                .await;
            let requeue = |remaining: &mut VecDeque<(usize, Op)>,
                           sent: Vec<(usize, Op, Option<String>)>| {
                for (index, op, _) in sent.into_iter().rev() {
                    remaining.push_front((index, op));
                }
            };
            match result {
                Ok(object) => {
                    let seen = parse_object(&self.layout, &Self::to_json(&object)?)?;
                    revision = revision.max(seen.revision);
                    let cache = self.cache();
                    let watched = cache.shards.get(name);
                    for (index, op, stored) in sent {
                        let unchanged =
                            stored.is_some() && current.data.get(&op.key) == stored.as_ref();
                        let version = if seen.revision == current.revision || unchanged {
                            watched
                                .and_then(|s| s.version(&op.key))
                                .unwrap_or(Version(current.revision))
                        } else {
                            Version(seen.revision)
                        };
                        outcomes.push((index, Outcome::Applied(version)));
                    }
                    drop(cache);
                    base = Some((Base::from_seen(seen), true));
                }
                // Deleted under us: the next round recreates it.
                Err(e) if error::is_not_found(&e) => requeue(&mut remaining, sent),
                Err(e) if error::invalid_fields(&e).is_some() => {
                    // The schema refused the object as patched: a refusal for good.
                    // Settle the writes it blames; the patch was atomic, so the
                    // object is as it was and the rest go again at once.
                    let fields = error::invalid_fields(&e).unwrap_or_default();
                    let blamed = self.blame(&sent, &fields);
                    let rejected: Vec<usize> = if !blamed.is_empty() {
                        blamed
                    } else if let [(index, ..)] = sent.as_slice() {
                        vec![*index]
                    } else {
                        // Nothing named a write of ours: halve the patch until the
                        // refused write is alone in one.
                        cap = Some((sent.len() / 2).max(1));
                        Vec::new()
                    };
                    if !rejected.is_empty() {
                        cap = None;
                    }
                    let reason = fields
                        .iter()
                        .map(|(_, reason)| reason.as_str())
                        .collect::<Vec<_>>()
                        .join("; ");
                    tracing::warn!(
                        object = name,
                        refused = rejected.len(),
                        %reason,
                        "the API server refused writes for good"
                    );
                    let mut kept = Vec::new();
                    for (index, op, stored) in sent {
                        if rejected.contains(&index) {
                            let reason = fields
                                .iter()
                                .find(|(field, _)| {
                                    *field == self.layout.field_path(&self.layout.map_key(&op.key))
                                })
                                .map_or_else(|| reason.clone(), |(_, r)| r.clone());
                            outcomes.push((
                                index,
                                Outcome::Failed(Error::Rejected {
                                    key: op.key,
                                    reason,
                                }),
                            ));
                        } else {
                            kept.push((index, op, stored));
                        }
                    }
                    requeue(&mut remaining, kept);
                    base = Some((current, fresh));
                }
                Err(e) if error::is_patch_rejected(&e) => {
                    // A precondition failed or the object changed shape: plan again
                    // on the object as it is now.
                    replans += 1;
                    if replans > MAX_REPLANS {
                        return Err(Error::unavailable(
                            NAME,
                            format!("patches to {name} kept being rejected: {e}"),
                        ));
                    }
                    tracing::debug!(
                        object = name,
                        replans,
                        "patch rejected; planning again on a fresh read"
                    );
                    requeue(&mut remaining, sent);
                }
                Err(e) if error::is_too_large(&e) => {
                    tracing::warn!(
                        object = name,
                        "object over the API size limit; refusing this patch's puts"
                    );
                    let (puts, deletes): (Vec<_>, Vec<_>) = sent
                        .into_iter()
                        .partition(|(_, _, stored)| stored.is_some());
                    for (index, op, stored) in puts {
                        outcomes.push((
                            index,
                            Outcome::Failed(Error::StoreFull {
                                key: op.key,
                                needed: stored.map_or(0, |s| s.len()),
                                available: 0,
                            }),
                        ));
                    }
                    requeue(&mut remaining, deletes);
                }
                Err(e) => return Err(error::from_kube(e)),
            }
        }
        Ok((outcomes, revision))
    }
}

impl Inner {
    /// The sent writes a schema refusal names: per refused field, the last
    /// write to that key in the patch (whose value the object would have kept).
    fn blame(
        &self,
        sent: &[(usize, Op, Option<String>)],
        fields: &[(String, String)],
    ) -> Vec<usize> {
        let mut blamed = Vec::new();
        for (field, _) in fields {
            let last = sent
                .iter()
                .rev()
                .find(|(_, op, _)| self.layout.field_path(&self.layout.map_key(&op.key)) == *field);
            if let Some((index, ..)) = last
                && !blamed.contains(index)
            {
                blamed.push(*index);
            }
        }
        blamed
    }
}

impl Backend for KubeBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        let capabilities = Capabilities::default()
            .with_compare_and_set()
            .with_durable()
            .with_shared()
            .with_max_value_size(Some(self.inner.limits.max_value))
            .with_max_batch_ops(Some(5_000))
            .with_min_write_gap(self.inner.write_gap);
        match self.inner.layout {
            // Pepr keeps every value as a string.
            Layout::Pepr { .. } => capabilities.with_text_values(),
            Layout::Native { .. } => capabilities,
        }
    }

    async fn read(&self, key: &str) -> Result<Option<Entry>> {
        let inner = &self.inner;
        let name = &inner.layout.objects()[inner.layout.shard_of(key)];
        let object = match inner.call("get", inner.api.get(name)).await {
            Ok(object) => object,
            Err(e) if error::is_not_found(&e) => return Ok(None),
            Err(e) => return Err(error::from_kube(e)),
        };
        let seen = parse_object(&inner.layout, &Inner::to_json(&object)?)?;
        let cache = inner.cache();
        Ok(seen.data.get(key).map(|stored| {
            let watched = cache
                .shards
                .get(name)
                .filter(|s| s.data.get(key) == Some(stored));
            Entry {
                key: key.to_owned(),
                value: inner.layout.payload(stored),
                version: watched
                    .and_then(|s| s.version(key))
                    .unwrap_or(Version(seen.revision)),
            }
        }))
    }

    /// A fresh LIST says what the server holds; the answer comes from the feed's
    /// cache once the feed has caught up with it, so versions agree with what
    /// `watch` delivers.
    async fn list(&self, prefix: &str) -> Result<Listing> {
        let inner = &self.inner;
        // Names and resourceVersions are all it needs: the data comes from the
        // feed's cache, so a metadata-only list keeps a large store's values
        // off the wire and out of the parser.
        let list = inner
            .call("list", inner.api.list_metadata(&inner.list_params()))
            .await
            .map_err(error::from_kube)?;
        let targets = list
            .items
            .iter()
            .map(|o| {
                let revision = parse_revision(o.metadata.resource_version.as_deref())?;
                Ok((o.metadata.name.clone().unwrap_or_default(), revision))
            })
            .collect::<Result<Vec<_>>>()?;
        let deadline = tokio::time::Instant::now() + inner.request_timeout * 3;
        loop {
            let notified = inner.advanced.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let cache = inner.cache();
                let caught_up = targets.iter().all(|(name, revision)| {
                    cache
                        .shards
                        .get(name)
                        .is_some_and(|s| s.revision >= *revision)
                });
                if caught_up {
                    let revision = inner.feed().latest;
                    return Ok(Listing {
                        entries: cache.entries(&inner.layout, prefix),
                        revision,
                    });
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Error::unavailable(
                    NAME,
                    "the watch has not caught up with a fresh listing",
                ));
            }
        }
    }

    async fn apply(&self, batch: Batch) -> Result<Applied> {
        check_batch(NAME, &self.capabilities(), &batch)?;
        let inner = &self.inner;
        let objects = inner.layout.objects();
        let mut per_object: Vec<Vec<(usize, Op)>> = vec![Vec::new(); objects.len()];
        let count = batch.ops.len();
        let mut shard_of = Vec::with_capacity(count);
        for (index, op) in batch.ops.into_iter().enumerate() {
            let shard = inner.layout.shard_of(&op.key);
            shard_of.push(shard);
            per_object[shard].push((index, op));
        }
        let writes = per_object
            .into_iter()
            .enumerate()
            .filter(|(_, writes)| !writes.is_empty())
            .map(|(shard, writes)| {
                let name = objects[shard].clone();
                async move { (shard, name.clone(), inner.write_object(&name, writes).await) }
            });
        let results = futures_util::future::join_all(writes).await;
        let mut outcomes: Vec<Option<Outcome>> = vec![None; count];
        let mut revision = 0;
        let mut transient = None;
        for (shard, name, result) in results {
            match result {
                Ok((settled, rev)) => {
                    revision = revision.max(rev);
                    for (index, outcome) in settled {
                        if let Some(slot) = outcomes.get_mut(index) {
                            *slot = Some(outcome);
                        }
                    }
                }
                Err(e) if e.is_transient() => transient = Some(e),
                Err(e) => {
                    tracing::error!(object = %name, error = %e, "writes to object failed");
                    for (outcome, _) in outcomes
                        .iter_mut()
                        .zip(&shard_of)
                        .filter(|(o, s)| o.is_none() && **s == shard)
                    {
                        *outcome = Some(Outcome::Failed(e.clone()));
                    }
                }
            }
        }
        if let Some(e) = transient {
            // Writes to other objects may have landed: retrying them is harmless
            // (puts and deletes are idempotent; conditional writes are checked).
            return Err(e);
        }
        let outcomes = outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| Outcome::Failed(Error::backend(NAME, "write was not settled")))
            })
            .collect();
        Ok(Applied {
            revision: Revision(revision),
            outcomes,
        })
    }

    async fn watch(&self, from: Revision) -> Result<WatchStream> {
        Ok(self.inner.feed().watch(from))
    }
}

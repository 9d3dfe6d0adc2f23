//! [`KubeBackend`]: a `store-core` backend on namespaced custom resources.
//!
//! Reads never reach the API: the `Store` front-end keeps a view fed by this
//! backend's feed (one kube-runtime watcher per backend: list, then watch,
//! re-list on 410, bookmarks, backoff; see `feed`). Writes arrive as batches and go out as one JSON Patch
//! per object (see `writer`), objects in parallel.
//!
//! A store object deleted by someone else is noticed on the watch: the store
//! is told to re-list (so its keys read as removed and subscribers see the
//! removals), the feed reports the deletion and the backend recreates the
//! object empty at once, so service goes on.

use std::sync::{Arc, Weak};
use std::time::Duration;

use kube::api::Api;
use store_core::backend::{
    Applied, Batch, Entry, Listing, Op, Outcome, SharedIndex, WatchStream, check_batch,
};
use store_core::{Backend, Capabilities, Error, Result, Revision, Version};
use tokio::sync::mpsc;

use crate::cache::parse_dynamic;
use crate::config::ConfigError;
use crate::error::{self, NAME};
use crate::feed::{self, FeedState};
use crate::layout::Layout;
use crate::metrics::{KubeMetrics, counting_client};
use crate::resource::{pepr_store_resource, store_shard_resource};
use crate::shared::Shared;
use crate::writer::Limits;

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
    read_only: bool,
}

/// A store kept in Kubernetes custom resources, shared by every process that
/// opens the same store name in the same namespace.
#[derive(Clone)]
pub struct KubeBackend {
    inner: Arc<Shared>,
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
            read_only: false,
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
            .field("read_only", &self.read_only)
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

    /// Opens the store for reading only (default `false`), for tools that look
    /// into a store another program owns: `build` creates no object, migrates
    /// no Pepr v1 key and recreates no deleted object, and every write is
    /// refused with [`Error::Rejected`](store_core::Error::Rejected), the
    /// store untouched. A missing object reads as empty.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Checks the configuration, creates the store's objects where missing
    /// (replicas starting together do not race: creation is idempotent), checks
    /// the shard count, and copies Pepr v1 keys to v2 (retrying refused or
    /// failed patches for up to a minute, then failing with an error). A
    /// [read-only](Self::read_only) store only reads its objects to check them.
    pub async fn build(self) -> Result<KubeBackend> {
        let (layout, resource, default_namespace) = match &self.pepr {
            Some((uuid, capability)) => {
                if capability.is_empty() {
                    return Err(ConfigError::EmptyCapability.into());
                }
                let named = std::iter::once(capability).chain(&self.other_capabilities);
                for name in named {
                    let overlap = crate::layout::pepr_capability_overlap(name)
                        .filter(|other| name == capability || *other == capability.as_str());
                    if let Some(other) = overlap {
                        return Err(ConfigError::OverlappingCapabilities {
                            name: name.clone(),
                            other: other.to_owned(),
                        }
                        .into());
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
                    return Err(ConfigError::InvalidStoreName {
                        name: self.store.clone(),
                    }
                    .into());
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
        let metrics = Arc::new(KubeMetrics::new(match &layout {
            Layout::Native { store, .. } => store,
            Layout::Pepr { capability, .. } => capability,
        }));
        let watching = Api::namespaced_with(
            counting_client(self.client.clone(), Arc::clone(&metrics)),
            &namespace,
            &resource,
        );
        let api = Api::namespaced_with(self.client, &namespace, &resource);
        let (stop, stopped) = tokio::sync::watch::channel(());
        let backend = KubeBackend {
            inner: Arc::new(Shared {
                api,
                resource,
                namespace,
                feed: Arc::new(FeedState::new(layout.clone())),
                layout,
                limits: self.limits,
                request_timeout: self.request_timeout,
                field_manager: self.field_manager,
                write_gap: self
                    .pepr
                    .is_some()
                    .then_some(self.pepr_write_gap)
                    .filter(|gap| !gap.is_zero()),
                read_only: self.read_only,
                _stop: stop,
                metrics,
            }),
        };
        // The watcher starts first: its listing is what checks the objects
        // that exist, and what stores list from.
        let (deleted, recreate) = mpsc::unbounded_channel();
        tokio::spawn(feed::run(
            Arc::downgrade(&backend.inner.feed),
            Arc::clone(&backend.inner.metrics),
            watching,
            backend.inner.watcher_config(),
            stopped.clone(),
            deleted,
        ));
        backend.inner.check_objects(self.read_only).await?;
        if self.read_only {
            // Nothing to migrate or recreate: the watcher's reports of deleted
            // objects go nowhere.
        } else if let Layout::Pepr { capability, object } = &backend.inner.layout {
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
        if !self.read_only {
            tokio::spawn(recreate_deleted(Arc::downgrade(&backend.inner), recreate));
        }
        Ok(backend)
    }
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

/// Recreates, empty, each store object the watcher saw deleted, so the store
/// goes on; its keys already read as removed. Ends with the watcher.
async fn recreate_deleted(shared: Weak<Shared>, mut deleted: mpsc::UnboundedReceiver<String>) {
    while let Some(name) = deleted.recv().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        tracing::warn!(object = %name, namespace = %shared.namespace, "store object deleted; recreating it");
        if let Err(error) = shared.ensure_object(&name).await {
            tracing::error!(object = %name, %error, "could not recreate store object");
        }
    }
}

impl Backend for KubeBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    /// The store's name; in Pepr mode, the capability's.
    fn store_name(&self) -> Option<&str> {
        Some(match &self.inner.layout {
            Layout::Native { store, .. } => store,
            Layout::Pepr { capability, .. } => capability,
        })
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
        let object = match inner.call("get", "get", inner.api.get(name)).await {
            Ok(object) => object,
            Err(e) if error::is_not_found(&e) => return Ok(None),
            Err(e) => return Err(error::from_kube(e)),
        };
        let seen = parse_dynamic(&inner.layout, &object)?;
        let cache = inner.cache();
        let layout = &inner.layout;
        Ok(seen.get(key).map(|stored| {
            // The watched entry while it holds what the server does: the same
            // allocation and the version the watch gave it.
            let watched = cache
                .shards
                .get(name)
                .and_then(|s| s.entry(key))
                .filter(|e| layout.holds(e, stored));
            match watched {
                Some(entry) => entry.clone(),
                None => layout.entry(key, stored, Version(seen.revision)),
            }
        }))
    }

    /// A fresh LIST says what the server holds; the answer comes from the feed's
    /// cache once the feed has caught up with it, so versions agree with what
    /// `watch` delivers.
    async fn list(&self, prefix: &str) -> Result<Listing> {
        self.inner
            .caught_up(|cache, revision| Listing {
                entries: cache.entries(prefix),
                revision,
            })
            .await
    }

    /// As `list("")`, the cache's own index: a store's view holds it, shared.
    async fn list_index(&self) -> Result<Option<(SharedIndex, Revision)>> {
        let listed = self
            .inner
            .caught_up(|cache, revision| (cache.index(), revision))
            .await?;
        Ok(Some(listed))
    }

    async fn apply(&self, batch: Batch) -> Result<Applied> {
        check_batch(NAME, &self.capabilities(), &batch)?;
        let inner = &self.inner;
        if inner.read_only {
            let outcomes = batch
                .ops
                .into_iter()
                .map(|op| {
                    Outcome::Failed(Error::Rejected {
                        key: op.key,
                        reason: "the store was opened read-only".to_owned(),
                    })
                })
                .collect();
            return Ok(Applied {
                revision: Revision(0),
                outcomes,
            });
        }
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
        Ok(feed::watch(&self.inner.feed, from))
    }
}

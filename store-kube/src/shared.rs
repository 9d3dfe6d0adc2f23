//! The state one backend's handles and tasks share: the API, the layout, the
//! limits and the feed; and what they do with it, object by object (create,
//! read, patch, migrate). `backend.rs` is the front door; the watcher task
//! (`feed.rs`) has a state of its own.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::runtime::watcher;
use serde_json::json;
use store_core::backend::{Op, Outcome};
use store_core::{Error, Precondition, Result, Revision, Version};
use tracing::Instrument;

use crate::cache::{
    Cache, Stored, declared_shards, parse_dynamic, parse_object, parse_revision, to_json,
};
use crate::config::ConfigError;
use crate::error::{self, NAME};
use crate::feed::{Feed, FeedState};
use crate::layout::{Layout, PEPR_PLACEHOLDER, PEPR_PLACEHOLDER_VALUE};
use crate::metrics::{KubeMetrics, error_outcome};
use crate::resource::STORE_LABEL;
use crate::writer::{self, Base, Limits};

/// How many times one object's writes are re-planned after the server rejected a
/// patch before the batch is handed back to be retried later.
const MAX_REPLANS: usize = 16;

pub(crate) struct Shared {
    pub(crate) api: Api<DynamicObject>,
    pub(crate) resource: ApiResource,
    pub(crate) namespace: String,
    pub(crate) layout: Layout,
    pub(crate) limits: Limits,
    pub(crate) request_timeout: Duration,
    pub(crate) field_manager: String,
    /// Asked of the store between batches (Pepr mode).
    pub(crate) write_gap: Option<Duration>,
    /// Opened with `read_only`: writes are refused.
    pub(crate) read_only: bool,
    /// The local view the watcher keeps, and its history of changes.
    pub(crate) feed: Arc<FeedState>,
    /// Dropped with the backend, which stops the feed's watcher.
    pub(crate) _stop: tokio::sync::watch::Sender<()>,
    pub(crate) metrics: Arc<KubeMetrics>,
}

pub(crate) fn now_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

impl Shared {
    pub(crate) fn cache(&self) -> MutexGuard<'_, Cache> {
        self.feed.cache()
    }

    pub(crate) fn feed(&self) -> MutexGuard<'_, Feed> {
        self.feed.history()
    }

    /// Reads the feed's cache, with the feed's revision, once the feed has
    /// caught up with a fresh LIST of the server. Names and resourceVersions
    /// are all it needs: the data comes from the feed's cache, so a
    /// metadata-only list keeps a large store's values off the wire and out
    /// of the parser.
    pub(crate) async fn caught_up<T>(&self, read: impl Fn(&Cache, Revision) -> T) -> Result<T> {
        let targets = self.object_revisions().await?;
        let deadline = tokio::time::Instant::now() + self.request_timeout * 3;
        loop {
            let notified = self.feed.advanced.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let cache = self.cache();
                let caught_up = targets.iter().all(|(name, revision)| {
                    cache
                        .shards
                        .get(name)
                        .is_some_and(|s| s.revision >= *revision)
                });
                if caught_up {
                    let revision = self.feed().latest;
                    return Ok(read(&cache, revision));
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

    /// The field manager named on writes.
    pub(crate) fn field_manager(&self) -> &str {
        &self.field_manager
    }

    /// Runs one API call under the request timeout; `what` names it in the
    /// timeout's message, `verb` (the Kubernetes verb) in the metrics.
    pub(crate) async fn call<T>(
        &self,
        what: &str,
        verb: &'static str,
        fut: impl std::future::Future<Output = kube::Result<T>>,
    ) -> std::result::Result<T, kube::Error> {
        let started = std::time::Instant::now();
        let (result, outcome) = match tokio::time::timeout(self.request_timeout, fut).await {
            Ok(Ok(answer)) => (Ok(answer), "ok"),
            Ok(Err(error)) => {
                let outcome = error_outcome(&error);
                (Err(error), outcome)
            }
            Err(_) => (
                Err(kube::Error::Service(
                    format!("{what} timed out after {:?}", self.request_timeout).into(),
                )),
                "timeout",
            ),
        };
        self.metrics.request(verb, outcome, started.elapsed());
        result
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
                "data": { PEPR_PLACEHOLDER: PEPR_PLACEHOLDER_VALUE },
            }),
        }
    }

    /// Gets the object, `None` when it is missing (a read-only store's check).
    pub(crate) async fn existing_object(&self, name: &str) -> Result<Option<serde_json::Value>> {
        match self.call("get", "get", self.api.get_opt(name)).await {
            Ok(object) => object.as_ref().map(to_json).transpose(),
            Err(e) => Err(error::from_kube(e)),
        }
    }

    /// Gets the object, creating it when missing. Creation is idempotent: a
    /// replica that loses the race to create reads the winner's object.
    /// A native shard whose store label was removed by hand (which hides it
    /// from every replica's watch) is labelled again.
    pub(crate) async fn ensure_object(&self, name: &str) -> Result<serde_json::Value> {
        match self.call("get", "get", self.api.get(name)).await {
            Ok(object) => return self.relabel(name, to_json(&object)?).await,
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
                self.call(
                    "apply",
                    "patch",
                    self.api.patch(name, &params, &Patch::Apply(&body)),
                )
                .await
            }
            Layout::Native { .. } => {
                let params = PostParams {
                    field_manager: Some(self.field_manager.clone()),
                    ..PostParams::default()
                };
                self.call("create", "create", self.api.create(&params, &body))
                    .await
            }
        };
        match created {
            Ok(object) => {
                tracing::info!(object = name, namespace = %self.namespace, "created store object");
                to_json(&object)
            }
            Err(e) if error::is_already_exists(&e) => {
                let object = self
                    .call("get", "get", self.api.get(name))
                    .await
                    .map_err(error::from_kube)?;
                to_json(&object)
            }
            Err(e) => Err(match self.missing(&e) {
                Some(missing) => missing.into(),
                None => error::from_kube(e),
            }),
        }
    }

    /// Puts a native shard's store label back when it is missing or wrong.
    async fn relabel(&self, name: &str, object: serde_json::Value) -> Result<serde_json::Value> {
        let Layout::Native { store, .. } = &self.layout else {
            return Ok(object);
        };
        let label = object
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(|l| l.get(STORE_LABEL))
            .and_then(serde_json::Value::as_str);
        if label == Some(store.as_str()) {
            return Ok(object);
        }
        tracing::warn!(object = name, namespace = %self.namespace, "store object lost its store label; labelling it again");
        let params = PatchParams {
            field_manager: Some(self.field_manager.clone()),
            ..PatchParams::default()
        };
        let patch = json!({ "metadata": { "labels": { STORE_LABEL: store } } });
        let patched = self
            .call(
                "relabel",
                "patch",
                self.api.patch(name, &params, &Patch::Merge(&patch)),
            )
            .await
            .map_err(error::from_kube)?;
        to_json(&patched)
    }

    /// What a `404` to creating a store object means: its namespace is
    /// missing (the answer names `namespaces`), or else its kind is not
    /// served (no CRD).
    fn missing(&self, error: &kube::Error) -> Option<ConfigError> {
        let kube::Error::Api(status) = error else {
            return None;
        };
        if status.code != 404 {
            return None;
        }
        let kind = status.details.as_ref().map(|details| details.kind.as_str());
        Some(if kind == Some("namespaces") {
            ConfigError::NamespaceMissing {
                namespace: self.namespace.clone(),
            }
        } else {
            match self.layout {
                Layout::Native { .. } => ConfigError::CrdMissing {
                    crd: "storeshards.typedstore.dev",
                    manifest: "deploy/storeshards.crd.json",
                },
                Layout::Pepr { .. } => ConfigError::CrdMissing {
                    crd: "peprstores.pepr.dev",
                    manifest: "deploy/peprstores.crd.json",
                },
            }
        })
    }

    /// Every store object's name and revision, from a metadata-only LIST
    /// read into just those: the rest of each item's metadata (its
    /// `managedFields` name every key) is skipped, not parsed into values.
    pub(crate) async fn object_revisions(&self) -> Result<Vec<(String, u64)>> {
        #[derive(serde::Deserialize)]
        struct List {
            /// kube-apiserver sends `null` for none.
            #[serde(default)]
            items: Option<Vec<Item>>,
        }
        #[derive(serde::Deserialize)]
        struct Item {
            metadata: Meta,
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Meta {
            name: Option<String>,
            resource_version: Option<String>,
        }
        let url =
            <DynamicObject as kube::Resource>::url_path(&self.resource, Some(&self.namespace));
        let request = kube::core::Request::new(url)
            .list_metadata(&self.list_params())
            .map_err(|e| Error::backend(NAME, e))?;
        let client = self.api.clone().into_client();
        let list: List = self
            .call("list", "list", client.request(request))
            .await
            .map_err(error::from_kube)?;
        list.items
            .unwrap_or_default()
            .into_iter()
            .map(|item| {
                let revision = parse_revision(item.metadata.resource_version.as_deref())?;
                Ok((item.metadata.name.unwrap_or_default(), revision))
            })
            .collect()
    }

    /// Makes sure every object of the layout exists (creating what is
    /// missing, unless read-only) and that none declares another shard count.
    ///
    /// The watcher's first listing, which a store waits for anyway, says
    /// which exist and what they declare; only the others are read (or
    /// created) one by one. A cold start so reads every object once, not
    /// twice. When the watcher fails before it lists (no CRD, no namespace,
    /// no permission), every object is read, which names what is wrong.
    pub(crate) async fn check_objects(&self, read_only: bool) -> Result<()> {
        let mut known = HashSet::new();
        if self.feed.first_listing(self.request_timeout).await {
            let cache = self.cache();
            for (name, shard) in &cache.shards {
                self.check_shard_count(shard.declared_shards)?;
                known.insert(name.clone());
            }
        }
        for name in self.layout.objects() {
            if known.contains(&name) {
                continue;
            }
            let object = if read_only {
                self.existing_object(&name).await?
            } else {
                Some(self.ensure_object(&name).await?)
            };
            if let Some(object) = object {
                self.check_shard_count(declared_shards(&object))?;
            }
        }
        Ok(())
    }

    fn check_shard_count(&self, found: Option<u64>) -> Result<()> {
        if let Layout::Native { store, shards } = &self.layout
            && let Some(found) = found
            && found != u64::from(*shards)
        {
            return Err(ConfigError::ShardCountMismatch {
                store: store.clone(),
                found,
                configured: *shards,
            }
            .into());
        }
        Ok(())
    }

    pub(crate) fn list_params(&self) -> ListParams {
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
    pub(crate) async fn write_object(
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
            .map(|shard| (Base::from_shard(&self.layout, shard), false));
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
                    let seen = parse_dynamic(&self.layout, &object)?;
                    revision = revision.max(seen.revision);
                    let cache = self.cache();
                    let watched = cache.shards.get(name);
                    for (index, op, stored) in sent {
                        let unchanged = stored.is_some()
                            && current.data.get(op.key.as_str()).map(Stored::as_str)
                                == stored.as_deref();
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

impl Shared {
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

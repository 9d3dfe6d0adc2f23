//! A namespace-exemption operator: a kube-rs controller and an admission
//! handler in one binary, sharing state through the store.
//!
//! - The **controller** (`kube::runtime::Controller` over Namespaces) records
//!   which namespaces carry the label `typedstore.dev/exempt=true` in one
//!   typed value, [`ExemptNamespaces`] (namespace name to the uid of the
//!   namespace object it exempted).
//! - The **admission handler** ([`review`]) takes an `AdmissionReview` for a
//!   Pod, as kube-apiserver sends it to a validating webhook, and answers from
//!   the store's local view alone: no API call on the admission path. Pods
//!   whose images carry a denied tag (`latest` by default; an image without a
//!   tag counts as `latest`, one pinned by digest is always fine) are denied
//!   unless their namespace is exempt. The denied tags are a second typed
//!   value, [`Policy`], seeded once by whichever replica starts first.
//!
//! ```sh
//! cargo run -p store-examples --example operator                       # two replicas on the in-process fake API server
//! cargo run -p store-examples --example operator -- --replicas 3       # more (up to 16)
//! cargo run -p store-examples --example operator -- --real             # the same on etcd + kube-apiserver (`cargo xtask envtest`)
//! cargo run -p store-examples --example operator -- --kube             # one replica on the current cluster, until Ctrl-C or SIGTERM
//! cargo run -p store-examples --example operator -- --manifests <dir> # its RBAC and Deployment (what `cargo xtask manifests` writes to deploy/operator)
//! ```
//!
//! # How replicas cooperate
//!
//! There is no leader election: every replica runs the controller and serves
//! admission. Reconciling is idempotent (a replica writes only when its local
//! view differs from what the namespace asks for) and every write is a
//! compare-and-set [`Store::update`] of the one value, so two replicas
//! recording different namespaces at once never lose each other's entry. A
//! replica whose watch lags may briefly write an older state; its own
//! reconcile of the newer state follows and restores it, so the replicas
//! converge on what the cluster says. Every replica's admission handler reads
//! the same value from its local view, so they answer alike once the views
//! agree (usually within milliseconds of the write).
//!
//! A namespace being deleted is reconciled while it terminates and dropped
//! from the value; a periodic sweep (one fresh LIST) drops the entries of
//! namespaces that vanished while no replica was watching. It removes an entry
//! only if the recorded uid is gone, so a namespace deleted and created again
//! under the same name keeps its new entry.
//!
//! One value keeps the example short and puts the compare-and-set in plain
//! sight; with thousands of exempt namespaces, a key family
//! (`#[store(key = "exempt/{namespace}")]`, one key each) spreads them over
//! the store's shards and replicas no longer contend on one key.
//!
//! # On a cluster
//!
//! ```sh
//! kubectl apply -f deploy/storeshards.crd.json   # the store's CRD
//! kubectl apply -f deploy/operator/              # namespace, RBAC, Deployment (two replicas, `--kube`)
//! ```
//!
//! The Deployment runs the image `typed-store-operator:0.1.0`, whose entry
//! point is this example built in release mode
//! (`target/release/examples/operator`); build and load it into your cluster
//! as you build images. The store lives in the pod's namespace. The handler is
//! a plain function: to enforce the policy, serve it over HTTPS on the
//! webhook framework you use and register a `ValidatingWebhookConfiguration`
//! for Pods; the replicas already keep its data current.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use store_core::{BoxError, Error, Precondition, Result, Store, StoreValue};
use store_kube::KubeBackend;
use store_kube::testing::{ControlPlane, TestCluster};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The store's name: its objects are `operator-0`, ... in the store's namespace.
const STORE: &str = "operator";

/// The label that exempts a namespace.
const EXEMPT_LABEL: &str = "typedstore.dev/exempt";

/// The audit annotation an admitted Pod's response carries, saying why.
const REASON_ANNOTATION: &str = "typedstore.dev/reason";

/// How long a wait may take.
const DEADLINE: Duration = Duration::from_secs(10);

/// Every namespace is reconciled again this often, which repairs the value if
/// someone edits or deletes the store's objects by hand.
const RESYNC: Duration = Duration::from_secs(300);

/// How often a replica on a cluster looks for entries of vanished namespaces.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The same in the demonstration, so a deletion shows up within a second.
const DEMO_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The namespace (and the name of every object) `deploy/operator` installs.
const NAME: &str = "typed-store-operator";

/// The image the Deployment runs.
const IMAGE: &str = "typed-store-operator:0.1.0";

/// The verbs the kube backend uses on its `StoreShard`s, as in
/// `deploy/rbac.json`: `get` and `create` to ensure its objects exist,
/// `list` and `watch` for the local view, `patch` for writes.
const STORE_VERBS: [&str; 5] = ["get", "list", "watch", "create", "patch"];

// ---------------------------------------------------------------------------
// The shared state

/// The namespaces the controller exempted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema, StoreValue)]
#[store(key = "exempt-namespaces", schema)]
struct ExemptNamespaces {
    /// Namespace name to the uid of the namespace object that was exempted.
    namespaces: BTreeMap<String, String>,
}

impl ExemptNamespaces {
    /// The exempted names, from a store's local view.
    fn names(store: &Store) -> Result<BTreeSet<String>> {
        Ok(store
            .get(Self::key())?
            .map(|exempt| exempt.namespaces.keys().cloned().collect())
            .unwrap_or_default())
    }
}

/// What the admission handler refuses outside exempt namespaces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, StoreValue)]
#[store(key = "policy", schema)]
struct Policy {
    /// Image tags refused; an image without a tag counts as `latest`.
    denied_tags: BTreeSet<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            denied_tags: BTreeSet::from(["latest".to_owned()]),
        }
    }
}

impl Policy {
    /// The denied tag `image` carries, if any. An image pinned by digest has none.
    fn denied_tag<'a>(&self, image: &'a str) -> Option<&'a str> {
        if image.contains('@') {
            return None;
        }
        let name = image.rsplit('/').next().unwrap_or(image);
        let tag = name.split_once(':').map_or("latest", |(_, tag)| tag);
        self.denied_tags.contains(tag).then_some(tag)
    }

    fn describe(&self) -> String {
        let tags: Vec<&str> = self.denied_tags.iter().map(String::as_str).collect();
        format!("denied tags {}", tags.join(", "))
    }
}

/// Seeds the default policy once: the first replica's compare-and-set on
/// absence wins, the others see a conflict and keep what is there.
async fn seed_policy(store: Store) -> Result<()> {
    if store.get(Policy::key())?.is_some() {
        return Ok(());
    }
    match store
        .compare_and_set(Policy::key(), Precondition::Absent, &Policy::default())
        .await
    {
        Ok(_) | Err(Error::Conflict { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Opens the operator's store in `namespace` (default: the client's).
async fn open_store(client: kube::Client, namespace: Option<&str>, name: &str) -> Result<Store> {
    let backend = KubeBackend::builder(client, STORE);
    let backend = match namespace {
        Some(namespace) => backend.namespace(namespace),
        None => backend,
    };
    Store::builder()
        .name(name)
        .timeout(DEADLINE)
        .backend(backend.build().await?)
        .on_ready("seed-policy", seed_policy)
        .open()
        .await
}

// ---------------------------------------------------------------------------
// The controller

/// What every reconcile gets.
struct Context {
    store: Store,
    /// Each namespace's `resourceVersion` as last reconciled: shows how far this
    /// replica's controller got (the demonstration waits on it).
    reconciled: watch::Sender<BTreeMap<String, String>>,
}

fn is_exempt(namespace: &Namespace) -> bool {
    namespace.meta().deletion_timestamp.is_none()
        && namespace
            .labels()
            .get(EXEMPT_LABEL)
            .is_some_and(|value| value == "true")
}

/// Makes the recorded exemptions agree with one namespace. Writes only when
/// the local view disagrees (`update_if` declines otherwise, sending nothing),
/// so replicas that already agree stay quiet.
async fn reconcile(namespace: Arc<Namespace>, context: Arc<Context>) -> Result<Action> {
    let name = namespace.name_any();
    let wanted = is_exempt(&namespace).then(|| namespace.uid().unwrap_or_default());
    let written = context
        .store
        .update_if(ExemptNamespaces::key(), |current| {
            let recorded = current.and_then(|exempt| exempt.namespaces.get(&name));
            if recorded == wanted.as_ref() {
                return None;
            }
            let mut next = current.cloned().unwrap_or_default();
            match &wanted {
                Some(uid) => next.namespaces.insert(name.clone(), uid.clone()),
                None => next.namespaces.remove(&name),
            };
            Some(next)
        })
        .await?;
    if written.is_some() {
        tracing::info!(namespace = %name, exempt = wanted.is_some(), "recorded");
    }
    if let Some(version) = namespace.resource_version() {
        context.reconciled.send_modify(|seen| {
            seen.insert(name, version);
        });
    }
    Ok(Action::requeue(RESYNC))
}

fn error_policy(namespace: Arc<Namespace>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(namespace = %namespace.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Runs the controller until its stream ends (on a signal, with `on_signal`).
async fn run_controller(namespaces: Api<Namespace>, context: Arc<Context>, on_signal: bool) {
    let mut controller = Controller::new(namespaces, watcher::Config::default());
    if on_signal {
        controller = controller.shutdown_on_signal();
    }
    controller
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(namespace = %object.name, "reconciled"),
                // Logged by `error_policy`, or a namespace deleted meanwhile.
                Err(
                    controller::Error::ReconcilerFailed(..) | controller::Error::ObjectNotFound(..),
                ) => {}
                Err(error) => tracing::warn!(%error, "controller"),
            }
        })
        .await;
}

/// Drops entries whose namespace object is gone. The value is read before the
/// (fresh, not cached) LIST, so every entry read belongs to a namespace that
/// existed before the LIST: a uid missing from it is gone for good.
async fn sweep(store: &Store, namespaces: &Api<Namespace>) -> Result<usize> {
    let Some(recorded) = store.get(ExemptNamespaces::key())? else {
        return Ok(0);
    };
    if recorded.namespaces.is_empty() {
        return Ok(0);
    }
    let live: BTreeSet<String> = namespaces
        .list(&ListParams::default())
        .await
        .map_err(kube_error)?
        .items
        .iter()
        .filter_map(ResourceExt::uid)
        .collect();
    let gone: BTreeSet<(String, String)> = recorded
        .namespaces
        .iter()
        .filter(|(_, uid)| !live.contains(*uid))
        .map(|(name, uid)| (name.clone(), uid.clone()))
        .collect();
    if gone.is_empty() {
        return Ok(0);
    }
    store
        .update(ExemptNamespaces::key(), |current| {
            let mut next = current.cloned().unwrap_or_default();
            next.namespaces
                .retain(|name, uid| !gone.contains(&(name.clone(), uid.clone())));
            next
        })
        .await?;
    Ok(gone.len())
}

async fn sweep_every(store: Store, namespaces: Api<Namespace>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match sweep(&store, &namespaces).await {
            Ok(0) => {}
            Ok(swept) => tracing::info!(swept, "dropped entries of deleted namespaces"),
            Err(Error::Closed) => return,
            Err(error) => tracing::warn!(%error, "sweep failed; trying again later"),
        }
    }
}

// ---------------------------------------------------------------------------
// The admission handler

/// A decision and why.
enum Decision {
    Admit(String),
    Deny(String),
}

fn decide(store: &Store, request: &AdmissionRequest<Pod>) -> Result<Decision> {
    let namespace = request.namespace.as_deref().unwrap_or_default();
    if store
        .get(ExemptNamespaces::key())?
        .is_some_and(|exempt| exempt.namespaces.contains_key(namespace))
    {
        return Ok(Decision::Admit("exempt".to_owned()));
    }
    let policy = store.get(Policy::key())?.unwrap_or_default();
    let Some(spec) = request.object.as_ref().and_then(|pod| pod.spec.as_ref()) else {
        return Ok(Decision::Admit("no pod spec".to_owned()));
    };
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers);
    for container in containers {
        let image = container.image.as_deref().unwrap_or_default();
        if let Some(tag) = policy.denied_tag(image) {
            return Ok(Decision::Deny(format!(
                "container {}: image {image} has the denied tag {tag}",
                container.name
            )));
        }
    }
    Ok(Decision::Admit("no denied tag".to_owned()))
}

/// Answers one admission review for a Pod from the store's local view. A
/// store that cannot be read denies (fail closed), saying why.
fn review(store: &Store, incoming: AdmissionReview<Pod>) -> AdmissionReview<DynamicObject> {
    let request: AdmissionRequest<Pod> = match incoming.try_into() {
        Ok(request) => request,
        Err(e) => return AdmissionResponse::invalid(e).into_review(),
    };
    let mut response = AdmissionResponse::from(&request);
    match decide(store, &request) {
        Ok(Decision::Admit(reason)) => {
            response
                .audit_annotations
                .insert(REASON_ANNOTATION.to_owned(), reason);
        }
        Ok(Decision::Deny(reason)) => response = response.deny(reason),
        Err(e) => response = response.deny(format!("the exemptions could not be read: {e}")),
    }
    response.into_review()
}

/// The body kube-apiserver sends a validating webhook when a one-container
/// Pod is created.
fn pod_review(uid: &str, pod: &str, namespace: &str, image: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "name": pod,
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": { "username": "demo" },
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": { "name": pod, "namespace": namespace },
                "spec": { "containers": [{ "name": pod, "image": image }] },
            },
            "dryRun": false,
        },
    })
}

/// Runs a review body through the handler and returns whether it admitted
/// the Pod and why (the audit annotation, or the denial's message).
fn ask(store: &Store, body: Value) -> Result<(bool, String)> {
    let request = serde_json::from_value(body).map_err(|e| Error::backend("admission", e))?;
    let answer = review(store, request)
        .response
        .ok_or_else(|| Error::backend("admission", "the review has no response"))?;
    let reason = if answer.allowed {
        answer
            .audit_annotations
            .get(REASON_ANNOTATION)
            .cloned()
            .unwrap_or_default()
    } else {
        answer.result.message
    };
    Ok((answer.allowed, reason))
}

// ---------------------------------------------------------------------------
// On a cluster: one replica, until a signal

async fn on_cluster() -> Result<(), BoxError> {
    let client = kube::Client::try_default().await?;
    let replica = std::env::var("HOSTNAME").unwrap_or_else(|_| STORE.to_owned());
    let store = open_store(client.clone(), None, &replica).await?;
    println!(
        "{replica}: store `{STORE}` ready; exempt namespaces: {}",
        list(&ExemptNamespaces::names(&store)?)
    );
    let namespaces: Api<Namespace> = Api::all(client);
    let sweeper = tokio::spawn(sweep_every(store.clone(), namespaces.clone(), SWEEP_EVERY));
    let reporter = tokio::spawn(report(store.clone(), replica));
    let context = Arc::new(Context {
        store: store.clone(),
        reconciled: watch::Sender::new(BTreeMap::new()),
    });
    run_controller(namespaces, context, true).await;
    sweeper.abort();
    reporter.abort();
    store.close().await?;
    Ok(())
}

/// Prints the exemptions whenever they change, whoever changed them.
async fn report(store: Store, replica: String) {
    let mut changes = store.subscribe().key(ExemptNamespaces::KEY);
    while changes.next().await.is_some() {
        if let Ok(names) = ExemptNamespaces::names(&store) {
            println!("{replica}: exempt namespaces: {}", list(&names));
        }
    }
}

// ---------------------------------------------------------------------------
// The demonstration: several replicas in one process

/// One replica, as one pod of the Deployment would run it: its own client,
/// backend, store, controller and sweeper.
struct Replica {
    name: String,
    store: Store,
    reconciled: watch::Receiver<BTreeMap<String, String>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Replica {
    async fn start(index: usize, client: kube::Client) -> Result<Self> {
        let name = format!("replica {index}");
        let store = open_store(client.clone(), Some(NAME), &format!("operator-{index}")).await?;
        let (reconciled, watching) = watch::channel(BTreeMap::new());
        let context = Arc::new(Context {
            store: store.clone(),
            reconciled,
        });
        let namespaces: Api<Namespace> = Api::all(client);
        let tasks = vec![
            tokio::spawn(run_controller(namespaces.clone(), context, false)),
            tokio::spawn(sweep_every(store.clone(), namespaces, DEMO_SWEEP_EVERY)),
        ];
        Ok(Self {
            name,
            store,
            reconciled: watching,
            tasks,
        })
    }

    /// Asks this replica's handler about a one-container Pod; returns the
    /// answer as one line, and the decision for comparing replicas.
    fn ask(&self, pod: &str, namespace: &str, image: &str) -> Result<(String, (bool, String))> {
        let uid = format!("{}-{pod}-{namespace}", self.name.replace(' ', "-"));
        let (allowed, reason) = ask(&self.store, pod_review(&uid, pod, namespace, image))?;
        let line = if allowed {
            format!("{} admits pod {pod} in {namespace} ({reason})", self.name)
        } else {
            format!("{} denies pod {pod} in {namespace}: {reason}", self.name)
        };
        Ok((line, (allowed, reason)))
    }

    async fn stop(self) -> Result<()> {
        for task in &self.tasks {
            task.abort();
        }
        // Aborted tasks end at their next await; waiting for that drops their
        // watches before the API server goes away.
        for task in self.tasks {
            let _ = task.await;
        }
        self.store.close().await
    }
}

/// Asks every replica the same question, prints the answers and checks they agree.
fn ask_all(replicas: &[Replica], pod: &str, namespace: &str, image: &str) -> Result<()> {
    let mut answers = BTreeSet::new();
    for replica in replicas {
        let (line, decision) = replica.ask(pod, namespace, image)?;
        println!("{line}");
        answers.insert(decision);
    }
    if answers.len() > 1 {
        return Err(demo_error(format!(
            "replicas disagree on pod {pod} in {namespace}"
        )));
    }
    Ok(())
}

/// Waits until every replica's controller reconciled the namespaces at these
/// versions (so no older write is still in flight), then until every
/// replica's view shows `exempt`.
async fn converge(
    replicas: &[Replica],
    versions: &BTreeMap<String, String>,
    exempt: &[&str],
) -> Result<()> {
    for replica in replicas {
        let mut reconciled = replica.reconciled.clone();
        let caught_up = reconciled.wait_for(|seen| {
            versions
                .iter()
                .all(|(name, version)| seen.get(name) == Some(version))
        });
        match tokio::time::timeout(DEADLINE, caught_up).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return Err(Error::Closed),
            Err(_) => {
                return Err(Error::Timeout {
                    waiting_for: format!("{} to reconcile every namespace", replica.name),
                    timeout: DEADLINE,
                });
            }
        }
    }
    let wanted: BTreeSet<String> = exempt.iter().map(|name| (*name).to_owned()).collect();
    for replica in replicas {
        let what = format!("{} to see the exemptions", replica.name);
        until(&replica.store, &what, |store| {
            Ok(ExemptNamespaces::names(store)? == wanted)
        })
        .await?;
    }
    for replica in replicas {
        if ExemptNamespaces::names(&replica.store)? != wanted {
            return Err(demo_error(format!("{} moved on", replica.name)));
        }
    }
    let agree = if replicas.len() == 1 {
        "1 replica agrees".to_owned()
    } else {
        format!("{} replicas agree", replicas.len())
    };
    let plural = if wanted.len() == 1 { "" } else { "s" };
    println!(
        "converged: {agree} on {} exempt namespace{plural}: {}",
        wanted.len(),
        list(&wanted)
    );
    Ok(())
}

/// Waits until `check` holds on the store's local view, with a deadline.
async fn until(store: &Store, what: &str, check: impl Fn(&Store) -> Result<bool>) -> Result<()> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut changes = store.subscribe();
    loop {
        if check(store)? {
            return Ok(());
        }
        if tokio::time::timeout_at(deadline, changes.next())
            .await
            .is_err()
        {
            return Err(Error::Timeout {
                waiting_for: what.to_owned(),
                timeout: DEADLINE,
            });
        }
    }
}

/// A cluster admin's hand: creates, relabels and deletes namespaces.
struct Admin {
    namespaces: Api<Namespace>,
}

impl Admin {
    async fn create(&self, name: &str, exempt: bool) -> Result<String> {
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some(name.to_owned());
        if exempt {
            namespace.metadata.labels = Some(BTreeMap::from([(
                EXEMPT_LABEL.to_owned(),
                "true".to_owned(),
            )]));
        }
        let created = self
            .namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .map_err(kube_error)?;
        Ok(created.resource_version().unwrap_or_default())
    }

    async fn label(&self, name: &str, exempt: bool) -> Result<String> {
        let value = if exempt { json!("true") } else { Value::Null };
        let patch = json!({ "metadata": { "labels": { EXEMPT_LABEL: value } } });
        let patched = self
            .namespaces
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(kube_error)?;
        Ok(patched.resource_version().unwrap_or_default())
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.namespaces
            .delete(name, &DeleteParams::default())
            .await
            .map_err(kube_error)?;
        Ok(())
    }
}

async fn demo(cluster: &TestCluster, count: usize) -> Result<()> {
    let failed = |e: store_kube::testing::Error| Error::backend("test cluster", e);
    cluster
        .apply_crd(&store_kube::resource::store_shard_crd())
        .await
        .map_err(failed)?;
    let admin = Admin {
        namespaces: Api::all(cluster.client().map_err(failed)?),
    };
    admin.create(NAME, false).await?;
    let mut replicas = Vec::with_capacity(count);
    for index in 0..count {
        replicas.push(Replica::start(index, cluster.client().map_err(failed)?).await?);
        println!("replica {index} ready: store `{STORE}` in namespace {NAME}");
    }

    let mut versions = BTreeMap::new();
    for (name, exempt) in [("team-a", true), ("team-b", false), ("team-c", true)] {
        versions.insert(name.to_owned(), admin.create(name, exempt).await?);
    }
    println!("created namespaces team-a (exempt), team-b, team-c (exempt)");
    converge(&replicas, &versions, &["team-a", "team-c"]).await?;
    ask_all(&replicas, "web", "team-a", "nginx:latest")?;
    ask_all(&replicas, "web", "team-b", "nginx:latest")?;

    versions.insert("team-a".to_owned(), admin.label("team-a", false).await?);
    versions.insert("team-b".to_owned(), admin.label("team-b", true).await?);
    println!("relabelled: team-a no longer exempt, team-b exempt");
    converge(&replicas, &versions, &["team-b", "team-c"]).await?;
    ask_all(&replicas, "web", "team-a", "nginx:latest")?;
    ask_all(&replicas, "web", "team-b", "nginx:latest")?;

    admin.delete("team-c").await?;
    println!("deleted namespace team-c");
    converge(&replicas, &BTreeMap::new(), &["team-b"]).await?;

    let (first, last) = match (replicas.first(), replicas.last()) {
        (Some(first), Some(last)) => (first, last),
        _ => return Err(demo_error("no replicas")),
    };
    println!(
        "{}",
        last.ask("api", "team-a", "registry.example/api:edge")?.0
    );
    let written = first
        .store
        .update(Policy::key(), |current| {
            let mut next = current.cloned().unwrap_or_default();
            next.denied_tags.insert("edge".to_owned());
            next
        })
        .await?;
    println!(
        "{} writes the policy: {}",
        first.name,
        written.value.describe()
    );
    until(
        &last.store,
        "the policy to reach the last replica",
        |store| Ok(store.get(Policy::key())?.as_deref() == Some(&*written.value)),
    )
    .await?;
    println!(
        "{} sees the policy written on {}: {}",
        last.name,
        first.name,
        written.value.describe()
    );
    println!(
        "{}",
        last.ask("api", "team-a", "registry.example/api:edge")?.0
    );

    for replica in replicas {
        replica.stop().await?;
    }
    println!(
        "stopped {count} replica{}",
        if count == 1 { "" } else { "s" }
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Manifests: what `deploy/operator` holds

/// Every object `deploy/operator` installs, by file name; files apply in name order.
fn manifests() -> Vec<(&'static str, Value)> {
    let labels = json!({ "app.kubernetes.io/name": NAME });
    let namespace = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": NAME },
    });
    let binding = |kind: &str, namespaced: bool| {
        let mut metadata = json!({ "name": NAME });
        if namespaced {
            metadata["namespace"] = json!(NAME);
        }
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": format!("{kind}Binding"),
            "metadata": metadata,
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": NAME },
            "subjects": [{ "kind": "ServiceAccount", "name": NAME, "namespace": NAME }],
        })
    };
    let rbac = json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": { "name": NAME, "namespace": NAME },
            },
            {
                // The controller's watch and the sweep's LIST; nothing is written.
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": { "name": NAME },
                "rules": [{ "apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"] }],
            },
            binding("ClusterRole", false),
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": { "name": NAME, "namespace": NAME },
                "rules": [{
                    "apiGroups": [store_kube::resource::GROUP],
                    "resources": ["storeshards"],
                    "verbs": STORE_VERBS,
                }],
            },
            binding("Role", true),
        ],
    });
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": NAME, "namespace": NAME, "labels": labels },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": labels },
            "template": {
                "metadata": { "labels": labels },
                "spec": {
                    "serviceAccountName": NAME,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 65532,
                        "seccompProfile": { "type": "RuntimeDefault" },
                    },
                    "containers": [{
                        "name": "operator",
                        "image": IMAGE,
                        "imagePullPolicy": "IfNotPresent",
                        "args": ["--kube"],
                        "env": [{ "name": "RUST_LOG", "value": "info" }],
                        "resources": {
                            "requests": { "cpu": "10m", "memory": "32Mi" },
                            "limits": { "memory": "128Mi" },
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": { "drop": ["ALL"] },
                        },
                    }],
                },
            },
        },
    });
    vec![
        ("00-namespace.json", namespace),
        ("10-rbac.json", rbac),
        ("20-deployment.json", deployment),
    ]
}

fn write_manifests(dir: &Path) -> Result<(), BoxError> {
    std::fs::create_dir_all(dir)?;
    for (name, value) in manifests() {
        let mut text = serde_json::to_string_pretty(&value)?;
        text.push('\n');
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Command line

fn kube_error(error: kube::Error) -> Error {
    Error::backend("kube", error)
}

fn demo_error(message: impl Into<String>) -> Error {
    Error::backend("operator", message.into())
}

fn list(names: &BTreeSet<String>) -> String {
    if names.is_empty() {
        return "none".to_owned();
    }
    names
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

enum Mode {
    Fake,
    Real,
    Kube,
    Manifests(PathBuf),
}

const USAGE: &str = "usage: operator [--fake | --real] [--replicas N] | --kube | --manifests <dir>";

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<(Mode, usize), String> {
    let mut mode = Mode::Fake;
    let mut replicas = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--fake" => mode = Mode::Fake,
            "--real" => mode = Mode::Real,
            "--kube" => mode = Mode::Kube,
            "--manifests" => {
                let dir = args.next().ok_or("--manifests needs a directory")?;
                mode = Mode::Manifests(PathBuf::from(dir));
            }
            "--replicas" => {
                let count = args.next().ok_or("--replicas needs a number")?;
                match count.parse::<usize>() {
                    Ok(count @ 1..=16) => replicas = Some(count),
                    _ => return Err(format!("--replicas takes 1 to 16, not {count:?}")),
                }
            }
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    if replicas.is_some() && matches!(mode, Mode::Kube | Mode::Manifests(_)) {
        return Err(
            "--replicas is for --fake and --real; on a cluster, scale the Deployment".into(),
        );
    }
    Ok((mode, replicas.unwrap_or(2)))
}

async fn run(mode: Mode, replicas: usize) -> Result<(), BoxError> {
    match mode {
        Mode::Fake => {
            let cluster = TestCluster::fake().await?;
            demo(&cluster, replicas).await?;
        }
        Mode::Real => {
            // Owned here, so etcd and kube-apiserver stop when the demonstration ends.
            let plane = ControlPlane::start().await?;
            let cluster = TestCluster::from_control_plane(Arc::new(plane));
            demo(&cluster, replicas).await?;
        }
        Mode::Kube => on_cluster().await?,
        Mode::Manifests(dir) => write_manifests(&dir)?,
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let (mode, replicas) = match parse_args(std::env::args().skip(1)) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("operator: {message}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let default_level = if matches!(mode, Mode::Kube) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(mode, replicas).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("operator failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_without_a_tag_count_as_latest_and_digests_always_pass() {
        let policy = Policy::default();
        assert_eq!(policy.denied_tag("nginx"), Some("latest"));
        assert_eq!(policy.denied_tag("nginx:latest"), Some("latest"));
        assert_eq!(policy.denied_tag("localhost:5000/team/app"), Some("latest"));
        assert_eq!(policy.denied_tag("localhost:5000/team/app:1.4"), None);
        assert_eq!(policy.denied_tag("nginx:latest@sha256:0123"), None);
    }

    /// The handler only reads the store, so the memory backend stands in for
    /// the cluster.
    #[tokio::test]
    async fn pods_in_exempt_namespaces_are_admitted_whatever_their_images() -> Result<(), BoxError>
    {
        let store = Store::memory().await?;
        let exempt = ExemptNamespaces {
            namespaces: BTreeMap::from([("tools".to_owned(), "uid-1".to_owned())]),
        };
        store.set(ExemptNamespaces::key(), &exempt)?;
        let (allowed, reason) = ask(&store, pod_review("1", "web", "tools", "nginx"))?;
        assert!(allowed);
        assert_eq!(reason, "exempt");
        let (allowed, reason) = ask(&store, pod_review("2", "web", "apps", "nginx"))?;
        assert!(!allowed);
        assert_eq!(
            reason,
            "container web: image nginx has the denied tag latest"
        );
        let (allowed, _) = ask(&store, pod_review("3", "web", "apps", "nginx:1.27"))?;
        assert!(allowed);
        Ok(())
    }

    #[tokio::test]
    async fn a_malformed_review_is_answered_not_a_panic() -> Result<(), BoxError> {
        let store = Store::memory().await?;
        let mut body = pod_review("1", "web", "apps", "nginx");
        body["request"] = Value::Null;
        let request = serde_json::from_value(body)?;
        let answer = review(&store, request).response.ok_or("no response")?;
        assert!(!answer.allowed);
        Ok(())
    }

    #[test]
    fn bad_arguments_are_errors() {
        let parse = |args: &[&str]| parse_args(args.iter().map(|a| (*a).to_owned()));
        assert!(parse(&["--replicas", "0"]).is_err());
        assert!(parse(&["--replicas", "many"]).is_err());
        assert!(parse(&["--replicas"]).is_err());
        assert!(parse(&["--kube", "--replicas", "3"]).is_err());
        assert!(parse(&["--frobnicate"]).is_err());
        assert!(matches!(parse(&[]), Ok((Mode::Fake, 2))));
        assert!(matches!(parse(&["--replicas", "3"]), Ok((Mode::Fake, 3))));
    }
}

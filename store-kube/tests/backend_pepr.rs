//! The kube backend in Pepr mode, each case on the fake API server and on a
//! real control plane: writes the server refuses, keys other writers stored,
//! and the v1-to-v2 migration beside other writers and beside Pepr's own; and
//! the one native-layout case the same server limits call for.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use store_core::backend::{Batch, Op, Outcome};
use store_core::{Backend, Error, Payload, Store};
use store_kube::KubeBackend;
use store_kube::resource::{pepr_store_crd, pepr_store_resource};
use store_kube_testing::{ControlPlane, FakeApiServer, TestCluster};
use store_kube_testing::{
    DEFAULT_DEADLINE as DEADLINE, on_both_tiers, unique_name as unique, within,
};

const PLACEHOLDER: &str = "__pepr_do_not_delete__";

/// One Pepr module's store object in a namespace of its own.
struct Module {
    client: kube::Client,
    namespace: String,
    uuid: String,
    api: Api<DynamicObject>,
}

impl Module {
    async fn new(cluster: &TestCluster) -> Self {
        Self::with_crd(cluster, &pepr_store_crd()).await
    }

    async fn with_crd(cluster: &TestCluster, crd: &CustomResourceDefinition) -> Self {
        cluster.apply_crd(crd).await.expect("CRD");
        let namespace = cluster.create_namespace("pepr").await.expect("namespace");
        let client = cluster.client().expect("client");
        Module {
            api: Api::namespaced_with(client.clone(), &namespace, &pepr_store_resource()),
            client,
            namespace,
            uuid: unique("m"),
        }
    }

    fn object(&self) -> String {
        format!("pepr-{}-store", self.uuid)
    }

    /// Creates the object as a Pepr pod leaves it, with `data` besides the
    /// placeholder.
    async fn seed(&self, data: &[(&str, &str)]) {
        let mut map = serde_json::Map::new();
        map.insert(PLACEHOLDER.into(), json!("k-thx-bye"));
        for (k, v) in data {
            map.insert((*k).to_owned(), json!(v));
        }
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "pepr.dev/v1",
            "kind": "PeprStore",
            "metadata": { "name": self.object(), "labels": { "pepr.dev-cacheID": "1" } },
            "data": map,
        }))
        .expect("object");
        within("seeding", self.api.create(&PostParams::default(), &object))
            .await
            .expect("seeded");
    }

    async fn backend(&self, capability: &str, others: &[&str], delay: Duration) -> KubeBackend {
        within(
            "the backend to start",
            KubeBackend::builder(self.client.clone(), "unused")
                .pepr(&self.uuid, capability)
                .pepr_capabilities(others.iter().copied())
                .namespace(&self.namespace)
                .pepr_v1_removal_delay(delay)
                .request_timeout(Duration::from_secs(5))
                .build(),
        )
        .await
        .expect("backend starts")
    }

    async fn store(&self, capability: &str, others: &[&str], delay: Duration) -> Store {
        let backend = self.backend(capability, others, delay).await;
        within(
            "the store to open",
            Store::builder()
                .backend(backend)
                .linked_hooks(false)
                .timeout(Duration::from_secs(10))
                .retry_backoff(Duration::from_millis(5), Duration::from_millis(200))
                .open(),
        )
        .await
        .expect("store opens")
    }

    async fn data(&self) -> BTreeMap<String, String> {
        let object = within("a read", self.api.get(&self.object()))
            .await
            .expect("object");
        serde_json::from_value(object.data["data"].clone()).expect("a map of strings")
    }

    /// Waits until `check` holds for the object's data.
    async fn until(&self, what: &str, check: impl Fn(&BTreeMap<String, String>) -> bool) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if check(&self.data().await) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.data().await.keys().collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn rejected_key(result: &Result<impl std::fmt::Debug, Error>) -> Option<(&str, &str)> {
    match result {
        Err(Error::Rejected { key, reason }) => Some((key, reason)),
        _ => None,
    }
}

// The API server cannot hold an empty string in a `data` map (it reads it as
// `null`); the write is refused for good, at once, and nothing else waits on it.
async fn a_write_the_server_refuses_fails_alone_at_once_and_holds_up_no_other_write(
    cluster: &TestCluster,
) {
    let module = Module::new(cluster).await;
    let store = module.store("cap", &[], Duration::ZERO).await;
    // No write form stores an empty string in Pepr's `data` map, so the store
    // refuses it at the call, before any request.
    let refused = store.set_and_wait("r-empty", &String::new()).await;
    let (key, reason) = rejected_key(&refused).unwrap_or_else(|| panic!("{refused:?}"));
    assert_eq!(key, "r-empty");
    assert!(reason.contains("empty string"), "{reason}");
    within("a later write", store.set_and_wait("r-after", "after"))
        .await
        .expect("a later write goes through");

    // Sent anyway (by a backend user), the server refuses it; the backend fails
    // that write alone, at once, naming the field, and applies the others of
    // the same patch.
    let backend = module.backend("cap", &[], Duration::ZERO).await;
    let started = tokio::time::Instant::now();
    let applied = within(
        "three writes in one batch",
        backend.apply(Batch {
            ops: vec![
                Op::put("a", Payload::from("\"1\"")),
                Op::put("e", Payload::from("\"\"")),
                Op::put("b", Payload::from("\"2\"")),
            ],
            atomic: false,
        }),
    )
    .await
    .expect("the batch is answered");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once, not after retries: {:?}",
        started.elapsed()
    );
    assert!(
        matches!(applied.outcomes[0], Outcome::Applied(_)),
        "{applied:?}"
    );
    assert!(
        matches!(applied.outcomes[2], Outcome::Applied(_)),
        "{applied:?}"
    );
    match &applied.outcomes[1] {
        Outcome::Failed(Error::Rejected { key, reason }) => {
            assert_eq!(key, "e");
            assert!(
                reason.contains("data.cap-v2-e"),
                "the reason names the field: {reason}"
            );
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    let data = module.data().await;
    assert_eq!(
        data.get("cap-v2-r-after").map(String::as_str),
        Some("after")
    );
    assert_eq!(data.get("cap-v2-a").map(String::as_str), Some("1"));
    assert_eq!(data.get("cap-v2-b").map(String::as_str), Some("2"));
    assert!(!data.contains_key("cap-v2-r-empty") && !data.contains_key("cap-v2-e"));
}
on_both_tiers!(a_write_the_server_refuses_fails_alone_at_once_and_holds_up_no_other_write);

// The server refuses an empty string in the native `spec.data` map too, but
// the native layout stores JSON text, so an empty string is `""` there.
async fn an_empty_string_is_stored_in_the_native_layout(cluster: &TestCluster) {
    cluster
        .apply_crd(&store_kube::resource::store_shard_crd())
        .await
        .expect("CRD");
    let namespace = cluster.create_namespace("native").await.expect("namespace");
    let backend = within(
        "the backend to start",
        KubeBackend::builder(cluster.client().expect("client"), "empty")
            .namespace(&namespace)
            .build(),
    )
    .await
    .expect("backend");
    let store = within(
        "the store to open",
        Store::builder().backend(backend).linked_hooks(false).open(),
    )
    .await
    .expect("store");
    within("an empty string", store.set_and_wait("e", &String::new()))
        .await
        .expect("stored");
    let shards: Api<DynamicObject> = Api::namespaced_with(
        cluster.client().expect("client"),
        &namespace,
        &store_kube::resource::store_shard_resource(),
    );
    let object = within("a read", shards.get("empty-0"))
        .await
        .expect("shard");
    assert_eq!(object.data["spec"]["data"]["e"], json!("\"\""));
}
on_both_tiers!(an_empty_string_is_stored_in_the_native_layout);

// A schema limit on the whole map (here `maxProperties`) names no key, so the
// patch is halved until each refused write is alone. It narrows the PeprStore
// CRD, so on the real tier it runs on a control plane of its own.
async fn narrowing_down(cluster: &TestCluster) {
    let mut crd = serde_json::to_value(pepr_store_crd()).expect("CRD");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["data"]["maxProperties"] =
        json!(4);
    let crd = serde_json::from_value(crd).expect("CRD");
    let module = Module::with_crd(cluster, &crd).await;
    let store = module.store("cap", &[], Duration::ZERO).await;
    let started = tokio::time::Instant::now();
    let results = within("five writes", async {
        tokio::join!(
            store.set_and_wait("k0", "0"),
            store.set_and_wait("k1", "1"),
            store.set_and_wait("k2", "2"),
            store.set_and_wait("k3", "3"),
            store.set_and_wait("k4", "4"),
        )
    })
    .await;
    let results = [results.0, results.1, results.2, results.3, results.4];
    let applied = results.iter().filter(|r| r.is_ok()).count();
    let refused: Vec<_> = results.iter().filter_map(rejected_key).collect();
    assert_eq!((applied, refused.len()), (3, 2), "{results:?}");
    assert!(
        refused.iter().all(|(_, reason)| reason.contains("data")),
        "{refused:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        module.data().await.len(),
        4,
        "the placeholder and three keys"
    );
    if let Some(server) = cluster.fake_server() {
        let refusals = server
            .requests()
            .iter()
            .filter(|r| r.method == "PATCH" && r.status == 422)
            .count();
        // Two refused alone, and at least one larger patch halved before them.
        assert!(refusals >= 3, "{refusals} refused patches");
    }
}

mod a_refusal_naming_no_write_is_narrowed_down_to_the_writes_it_blames {
    use super::*;

    #[tokio::test]
    async fn on_the_fake() {
        let server = FakeApiServer::start().await.expect("fake API server");
        narrowing_down(&TestCluster::from_fake(server)).await;
    }

    #[tokio::test]
    #[cfg_attr(
        not(real_control_plane),
        ignore = "no control plane found at build time: run `cargo xtask envtest`"
    )]
    async fn on_a_real_control_plane_of_its_own() {
        let plane = ControlPlane::start()
            .await
            .expect("a control plane of its own");
        narrowing_down(&TestCluster::from_control_plane(Arc::new(plane))).await;
    }
}

// Another writer (a Pepr pod) may store keys our key rules refuse; whatever
// the store lists, it can remove and clear.
async fn keys_another_writer_stored_that_break_our_key_rules_are_removed_and_cleared(
    cluster: &TestCluster,
) {
    let module = Module::new(cluster).await;
    let control = "bell\u{7}key";
    let long = "k".repeat(1_100);
    let long_map_key = format!("cap-v2-{long}");
    module
        .seed(&[
            ("cap-v2-bell\u{7}key", "x"),
            (long_map_key.as_str(), "y"),
            ("cap-v2-plain", "z"),
            ("other-v2-kept", "w"),
        ])
        .await;
    let store = module.store("cap", &[], Duration::ZERO).await;
    let mut keys = store.keys();
    keys.sort();
    assert_eq!(keys, [control, long.as_str(), "plain"]);
    assert_eq!(
        store
            .get::<String>(control)
            .expect("read")
            .as_deref()
            .map(String::as_str),
        Some("x")
    );
    within(
        "removing a key with a control character",
        store.remove_and_wait(control),
    )
    .await
    .expect("removed");
    assert!(!module.data().await.contains_key("cap-v2-bell\u{7}key"));
    within(
        "removing a key over 1,024 bytes",
        store.remove_and_wait(long.as_str()),
    )
    .await
    .expect("removed");
    assert!(!module.data().await.contains_key(&long_map_key));

    module
        .api
        .patch(
            &module.object(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "data": {
                long_map_key.clone(): "again",
                "cap-v2-bell\u{7}key": "again",
            } })),
        )
        .await
        .expect("another writer stores them again");
    within("clear", store.clear()).await.expect("cleared");
    let data = module.data().await;
    assert_eq!(
        data.keys().map(String::as_str).collect::<Vec<_>>(),
        [PLACEHOLDER, "other-v2-kept"],
        "clear removes every key of ours, and only those"
    );
}
on_both_tiers!(keys_another_writer_stored_that_break_our_key_rules_are_removed_and_cleared);

// `hello` and `hello-pepr` each migrate their own v1 key, whatever the order
// they start in and whichever of them declares the other (an undeclared
// `hello-pepr` that migrated first is known by its v2 keys). The one case
// that cannot be told apart: `hello` starting first without knowing of
// `hello-pepr` takes `hello-pepr-old` for its own key `pepr-old` (and
// `hello-pepr`, starting before the original is removed, copies it too).
async fn each_v1_key_is_migrated_by_the_longest_capability_that_names_it(cluster: &TestCluster) {
    for hello_first in [true, false] {
        for hello_declares in [true, false] {
            for pepr_declares in [true, false] {
                let case = format!(
                    "hello first: {hello_first}, hello declares hello-pepr: {hello_declares}, \
                     hello-pepr declares hello: {pepr_declares}"
                );
                let module = Module::new(cluster).await;
                module
                    .seed(&[("hello-old", "h"), ("hello-pepr-old", "p")])
                    .await;
                let hello_others: &[&str] = if hello_declares { &["hello-pepr"] } else { &[] };
                let pepr_others: &[&str] = if pepr_declares { &["hello"] } else { &[] };
                let start = |name: &'static str| {
                    let others = if name == "hello" {
                        hello_others
                    } else {
                        pepr_others
                    };
                    module.backend(name, others, Duration::ZERO)
                };
                let (first, second) = if hello_first {
                    ("hello", "hello-pepr")
                } else {
                    ("hello-pepr", "hello")
                };
                let _first = start(first).await;
                let _second = start(second).await;
                let taken_by_hello = hello_first && !hello_declares;
                module
                    .until(&case, |data| {
                        let own = data.get("hello-pepr-v2-old").map(String::as_str);
                        let taken = data.get("hello-v2-pepr-old").map(String::as_str);
                        let pepr_key = if taken_by_hello {
                            taken == Some("p") && matches!(own, None | Some("p"))
                        } else {
                            own == Some("p") && taken.is_none()
                        };
                        data.get("hello-v2-old").map(String::as_str) == Some("h")
                            && pepr_key
                            && !data.contains_key("hello-old")
                            && !data.contains_key("hello-pepr-old")
                    })
                    .await;
                let data = module.data().await;
                let expected = if taken_by_hello { 3..=4 } else { 3..=3 };
                assert!(
                    expected.contains(&data.len()),
                    "{case}: nothing else moved: {:?}",
                    data.keys().collect::<Vec<_>>()
                );
            }
        }
    }
}
on_both_tiers!(each_v1_key_is_migrated_by_the_longest_capability_that_names_it);

async fn a_read_only_open_migrates_creates_and_writes_nothing(cluster: &TestCluster) {
    let module = Module::new(cluster).await;
    let read_only = || {
        KubeBackend::builder(module.client.clone(), "unused")
            .pepr(&module.uuid, "hello")
            .namespace(&module.namespace)
            .pepr_v1_removal_delay(Duration::ZERO)
            .read_only(true)
            .build()
    };

    // No object: nothing is created, and the store reads as empty.
    let backend = within("a read-only open", read_only())
        .await
        .expect("opens");
    let listing = within("a listing", backend.list("")).await.expect("lists");
    assert!(listing.entries.is_empty(), "{:?}", listing.entries);
    let missing = within("a read", module.api.get_opt(&module.object())).await;
    assert!(
        matches!(missing, Ok(None)),
        "a read-only open created the object: {missing:?}"
    );
    drop(backend);

    // A v1 key stays where it is, a v2 key reads, a write is refused, and the
    // object is not touched.
    module
        .seed(&[("hello-old", "h"), ("hello-v2-k", "v")])
        .await;
    let version = |object: DynamicObject| object.metadata.resource_version;
    let before = version(
        within("a read", module.api.get(&module.object()))
            .await
            .expect("object"),
    );
    let backend = within("a read-only open", read_only())
        .await
        .expect("opens");
    let listing = within("a listing", backend.list("")).await.expect("lists");
    let keys: Vec<&str> = listing.entries.iter().map(|e| e.key()).collect();
    assert_eq!(keys, ["k"], "only the v2 key is the store's");
    let batch = Batch {
        ops: vec![Op::put("k", Payload::from("\"w\"")), Op::delete("old")],
        atomic: false,
    };
    let applied = within("a write", backend.apply(batch))
        .await
        .expect("answered");
    for (outcome, key) in applied.outcomes.iter().zip(["k", "old"]) {
        assert!(
            matches!(outcome, Outcome::Failed(Error::Rejected { key: k, reason })
                if k == key && reason.contains("read-only")),
            "{key}: {outcome:?}"
        );
    }
    let after = version(
        within("a read", module.api.get(&module.object()))
            .await
            .expect("object"),
    );
    assert_eq!(before, after, "the object was written");
    assert_eq!(
        module.data().await.get("hello-old").map(String::as_str),
        Some("h")
    );
}
on_both_tiers!(a_read_only_open_migrates_creates_and_writes_nothing);

/// Other replicas, each writing every few milliseconds, until stopped.
fn busy_writers(
    module: &Module,
    replicas: usize,
) -> (
    Arc<AtomicBool>,
    Arc<AtomicUsize>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let tasks = (0..replicas)
        .map(|replica| {
            let (api, name) = (module.api.clone(), module.object());
            let (stop, written) = (Arc::clone(&stop), Arc::clone(&written));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let n = written.load(Ordering::Relaxed);
                    let patch: json_patch::Patch = serde_json::from_value(json!([
                        { "op": "add", "path": format!("/data/other-v2-tick{replica}"), "value": n.to_string() },
                    ]))
                    .expect("patch");
                    api.patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch))
                        .await
                        .expect("the busy writer's patch");
                    written.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        })
        .collect();
    (stop, written, tasks)
}

async fn the_v1_migration_finishes_while_another_replica_writes_every_few_ms(
    cluster: &TestCluster,
) {
    let module = Module::new(cluster).await;
    let v1: Vec<(String, String)> = (0..20)
        .map(|i| (format!("cap-k{i}"), format!("v{i}")))
        .collect();
    let seeded: Vec<(&str, &str)> = v1.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    module.seed(&seeded).await;
    let (stop, written, writers) = busy_writers(&module, 4);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while written.load(Ordering::Relaxed) < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the busy writer writes"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = written.load(Ordering::Relaxed);
    let store = module.store("cap", &[], Duration::ZERO).await;
    for i in 0..20 {
        assert_eq!(
            store
                .get::<String>(format!("k{i}").as_str())
                .expect("read")
                .as_deref()
                .map(String::as_str),
            Some(format!("v{i}").as_str()),
            "v1 key k{i} is readable at once"
        );
    }
    module
        .until("the v1 originals to go", |data| {
            !data.keys().any(|k| k.starts_with("cap-k"))
        })
        .await;
    assert!(
        written.load(Ordering::Relaxed) > before,
        "the other replica kept writing meanwhile"
    );
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        within("the busy writers to stop", writer)
            .await
            .expect("the busy writers never failed");
    }
}
on_both_tiers!(the_v1_migration_finishes_while_another_replica_writes_every_few_ms);

/// The migration patch Pepr 1.1.4 sends (`migrateStore.ts`), from its read of
/// `data`, for its capabilities: for every key starting with a capability's
/// name and not with `<name>-v2`, `remove` it (path unescaped) and `add` the v2
/// copy; no `test`; the cache-ID label replaced last.
fn pepr_1_1_4_migration(data: &serde_json::Map<String, Value>, capabilities: &[&str]) -> Value {
    let mut ops = Vec::new();
    for name in capabilities {
        let offset = format!("{name}-").len();
        for (key, value) in data {
            if key.starts_with(name) && !key.starts_with(&format!("{name}-v2")) {
                let rest = &key[offset.min(key.len())..];
                ops.push(json!({"op": "remove", "path": format!("/data/{name}-{rest}")}));
                ops.push(
                    json!({"op": "add", "path": format!("/data/{name}-v2-{rest}"), "value": value}),
                );
            }
        }
    }
    ops.push(json!({"op": "replace", "path": "/metadata/labels/pepr.dev-cacheID", "value": "2"}));
    Value::Array(ops)
}

// A Pepr pod of capabilities `[holdout, other]` reads the object, a Rust
// `holdout` store starts and migrates, then the Pepr pod's migration patch
// arrives: it must still apply, so `other`'s keys are migrated too.
async fn a_pepr_pod_starting_beside_us_completes_its_own_migration_of_every_capability(
    cluster: &TestCluster,
) {
    let module = Module::new(cluster).await;
    module
        .seed(&[
            ("holdout-a", "1"),
            ("holdout-b", "2"),
            ("other-c", "3"),
            ("other-d", "4"),
        ])
        .await;
    let read = within("Pepr's read", module.api.get(&module.object()))
        .await
        .expect("read");
    let seen = read.data["data"].as_object().expect("data").clone();
    // Removal long after the Pepr pod's patch, as for a pod starting beside us.
    let store = module.store("holdout", &[], Duration::from_secs(600)).await;
    let mut keys = store.keys();
    keys.sort();
    assert_eq!(keys, ["a", "b"], "our v1 keys are readable at once");
    let patch: json_patch::Patch =
        serde_json::from_value(pepr_1_1_4_migration(&seen, &["holdout", "other"])).expect("patch");
    within(
        "Pepr's migration patch",
        module.api.patch(
            &module.object(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        ),
    )
    .await
    .expect("Pepr's migration patch applies beside ours");
    let data = module.data().await;
    let expected: BTreeMap<String, String> = [
        (PLACEHOLDER, "k-thx-bye"),
        ("holdout-v2-a", "1"),
        ("holdout-v2-b", "2"),
        ("other-v2-c", "3"),
        ("other-v2-d", "4"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(data, expected);
    assert_eq!(
        store
            .get::<String>("a")
            .expect("read")
            .as_deref()
            .map(String::as_str),
        Some("1")
    );
}
on_both_tiers!(a_pepr_pod_starting_beside_us_completes_its_own_migration_of_every_capability);

/// Grows the object with another writer's keys, as a Pepr pod would, until its
/// JSON is at least `target` bytes (and at most a few dozen more); returns the
/// size reached.
async fn fill(module: &Module, target: usize) -> usize {
    let mut i = 0;
    loop {
        let object = within("a read", module.api.get(&module.object()))
            .await
            .expect("object");
        let size = serde_json::to_string(&object).expect("JSON").len();
        if size >= target {
            return size;
        }
        let value = "f".repeat((target - size).saturating_sub(40).clamp(1, 60_000));
        let patch: json_patch::Patch = serde_json::from_value(json!([
            { "op": "add", "path": format!("/data/other-v2-fill{i}"), "value": value },
        ]))
        .expect("patch");
        within(
            "a filling write",
            module.api.patch(
                &module.object(),
                &PatchParams::default(),
                &Patch::Json::<()>(patch),
            ),
        )
        .await
        .expect("the server takes it");
        i += 1;
    }
}

// A Pepr pod filled its object to 1,127,231 bytes of JSON and went on writing;
// the server takes about 1.5 MiB, so a small write of ours fits too.
async fn an_object_another_writer_filled_past_a_mebibyte_still_takes_a_small_key(
    cluster: &TestCluster,
) {
    let module = Module::new(cluster).await;
    module.seed(&[]).await;
    let store = module.store("cap", &[], Duration::ZERO).await;
    let size = fill(&module, 1_127_231).await;
    let key = "k".repeat(49);
    within("a small write", store.set_and_wait(key.as_str(), "v"))
        .await
        .unwrap_or_else(|e| panic!("refused at {size} bytes: {e}"));
    assert_eq!(
        module
            .data()
            .await
            .get(&format!("cap-v2-{key}"))
            .map(String::as_str),
        Some("v")
    );
}
on_both_tiers!(an_object_another_writer_filled_past_a_mebibyte_still_takes_a_small_key);

// Near etcd's limit the store still takes what fits, and refuses with
// `StoreFull`, before sending it, what the server would refuse.
async fn near_the_limit_only_what_the_server_would_refuse_is_refused(cluster: &TestCluster) {
    // The default budget: etcd's 1.5 MiB request limit less a 4 KiB margin.
    const BUDGET: usize = 1_572_864 - 4 * 1024;
    let module = Module::new(cluster).await;
    module.seed(&[]).await;
    let store = module.store("cap", &[], Duration::ZERO).await;
    let size = fill(&module, BUDGET - 3_000).await;
    within(
        "a write that fits",
        store.set_and_wait("fits", &"a".repeat(500)),
    )
    .await
    .unwrap_or_else(|e| panic!("refused at {size} bytes: {e}"));
    let big = "b".repeat(8_000);
    let refused = within("a write that cannot fit", store.set_and_wait("big", &big)).await;
    assert!(
        matches!(&refused, Err(Error::StoreFull { key, .. }) if key == "big"),
        "{refused:?}"
    );
    // The server would indeed have refused it.
    let patch: json_patch::Patch = serde_json::from_value(json!([
        { "op": "add", "path": "/data/cap-v2-big", "value": big },
    ]))
    .expect("patch");
    let sent = within(
        "the same write sent by hand",
        module.api.patch(
            &module.object(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        ),
    )
    .await;
    assert!(
        matches!(&sent, Err(kube::Error::Api(status)) if status.code == 500 && status.message.contains("too large")),
        "{:?}",
        sent.map(|_| "applied")
    );
}
on_both_tiers!(near_the_limit_only_what_the_server_would_refuse_is_refused);

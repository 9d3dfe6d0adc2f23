//! What the kube backend may touch, what it may log, and where a key may land.
//!
//! - The RBAC manifests in `deploy/` grant exactly the verbs the backend
//!   calls, on its own resource, in one namespace; a run against the fake API
//!   server shows the backend calls nothing else.
//! - Values never reach a log: every event and span of the process (kube's
//!   HTTP spans and client events included) is captured at TRACE while stores
//!   write, fail, retry and recover, and searched for the values.
//! - Keys cannot escape: whatever its text, a key is one entry of one data
//!   map, in the shard its hash names, under its own capability.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};
use store_conformance::support::{LogCapture, eventually};
use store_core::key::MAX_KEY_LEN;
use store_core::{Error, Precondition, Store};
use store_kube::layout::{Layout, PEPR_PLACEHOLDER};
use store_kube::resource::{
    GROUP, STORE_LABEL, pepr_store_resource, store_shard_crd, store_shard_resource,
};
use store_kube::{KubeBackend, PEPR_NAMESPACE};
use store_kube_testing::{FakeApiServer, Fault, FaultRule, Verb};
use support::fake_server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------
// Log capture
// ---------------------------------------------------------------------------

fn logs() -> &'static LogCapture {
    LogCapture::global()
}

/// The first captured line holding `secret`, if any.
fn logged_line(secret: &str) -> Option<String> {
    logs().line_with(secret)
}

// ---------------------------------------------------------------------------
// Shared set-up
// ---------------------------------------------------------------------------

async fn create_namespace(client: &kube::Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace =
        serde_json::from_value(json!({ "metadata": { "name": name } })).expect("namespace");
    match namespaces.create(&PostParams::default(), &namespace).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => panic!("namespace {name}: {e}"),
    }
}

async fn native(server: &FakeApiServer, store: &str, shards: u32) -> KubeBackend {
    KubeBackend::builder(server.client().expect("client"), store)
        .namespace("default")
        .shards(shards)
        .request_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("backend starts")
}

async fn pepr(server: &FakeApiServer, capability: &str) -> KubeBackend {
    KubeBackend::builder(server.client().expect("client"), "unused")
        .pepr("security", capability)
        .request_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("backend starts")
}

async fn open(backend: KubeBackend) -> Store {
    Store::builder()
        .backend(backend)
        .name("secure")
        .linked_hooks(false)
        .timeout(Duration::from_secs(30))
        .retry_backoff(Duration::from_millis(5), Duration::from_millis(100))
        .open()
        .await
        .expect("store opens")
}

/// The store objects' JSON, by name.
async fn objects(
    server: &FakeApiServer,
    namespace: &str,
    resource: &kube::core::ApiResource,
) -> BTreeMap<String, Value> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(server.client().expect("client"), namespace, resource);
    api.list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|o| {
            let json = serde_json::to_value(&o).expect("JSON");
            (o.metadata.name.unwrap_or_default(), json)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// RBAC
// ---------------------------------------------------------------------------

/// The verbs the backend calls: `get` (read, ensure), `list` and `watch` (the
/// view), `create` (a missing object; Pepr's first apply is a `patch`),
/// `patch` (every write).
const BACKEND_VERBS: [&str; 5] = ["get", "list", "watch", "create", "patch"];

/// What one RBAC manifest grants.
#[derive(Debug)]
struct Grant {
    namespace: String,
    verbs: BTreeSet<String>,
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| item.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Reads `deploy/<file>` and checks its shape: one ServiceAccount, one Role
/// with one rule on `group`/`resource`, one RoleBinding of that Role to that
/// account, all in one namespace; nothing cluster-wide.
fn grant(file: &str, group: &str, resource: &str) -> Grant {
    let path = format!("{}/../deploy/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let manifest: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(manifest["kind"], "List", "{file}");
    let items = manifest["items"].as_array().expect("items");
    let kinds: Vec<&str> = items
        .iter()
        .map(|i| i["kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        kinds,
        ["ServiceAccount", "Role", "RoleBinding"],
        "{file}: no ClusterRole, no ClusterRoleBinding, nothing else"
    );
    let namespaces: BTreeSet<&str> = items
        .iter()
        .map(|i| i["metadata"]["namespace"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        namespaces.len(),
        1,
        "{file}: one namespace, got {namespaces:?}"
    );
    let namespace = namespaces.into_iter().next().unwrap_or_default().to_owned();
    assert!(!namespace.is_empty(), "{file}: every item is namespaced");

    let (account, role, binding) = (&items[0], &items[1], &items[2]);
    let rules = role["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 1, "{file}: one rule");
    let rule = rules[0].as_object().expect("a rule");
    let fields: BTreeSet<&str> = rule.keys().map(String::as_str).collect();
    assert_eq!(
        fields,
        BTreeSet::from(["apiGroups", "resources", "verbs"]),
        "{file}: no nonResourceURLs, no resourceNames"
    );
    assert_eq!(
        strings(&rule["apiGroups"]),
        [group],
        "{file}: only its own API group"
    );
    assert_eq!(
        strings(&rule["resources"]),
        [resource],
        "{file}: only its own resource, no subresources"
    );
    let verbs: BTreeSet<String> = strings(&rule["verbs"]).into_iter().collect();
    for verb in &verbs {
        assert!(
            BACKEND_VERBS.contains(&verb.as_str()),
            "{file} grants {verb:?}, which the backend never calls"
        );
    }
    assert_eq!(verbs.len(), BACKEND_VERBS.len(), "{file}: {verbs:?}");

    assert_eq!(
        binding["roleRef"]["kind"], "Role",
        "{file}: binds the Role, not a ClusterRole"
    );
    assert_eq!(binding["roleRef"]["apiGroup"], "rbac.authorization.k8s.io");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    let subjects = binding["subjects"].as_array().expect("subjects");
    assert_eq!(subjects.len(), 1, "{file}: one subject");
    assert_eq!(subjects[0]["kind"], "ServiceAccount");
    assert_eq!(subjects[0]["name"], account["metadata"]["name"]);
    assert_eq!(subjects[0]["namespace"], namespace.as_str());
    Grant { namespace, verbs }
}

#[test]
fn the_rbac_manifests_grant_only_the_backends_verbs_on_its_own_resource_in_one_namespace() {
    let native = grant("rbac.json", GROUP, &store_shard_resource().plural);
    assert_eq!(native.namespace, "default");
    let pepr = pepr_store_resource();
    let pepr = grant("rbac-pepr.json", &pepr.group, &pepr.plural);
    assert_eq!(
        pepr.namespace, PEPR_NAMESPACE,
        "Pepr's store lives in its namespace"
    );
}

fn rbac_verb(verb: Verb) -> &'static str {
    match verb {
        Verb::Get => "get",
        Verb::List => "list",
        Verb::Watch => "watch",
        Verb::Create => "create",
        Verb::Update => "update",
        Verb::Patch => "patch",
        Verb::Delete => "delete",
        Verb::DeleteCollection => "deletecollection",
        _ => "unknown",
    }
}

/// Runs a store through everything it can do on `backend`, deleting one of its
/// objects from outside on the way (the one DELETE of the run).
async fn exercise(
    server: &FakeApiServer,
    backend: KubeBackend,
    resource: &kube::core::ApiResource,
    namespace: &str,
) {
    let object = backend.objects()[0].clone();
    let store = open(backend).await;
    let changes = store.subscribe();
    store.set("a", &1).expect("set");
    store.set_and_wait("b", &"two").await.expect("set_and_wait");
    let version = store
        .update("c", |n: Option<&u32>| n.copied().unwrap_or(0) + 1)
        .await
        .expect("update")
        .version;
    store
        .compare_and_set("c", Precondition::Version(version), &5)
        .await
        .expect("compare_and_set");
    assert!(
        store
            .compare_and_set("c", Precondition::Absent, &6)
            .await
            .is_err()
    );
    store.remove_and_wait("a").await.expect("remove");
    let api: Api<DynamicObject> =
        Api::namespaced_with(server.client().expect("client"), namespace, resource);
    api.delete(&object, &DeleteParams::default())
        .await
        .expect("deleted from outside");
    store
        .set_and_wait("after-delete", &true)
        .await
        .expect("the object is recreated");
    store.clear().await.expect("clear");
    assert!(store.is_empty());
    drop(changes);
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_calls_exactly_the_granted_verbs_on_its_own_resource() {
    let server = fake_server().await;
    let client = server.client().expect("client");
    create_namespace(&client, PEPR_NAMESPACE).await;
    let native_grant = grant("rbac.json", GROUP, &store_shard_resource().plural);
    let pepr_resource = pepr_store_resource();
    let pepr_grant = grant(
        "rbac-pepr.json",
        &pepr_resource.group,
        &pepr_resource.plural,
    );

    for (grant, resource, backend) in [
        (&native_grant, store_shard_resource(), None),
        (&pepr_grant, pepr_resource.clone(), Some("cap")),
    ] {
        // A v1 key for the Pepr store to migrate (a patch) at start-up.
        if backend.is_some() {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &grant.namespace, &resource);
            let object: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "pepr.dev/v1", "kind": "PeprStore",
                "metadata": { "name": "pepr-security-store" },
                "data": { PEPR_PLACEHOLDER: "k-thx-bye", "cap-old": "v1" },
            }))
            .expect("object");
            api.create(&PostParams::default(), &object)
                .await
                .expect("seeded");
        }
        server.clear_requests();
        let built = match backend {
            None => native(&server, "rbac", 2).await,
            Some(capability) => pepr(&server, capability).await,
        };
        exercise(&server, built, &resource, &grant.namespace).await;

        let prefix = format!(
            "/apis/{}/v1/namespaces/{}/{}",
            resource.group, grant.namespace, resource.plural
        );
        let mut used = BTreeSet::new();
        let mut deletes = 0;
        for request in server.requests() {
            if request.method == "DELETE" {
                deletes += 1;
                continue;
            }
            assert!(
                request.path == prefix || request.path.starts_with(&format!("{prefix}/")),
                "the backend reached outside its resource and namespace: {request:?}"
            );
            let verb = request.verb.expect("a resource request");
            used.insert(rbac_verb(verb).to_owned());
            // A server-side apply that creates the object is authorized as
            // `create` too (Pepr's store object is made that way).
            let apply = request.content_type.as_deref() == Some("application/apply-patch+yaml");
            if apply && request.status == 201 {
                used.insert("create".to_owned());
            }
        }
        assert_eq!(deletes, 1, "only the test deletes");
        assert_eq!(used, grant.verbs, "used verbs versus granted ones");
    }
}

// ---------------------------------------------------------------------------
// Values never reach a log
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Credentials {
    user: String,
    token: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_never_reach_the_log_on_the_kube_backend_whatever_happens_to_them() {
    let logs = logs();
    let secret = "hunter2-kube-0c7d2a";
    let credentials = Credentials {
        user: "ops".to_owned(),
        token: secret.to_owned(),
    };
    let server = fake_server().await;
    let client = server.client().expect("client");
    let backend = KubeBackend::builder(client.clone(), "secrets")
        .namespace("default")
        .shards(2)
        .object_budget(8 * 1024)
        .request_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("backend");
    let debug_backend = format!("{backend:?}");
    let store = open(backend).await;
    let mut errors: Vec<Error> = Vec::new();

    // Plain writes, batches, read-modify-write, compare-and-set.
    store.set("plain", &secret).expect("set");
    for i in 0..20 {
        store
            .set(format!("batch/{i}").as_str(), &format!("{secret}-{i}"))
            .expect("set");
    }
    store
        .set_and_wait("credentials", &credentials)
        .await
        .expect("set_and_wait");
    let updated = store
        .update("credentials", |c: Option<&Credentials>| {
            let mut c = c.cloned().unwrap_or_else(|| credentials.clone());
            c.user = "ops2".to_owned();
            c
        })
        .await
        .expect("update");
    errors.push(
        store
            .compare_and_set("credentials", Precondition::Absent, &credentials)
            .await
            .expect_err("the key exists"),
    );

    // Injected 500, 429 and 409 answers to writes are retried.
    server.inject(
        FaultRule::new(Fault::InternalError)
            .verb(Verb::Patch)
            .times(2),
    );
    server.inject(
        FaultRule::new(Fault::TooManyRequests {
            retry_after: Duration::from_millis(1),
        })
        .verb(Verb::Patch),
    );
    server.inject(FaultRule::new(Fault::Conflict).verb(Verb::Patch).times(2));
    store
        .set_and_wait("retried", &vec![secret; 2])
        .await
        .expect("lands after retries");

    // A 422: the store's view is held back (its watch hangs) while another
    // writer changes the key, so its compare-and-set is tested by the server.
    server.inject(
        FaultRule::new(Fault::Hang(Duration::from_millis(500)))
            .verb(Verb::Watch)
            .times(10_000),
    );
    server.drop_watches();
    let shards: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &store_shard_resource());
    let layout = Layout::Native {
        store: "secrets".to_owned(),
        shards: 2,
    };
    let shard = &layout.objects()[layout.shard_of("credentials")];
    let theirs = serde_json::to_string(&Credentials {
        user: "them".to_owned(),
        token: format!("{secret}-theirs"),
    })
    .expect("JSON");
    shards
        .patch(
            shard,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "data": { "credentials": theirs } } })),
        )
        .await
        .expect("another writer");
    let stale = store
        .compare_and_set(
            "credentials",
            Precondition::Version(updated.version),
            &credentials,
        )
        .await
        .expect_err("the server refuses the stale precondition");
    assert!(matches!(stale, Error::Conflict { .. }), "{stale:?}");
    errors.push(stale);
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.verb == Some(Verb::Patch) && r.status == 422),
        "the precondition reached the server and failed there"
    );
    server.clear_faults();
    store
        .set_and_wait("after-422", &secret)
        .await
        .expect("the view recovers");

    // Refused at the call, or by a full shard.
    errors.push(
        store
            .set("too-large", &secret.repeat(400))
            .expect_err("over the value limit"),
    );
    let mut full = None;
    for i in 0..40 {
        if let Err(e) = store
            .set_and_wait(
                format!("fill/{i}").as_str(),
                &format!("{secret}{}", "x".repeat(900)),
            )
            .await
        {
            full = Some(e);
            break;
        }
    }
    let full = full.expect("a shard fills up");
    assert!(matches!(full, Error::StoreFull { .. }), "{full:?}");
    errors.push(full);
    errors.push(
        store
            .get::<u64>("plain")
            .expect_err("a string is not a number"),
    );

    // The object deleted from outside is recreated.
    shards
        .delete(shard, &DeleteParams::default())
        .await
        .expect("deleted");
    // A key of the recreated (empty) shard: the other one may be full. Once
    // the store reads the deleted keys as removed, the backend knows the shard
    // is empty (see `a_write_to_a_shard_emptied_behind_the_watch_is_not_refused_as_full`).
    let after_delete = (0..)
        .map(|i| format!("after-delete/{i}"))
        .find(|k| layout.shard_of(k) == layout.shard_of("credentials"))
        .unwrap_or_default();
    eventually("the deleted keys to read as removed", || {
        matches!(store.get::<Credentials>("credentials"), Ok(None))
    })
    .await;
    store
        .set_and_wait(after_delete.as_str(), &secret)
        .await
        .expect("recreated");

    // A permanent failure: the resource itself is gone.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.delete("storeshards.typedstore.dev", &DeleteParams::default())
        .await
        .expect("CRD deleted");
    errors.push(
        store
            .set_and_wait("no-resource", &secret)
            .await
            .expect_err("nowhere to write"),
    );
    server.apply_crd(&store_shard_crd()).expect("CRD back");
    // Closing reports a write that failed since the last flush, if any.
    errors.extend(store.close().await.err());

    // Pepr mode, with a v1 key to migrate.
    create_namespace(&client, PEPR_NAMESPACE).await;
    let peprs: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), PEPR_NAMESPACE, &pepr_store_resource());
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "pepr.dev/v1", "kind": "PeprStore",
        "metadata": { "name": "pepr-security-store" },
        "data": { PEPR_PLACEHOLDER: "k-thx-bye", "cap-legacy": secret },
    }))
    .expect("object");
    peprs
        .create(&PostParams::default(), &object)
        .await
        .expect("seeded");
    let pepr_backend = pepr(&server, "cap").await;
    let debug_pepr = format!("{pepr_backend:?}");
    let pepr_store = open(pepr_backend).await;
    assert_eq!(
        pepr_store
            .get::<String>("legacy")
            .expect("migrated")
            .as_deref()
            .map(String::as_str),
        Some(secret)
    );
    pepr_store
        .set_and_wait("token", &secret)
        .await
        .expect("set");
    pepr_store
        .set_and_wait("credentials", &credentials)
        .await
        .expect("set");
    errors.push(
        pepr_store
            .get::<u64>("token")
            .expect_err("a string is not a number"),
    );
    pepr_store.clear().await.expect("clear");
    pepr_store.close().await.expect("close");

    // What was exercised reached the log, kube's HTTP spans included ...
    let text = logs.text();
    for expected in [
        "flush failed; retrying",
        "patch rejected; planning again",
        "store object deleted; recreating it",
        "writes to object failed",
        "migrated Pepr v1 keys to v2",
        "http.url=",
        "kube_client",
    ] {
        assert!(text.contains(expected), "the capture has no {expected:?}");
    }
    // ... and no value did.
    if let Some(line) = logged_line(secret) {
        panic!("a value reached the log: {line}");
    }
    for (what, debug) in [
        ("KubeBackend", debug_backend),
        ("KubeBackend (Pepr)", debug_pepr),
    ] {
        assert!(!debug.contains(secret), "{what}: {debug}");
    }
    for error in &errors {
        if matches!(error, Error::Decode { .. }) {
            // Decode errors quote serde's message; see store-core's security tests.
            continue;
        }
        let text = format!("{error} {error:?}");
        assert!(!text.contains(secret), "an error prints the value: {text}");
    }
}

/// The size check before a write uses the watch's copy of the object. When
/// the object shrank (deleted and recreated, or keys removed by hand) and the
/// watch has not delivered that yet, a small write is refused with
/// `StoreFull` without asking the server, which has room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_a_shard_emptied_behind_the_watch_is_not_refused_as_full() {
    let server = fake_server().await;
    let client = server.client().expect("client");
    let backend = KubeBackend::builder(client.clone(), "stale-full")
        .namespace("default")
        .object_budget(8 * 1024)
        .request_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("backend");
    let store = open(backend).await;
    let mut i = 0;
    for size in [900, 100, 40] {
        while store
            .set_and_wait(format!("fill/{i}").as_str(), &"x".repeat(size))
            .await
            .is_ok()
        {
            i += 1;
        }
        i += 1;
    }
    // The watch stops delivering; the object is emptied behind it.
    server.inject(
        FaultRule::new(Fault::Hang(Duration::from_millis(500)))
            .verb(Verb::Watch)
            .times(10_000),
    );
    server.drop_watches();
    let shards: Api<DynamicObject> =
        Api::namespaced_with(client, "default", &store_shard_resource());
    shards
        .patch(
            "stale-full-0",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "data": null } })),
        )
        .await
        .expect("emptied by hand");
    server.clear_requests();
    let writer = store.clone();
    // As large as the last write the full shard refused.
    let small = tokio::spawn(async move { writer.set_and_wait("fill/99", &"x".repeat(40)).await });
    // Refused at once, or sent to the server (whose answer the view shows once
    // the watch is back).
    eventually("the write to be refused or sent", || {
        small.is_finished()
            || server
                .requests()
                .iter()
                .any(|r| r.verb == Some(Verb::Patch))
    })
    .await;
    server.clear_faults();
    let written = small.await.expect("the writer");
    assert!(written.is_ok(), "{written:?}");
}

/// kube-client logs, at WARN, the whole text of a successful response it
/// cannot decode (`Client::request`), so a store object that fails to decode
/// (an API server or proxy answering something else than the object) puts
/// every value in it into the log. The backend cannot filter kube's events; an
/// application that must keep values out of its logs sets
/// `kube_client::client=error` in its filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "kube-client logs undecodable response bodies at WARN; documented for users, not fixable in the backend"]
async fn an_object_kube_cannot_decode_does_not_put_its_values_in_the_log() {
    logs();
    let secret = "hunter2-undecodable-41b8";
    // A server that answers every request with a store object whose metadata
    // no client can decode.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let body = json!({
        "apiVersion": "typedstore.dev/v1", "kind": "StoreShard",
        "metadata": { "name": "s-0", "labels": 5 },
        "spec": { "data": { "token": secret } },
    })
    .to_string();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    let config = kube::Config::new(format!("http://{address}").parse().expect("URL"));
    let client = kube::Client::try_from(config).expect("client");
    let built = KubeBackend::builder(client, "s")
        .namespace("default")
        .request_timeout(Duration::from_secs(2))
        .build()
        .await;
    assert!(built.is_err(), "the object cannot be decoded");
    if let Some(line) = logged_line(secret) {
        panic!("a value reached the log: {line}");
    }
}

// ---------------------------------------------------------------------------
// Keys cannot escape
// ---------------------------------------------------------------------------

/// Keys that look like paths, escapes, other capabilities' keys, the Pepr
/// placeholder, and keys at the length limit, in several scripts.
fn tricky_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "/",
        "//",
        "~",
        "~0",
        "~1",
        "~01",
        "~~",
        "..",
        "../..",
        "../../etc/passwd",
        "a/../b",
        "./a",
        "/spec",
        "spec",
        "spec/data",
        "metadata/labels",
        "/metadata/name",
        "%2F",
        "%2e%2e",
        "\\",
        "a b",
        " ",
        "https://onReady",
        "__pepr_do_not_delete__",
        "-v2-",
        "v2-x",
        "cap-v2-x",
        "hello-pepr-v2-x",
        "{\"a\":1}",
        "\"",
        "'",
        "*",
        "?",
        "#",
        ":",
        "日本語",
        "größe",
        "😀",
        "a\u{200b}b",
        "\u{feff}",
        "\u{a0}",
        "-",
        "0",
        "null",
    ]
    .iter()
    .map(|k| (*k).to_owned())
    .collect();
    keys.push("k".repeat(MAX_KEY_LEN));
    keys.push("é".repeat(MAX_KEY_LEN / 2));
    keys.push(format!("/{}", "~".repeat(MAX_KEY_LEN - 1)));
    keys
}

fn invalid_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "",
        "a\0b",
        "\n",
        "a\tb",
        "\r",
        "\u{1b}[31m",
        "\u{7f}",
        "\u{85}",
        "\u{9f}",
        "~1\u{0}",
    ]
    .iter()
    .map(|k| (*k).to_owned())
    .collect();
    keys.push("k".repeat(MAX_KEY_LEN + 1));
    keys.push("é".repeat(MAX_KEY_LEN / 2 + 1));
    keys.push(format!("{}😀", "k".repeat(MAX_KEY_LEN - 3)));
    keys
}

fn value_for(owner: &str, key: &str) -> String {
    format!("{owner} wrote {key:?}")
}

/// Every key is exactly one entry of the data map of the shard its hash
/// names, holding its own value; the objects keep their identity.
fn check_native_placement(
    objects: &BTreeMap<String, Value>,
    store: &str,
    shards: u32,
    expected: &BTreeMap<String, String>,
) -> Result<(), String> {
    let layout = Layout::Native {
        store: store.to_owned(),
        shards,
    };
    let names = layout.objects();
    for (index, name) in names.iter().enumerate() {
        let object = objects
            .get(name)
            .ok_or_else(|| format!("{name} is missing"))?;
        let labels = &object["metadata"]["labels"];
        if *labels != json!({ STORE_LABEL: store }) {
            return Err(format!("{name} has labels {labels}"));
        }
        let spec = &object["spec"];
        if spec["store"] != store || spec["shard"] != index || spec["shards"] != shards {
            return Err(format!("{name} changed its identity: {spec}"));
        }
        let data = spec["data"]
            .as_object()
            .ok_or_else(|| format!("{name} has no data map"))?;
        let wanted: BTreeMap<&String, &String> = expected
            .iter()
            .filter(|(k, _)| layout.shard_of(k) == index)
            .collect();
        let found: BTreeMap<&String, String> = data
            .iter()
            .map(|(k, v)| {
                (
                    k,
                    serde_json::from_str::<String>(v.as_str().unwrap_or("")).unwrap_or_default(),
                )
            })
            .collect();
        let found: BTreeMap<&String, &String> = found.iter().map(|(k, v)| (*k, v)).collect();
        if found != wanted {
            return Err(format!("{name} holds {found:?}, expected {wanted:?}"));
        }
    }
    if objects.len() != names.len() {
        return Err(format!("objects {:?}, expected {names:?}", objects.keys()));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_lands_in_its_own_entry_of_the_shard_its_hash_names_and_nowhere_else() {
    let server = fake_server().await;
    let store = open(native(&server, "escape", 4).await).await;
    let neighbour = open(native(&server, "escape-neighbour", 1).await).await;
    let keys = tricky_keys();
    for key in &keys {
        neighbour
            .set(key.as_str(), &value_for("neighbour", key))
            .expect("set");
    }
    neighbour.flush().await.expect("flush");
    let mut expected = BTreeMap::new();
    for key in &keys {
        // One key at a time: each write may change its own entry only.
        let before = store.snapshot().entries;
        store
            .set_and_wait(key.as_str(), &value_for("store", key))
            .await
            .expect("set");
        let after = store.snapshot().entries;
        for (other, value) in &before {
            assert_eq!(
                after.get(other),
                Some(value),
                "writing {key:?} changed {other:?}"
            );
        }
        expected.insert(key.clone(), value_for("store", key));
    }
    for key in &keys {
        assert_eq!(
            store.get::<String>(key.as_str()).expect("get").as_deref(),
            Some(&value_for("store", key)),
            "{key:?}"
        );
        assert_eq!(
            neighbour
                .get::<String>(key.as_str())
                .expect("get")
                .as_deref(),
            Some(&value_for("neighbour", key)),
            "the neighbour's {key:?}"
        );
    }
    let mut all = objects(&server, "default", &store_shard_resource()).await;
    let neighbours: BTreeMap<String, Value> = all
        .iter()
        .filter(|(name, _)| name.starts_with("escape-neighbour-"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    all.retain(|name, _| !name.starts_with("escape-neighbour-"));
    check_native_placement(&all, "escape", 4, &expected).expect("placement");
    let neighbour_expected = keys
        .iter()
        .map(|k| (k.clone(), value_for("neighbour", k)))
        .collect();
    check_native_placement(&neighbours, "escape-neighbour", 1, &neighbour_expected)
        .expect("the neighbour's placement");

    // Removing each key removes its entry only.
    for key in &keys {
        store.remove_and_wait(key.as_str()).await.expect("remove");
        expected.remove(key);
    }
    let mut all = objects(&server, "default", &store_shard_resource()).await;
    all.retain(|name, _| !name.starts_with("escape-neighbour-"));
    check_native_placement(&all, "escape", 4, &expected).expect("placement after removal");
    assert_eq!(neighbour.len(), keys.len());
}

#[test]
fn random_keys_land_in_the_shard_their_hash_names() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _entered = rt.enter();
    let server = rt.block_on(fake_server());
    let store = rt.block_on(async { open(native(&server, "random", 5).await).await });
    let key_char = prop_oneof![
        3 => prop::sample::select(vec!['a', '/', '~', '0', '1', '.', '-', '%', ' ']),
        1 => prop::sample::select(vec!['é', '日', '😀', '\u{a0}', '\u{2028}']),
        1 => any::<char>().prop_filter("no controls", |c| !c.is_control()),
    ];
    let key =
        prop::collection::vec(key_char, 1..24).prop_map(|c| c.into_iter().collect::<String>());
    let requested = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut runner = TestRunner::new(Config {
        cases: 12u32.max(requested),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&prop::collection::btree_set(key, 1..10), |keys| {
            rt.block_on(async {
                store
                    .clear()
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                for key in &keys {
                    store
                        .set(key.as_str(), &value_for("random", key))
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
                store
                    .flush()
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let expected = keys
                    .iter()
                    .map(|k| (k.clone(), value_for("random", k)))
                    .collect();
                let found = objects(&server, "default", &store_shard_resource()).await;
                check_native_placement(&found, "random", 5, &expected)
                    .map_err(TestCaseError::fail)?;
                Ok(())
            })
        })
        .expect("placement");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pepr_key_stays_within_its_capability_even_when_capability_names_prefix_each_other() {
    let server = fake_server().await;
    let client = server.client().expect("client");
    create_namespace(&client, PEPR_NAMESPACE).await;
    let hello = open(pepr(&server, "hello").await).await;
    let hello_pepr = open(pepr(&server, "hello-pepr").await).await;
    let keys = tricky_keys();
    for key in &keys {
        hello
            .set(key.as_str(), &value_for("hello", key))
            .expect("set");
        hello_pepr
            .set(key.as_str(), &value_for("hello-pepr", key))
            .expect("set");
    }
    hello.flush().await.expect("flush");
    hello_pepr.flush().await.expect("flush");
    eventually("each store to see its own keys", || {
        hello.len() == keys.len() && hello_pepr.len() == keys.len()
    })
    .await;
    for (store, owner) in [(&hello, "hello"), (&hello_pepr, "hello-pepr")] {
        for key in &keys {
            assert_eq!(
                store.get::<String>(key.as_str()).expect("get").as_deref(),
                Some(&value_for(owner, key)),
                "{owner} reads {key:?}"
            );
        }
    }
    let objects = objects(&server, PEPR_NAMESPACE, &pepr_store_resource()).await;
    assert_eq!(objects.keys().collect::<Vec<_>>(), ["pepr-security-store"]);
    let data = objects["pepr-security-store"]["data"]
        .as_object()
        .expect("data")
        .clone();
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    expected.insert(PEPR_PLACEHOLDER.to_owned(), "k-thx-bye".to_owned());
    for key in &keys {
        // Pepr stores strings as their text.
        expected.insert(format!("hello-v2-{key}"), value_for("hello", key));
        expected.insert(format!("hello-pepr-v2-{key}"), value_for("hello-pepr", key));
    }
    let found: BTreeMap<String, String> = data
        .into_iter()
        .map(|(k, v)| (k, v.as_str().unwrap_or("").to_owned()))
        .collect();
    assert_eq!(found, expected);

    // Clearing one capability leaves the other's keys and the placeholder.
    hello.clear().await.expect("clear");
    assert!(hello.is_empty());
    assert_eq!(hello_pepr.len(), keys.len());
    let objects = self::objects(&server, PEPR_NAMESPACE, &pepr_store_resource()).await;
    let data = objects["pepr-security-store"]["data"]
        .as_object()
        .expect("data");
    assert_eq!(data.len(), keys.len() + 1);
    assert!(
        data.keys()
            .all(|k| k == PEPR_PLACEHOLDER || k.starts_with("hello-pepr-v2-"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_v1_keys_moves_only_this_capabilitys_keys() {
    let server = fake_server().await;
    let client = server.client().expect("client");
    create_namespace(&client, PEPR_NAMESPACE).await;
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), PEPR_NAMESPACE, &pepr_store_resource());
    // Made by hand: no labels, v1 keys of this capability and of others whose
    // names this one prefixes, and another capability's v2 key.
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "pepr.dev/v1", "kind": "PeprStore",
        "metadata": { "name": "pepr-security-store" },
        "data": {
            PEPR_PLACEHOLDER: "k-thx-bye",
            "hello-a/b": "mine",
            "hello-~1": "mine too",
            "hello-pepr-x": "hello-pepr's v1 key",
            "hello-pepr-v2-y": "hello-pepr's v2 key",
        },
    }))
    .expect("object");
    api.create(&PostParams::default(), &object)
        .await
        .expect("seeded");
    let backend = KubeBackend::builder(client.clone(), "unused")
        .pepr("security", "hello")
        .pepr_capabilities(["hello-pepr"])
        .pepr_v1_removal_delay(Duration::ZERO)
        .build()
        .await
        .expect("backend");
    let store = open(backend).await;
    let mut keys = store.keys();
    keys.sort();
    assert_eq!(keys, ["a/b", "~1"]);
    let expected = json!({
        PEPR_PLACEHOLDER: "k-thx-bye",
        "hello-v2-a/b": "mine",
        "hello-v2-~1": "mine too",
        "hello-pepr-x": "hello-pepr's v1 key",
        "hello-pepr-v2-y": "hello-pepr's v2 key",
    });
    // The originals go after the (here zero) removal delay, in the background.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let data = objects(&server, PEPR_NAMESPACE, &pepr_store_resource()).await
            ["pepr-security-store"]["data"]
            .clone();
        if data == expected {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{data}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capability_names_that_would_share_keys_are_refused() {
    let server = fake_server().await;
    let client = server.client().expect("client");
    create_namespace(&client, PEPR_NAMESPACE).await;
    for (capability, others) in [
        ("hello-v2", vec![]),
        ("hello-v2-x", vec![]),
        ("hello", vec!["hello-v2"]),
        ("hello", vec!["other", "hello-v2-x"]),
    ] {
        let built = KubeBackend::builder(client.clone(), "unused")
            .pepr("refused", capability)
            .pepr_capabilities(others.clone())
            .build()
            .await;
        assert!(
            matches!(built, Err(Error::Backend { .. })),
            "{capability} with {others:?}: {built:?}"
        );
    }
    // Names that only look alike are fine.
    for (capability, others) in [
        ("hello", vec!["hello-pepr", "hello-v2x", "v2-hello"]),
        ("hello-v2x", vec!["hello"]),
    ] {
        KubeBackend::builder(client.clone(), "unused")
            .pepr("accepted", capability)
            .pepr_capabilities(others)
            .build()
            .await
            .expect("accepted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_keys_are_refused_at_the_call_and_nothing_is_sent() {
    let server = fake_server().await;
    let client = server.client().expect("client");
    create_namespace(&client, PEPR_NAMESPACE).await;
    for store in [
        open(native(&server, "invalid", 2).await).await,
        open(pepr(&server, "cap").await).await,
    ] {
        store.set_and_wait("valid", &1).await.expect("set");
        server.clear_requests();
        for key in invalid_keys() {
            let refused = |result: store_core::Result<()>, call: &str| {
                assert!(
                    matches!(&result, Err(Error::InvalidKey { key: k, .. }) if *k == key),
                    "{call}({key:?}): {result:?}"
                );
            };
            refused(store.set(key.as_str(), &1), "set");
            refused(
                store.set_and_wait(key.as_str(), &1).await.map(drop),
                "set_and_wait",
            );
            refused(store.remove(key.as_str()), "remove");
            refused(store.remove_and_wait(key.as_str()).await, "remove_and_wait");
            refused(store.get::<u32>(key.as_str()).map(drop), "get");
            refused(
                store
                    .compare_and_set(key.as_str(), Precondition::Absent, &1)
                    .await
                    .map(drop),
                "compare_and_set",
            );
            refused(
                store
                    .update(key.as_str(), |n: Option<&u32>| n.copied().unwrap_or(0))
                    .await
                    .map(drop),
                "update",
            );
        }
        store.flush().await.expect("flush");
        let writes: Vec<_> = server
            .requests()
            .into_iter()
            .filter(|r| matches!(r.verb, Some(Verb::Patch | Verb::Create | Verb::Update)))
            .collect();
        assert!(
            writes.is_empty(),
            "an invalid key reached the server: {writes:?}"
        );
        assert_eq!(store.keys(), ["valid"]);
    }
}

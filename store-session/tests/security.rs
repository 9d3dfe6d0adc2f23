//! A scope's keys stay in its scope: whatever the session, realm,
//! environment and key names hold (`/`, `~`, the escapes `~0`/`~1`, `..`,
//! multi-byte text), a durable write lands at its scope's prefix plus the key
//! and nowhere else, no other scope or session reads or changes it, and
//! ending a session removes its keys and no one else's.
//!
//! Case counts are small enough for CI; `PROPTEST_CASES=1000` raises them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use store_conformance::support::proptest_config as config;
use store_core::key::MAX_KEY_LEN;
use store_core::{Backend, MemoryBackend};
use store_session::{Error, ScopeKind, Sessions, layout};

fn fail(what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

/// Names and keys made of the characters that separate and escape prefixes.
fn name() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "a", "b", "/", "~", "~0", "~1", "..", ".", "0", "g", "r", "l", "lr", "m", "s", "é", "😀",
        " ",
    ]);
    prop::collection::vec(piece, 1..4).prop_map(|p| p.concat())
}

fn scope_kinds(realms: &[String], envs: &[String]) -> Vec<ScopeKind> {
    let mut kinds = vec![ScopeKind::Global];
    for realm in realms {
        kinds.push(ScopeKind::Realm(realm.clone()));
        for env in envs {
            kinds.push(ScopeKind::Local {
                realm: Some(realm.clone()),
                env: env.clone(),
            });
        }
    }
    for env in envs {
        kinds.push(ScopeKind::Local {
            realm: None,
            env: env.clone(),
        });
    }
    kinds.sort();
    kinds.dedup();
    kinds
}

fn value_for(session: &str, kind: &ScopeKind, key: &str) -> String {
    format!("{session:?} {kind:?} {key:?}")
}

/// Where each value must be on the inner backend, with its value.
type Placement = BTreeMap<String, String>;

/// Opens every scope of every session on one registry, writes every key in
/// each, and checks what each scope reads back. Returns where the values must
/// be on the inner backend.
async fn write_everywhere(
    sessions: &Sessions,
    ids: &BTreeSet<String>,
    kinds: &[ScopeKind],
    keys: &BTreeSet<String>,
) -> Result<Placement, TestCaseError> {
    let mut placement = Placement::new();
    for id in ids {
        let session = sessions.open(id).await.map_err(fail)?;
        for kind in kinds {
            let durable = session
                .scope(kind.clone())
                .map_err(fail)?
                .durable()
                .await
                .map_err(fail)?;
            for key in keys {
                let value = value_for(id, kind, key);
                let handle = durable.use_value(key, value.clone()).await.map_err(fail)?;
                // Stored now, so no other scope's write may have been its default.
                let read = handle.get().map_err(fail)?;
                prop_assert_eq!(read.as_str(), value.as_str());
                let previous = placement.insert(format!("{}{key}", durable.prefix()), value);
                prop_assert!(
                    previous.is_none(),
                    "two scopes share {}{}",
                    durable.prefix(),
                    key
                );
            }
            durable.flush().await.map_err(fail)?;
        }
    }
    // Every scope reads exactly its own keys and values, after all the writes.
    for id in ids {
        let session = sessions.get(id).map_err(fail)?;
        for kind in kinds {
            let durable = session
                .scope(kind.clone())
                .map_err(fail)?
                .durable()
                .await
                .map_err(fail)?;
            let found: BTreeSet<String> = durable.keys().map_err(fail)?.into_iter().collect();
            prop_assert_eq!(&found, keys, "{:?} {:?}", id, kind);
            for key in keys {
                let handle = durable.use_value(key, String::new()).await.map_err(fail)?;
                let read = handle.get().map_err(fail)?;
                prop_assert_eq!(read.as_str(), value_for(id, kind, key));
            }
        }
    }
    Ok(placement)
}

/// The inner backend holds exactly `placement`, besides the sessions' own
/// generation records (`<root>m/<session>`).
async fn check_inner(
    inner: &MemoryBackend,
    root: &str,
    placement: &Placement,
) -> Result<(), TestCaseError> {
    let listing = inner.list("").await.map_err(fail)?;
    let mut found = Placement::new();
    for entry in listing.entries {
        if entry.key().starts_with(&format!("{root}m/")) {
            continue;
        }
        let value: String = serde_json::from_str(entry.value().as_str()).map_err(fail)?;
        found.insert(entry.key().to_string(), value);
    }
    prop_assert_eq!(&found, placement);
    Ok(())
}

#[test]
fn durable_keys_of_any_names_stay_in_their_scope_and_session() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut runner = TestRunner::new(config(24));
    let plan = (
        prop::collection::btree_set(name(), 1..4),
        prop::collection::vec(name(), 1..3),
        prop::collection::vec(name(), 1..3),
        prop::collection::btree_set(name(), 1..4),
        prop::sample::select(vec!["", "sessions/", "a/"]),
    );
    runner
        .run(&plan, |(ids, realms, envs, keys, root)| {
            rt.block_on(async {
                let inner = Arc::new(MemoryBackend::new());
                let sessions = Sessions::builder()
                    .shared_backend(Arc::clone(&inner))
                    .root(root)
                    .timeout(Duration::from_secs(10))
                    .build();
                let kinds = scope_kinds(&realms, &envs);
                let mut placement = write_everywhere(&sessions, &ids, &kinds, &keys).await?;
                check_inner(&inner, root, &placement).await?;

                // Ending one session removes its keys, and only those.
                let ended = ids.iter().next().cloned().unwrap_or_default();
                let gone = sessions.end(&ended).await.map_err(fail)?;
                let prefix = layout::session_prefix(root, &ended);
                let before = placement.len();
                placement.retain(|key, _| !key.starts_with(&prefix));
                prop_assert_eq!(gone.durable_keys, before - placement.len());
                check_inner(&inner, root, &placement).await?;
                for id in ids.iter().skip(1) {
                    let session = sessions.get(id).map_err(fail)?;
                    let durable = session
                        .global()
                        .map_err(fail)?
                        .durable()
                        .await
                        .map_err(fail)?;
                    prop_assert_eq!(durable.keys().map_err(fail)?.len(), keys.len());
                }
                Ok(())
            })
        })
        .expect("scopes stay apart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_whose_names_extend_or_escape_into_each_other_stay_apart() {
    let inner = Arc::new(MemoryBackend::new());
    let sessions = Sessions::builder()
        .shared_backend(Arc::clone(&inner))
        .build();
    let ids: BTreeSet<String> = [
        "a", "a/b", "a~1b", "a~", "~", "/", "a/0/g", "a/0", "..", "../a", "m", "s", "a b", "é",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let kinds = scope_kinds(
        &["g".to_owned(), "x/y".to_owned(), "x~1y".to_owned()],
        &["x".to_owned(), "y".to_owned(), "..".to_owned()],
    );
    let mut keys: BTreeSet<String> = ["k", "../k", "/", "~1", "g/k", "0/g/k", "x/y/k"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    keys.insert("k".repeat(MAX_KEY_LEN));
    let mut placement = write_everywhere(&sessions, &ids, &kinds, &keys)
        .await
        .expect("writes");
    check_inner(&inner, "", &placement)
        .await
        .expect("placement");
    for ended in ["a", "/", ".."] {
        let gone = sessions.end(ended).await.expect("end");
        let prefix = layout::session_prefix("", ended);
        let before = placement.len();
        placement.retain(|key, _| !key.starts_with(&prefix));
        assert_eq!(gone.durable_keys, before - placement.len(), "{ended}");
        check_inner(&inner, "", &placement)
            .await
            .expect("after ending");
    }
    assert!(!placement.is_empty(), "other sessions keep their keys");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_and_keys_are_refused_with_typed_errors() {
    let sessions = Sessions::new();
    for id in ["", "a\nb", "\0", "\u{7f}", "\u{85}"] {
        let opened = sessions.open(id).await;
        assert!(
            matches!(&opened, Err(Error::InvalidName { what: "session", name }) if name == id),
            "{id:?}: {opened:?}"
        );
    }
    let session = sessions.open("s").await.expect("open");
    assert!(matches!(
        session.realm(""),
        Err(Error::InvalidName { what: "realm", .. })
    ));
    assert!(matches!(
        session.local("a\tb"),
        Err(Error::InvalidName {
            what: "environment",
            ..
        })
    ));
    assert!(matches!(
        session.local_in("\u{1b}", "e"),
        Err(Error::InvalidName { what: "realm", .. })
    ));
    let scope = session.global().expect("scope");
    let durable = scope.durable().await.expect("durable");
    for key in ["", "a\0", "\n", "\u{9f}"]
        .iter()
        .map(|k| (*k).to_owned())
        .chain([
            "k".repeat(MAX_KEY_LEN + 1),
            format!("{}é", "k".repeat(MAX_KEY_LEN - 1)),
        ])
    {
        let live = scope.use_value(&key, 1_u8);
        assert!(
            matches!(&live, Err(Error::Store(store_core::Error::InvalidKey { key: k, .. })) if *k == key),
            "live {key:?}: {:?}",
            live.map(|_| ())
        );
        let stored = durable.use_value(&key, 1_u8).await;
        assert!(
            matches!(&stored, Err(Error::Store(store_core::Error::InvalidKey { key: k, .. })) if *k == key),
            "durable {key:?}: {:?}",
            stored.map(|_| ())
        );
    }
    assert!(durable.keys().expect("keys").is_empty());
    assert!(scope.keys().expect("keys").is_empty());
    // The longest valid key works in both tiers, whatever the prefix adds.
    let longest = "k".repeat(MAX_KEY_LEN);
    scope.use_value(&longest, 1_u8).expect("live");
    let handle = durable.use_value(&longest, 1_u8).await.expect("durable");
    assert_eq!(*handle.get().expect("get"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_values_stay_in_their_scope() {
    let sessions = Sessions::new();
    let a = sessions.open("a").await.expect("open");
    let ab = sessions.open("a/b").await.expect("open");
    let scopes = [
        a.global().expect("scope"),
        a.realm("r").expect("scope"),
        a.local("r").expect("scope"),
        a.local_in("r", "e").expect("scope"),
        a.local("r/e").expect("scope"),
        ab.global().expect("scope"),
        ab.local("..").expect("scope"),
    ];
    for (i, scope) in scopes.iter().enumerate() {
        for key in ["k", "../k", "/", "~1"] {
            scope.use_value(key, i).expect("use");
        }
    }
    for (i, scope) in scopes.iter().enumerate() {
        for key in ["k", "../k", "/", "~1"] {
            assert_eq!(
                scope
                    .use_value(key, usize::MAX)
                    .expect("use")
                    .get()
                    .expect("get"),
                i
            );
        }
    }
    let ended = a.end().await.expect("end");
    assert_eq!(ended.live_entries, 5 * 4);
    assert_eq!(
        scopes[5]
            .use_value("k", usize::MAX)
            .expect("use")
            .get()
            .expect("get"),
        5,
        "ending `a` leaves `a/b`"
    );
}

/// The same on the kube backend: full keys (prefix and key) are data-map keys
/// of the store's objects, exactly, and ending a session removes only its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_keys_on_the_kube_backend_are_exactly_their_scope_prefix_and_key() {
    use store_kube::KubeBackend;
    use store_kube::resource::store_shard_crd;
    use store_kube_testing::FakeApiServer;

    let server = FakeApiServer::start().await.expect("fake API server");
    server.apply_crd(&store_shard_crd()).expect("CRD");
    let client = server.client().expect("client");
    let backend = KubeBackend::builder(client.clone(), "sessions")
        .namespace("default")
        .shards(2)
        .build()
        .await
        .expect("backend");
    let sessions = Sessions::builder()
        .backend(backend)
        .root("tenant/")
        .timeout(Duration::from_secs(20))
        .build();
    let ids: BTreeSet<String> = ["a", "a/b", "a~1b"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let kinds = scope_kinds(&["x/y".to_owned()], &["..".to_owned()]);
    let keys: BTreeSet<String> = ["k", "../k", "~1"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let mut placement = write_everywhere(&sessions, &ids, &kinds, &keys)
        .await
        .expect("writes");
    assert_eq!(stored(&client).await, placement);
    let gone = sessions.end("a").await.expect("end");
    let prefix = layout::session_prefix("tenant/", "a");
    let before = placement.len();
    placement.retain(|key, _| !key.starts_with(&prefix));
    assert_eq!(gone.durable_keys, before - placement.len());
    assert_eq!(stored(&client).await, placement);
}

/// The values the store's objects hold, by data-map key, without the
/// sessions' generation records.
async fn stored(client: &kube::Client) -> Placement {
    use kube::api::{Api, DynamicObject, ListParams};
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &store_kube::resource::store_shard_resource(),
    );
    let mut found = Placement::new();
    for object in api.list(&ListParams::default()).await.expect("list").items {
        let data = object.data["spec"]["data"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (key, value) in data {
            if key.starts_with("tenant/m/") {
                continue;
            }
            let text = value.as_str().expect("a string");
            found.insert(
                key,
                serde_json::from_str::<String>(text).expect("JSON text"),
            );
        }
    }
    found
}

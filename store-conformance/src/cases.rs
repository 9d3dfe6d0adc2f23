//! The cases; each is a test of one promise.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use store_core::{Backend, Error, Precondition, Revision, Store, Version};

use crate::support::{deadline, eventually_within as eventually};
use crate::{Gated, Harness};

/// A fresh scope name for a case: `case-name-<random>`.
fn scope(case: &str) -> String {
    let mut name: String = case
        .chars()
        .map(|c| if c == '_' { '-' } else { c })
        .take(31)
        .collect();
    name.push_str(&format!("-{:08x}", fastrand::u32(..)));
    name
}

/// How long replicas may take to agree (before scaling).
const CONVERGE_BASE: Duration = Duration::from_secs(30);

async fn store<B: Backend>(backend: B) -> Store {
    Store::builder()
        .backend(backend)
        .linked_hooks(false)
        .timeout(deadline(CONVERGE_BASE))
        .open()
        .await
        .expect("store starts")
}

/// One gated store on a fresh scope, with the scope's name.
async fn gated<H: Harness>(harness: &H, case: &str) -> (Store, Gated<H::Backend>, String) {
    let scope = scope(case);
    let backend = Gated::new(harness.open(&scope).await);
    (store(backend.clone()).await, backend, scope)
}

fn value<T>(store: &Store, key: &str) -> Option<T>
where
    T: serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
{
    store
        .get::<T>(key)
        .expect("value decodes")
        .map(|v| (*v).clone())
}

/// `get` shows a handle's own writes before the backend confirms them.
pub async fn get_sees_own_writes_before_they_are_acknowledged<H: Harness>(harness: &H) {
    let (store, gate, _) = gated(harness, "read-your-writes").await;
    gate.close();
    store.set("a", &1).expect("set");
    assert_eq!(value::<i32>(&store, "a"), Some(1), "own set is visible");
    store.remove("a").expect("remove");
    assert_eq!(value::<i32>(&store, "a"), None, "own remove is visible");
    store.set("a", &2).expect("set");
    gate.open();
    store.flush().await.expect("flush");
    assert_eq!(
        value::<i32>(&store, "a"),
        Some(2),
        "value after acknowledgement"
    );
}

/// A missing key reads as `None`.
pub async fn get_of_a_missing_key_is_none<H: Harness>(harness: &H) {
    let (store, _, _) = gated(harness, "missing").await;
    assert_eq!(value::<i32>(&store, "nothing"), None);
}

/// `set` returns before the write lands, and the write lands.
pub async fn set_returns_at_once_and_lands_in_the_background<H: Harness>(harness: &H) {
    let (store, gate, scope) = gated(harness, "set-background").await;
    gate.close();
    store
        .set("k", &"v")
        .expect("set returns while the backend is held");
    gate.open();
    let other = harness.open(&scope).await;
    let mut landed = false;
    let until = tokio::time::Instant::now() + deadline(CONVERGE_BASE);
    while !landed && tokio::time::Instant::now() < until {
        landed = other.read("k").await.expect("read").is_some();
        if !landed {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert!(
        landed,
        "the queued write reached the backend without a flush"
    );
}

/// `set a=1; set a=2; set a=1` ends as 1, locally and on the backend.
pub async fn the_last_call_wins_per_key<H: Harness>(harness: &H) {
    let (store, gate, scope) = gated(harness, "last-wins").await;
    for held in [true, false] {
        if held {
            gate.close();
        }
        store.set("a", &1).expect("set");
        store.set("a", &2).expect("set");
        store.set("a", &1).expect("set");
        gate.open();
        store.flush().await.expect("flush");
        assert_eq!(value::<i32>(&store, "a"), Some(1));
        let stored = harness.open(&scope).await.read("a").await.expect("read");
        assert_eq!(
            stored.map(|e| e.value().as_str().to_owned()),
            Some("1".to_owned())
        );
    }
}

/// `set; remove; set` ends set.
pub async fn set_remove_set_ends_set<H: Harness>(harness: &H) {
    let (store, gate, scope) = gated(harness, "set-remove-set").await;
    gate.close();
    store.set("a", &"first").expect("set");
    store.remove("a").expect("remove");
    store.set("a", &"last").expect("set");
    gate.open();
    store.flush().await.expect("flush");
    assert_eq!(value::<String>(&store, "a").as_deref(), Some("last"));
    let stored = harness.open(&scope).await.read("a").await.expect("read");
    assert!(stored.is_some(), "the backend holds the key");
}

/// Removing a key that does not exist is not an error.
pub async fn removing_a_missing_key_is_fine<H: Harness>(harness: &H) {
    let (store, _, _) = gated(harness, "remove-missing").await;
    store.remove("ghost").expect("remove");
    store
        .remove_and_wait("ghost")
        .await
        .expect("remove_and_wait");
    store.flush().await.expect("flush");
}

/// The version `set_and_wait` returns is the one the view shows.
pub async fn set_and_wait_returns_the_version_get_sees<H: Harness>(harness: &H) {
    let (store, _, _) = gated(harness, "set-and-wait").await;
    let first = store.set_and_wait("k", &1).await.expect("set_and_wait");
    let seen = store
        .get_versioned::<i32>("k")
        .expect("get")
        .expect("present");
    assert_eq!((*seen.value, seen.version), (1, first));
    let second = store.set_and_wait("k", &2).await.expect("set_and_wait");
    assert!(second > first, "versions grow");
    let seen = store
        .get_versioned::<i32>("k")
        .expect("get")
        .expect("present");
    assert_eq!((*seen.value, seen.version), (2, second));
    // Setting the same key again works (the seed's onReady does it twice).
    store.set_and_wait("k", &2).await.expect("same value again");
    assert_eq!(value::<i32>(&store, "k"), Some(2));
}

/// `remove_and_wait` resolves once the view shows the key gone.
pub async fn remove_and_wait_hides_the_key<H: Harness>(harness: &H) {
    let (store, _, _) = gated(harness, "remove-and-wait").await;
    store.set_and_wait("k", &1).await.expect("set");
    store.remove_and_wait("k").await.expect("remove");
    assert!(
        store.get_versioned::<i32>("k").expect("get").is_none(),
        "view shows removal"
    );
    assert_eq!(value::<i32>(&store, "k"), None);
}

/// `clear` removes keys the backend holds that this handle never saw.
pub async fn clear_removes_keys_this_handle_never_saw<H: Harness>(harness: &H) {
    let scope = scope("clear-unseen");
    let writer = store(harness.open(&scope).await).await;
    let clearer = store(harness.open(&scope).await).await;
    for i in 0..5 {
        writer.set(format!("w/{i}"), &i).expect("set");
    }
    writer.flush().await.expect("flush");
    clearer.set("mine", &1).expect("set");
    clearer.clear().await.expect("clear");
    let listing = harness.open(&scope).await.list("").await.expect("list");
    assert!(
        listing.entries.is_empty(),
        "backend still holds {:?}",
        listing.entries
    );
    assert!(
        clearer.is_empty(),
        "the clearing handle sees an empty store"
    );
    eventually("the other handle to see the clear", CONVERGE_BASE, || {
        writer.is_empty()
    })
    .await;
}

/// Keys another writer stored that break this library's key rules (a
/// control character, over 1,024 bytes) are listed and read, and can be
/// removed one by one and by `clear`.
pub async fn keys_another_writer_stored_against_the_rules_can_be_removed<H: Harness>(harness: &H) {
    let scope = scope("foreign-keys");
    let backend = harness.open(&scope).await;
    let store = store(harness.open(&scope).await).await;
    let control = "tab\there";
    let long = "k".repeat(1500);
    let ops = [control, long.as_str(), "plain"]
        .into_iter()
        .map(|key| store_core::backend::Op::put(key, store_core::Payload::from("1")))
        .collect();
    let applied = backend
        .apply(store_core::backend::Batch { ops, atomic: false })
        .await
        .expect("another writer stores them");
    assert!(
        applied
            .outcomes
            .iter()
            .all(|o| matches!(o, store_core::backend::Outcome::Applied(_))),
        "{:?}",
        applied.outcomes
    );
    eventually("the store to list all three", CONVERGE_BASE, || {
        store.len() == 3
    })
    .await;
    assert_eq!(value::<i32>(&store, control), Some(1));
    assert_eq!(value::<i32>(&store, &long), Some(1));
    store
        .remove_and_wait(control)
        .await
        .expect("a listed key can be removed");
    assert!(!store.keys().iter().any(|k| k == control));
    store.clear().await.expect("clear removes the rest");
    assert!(store.is_empty());
    let listing = backend.list("").await.expect("list");
    assert!(listing.entries.is_empty(), "{:?}", listing.entries);
    // A key the store does not hold is still checked.
    let refused = store.remove("never\u{1}seen");
    assert!(
        matches!(refused, Err(Error::InvalidKey { .. })),
        "{refused:?}"
    );
}

/// `clear` on an empty store succeeds and a later write survives it.
pub async fn clear_on_an_empty_store_is_fine<H: Harness>(harness: &H) {
    let (store, _, _) = gated(harness, "clear-empty").await;
    store.clear().await.expect("clear");
    store.set_and_wait("after", &1).await.expect("set");
    assert_eq!(value::<i32>(&store, "after"), Some(1));
}

/// 8 tasks × 200 `update` increments end at 1,600. Sized to take a small
/// part of the case's limit on a busy 2-core machine: every increment is
/// a compare-and-set round trip, and 8 tasks contend for one key.
pub async fn concurrent_updates_lose_no_increment<H: Harness>(harness: &H) {
    let (store, _, _) = gated(harness, "updates").await;
    if !store.capabilities().compare_and_set {
        return;
    }
    increment_concurrently(vec![store.clone(); 8], 200).await;
    assert_eq!(value::<u64>(&store, "counter"), Some(1600));
}

/// Two handles on one store, updating one key at once, lose no increment.
pub async fn updates_from_two_handles_lose_no_increment<H: Harness>(harness: &H) {
    let scope = scope("updates-two");
    let a = store(harness.open(&scope).await).await;
    let b = store(harness.open(&scope).await).await;
    if !a.capabilities().compare_and_set {
        return;
    }
    increment_concurrently(vec![a.clone(), b.clone(), a.clone(), b.clone()], 250).await;
    eventually("both handles to count 1000", CONVERGE_BASE, || {
        value::<u64>(&a, "counter") == Some(1000) && value::<u64>(&b, "counter") == Some(1000)
    })
    .await;
}

/// `update_if` whose closure declines sends nothing and changes nothing;
/// one that writes behaves like `update`.
pub async fn an_update_that_declines_sends_nothing<H: Harness>(harness: &H) {
    let (store, gate, _) = gated(harness, "update-if").await;
    if !store.capabilities().compare_and_set {
        return;
    }
    let written = store
        .update_if("k", |n: Option<&u64>| Some(n.copied().unwrap_or(0) + 1))
        .await
        .expect("update_if")
        .expect("the closure wrote");
    assert_eq!(*written.value, 1);
    let mut changes = store.subscribe().key("k");
    // With writes held back, anything sent would hang the call.
    gate.close();
    for _ in 0..10 {
        let declined = tokio::time::timeout(
            deadline(Duration::from_secs(10)),
            store.update_if("k", |n: Option<&u64>| {
                assert_eq!(n, Some(&1), "the closure sees the current value");
                None
            }),
        )
        .await
        .expect("a declined update sends nothing, so nothing holds it back")
        .expect("update_if");
        assert!(declined.is_none());
    }
    gate.open();
    let versioned = store.get_versioned::<u64>("k").expect("get").expect("set");
    assert_eq!(
        (*versioned.value, versioned.version),
        (1, written.version),
        "no new version"
    );
    store.set_and_wait("k", &2u64).await.expect("set");
    let next = tokio::time::timeout(
        deadline(CONVERGE_BASE),
        futures_util::StreamExt::next(&mut changes),
    )
    .await
    .expect("a change")
    .expect("open")
    .expect("no lag");
    assert_eq!(
        next.value::<u64>().expect("decodes"),
        Some(2),
        "the first change after the declines is the set"
    );
}

/// `compare_and_set` writes only when its precondition holds.
pub async fn compare_and_set_detects_conflicts<H: Harness>(harness: &H) {
    let (store, _, _) = gated(harness, "cas").await;
    if !store.capabilities().compare_and_set {
        let refused = store.compare_and_set("k", Precondition::Absent, &1).await;
        assert!(matches!(refused, Err(Error::Unsupported { .. })));
        return;
    }
    let v1 = store
        .compare_and_set("k", Precondition::Absent, &1)
        .await
        .expect("absent holds");
    let again = store.compare_and_set("k", Precondition::Absent, &2).await;
    assert!(
        matches!(again, Err(Error::Conflict { ref key, actual: Some(v), .. }) if key == "k" && v == v1),
        "{again:?}"
    );
    let v2 = store
        .compare_and_set("k", Precondition::Version(v1), &3)
        .await
        .expect("version holds");
    let stale = store
        .compare_and_set("k", Precondition::Version(v1), &4)
        .await;
    assert!(matches!(stale, Err(Error::Conflict { .. })), "{stale:?}");
    assert_eq!(value::<i32>(&store, "k"), Some(3));
    let gone = store.compare_and_remove("k", Version(v1.0)).await;
    assert!(matches!(gone, Err(Error::Conflict { .. })));
    store
        .compare_and_remove("k", v2)
        .await
        .expect("remove at v2");
    assert_eq!(value::<i32>(&store, "k"), None);
}

/// Writes through either of two handles reach the other.
pub async fn two_handles_converge<H: Harness>(harness: &H) {
    let scope = scope("converge");
    let a = store(harness.open(&scope).await).await;
    let b = store(harness.open(&scope).await).await;
    a.set("from-a", &"a").expect("set");
    b.set("from-b", &"b").expect("set");
    a.set("both", &1).expect("set");
    a.flush().await.expect("flush");
    b.set("both", &2).expect("set");
    b.flush().await.expect("flush");
    eventually("both handles to agree", CONVERGE_BASE, || {
        a.snapshot().entries == b.snapshot().entries && a.len() == 3
    })
    .await;
    assert_eq!(value::<i32>(&a, "both"), Some(2));
}

/// Subscribers see every confirmed change, in order.
pub async fn subscribers_see_every_change_in_order<H: Harness>(harness: &H) {
    let (store, _, _) = gated(harness, "subscribe").await;
    let mut changes = store.subscribe();
    for i in 0..20 {
        store.set_and_wait("k", &i).await.expect("set");
    }
    store.remove_and_wait("k").await.expect("remove");
    let mut seen = Vec::new();
    let mut last = Revision(0);
    while seen.len() < 21 {
        let event = tokio::time::timeout(deadline(CONVERGE_BASE), changes.next())
            .await
            .expect("a change within the deadline")
            .expect("stream open")
            .expect("no lag");
        assert!(event.revision() > last, "revisions grow");
        last = event.revision();
        seen.push(event.value::<i32>().expect("decodes"));
    }
    let expected: Vec<Option<i32>> = (0..20).map(Some).chain([None]).collect();
    assert_eq!(seen, expected);
}

/// Key and prefix filters pass only what they name.
pub async fn subscriptions_filter_by_key_and_prefix<H: Harness>(harness: &H) {
    let (store, _, _) = gated(harness, "filters").await;
    let mut by_key = store.subscribe().key("user/1");
    let mut by_prefix = store.subscribe().prefix("user/");
    store.set_and_wait("other", &0).await.expect("set");
    store.set_and_wait("user/2", &2).await.expect("set");
    store.set_and_wait("user/1", &1).await.expect("set");
    assert_eq!(next_key(&mut by_key).await, "user/1");
    assert_eq!(next_key(&mut by_prefix).await, "user/2");
    assert_eq!(next_key(&mut by_prefix).await, "user/1");
}

/// `keys`, `len` and `snapshot` follow the view plus own writes.
pub async fn keys_len_and_snapshot_follow_the_view<H: Harness>(harness: &H) {
    let (store, gate, _) = gated(harness, "keys").await;
    store.set_and_wait("b", &2).await.expect("set");
    store.set_and_wait("a", &1).await.expect("set");
    gate.close();
    store.set("c", &3).expect("set");
    store.remove("b").expect("remove");
    assert_eq!(store.keys(), vec!["a".to_owned(), "c".to_owned()]);
    assert_eq!(store.len(), 2);
    let snapshot = store.snapshot();
    assert_eq!(snapshot.pending, 2);
    assert_eq!(snapshot.get::<i32>("c").expect("decodes"), Some(3));
    gate.open();
    store.flush().await.expect("flush");
    let snapshot = store.snapshot();
    assert_eq!(snapshot.pending, 0);
    assert!(snapshot.revision > Revision(0));
    assert_eq!(snapshot.entries.len(), 2);
}

/// After `flush` the backend holds every write queued before it.
pub async fn flush_waits_for_queued_writes<H: Harness>(harness: &H) {
    let (store, _, scope) = gated(harness, "flush").await;
    for i in 0..50 {
        store.set(format!("k{i}"), &i).expect("set");
    }
    store.flush().await.expect("flush");
    let listing = harness.open(&scope).await.list("k").await.expect("list");
    assert_eq!(listing.entries.len(), 50);
    assert_eq!(store.snapshot().pending, 0, "the view shows them all");
}

/// Hooks run once, in order, before `ready` resolves and before changes reach
/// subscribers.
pub async fn hooks_run_before_ready_and_before_any_change_is_delivered<H: Harness>(harness: &H) {
    let scope = scope("hooks");
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let (l1, l2) = (Arc::clone(&log), Arc::clone(&log));
    // The store's tasks run on other threads: without this, on a busy machine
    // they could list, run the hooks and deliver their changes before this
    // task subscribes, and a subscription sees only later changes.
    let subscribed = Arc::new(tokio::sync::Notify::new());
    let go = Arc::clone(&subscribed);
    let store = Store::builder()
        .backend(harness.open(&scope).await)
        .linked_hooks(false)
        .on_ready_ordered("second", 1, move |store: Store| {
            let log = Arc::clone(&l2);
            async move {
                log.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push("second".into());
                store.set_and_wait("from-hook", &2).await.map(|_| ())
            }
        })
        .on_ready_ordered("first", 0, move |store: Store| {
            let log = Arc::clone(&l1);
            let go = Arc::clone(&go);
            async move {
                go.notified().await;
                log.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push("first".into());
                store.set_and_wait("from-hook", &1).await.map(|_| ())
            }
        })
        .start();
    let mut changes = store.subscribe();
    subscribed.notify_one();
    store.ready().await.expect("ready");
    assert_eq!(
        *log.lock().unwrap_or_else(PoisonError::into_inner),
        ["first", "second"]
    );
    store.ready().await.expect("ready again");
    assert_eq!(
        log.lock().unwrap_or_else(PoisonError::into_inner).len(),
        2,
        "hooks run once"
    );
    // Changes made by hooks arrive only now, in order.
    for expected in [1, 2] {
        let event = tokio::time::timeout(deadline(CONVERGE_BASE), changes.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the change to {expected} a hook made never reached the subscriber; \
                     the store holds {:?} at {:?}",
                    store.get::<i32>("from-hook"),
                    store.snapshot().revision,
                )
            })
            .expect("open")
            .expect("no lag");
        assert_eq!(event.value::<i32>().expect("decodes"), Some(expected));
    }
}

/// A failing hook fails start-up, and the error names it.
pub async fn a_failing_hook_fails_start_up_with_its_name<H: Harness>(harness: &H) {
    let store = Store::builder()
        .backend(harness.open(&scope("hook-fails")).await)
        .linked_hooks(false)
        .on_ready("seed-cache", |_store: Store| async {
            Err::<(), _>(std::io::Error::other("cache unreachable"))
        })
        .start();
    let err = store.ready().await.expect_err("start-up fails");
    assert!(
        matches!(&err, Error::Hook { hook, .. } if hook == "seed-cache"),
        "{err:?}"
    );
    assert!(err.to_string().contains("seed-cache"));
    assert!(err.to_string().contains("cache unreachable"));
}

/// A wait that runs out gives `Error::Timeout`; the write still lands later.
pub async fn waits_time_out_with_a_typed_error_and_the_write_still_lands<H: Harness>(harness: &H) {
    let (store, gate, _) = gated(harness, "timeout").await;
    gate.close();
    let short = store.with_timeout(Duration::from_millis(50));
    let err = short.set_and_wait("k", &1).await.expect_err("held back");
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(
        err.to_string().contains("`k`"),
        "the error names the key: {err}"
    );
    assert!(matches!(short.flush().await, Err(Error::Timeout { .. })));
    gate.open();
    store.flush().await.expect("flush");
    assert_eq!(
        store
            .get_versioned::<i32>("k")
            .expect("get")
            .map(|v| *v.value),
        Some(1)
    );
}

/// Transient backend failures are retried; nothing is lost or reordered.
pub async fn transient_failures_are_retried_without_losing_writes<H: Harness>(harness: &H) {
    let (store, gate, _) = gated(harness, "retries").await;
    gate.fail_next(3);
    store.set("a", &1).expect("set");
    store.set("b", &1).expect("set");
    let version = store
        .set_and_wait("a", &2)
        .await
        .expect("lands after retries");
    store.flush().await.expect("flush");
    let a = store
        .get_versioned::<i32>("a")
        .expect("get")
        .expect("present");
    assert_eq!((*a.value, a.version), (2, version));
    assert_eq!(value::<i32>(&store, "b"), Some(1));
}

/// Invalid keys, unencodable values, oversized values and decodes into the
/// wrong type are typed errors at the call, and nothing stored is lost.
pub async fn bad_input_is_refused_at_the_call_and_loses_nothing<H: Harness>(harness: &H) {
    let scope = scope("bad-input");
    let store = Store::builder()
        .backend(harness.open(&scope).await)
        .linked_hooks(false)
        .max_value_size(1024)
        .open()
        .await
        .expect("store starts");
    store.set_and_wait("kept", &"safe").await.expect("set");
    for bad in ["", "a\nb", "tab\there", "nul\0", &"x".repeat(2000)] {
        let err = store.set(bad, &1).expect_err("invalid key");
        assert!(matches!(err, Error::InvalidKey { .. }), "{bad:?}: {err:?}");
        assert!(matches!(store.remove(bad), Err(Error::InvalidKey { .. })));
        assert!(matches!(
            store.get::<i32>(bad),
            Err(Error::InvalidKey { .. })
        ));
    }
    let mut unencodable = HashMap::new();
    unencodable.insert(vec![1u8], 1);
    let err = store
        .set("map", &unencodable)
        .expect_err("non-string map keys");
    assert!(
        matches!(&err, Error::Encode { key, .. } if key == "map"),
        "{err:?}"
    );
    let err = store.set("big", &"x".repeat(2000)).expect_err("too large");
    assert!(
        matches!(&err, Error::ValueTooLarge { key, size, limit: 1024 } if key == "big" && *size > 1024),
        "{err:?}"
    );
    let err = store.get::<u32>("kept").expect_err("a string is not a u32");
    assert!(
        matches!(&err, Error::Decode { key, .. } if key == "kept"),
        "{err:?}"
    );
    assert_eq!(
        value::<String>(&store, "kept").as_deref(),
        Some("safe"),
        "nothing lost"
    );
    store.flush().await.expect("nothing bad was queued");
    assert_eq!(store.keys(), vec!["kept".to_owned()]);
}

/// A closed store refuses calls with `Error::Closed`.
pub async fn a_closed_store_refuses_calls<H: Harness>(harness: &H) {
    let (store, _, scope) = gated(harness, "closed").await;
    store.set("k", &1).expect("set");
    store.close().await.expect("close flushes");
    assert!(matches!(store.set("k", &2), Err(Error::Closed)));
    assert!(matches!(store.get::<i32>("k"), Err(Error::Closed)));
    assert!(matches!(
        store.set_and_wait("k", &2).await,
        Err(Error::Closed)
    ));
    let stored = harness.open(&scope).await.read("k").await.expect("read");
    assert!(stored.is_some(), "close flushed the queued write");
}

/// A TTL expires the key where supported and is refused where not.
pub async fn time_to_live_is_honoured_or_refused<H: Harness>(harness: &H) {
    let (store, _, _) = gated(harness, "ttl").await;
    let result = store.set_with_ttl("t", &1, Duration::from_millis(200));
    if !store.capabilities().ttl {
        assert!(
            matches!(result, Err(Error::Unsupported { .. })),
            "{result:?}"
        );
        return;
    }
    result.expect("ttl accepted");
    store.flush().await.expect("flush");
    eventually("the key to expire", CONVERGE_BASE, || {
        matches!(store.get::<i32>("t"), Ok(None))
    })
    .await;
}

/// The writes of a transaction land together, at one revision, or not at
/// all; a backend without atomic batches refuses it and nothing is written.
pub async fn transactions_land_together_or_not_at_all<H: Harness>(harness: &H) {
    let (store, _, scope) = gated(harness, "transactions").await;
    store.set_and_wait("gone", &0).await.expect("set");
    let result = store
        .transaction()
        .set("a", &1)
        .set("b", &2)
        .remove("gone")
        .commit()
        .await;
    if !store.capabilities().atomic_batch {
        assert!(
            matches!(result, Err(Error::Unsupported { .. })),
            "{result:?}"
        );
        assert_eq!(value::<i32>(&store, "a"), None);
        assert_eq!(value::<i32>(&store, "gone"), Some(0));
        return;
    }
    let revision = result.expect("commit");
    let a = store
        .get_versioned::<i32>("a")
        .expect("get")
        .expect("a is visible at once");
    let b = store
        .get_versioned::<i32>("b")
        .expect("get")
        .expect("b is visible at once");
    assert_eq!((*a.value, *b.value), (1, 2));
    assert_eq!(a.version, b.version, "one revision for both");
    assert_eq!(a.version, Version(revision.0));
    assert_eq!(value::<i32>(&store, "gone"), None);
    let other = self::store(harness.open(&scope).await).await;
    eventually(
        "another handle to see the transaction",
        CONVERGE_BASE,
        || value::<i32>(&other, "b") == Some(2),
    )
    .await;
    assert_eq!(value::<i32>(&other, "a"), Some(1));
    assert_eq!(value::<i32>(&other, "gone"), None);

    if store.capabilities().compare_and_set {
        let conflict = store
            .transaction()
            .set("a", &10)
            .set_if("b", Precondition::Absent, &20)
            .commit()
            .await;
        match conflict {
            Err(Error::Conflict { key, .. }) => assert_eq!(key, "b"),
            other => panic!("expected a conflict on b, got {other:?}"),
        }
        store.flush().await.expect("flush");
        assert_eq!(value::<i32>(&store, "a"), Some(1), "nothing of it landed");
        store
            .transaction()
            .set_if("a", Precondition::Version(a.version), &11)
            .remove_if("b", Precondition::Version(b.version))
            .commit()
            .await
            .expect("preconditions that hold");
        assert_eq!(value::<i32>(&store, "a"), Some(11));
        assert_eq!(value::<i32>(&store, "b"), None);
    }

    let invalid = store.transaction().set("c", &3).set("", &4).commit().await;
    assert!(
        matches!(invalid, Err(Error::InvalidKey { .. })),
        "{invalid:?}"
    );
    store.flush().await.expect("flush");
    assert_eq!(value::<i32>(&store, "c"), None, "nothing was sent");
}

/// Keys with `/`, `~`, URLs, dots, spaces, non-ASCII text and the longest length
/// round-trip unchanged and stay apart.
pub async fn unusual_keys_round_trip<H: Harness>(harness: &H) {
    let (store, _, scope) = gated(harness, "keys-unusual").await;
    let long = "k".repeat(store_core::key::MAX_KEY_LEN);
    let keys = [
        "https://onReady",
        "a/b~c",
        "~1",
        "~0",
        "a/b",
        "a~1b",
        "..",
        "../escape",
        "with space",
        "größe",
        "日本語",
        long.as_str(),
    ];
    for (i, key) in keys.iter().enumerate() {
        store.set(*key, &i).expect("valid key");
    }
    store.flush().await.expect("flush");
    let fresh = store_on(harness, &scope).await;
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(value::<usize>(&fresh, key), Some(i), "{key}");
    }
    assert_eq!(fresh.len(), keys.len());
}

/// More writes than one batch takes are all applied.
pub async fn many_writes_are_split_into_batches<H: Harness>(harness: &H) {
    let (store, _, _) = gated(harness, "batches").await;
    for i in 0..2500 {
        store.set(format!("n/{i:05}"), &i).expect("set");
    }
    store.flush().await.expect("flush");
    assert_eq!(store.snapshot().entries.len(), 2500);
}

/// One task per handle, each adding 1 to `counter` `times` times with `update`.
async fn increment_concurrently(handles: Vec<Store>, times: usize) {
    let tasks: Vec<_> = handles
        .into_iter()
        .map(|store| {
            let store = store.with_timeout(deadline(Duration::from_secs(60)));
            tokio::spawn(async move {
                for _ in 0..times {
                    store
                        .update("counter", |n: Option<&u64>| n.copied().unwrap_or(0) + 1)
                        .await
                        .expect("update");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
}

async fn next_key(subscription: &mut store_core::Subscription) -> String {
    tokio::time::timeout(deadline(CONVERGE_BASE), subscription.next())
        .await
        .expect("a change")
        .expect("open")
        .expect("no lag")
        .key()
        .to_owned()
}

async fn store_on<H: Harness>(harness: &H, scope: &str) -> Store {
    store(harness.open(scope).await).await
}

//! Sessions, scopes and handles: isolation, atomic updates, lifecycle, limits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use store_core::{MemoryBackend, PlainKey, StoreValue};
use store_session::{Error, QuotaKind, Sessions};

type Result<T = ()> = std::result::Result<T, Error>;

#[tokio::test]
async fn two_sessions_two_realms_and_two_environments_never_see_each_others_local_data() -> Result {
    let sessions = Sessions::new();
    let one = sessions.open("one").await?;
    let two = sessions.open("two").await?;
    let scopes = [
        one.local("alpha")?,
        one.local("bravo")?,
        one.local_in("red", "alpha")?,
        one.local_in("blue", "alpha")?,
        one.realm("red")?,
        one.realm("blue")?,
        one.global()?,
        two.local("alpha")?,
        two.local_in("red", "alpha")?,
        two.realm("red")?,
        two.global()?,
    ];
    for (i, scope) in scopes.iter().enumerate() {
        scope.use_value("secret", i)?;
        scope.durable().await?.use_value("secret", i).await?;
    }
    for (i, scope) in scopes.iter().enumerate() {
        assert_eq!(
            scope.use_value("secret", usize::MAX)?.get()?,
            i,
            "{:?}",
            scope.kind()
        );
        assert_eq!(
            scope.keys()?,
            vec!["secret".to_owned()],
            "{:?}",
            scope.kind()
        );
        let durable = scope.durable().await?;
        assert_eq!(*durable.use_value("secret", usize::MAX).await?.get()?, i);
        assert_eq!(durable.keys()?, vec!["secret".to_owned()]);
    }
    // Clearing one scope leaves the others alone.
    scopes[0].clear()?;
    scopes[0].durable().await?.clear().await?;
    assert!(scopes[0].keys()?.is_empty());
    assert!(scopes[0].durable().await?.keys()?.is_empty());
    assert_eq!(scopes[7].use_value("secret", 0_usize)?.get()?, 7);
    Ok(())
}

#[tokio::test]
async fn a_default_value_is_never_shared_between_scopes() -> Result {
    let sessions = Sessions::new();
    let session = sessions.open("s").await?;
    let default = vec!["initial".to_owned()];
    let red = session.realm("red")?.use_value("log", default.clone())?;
    red.update(|log| log.push("red was here".into()))?;
    // The reference stored the default by reference: a mutated default leaked here.
    let blue = session.realm("blue")?.use_value("log", default.clone())?;
    assert_eq!(blue.get()?, vec!["initial".to_owned()]);
    assert_eq!(red.get()?.len(), 2);

    // `use_with` builds one default per scope that lacks the key, and none otherwise.
    let mut built = 0;
    for realm in ["red", "blue", "red"] {
        session.realm(realm)?.use_with("cache", || {
            built += 1;
            HashMap::<String, u32>::new()
        })?;
    }
    assert_eq!(built, 2);
    let durable_red = session.realm("red")?.durable().await?;
    let durable_blue = session.realm("blue")?.durable().await?;
    durable_red
        .use_value("log", default.clone())
        .await?
        .update(|log| log.push("red".into()))
        .await?;
    assert_eq!(
        *durable_blue.use_value("log", default).await?.get()?,
        vec!["initial".to_owned()]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_tasks_of_a_thousand_live_updates_on_one_handle_end_at_eight_thousand() -> Result {
    let sessions = Sessions::new();
    let counter = sessions
        .open("s")
        .await?
        .global()?
        .use_value("counter", 0_u64)?;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let counter = counter.clone();
            tokio::spawn(async move {
                for _ in 0..1000 {
                    counter.update(|n| *n += 1)?;
                    tokio::task::yield_now().await;
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task runs")?;
    }
    assert_eq!(counter.get()?, 8000);
    assert_eq!(counter.version()?, 8001);
    Ok(())
}

/// More threads than this machine has cores, creating, updating and removing
/// entries of one scope at once: a thread preempted while it holds one of the
/// scope's shards must hold up the others only, never lose or double a change.
#[tokio::test]
async fn eight_threads_creating_and_updating_live_entries_of_one_scope_lose_no_change() -> Result {
    const KEYS: usize = 500;
    const ROUNDS: usize = 4;
    let sessions = Sessions::new();
    let scope = sessions.open("s").await?.global()?;
    std::thread::scope(|threads| -> Result {
        let updaters: Vec<_> = (0..8)
            .map(|t| {
                let scope = &scope;
                threads.spawn(move || -> Result {
                    // Each thread starts at another key, so creations race.
                    for i in 0..KEYS * ROUNDS {
                        let key = format!("k{}", (i + t * 61) % KEYS);
                        scope.use_value(&key, 0_u64)?.update(|n| *n += 1)?;
                    }
                    Ok(())
                })
            })
            .collect();
        let churner = threads.spawn(|| -> Result {
            for i in 0..2000 {
                let key = format!("tmp{}", i % 50);
                scope.use_value(&key, i)?;
                assert!(scope.remove(&key)?, "{key} was just created");
                if i % 100 == 0 {
                    scope.keys()?;
                }
            }
            Ok(())
        });
        for thread in updaters {
            thread.join().expect("an updater runs")?;
        }
        churner.join().expect("the churner runs")
    })?;
    let keys = scope.keys()?;
    assert_eq!(keys.len(), KEYS, "every tmp key removed, every k key there");
    for key in keys {
        assert_eq!(
            scope.use_value(&key, 0_u64)?.get()?,
            8 * ROUNDS as u64,
            "{key}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_tasks_of_a_thousand_durable_updates_on_one_handle_end_at_eight_thousand() -> Result {
    let sessions = Sessions::new();
    let durable = sessions.open("s").await?.global()?.durable().await?;
    let counter = durable.use_value("counter", 0_u64).await?;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let counter = counter.clone();
            tokio::spawn(async move {
                for _ in 0..1000 {
                    counter.update(|n| *n += 1).await?;
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task runs")?;
    }
    assert_eq!(*counter.get()?, 8000);
    Ok(())
}

#[tokio::test]
async fn the_lock_guard_mutates_a_large_map_in_place() -> Result {
    let sessions = Sessions::new();
    let scope = sessions.open("s").await?.local("env")?;
    let map = scope.use_with("big", || {
        (0..10_000)
            .map(|i| (i, 0_u32))
            .collect::<HashMap<u32, u32>>()
    })?;
    let before = map.version()?;
    {
        let mut guard = map.lock()?;
        if let Some(v) = guard.get_mut(&4242) {
            *v += 1;
        }
    }
    assert_eq!(map.read(|m| m.get(&4242).copied())?, Some(1));
    assert_eq!(map.version()?, before + 1);
    // Another handle on the same key is the same entry, not a copy.
    let again = scope.use_value("big", HashMap::<u32, u32>::new())?;
    assert_eq!(again.read(|m| m.len())?, 10_000);
    Ok(())
}

#[tokio::test]
async fn a_key_used_with_another_type_is_a_type_mismatch_naming_both_types() -> Result {
    let sessions = Sessions::new();
    let scope = sessions.open("s").await?.global()?;
    scope.use_value("n", 1_u32)?;
    let err = scope.use_value("n", "one").expect_err("a str is not a u32");
    assert!(
        matches!(&err, Error::TypeMismatch { key, stored: "u32", requested: "&str" } if key == "n"),
        "{err:?}"
    );
    let durable = scope.durable().await?;
    durable.use_value("n", 1_u32).await?;
    let err = durable
        .use_value("n", 1_i64)
        .await
        .expect_err("another type");
    assert!(
        matches!(
            &err,
            Error::TypeMismatch {
                stored: "u32",
                requested: "i64",
                ..
            }
        ),
        "{err:?}"
    );
    let err = durable
        .use_value("n", "one".to_owned())
        .await
        .expect_err("another type");
    assert!(matches!(&err, Error::TypeMismatch { .. }), "{err:?}");
    Ok(())
}

#[tokio::test]
async fn handles_used_after_the_session_ends_are_outdated_and_its_data_is_gone() -> Result {
    let backend = Arc::new(MemoryBackend::new());
    let sessions = Sessions::builder()
        .shared_backend(Arc::clone(&backend))
        .build();
    let session = sessions.open("s").await?;
    let scope = session.local("env")?;
    let live = scope.use_value("k", 1)?;
    let durable = scope.durable().await?.use_value("k", 1).await?;
    let mut changes = live.changes();
    let ended = session.end().await?;
    assert_eq!((ended.live_entries, ended.durable_keys), (1, 1));
    assert!(matches!(live.get(), Err(Error::Outdated { ref key }) if key == "k"));
    assert!(matches!(live.set(2), Err(Error::Outdated { .. })));
    assert!(matches!(durable.get(), Err(Error::Outdated { .. })));
    assert!(matches!(durable.set(2), Err(Error::Outdated { .. })));
    assert!(matches!(
        durable.update(|n| *n += 1).await,
        Err(Error::Outdated { .. })
    ));
    assert!(matches!(
        scope.use_value("other", 1),
        Err(Error::Outdated { .. })
    ));
    assert!(matches!(
        changes.changed().await,
        Err(Error::Outdated { .. })
    ));
    assert!(matches!(session.global(), Err(Error::SessionEnded { .. })));
    assert!(matches!(
        session.end().await,
        Err(Error::SessionEnded { .. })
    ));
    assert!(matches!(sessions.get("s"), Err(Error::NotFound { .. })));
    use store_core::Backend;
    assert!(
        backend.list("").await?.entries.is_empty(),
        "nothing left on the backend"
    );
    // The id can be used again, from scratch.
    let again = sessions.open("s").await?;
    assert_eq!(again.local("env")?.use_value("k", 9)?.get()?, 9);
    Ok(())
}

#[tokio::test]
async fn a_reset_starts_fresh_while_teardown_still_reads_the_retired_instance() -> Result {
    let backend = Arc::new(MemoryBackend::new());
    let sessions = Sessions::builder()
        .shared_backend(Arc::clone(&backend))
        .build();
    let session = sessions.open("s").await?;
    let old_live = session.global()?.use_value("score", 10)?;
    let old_durable = session
        .global()?
        .durable()
        .await?
        .use_value("score", 10)
        .await?;

    let teardown = session.reset().await?;
    assert_eq!((teardown.generation(), session.generation()?), (0, 1));
    // The fresh instance is empty.
    assert_eq!(session.global()?.use_value("score", 0)?.get()?, 0);
    assert_eq!(
        *session
            .global()?
            .durable()
            .await?
            .use_value("score", 0)
            .await?
            .get()?,
        0
    );
    // Teardown reads the retired one; old handles read but cannot write.
    assert_eq!(teardown.global()?.use_value("score", 0)?.get()?, 10);
    assert_eq!(
        *teardown
            .global()?
            .durable()
            .await?
            .use_value("score", 0)
            .await?
            .get()?,
        10
    );
    assert_eq!(old_live.get()?, 10);
    assert_eq!(*old_durable.get()?, 10);
    assert!(matches!(old_live.set(11), Err(Error::Outdated { .. })));
    assert!(matches!(old_durable.set(11), Err(Error::Outdated { .. })));
    assert!(matches!(
        teardown.global()?.use_value("new", 1),
        Err(Error::Outdated { .. })
    ));

    let freed = teardown.finish().await?;
    assert_eq!((freed.live_entries, freed.durable_keys), (1, 1));
    assert!(matches!(old_live.get(), Err(Error::Outdated { .. })));
    assert!(matches!(old_durable.get(), Err(Error::Outdated { .. })));

    // A restarted process finds the fresh generation, not the retired one.
    let restarted = Sessions::builder().shared_backend(backend).build();
    let session = restarted.open("s").await?;
    assert_eq!(session.generation()?, 1);
    assert_eq!(
        *session
            .global()?
            .durable()
            .await?
            .use_value("score", 99)
            .await?
            .get()?,
        0
    );
    Ok(())
}

#[tokio::test]
async fn durable_data_survives_a_restart_of_the_process() -> Result {
    let backend = Arc::new(MemoryBackend::new());
    {
        let sessions = Sessions::builder()
            .shared_backend(Arc::clone(&backend))
            .build();
        let session = sessions.open("s").await?;
        let durable = session.local_in("red", "env")?.durable().await?;
        durable
            .use_value("progress", 0_u32)
            .await?
            .set_and_wait(7)
            .await?;
        session.global()?.use_value("live-only", 1)?;
    }
    let sessions = Sessions::builder().shared_backend(backend).build();
    let session = sessions.open("s").await?;
    let durable = session.local_in("red", "env")?.durable().await?;
    assert_eq!(*durable.use_value("progress", 0_u32).await?.get()?, 7);
    assert!(
        session.global()?.keys()?.is_empty(),
        "live values are per process"
    );
    assert_eq!(
        session.usage()?.entries,
        1,
        "adopted durable keys count against the quota"
    );
    Ok(())
}

#[tokio::test]
async fn quotas_refuse_new_entries_and_bytes_with_a_typed_error() -> Result {
    let sessions = Sessions::builder()
        .max_entries(3)
        .max_durable_bytes(30)
        .build();
    let session = sessions.open("s").await?;
    let scope = session.global()?;
    scope.use_value("a", 1)?;
    scope.use_value("b", 1)?;
    let durable = scope.durable().await?;
    let text = durable.use_value("text", "x".repeat(10)).await?;
    let err = session
        .local("env")?
        .use_value("d", 1)
        .expect_err("fourth entry");
    assert!(
        matches!(&err, Error::QuotaExceeded { key, kind: QuotaKind::Entries, limit: 3, requested: 4, .. } if key == "d"),
        "{err:?}"
    );
    scope.remove("a")?;
    session.local("env")?.use_value("d", 1)?;

    let err = text.set("x".repeat(40)).expect_err("too many bytes");
    assert!(
        matches!(
            &err,
            Error::QuotaExceeded {
                kind: QuotaKind::DurableBytes,
                limit: 30,
                ..
            }
        ),
        "{err:?}"
    );
    let err = text
        .update(|t| t.push_str(&"y".repeat(40)))
        .await
        .expect_err("too many bytes");
    assert!(matches!(&err, Error::QuotaExceeded { .. }), "{err:?}");
    assert_eq!(text.get()?.len(), 10, "nothing was written");
    text.set("x".repeat(20))?;
    assert_eq!(session.usage()?.durable_bytes, 22);
    Ok(())
}

/// Lets `span` of paused Tokio time pass second by second, as real time would,
/// so every periodic task gets its turns on the way.
async fn pass(span: Duration) {
    for _ in 0..span.as_secs() {
        tokio::time::advance(Duration::from_secs(1)).await;
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn an_idle_session_expires_after_its_time_to_live_and_use_keeps_it_alive() -> Result {
    let sessions = Sessions::builder()
        .idle_ttl(Duration::from_secs(60))
        .build();
    let session = sessions.open("s").await?;
    let handle = session.global()?.use_value("k", 1)?;
    pass(Duration::from_secs(50)).await;
    handle.get()?;
    pass(Duration::from_secs(50)).await;
    assert!(
        sessions.contains("s"),
        "used 50 s ago, within the time to live"
    );
    pass(Duration::from_secs(11)).await;
    // Use is noticed a sixteenth of the time to live late at most, twice over.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(7_500);
    while sessions.contains("s") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session did not expire"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(session.is_ended());
    assert!(matches!(handle.get(), Err(Error::Outdated { .. })));
    Ok(())
}

#[tokio::test]
async fn watchers_hear_each_change_to_their_key_and_its_removal() -> Result {
    let sessions = Sessions::new();
    let scope = sessions.open("s").await?.global()?;
    let handle = scope.use_value("k", 0)?;
    let mut changes = handle.changes();
    let waiter = tokio::spawn(async move {
        let first = changes.changed().await;
        (first, changes)
    });
    handle.set(5)?;
    let (first, mut changes) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the watcher wakes")
        .expect("the watcher runs");
    assert_eq!(first?, 2);
    handle.update(|n| *n += 1)?;
    handle.update(|n| *n += 1)?;
    assert_eq!(
        changes.changed().await?,
        4,
        "changes made meanwhile fold into one wake-up"
    );
    scope.remove("k")?;
    assert!(matches!(
        changes.changed().await,
        Err(Error::Outdated { .. })
    ));

    let durable = scope.durable().await?;
    let value = durable.use_value("d", 0).await?;
    let mut durable_changes = value.changes();
    value.set_and_wait(3).await?;
    let event = tokio::time::timeout(
        Duration::from_secs(10),
        futures_util::StreamExt::next(&mut durable_changes),
    )
    .await
    .expect("a change")
    .expect("open")?;
    assert_eq!(event.value::<i32>()?, Some(3));
    Ok(())
}

#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
struct Settings {
    verbose: bool,
}

impl StoreValue for Settings {
    const KEY: &'static str = "settings";
}

impl PlainKey for Settings {}

struct ApiClient;

#[tokio::test]
async fn the_debug_snapshot_shows_json_values_and_type_names_for_the_rest() -> Result {
    let sessions = Sessions::new();
    let session = sessions.open("s").await?;
    let global = session.global()?;
    global
        .use_typed::<Settings>()?
        .update(|s| s.verbose = true)?;
    global.use_value("client", ApiClient)?;
    global.use_value("count", 3_u32)?.show_in_snapshot();
    session
        .local_in("red", "a/b")?
        .durable()
        .await?
        .use_value("saved", vec![1, 2])
        .await?;
    let snapshot = session.snapshot()?;
    assert_eq!(snapshot["session"], "s");
    let live = &snapshot["scopes"]["global"]["live"];
    assert_eq!(live["settings"], serde_json::json!({ "verbose": true }));
    assert_eq!(live["count"], 3);
    assert!(
        live["client"]["$type"]
            .as_str()
            .is_some_and(|t| t.ends_with("ApiClient")),
        "{live}"
    );
    assert_eq!(
        snapshot["scopes"]["local/red/a~1b"]["durable"]["saved"],
        serde_json::json!([1, 2])
    );
    assert_eq!(snapshot["entries"], 4);
    Ok(())
}

#[tokio::test]
async fn bad_names_and_keys_are_refused() -> Result {
    let sessions = Sessions::new();
    assert!(matches!(
        sessions.open("").await,
        Err(Error::InvalidName {
            what: "session",
            ..
        })
    ));
    let session = sessions.open("s").await?;
    assert!(matches!(
        session.realm("a\nb"),
        Err(Error::InvalidName { what: "realm", .. })
    ));
    assert!(matches!(session.local(""), Err(Error::InvalidName { .. })));
    let err = session.global()?.use_value("", 1).expect_err("empty key");
    assert!(
        matches!(err, Error::Store(store_core::Error::InvalidKey { .. })),
        "{err:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_panicking_live_update_changes_nothing_and_wakes_no_watcher() -> Result {
    let sessions = Sessions::new();
    let scope = sessions.open("s").await?.global()?;
    let log = scope.use_value("log", vec!["first".to_owned()])?;
    let mut changes = log.changes();
    let before = log.version()?;
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        log.update(|l| {
            l.push("half".into());
            panic!("the closure fails half-way");
        })
    }));
    assert!(panicked.is_err(), "the panic reaches the caller");
    assert_eq!(log.get()?, vec!["first".to_owned()]);
    assert_eq!(log.version()?, before);
    // The entry still works, and the next change is the first one watchers hear of.
    log.update(|l| l.push("second".into()))?;
    let woken = tokio::time::timeout(Duration::from_secs(5), changes.changed())
        .await
        .expect("the watcher is woken")?;
    assert_eq!(woken, before + 1);
    assert_eq!(log.get()?, vec!["first".to_owned(), "second".to_owned()]);
    Ok(())
}

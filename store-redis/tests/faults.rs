//! The Redis backend under faults, on servers started here: `kill -9` and a
//! restart (no acknowledged write lost), killed client connections, a paused
//! server (a batch whose answer is lost is resent and applies once, or is
//! reported as of unknown outcome), a trimmed change log (a gap), two
//! replicas racing on compare-and-set, stores spread over a cluster, and
//! configuration errors that never show a credential.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use store_core::backend::{Batch, Op, Outcome, WatchEvent};
use store_core::{Backend, Error, Payload, Precondition, Revision, Store, Version};
use store_redis::{BuildError, ConfigError, RedisBackend, RedisStoreError};
use support::{DEADLINE, RedisCluster, RedisServer, backend, eventually};

// The deadline scaling of the conformance kit; moving it changes this line.
use store_conformance::deadline;

fn put(key: &str, value: &str) -> Batch {
    Batch {
        ops: vec![Op::put(key, Payload::from(value))],
        atomic: false,
    }
}

async fn store_on(backend: RedisBackend) -> Store {
    Store::builder()
        .backend(backend)
        .linked_hooks(false)
        .timeout(deadline(DEADLINE))
        .retry_backoff(Duration::from_millis(5), Duration::from_millis(200))
        .open()
        .await
        .expect("store starts")
}

/// Runs a blocking harness call (process control, redis-cli) off the runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking call")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_fsync_always_loses_no_acknowledged_write() {
    let server = Arc::new(std::sync::Mutex::new(RedisServer::start()));
    let url = server.lock().expect("server").url();
    let writer = RedisBackend::builder(&url, "crash")
        .prefix("test")
        .request_timeout(Duration::from_millis(500))
        .write_retry_window(Duration::from_secs(2))
        .build()
        .await
        .expect("backend connects");
    assert!(
        writer
            .persistence()
            .await
            .expect("settings")
            .survives_a_crash(),
        "the test server fsyncs every write"
    );
    const WRITERS: usize = 4;
    const WRITES: usize = 400;
    let acknowledged = Arc::new(AtomicUsize::new(0));
    // Four writers, so several batches are in flight when the server dies.
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let writer = writer.clone();
            let acknowledged = Arc::clone(&acknowledged);
            tokio::spawn(async move {
                let (mut acked, mut unknown, mut failed) = (Vec::new(), 0, 0);
                for i in (w..WRITES).step_by(WRITERS) {
                    match writer
                        .apply(put(&format!("k/{i:04}"), &i.to_string()))
                        .await
                    {
                        Ok(_) => {
                            acked.push(i);
                            acknowledged.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(Error::Unavailable { source, .. })
                            if matches!(
                                source.downcast_ref::<RedisStoreError>(),
                                Some(RedisStoreError::OutcomeUnknown { .. })
                            ) =>
                        {
                            unknown += 1;
                        }
                        Err(_) => failed += 1,
                    }
                }
                (acked, unknown, failed)
            })
        })
        .collect();
    // Crash the server twice while the writes go on.
    for crash_after in [WRITES / 4, WRITES / 2] {
        eventually("writes to be acknowledged before the crash", async || {
            acknowledged.load(Ordering::SeqCst) >= crash_after
        })
        .await;
        let server = Arc::clone(&server);
        blocking(move || server.lock().expect("server").restart()).await;
    }
    let (mut acked, mut unknown, mut failed) = (Vec::new(), 0, 0);
    for task in tasks {
        let (a, u, f) = task.await.expect("writer");
        acked.extend(a);
        unknown += u;
        failed += f;
    }
    let reader = backend(&url, "crash").await;
    let listing = reader.list("k/").await.expect("list");
    let mut lost = 0;
    for i in &acked {
        let key = format!("k/{i:04}");
        let found = listing.entries.iter().find(|e| *e.key() == *key);
        if found.is_none_or(|e| e.value().as_str() != i.to_string()) {
            lost += 1;
        }
    }
    println!(
        "kill -9 x2 during {WRITES} writes from {WRITERS} writers: acknowledged={} outcome_unknown={unknown} failed={failed} lost={lost}",
        acked.len()
    );
    assert_eq!(lost, 0, "acknowledged writes lost after kill -9");
    assert!(acked.len() >= WRITES / 2, "most writes were acknowledged");
    // Revisions stay consistent: the log follows on from the listing.
    let mut watch = reader.watch(listing.revision).await.expect("watch");
    reader
        .apply(put("after", "1"))
        .await
        .expect("write after restart");
    let event = tokio::time::timeout(deadline(DEADLINE), watch.next())
        .await
        .expect("an event");
    assert!(
        matches!(&event, Some(Ok(WatchEvent::Changes { revision, .. })) if revision.0 == listing.revision.0 + 1),
        "{event:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_client_connections_are_reconnected_and_watches_resume() {
    let server = RedisServer::start();
    let a = store_on(backend(&server.url(), "kill").await).await;
    let b = store_on(backend(&server.url(), "kill").await).await;
    for i in 0..30u32 {
        if i % 5 == 0 {
            server.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
        }
        a.set_and_wait("n", &i).await.expect("write after a kill");
    }
    eventually("the other replica to see the last write", async || {
        b.get::<u32>("n").ok().flatten().as_deref() == Some(&29)
    })
    .await;
    b.set_and_wait("m", &1)
        .await
        .expect("the other replica writes");
    eventually("the first replica to see it", async || {
        a.get::<u32>("m").ok().flatten().is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_answer_is_lost_is_resent_and_applies_once() {
    let server = RedisServer::start();
    let backend = RedisBackend::builder(server.url(), "resend")
        .prefix("test")
        .request_timeout(Duration::from_millis(150))
        .write_retry_window(Duration::from_secs(20))
        .build()
        .await
        .expect("backend connects");
    let before = backend.revision().await.expect("revision");
    // Writes are held on the server: the first attempt stays queued there,
    // times out here, and is resent; the server runs the first, then answers
    // the resend from its record.
    server.cli(&["CLIENT", "PAUSE", "1000", "WRITE"]);
    let started = Instant::now();
    let batch = Batch {
        ops: vec![Op::put("once", Payload::from("1")).when(Precondition::Absent)],
        atomic: true,
    };
    let applied = backend.apply(batch).await.expect("applied");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(150),
        "the first attempt timed out ({waited:?})"
    );
    assert!(
        matches!(applied.outcomes[..], [Outcome::Applied(Version(v))] if v == before.0 + 1),
        "a resent compare-and-set reports its own success, not a conflict: {:?}",
        applied.outcomes
    );
    assert_eq!(applied.revision.0, before.0 + 1);
    assert_eq!(backend.revision().await.expect("revision").0, before.0 + 1);
    let log = server.cli(&["XLEN", &format!("{}:log", backend.hash_tag())]);
    assert_eq!(log.trim(), "1", "one log entry for the batch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_without_an_answer_in_the_window_is_reported_as_unknown() {
    let server = RedisServer::start();
    let backend = RedisBackend::builder(server.url(), "unknown")
        .prefix("test")
        .request_timeout(Duration::from_millis(100))
        .write_retry_window(Duration::from_millis(400))
        .build()
        .await
        .expect("backend connects");
    let before = backend.revision().await.expect("revision");
    server.cli(&["CLIENT", "PAUSE", "1500", "WRITE"]);
    let result = backend.apply(put("maybe", "1")).await;
    let Err(Error::Unavailable { source, .. }) = &result else {
        panic!("expected an unavailable error, got {result:?}");
    };
    assert!(
        matches!(
            source.downcast_ref::<RedisStoreError>(),
            Some(RedisStoreError::OutcomeUnknown { attempts, .. }) if *attempts > 1
        ),
        "{source}"
    );
    // Whether it landed depends on whether the server still held an attempt
    // when the pause ended; either way it landed at most once.
    eventually("the pause to end", async || {
        backend.revision().await.is_ok()
    })
    .await;
    server.cli(&["CLIENT", "UNPAUSE"]);
    let probe = backend
        .apply(put("probe", "1"))
        .await
        .expect("write after the pause");
    let landed = backend.read("maybe").await.expect("read").is_some();
    assert_eq!(
        probe.revision.0,
        before.0 + 1 + u64::from(landed),
        "the unknown write landed at most once"
    );
    println!("write of unknown outcome landed: {landed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_or_sleeping_server_delays_writes_but_loses_none() {
    let server = RedisServer::start();
    let store = store_on(backend(&server.url(), "pause").await).await;
    server.cli(&["CLIENT", "PAUSE", "600", "ALL"]);
    store
        .set_and_wait("a", &1)
        .await
        .expect("lands after the pause");
    let port = server.port();
    let sleeper = std::thread::spawn(move || {
        std::process::Command::new("redis-cli")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "DEBUG",
                "SLEEP",
                "2",
            ])
            .output()
    });
    for i in 0..5u32 {
        store
            .set_and_wait("b", &i)
            .await
            .expect("lands after the sleep");
    }
    let _ = sleeper.join();
    let fresh = store_on(backend(&server.url(), "pause").await).await;
    assert_eq!(fresh.get::<u32>("a").expect("decodes").as_deref(), Some(&1));
    assert_eq!(fresh.get::<u32>("b").expect("decodes").as_deref(), Some(&4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_behind_the_trimmed_log_gets_a_gap_and_stores_relist() {
    let server = RedisServer::start();
    let writer = backend(&server.url(), "gap").await;
    let store = store_on(backend(&server.url(), "gap").await).await;
    let mut early = Revision(0);
    for i in 0..20 {
        let applied = writer
            .apply(put(&format!("k{i}"), "1"))
            .await
            .expect("write");
        if i == 3 {
            early = applied.revision;
        }
    }
    let log = format!("{}:log", writer.hash_tag());
    server.cli(&["XTRIM", &log, "MAXLEN", "0"]);
    let mut behind = writer.watch(early).await.expect("watch");
    let event = tokio::time::timeout(deadline(DEADLINE), behind.next())
        .await
        .expect("an event");
    assert!(matches!(event, Some(Ok(WatchEvent::Gap))), "{event:?}");
    assert!(
        tokio::time::timeout(deadline(DEADLINE), behind.next())
            .await
            .expect("the stream ends")
            .is_none()
    );
    // A watch from the current revision goes on; a store keeps converging.
    let now = writer.revision().await.expect("revision");
    let mut current = writer.watch(now).await.expect("watch");
    writer.apply(put("after", "2")).await.expect("write");
    let event = tokio::time::timeout(deadline(DEADLINE), current.next())
        .await
        .expect("an event");
    assert!(
        matches!(event, Some(Ok(WatchEvent::Changes { .. }))),
        "{event:?}"
    );
    eventually("the store to see every key", async || store.len() == 21).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_data_is_lost_relists_instead_of_stalling() {
    let server = RedisServer::start();
    let writer = backend(&server.url(), "lost").await;
    let store = store_on(backend(&server.url(), "lost").await).await;
    for i in 0..10 {
        writer
            .apply(put(&format!("old{i}"), "1"))
            .await
            .expect("write");
    }
    eventually("the store to see the old keys", async || store.len() == 10).await;
    let before = writer.revision().await.expect("revision");
    // What a restart without persistence does to the data.
    server.cli(&["FLUSHALL"]);
    let applied = writer.apply(put("new", "1")).await.expect("write");
    assert!(
        applied.revision > before,
        "revisions keep growing after the loss"
    );
    eventually("the store to show the loss and the new key", async || {
        store.len() == 1 && matches!(store.get::<i32>("new"), Ok(Some(_)))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_see_each_others_writes_and_compare_and_set_is_exact() {
    let server = RedisServer::start();
    let a = backend(&server.url(), "race").await;
    let b = backend(&server.url(), "race").await;
    let start = a.list("").await.expect("list").revision;
    let mut a_watch = a.watch(start).await.expect("watch");
    b.apply(put("from-b", "1")).await.expect("write");
    let seen = tokio::time::timeout(deadline(DEADLINE), a_watch.next())
        .await
        .expect("an event");
    assert!(
        matches!(&seen, Some(Ok(WatchEvent::Changes { changes, .. })) if changes[0].key() == "from-b"),
        "{seen:?}"
    );
    let first = a.apply(put("lock", "0")).await.expect("write");
    let mut version = match first.outcomes[..] {
        [Outcome::Applied(v)] => v,
        _ => panic!("{:?}", first.outcomes),
    };
    for round in 1..=50u32 {
        let claim = |backend: &RedisBackend, who: &str| {
            let backend = backend.clone();
            let batch = Batch {
                ops: vec![
                    Op::put("lock", Payload::from(format!("\"{who}{round}\"")))
                        .when(Precondition::Version(version)),
                ],
                atomic: true,
            };
            tokio::spawn(async move { backend.apply(batch).await })
        };
        let (ra, rb) = (claim(&a, "a"), claim(&b, "b"));
        let results = [ra.await.expect("task"), rb.await.expect("task")];
        let mut winners = Vec::new();
        for result in results {
            match result.expect("answered").outcomes[..] {
                [Outcome::Applied(v)] => winners.push(v),
                [Outcome::Conflict { actual: Some(_) }] => {}
                ref other => panic!("round {round}: {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one claim wins");
        version = winners[0];
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_spread_over_the_cluster_and_survive_a_node_restart() {
    let cluster = Arc::new(std::sync::Mutex::new(blocking(RedisCluster::start).await));
    let url = cluster.lock().expect("cluster").url();
    let mut stores = Vec::new();
    let mut nodes = std::collections::BTreeSet::new();
    for i in 0..8 {
        let backend = backend(&url, &format!("spread-{i}")).await;
        let tag = backend.hash_tag().to_owned();
        nodes.insert(cluster.lock().expect("cluster").node_of(&tag));
        let store = store_on(backend).await;
        store.set_and_wait("k", &i).await.expect("write");
        stores.push((tag, store));
    }
    assert!(nodes.len() >= 2, "eight stores on one node of three");
    let persistence = backend(&url, "spread-0")
        .await
        .persistence()
        .await
        .expect("the node's settings");
    assert!(persistence.survives_a_crash(), "{persistence:?}");
    let (tag, store) = &stores[0];
    let index = cluster.lock().expect("cluster").node_of(tag);
    {
        let cluster = Arc::clone(&cluster);
        blocking(move || cluster.lock().expect("cluster").nodes[index].restart()).await;
    }
    // A restarted primary answers CLUSTERDOWN for about two seconds before
    // it takes writes again: a backend built meanwhile waits that out.
    let built_during_the_restart = backend(&url, "spread-0").await;
    store
        .set_and_wait("k2", &1)
        .await
        .expect("write after the restart");
    let fresh = store_on(built_during_the_restart).await;
    assert_eq!(fresh.get::<i32>("k").expect("decodes").as_deref(), Some(&0));
    assert_eq!(
        fresh.get::<i32>("k2").expect("decodes").as_deref(),
        Some(&1)
    );
}

#[tokio::test]
async fn configuration_errors_are_typed_and_never_show_credentials() {
    let bad_url = RedisBackend::builder("http://u:s3cret@x", "s")
        .build()
        .await;
    assert!(
        matches!(
            bad_url,
            Err(BuildError::Config(ConfigError::InvalidUrl { .. }))
        ),
        "{bad_url:?}"
    );
    let bad_name = RedisBackend::builder("redis://127.0.0.1:1", "a{b}")
        .build()
        .await;
    assert!(
        matches!(
            bad_name,
            Err(BuildError::Config(ConfigError::InvalidName { .. }))
        ),
        "{bad_name:?}"
    );
    // Nothing listens on port 1: the connection fails, the password stays hidden.
    let builder = RedisBackend::builder("redis://user:s3cret@127.0.0.1:1/0", "s")
        .connect_timeout(Duration::from_millis(200));
    assert!(!format!("{builder:?}").contains("s3cret"));
    let unreachable = builder.build().await;
    let Err(error) = unreachable else {
        panic!("connected to nothing");
    };
    for shown in [error.to_string(), format!("{error:?}")] {
        assert!(!shown.contains("s3cret"), "{shown}");
    }
    assert!(matches!(
        Error::from(error),
        Error::Unavailable { .. } | Error::Backend { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_failover_is_followed_and_replicated_writes_survive_it() {
    // Three primaries with a replica each; a primary silent for 1 s is failed over.
    let cluster = Arc::new(std::sync::Mutex::new(
        blocking(|| RedisCluster::start_with(1, 1000)).await,
    ));
    let url = cluster.lock().expect("cluster").url();
    // Writes acknowledged only once the replica has them survive the failover.
    let writer = RedisBackend::builder(&url, "failover")
        .prefix("test")
        .request_timeout(Duration::from_millis(1500))
        .wait_for_replicas(1, Duration::from_secs(2))
        .build()
        .await
        .expect("backend connects");
    let tag = writer.hash_tag().to_owned();
    let a = store_on(writer).await;
    let b = store_on(backend(&url, "failover").await).await;
    for i in 0..20u32 {
        a.set_and_wait(format!("k{i}"), &i).await.expect("write");
    }
    let primary = cluster.lock().expect("cluster").node_of(&tag);
    {
        let cluster = Arc::clone(&cluster);
        blocking(move || cluster.lock().expect("cluster").nodes[primary].kill()).await;
    }
    // Writes go on once the replica has taken over (it has no replica of its
    // own, so they go through the replica that does not wait).
    let started = Instant::now();
    b.set_and_wait("after", &1)
        .await
        .expect("a write after the failover");
    println!(
        "first write after the primary died: {:?}",
        started.elapsed()
    );
    eventually("the first replica to see it", async || {
        matches!(a.get::<u32>("after"), Ok(Some(_)))
    })
    .await;
    let promoted = cluster.lock().expect("cluster").node_of(&tag);
    assert_ne!(promoted, primary, "a replica took over the slot");
    let fresh = store_on(backend(&url, "failover").await).await;
    for i in 0..20u32 {
        assert_eq!(
            fresh
                .get::<u32>(&format!("k{i}"))
                .expect("decodes")
                .as_deref(),
            Some(&i),
            "k{i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_wait_for_replicas_when_asked_and_fail_without_them() {
    let primary = RedisServer::start();
    let port = primary.port();
    let mut replica = blocking(move || RedisServer::start_replica_of(port)).await;
    let backend = RedisBackend::builder(primary.url(), "replicated")
        .prefix("test")
        .request_timeout(Duration::from_millis(1500))
        .wait_for_replicas(1, Duration::from_millis(300))
        .build()
        .await
        .expect("backend connects");
    backend
        .apply(put("a", "1"))
        .await
        .expect("acknowledged by the replica");
    let on_replica = replica.cli(&["HGET", &format!("{}:val", backend.hash_tag()), "a"]);
    assert_eq!(on_replica.trim(), "1", "the replica has the write");
    replica.kill();
    let result = backend.apply(put("b", "1")).await;
    let Err(Error::Unavailable { source, .. }) = &result else {
        panic!("expected the batch to fail without its replica: {result:?}");
    };
    assert!(
        matches!(
            source.downcast_ref::<RedisStoreError>(),
            Some(RedisStoreError::NotReplicated {
                acknowledged: 0,
                wanted: 1
            })
        ),
        "{source}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_work_and_never_show() {
    let server = RedisServer::start_with_args(&["--requirepass", "s3cret-pass"]);
    let port = server.port();
    let good = RedisBackend::builder(format!("redis://:s3cret-pass@127.0.0.1:{port}"), "auth")
        .build()
        .await
        .expect("the password is accepted");
    good.apply(put("a", "1")).await.expect("write");
    assert!(!format!("{good:?}").contains("s3cret"));
    assert!(!good.endpoint().to_string().contains("s3cret"));
    let wrong = RedisBackend::builder(format!("redis://:wrong-s3cret@127.0.0.1:{port}"), "auth")
        .build()
        .await;
    let Err(error) = wrong else {
        panic!("a wrong password was accepted");
    };
    for shown in [error.to_string(), format!("{error:?}")] {
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_log_keeps_about_its_history_and_older_watches_get_a_gap() {
    let server = RedisServer::start();
    let writer = RedisBackend::builder(server.url(), "history")
        .prefix("test")
        .history(50)
        .build()
        .await
        .expect("backend connects");
    let start = writer.list("").await.expect("list").revision;
    let ops = |i: usize| Batch {
        ops: vec![Op::put(format!("k{}", i % 7), Payload::from(i.to_string()))],
        atomic: false,
    };
    for i in 0..600 {
        writer.apply(ops(i)).await.expect("write");
    }
    let kept: usize = server
        .cli(&["XLEN", &format!("{}:log", writer.hash_tag())])
        .trim()
        .parse()
        .expect("a length");
    println!("history(50) after 600 revisions: {kept} kept");
    assert!(
        (50..600).contains(&kept),
        "the log is trimmed to about its history: {kept}"
    );
    let mut old = writer.watch(start).await.expect("watch");
    let event = tokio::time::timeout(deadline(DEADLINE), old.next())
        .await
        .expect("an event");
    assert!(matches!(event, Some(Ok(WatchEvent::Gap))), "{event:?}");
    let now = writer.revision().await.expect("revision");
    let mut recent = writer.watch(Revision(now.0 - 40)).await.expect("watch");
    let event = tokio::time::timeout(deadline(DEADLINE), recent.next())
        .await
        .expect("an event");
    assert!(
        matches!(event, Some(Ok(WatchEvent::Changes { revision, .. })) if revision.0 == now.0 - 39),
        "{event:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_keys_leave_every_replica_even_after_their_writer_is_gone() {
    let server = RedisServer::start();
    let reader = store_on(backend(&server.url(), "ttl").await).await;
    let ttl_put = |key: &str| Batch {
        ops: vec![Op {
            key: key.to_owned(),
            kind: store_core::backend::OpKind::Put {
                value: Payload::from("1"),
                ttl: Some(Duration::from_millis(300)),
            },
            precondition: None,
        }],
        atomic: false,
    };
    let writer = backend(&server.url(), "ttl").await;
    writer.apply(ttl_put("a")).await.expect("write");
    eventually("the other replica to see `a`", async || {
        matches!(reader.get::<i32>("a"), Ok(Some(_)))
    })
    .await;
    eventually("`a` to expire everywhere", async || {
        matches!(reader.get::<i32>("a"), Ok(None))
    })
    .await;
    // The writer goes away before its key expires: the reader's backend expires it.
    writer.apply(ttl_put("b")).await.expect("write");
    drop(writer);
    eventually("`b` to show up", async || {
        matches!(reader.get::<i32>("b"), Ok(Some(_)))
    })
    .await;
    let started = Instant::now();
    eventually("`b` to expire without its writer", async || {
        matches!(reader.get::<i32>("b"), Ok(None))
    })
    .await;
    println!("expired without its writer after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_over_the_limit_are_refused_at_the_call() {
    let server = RedisServer::start();
    let backend = RedisBackend::builder(server.url(), "limits")
        .prefix("test")
        .max_value_size(1024)
        .build()
        .await
        .expect("backend connects");
    let store = store_on(backend.clone()).await;
    let big = "x".repeat(2000);
    assert!(matches!(
        store.set("big", &big),
        Err(Error::ValueTooLarge { limit: 1024, .. })
    ));
    let refused = backend
        .apply(Batch {
            ops: vec![Op::put("big", Payload::from(format!("\"{big}\"")))],
            atomic: false,
        })
        .await;
    assert!(
        matches!(refused, Err(Error::ValueTooLarge { .. })),
        "{refused:?}"
    );
    let too_many = Batch {
        ops: (0..=store_redis::MAX_BATCH_OPS)
            .map(|i| Op::put(format!("k{i}"), Payload::from("1")))
            .collect(),
        atomic: false,
    };
    assert!(matches!(
        backend.apply(too_many).await,
        Err(Error::Unsupported { .. })
    ));
    store.set("small", &1).expect("set");
    store.flush().await.expect("the store goes on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistence_settings_are_read_from_the_server() {
    let server = RedisServer::start();
    let backend = backend(&server.url(), "settings").await;
    assert!(
        backend
            .persistence()
            .await
            .expect("settings")
            .survives_a_crash()
    );
    server.cli(&["CONFIG", "SET", "appendfsync", "everysec"]);
    let persistence = backend.persistence().await.expect("settings");
    assert_eq!(persistence.fsync, "everysec");
    assert!(!persistence.survives_a_crash());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_follows_its_slot_when_the_slot_moves_to_another_node() {
    let cluster = Arc::new(std::sync::Mutex::new(blocking(RedisCluster::start).await));
    let url = cluster.lock().expect("cluster").url();
    let writer_backend = backend(&url, "moving").await;
    let tag = writer_backend.hash_tag().to_owned();
    let writer = store_on(writer_backend).await;
    let watcher = store_on(backend(&url, "moving").await).await;
    for i in 0..50u32 {
        writer.set(format!("k{i}"), &i).expect("set");
    }
    writer.flush().await.expect("flush");
    // Writes go on while the slot moves.
    let writing = tokio::spawn({
        let writer = writer.clone();
        async move {
            for i in 0..60u32 {
                writer
                    .set_and_wait("counter", &i)
                    .await
                    .expect("a write while the slot moves");
            }
        }
    });
    let (from, to) = {
        let cluster = Arc::clone(&cluster);
        let tag = tag.clone();
        blocking(move || {
            let cluster = cluster.lock().expect("cluster");
            let from = cluster.node_of(&tag);
            let to = (from + 1) % cluster.nodes.len();
            let slot = cluster.nodes[from].cli(&["CLUSTER", "KEYSLOT", &tag]);
            let slot = slot.trim();
            let id = |i: usize| cluster.nodes[i].cli(&["CLUSTER", "MYID"]).trim().to_owned();
            let (from_id, to_id) = (id(from), id(to));
            let to_port = cluster.nodes[to].port().to_string();
            cluster.nodes[to].cli(&["CLUSTER", "SETSLOT", slot, "IMPORTING", &from_id]);
            cluster.nodes[from].cli(&["CLUSTER", "SETSLOT", slot, "MIGRATING", &to_id]);
            loop {
                let keys = cluster.nodes[from].cli(&["CLUSTER", "GETKEYSINSLOT", slot, "100"]);
                let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
                if keys.is_empty() {
                    break;
                }
                let mut args = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
                args.extend(keys);
                cluster.nodes[from].cli(&args);
            }
            for node in [to, from] {
                cluster.nodes[node].cli(&["CLUSTER", "SETSLOT", slot, "NODE", &to_id]);
            }
            (from, to)
        })
        .await
    };
    writing.await.expect("the writes went on");
    assert_eq!(cluster.lock().expect("cluster").node_of(&tag), to);
    assert_ne!(from, to);
    writer
        .set_and_wait("after", &1)
        .await
        .expect("a write after the move");
    eventually("the watching replica to follow the slot", async || {
        matches!(watcher.get::<u32>("after"), Ok(Some(_)))
            && watcher.get::<u32>("counter").ok().flatten().as_deref() == Some(&59)
            && watcher.len() == 52
    })
    .await;
}

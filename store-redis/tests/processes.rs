//! Two processes on one store: this test binary runs itself again as a
//! second process (the ignored `second_process` test, driven by
//! environment variables), and both add to one counter with `update` while
//! each watches the other's keys arrive. No increment may be lost.

mod support;

use std::process::{Command, Stdio};

use store_core::Store;
use store_redis::RedisBackend;
use support::{DEADLINE, RedisServer, eventually};

// The deadline scaling of the conformance kit; moving it changes this line.
use store_conformance::deadline;

const URL_ENV: &str = "STORE_REDIS_SECOND_PROCESS_URL";
const INCREMENTS: u64 = 40;

async fn open(url: &str) -> Store {
    let backend = RedisBackend::builder(url, "processes")
        .prefix("test")
        .build()
        .await
        .expect("backend connects");
    Store::builder()
        .backend(backend)
        .linked_hooks(false)
        .timeout(deadline(DEADLINE))
        .open()
        .await
        .expect("store starts")
}

/// Adds one to `counter` `INCREMENTS` times, writing `<who>/<i>` after each.
async fn work(store: &Store, who: &str) {
    for i in 0..INCREMENTS {
        store
            .update("counter", |n: Option<&u64>| n.copied().unwrap_or(0) + 1)
            .await
            .expect("update");
        store.set(format!("{who}/{i}"), &i).expect("set");
    }
    store.flush().await.expect("flush");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_store_and_lose_no_increment() {
    let server = RedisServer::start();
    let url = server.url();
    let store = open(&url).await;
    let exe = std::env::current_exe().expect("the test binary");
    let mut second = Command::new(exe)
        .args(["--ignored", "--exact", "second_process", "--nocapture"])
        .env(URL_ENV, &url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the second process starts");
    work(&store, "first").await;
    let output = tokio::task::spawn_blocking(move || {
        let _ = second.stdin.take();
        second.wait_with_output()
    })
    .await
    .expect("waited")
    .expect("the second process ran");
    assert!(
        output.status.success(),
        "the second process failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("1 passed"),
        "the second process ran its part"
    );
    eventually("every increment and key of both processes", async || {
        let counter = store.get::<u64>("counter").ok().flatten();
        counter.as_deref() == Some(&(2 * INCREMENTS))
            && count(&store, "second/") == INCREMENTS as usize
    })
    .await;
}

/// The second process of the test above; does nothing useful alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by two_processes_share_one_store_and_lose_no_increment as its second process"]
async fn second_process() {
    let url = std::env::var(URL_ENV).expect("run by the two-process test, with its URL");
    let store = open(&url).await;
    work(&store, "second").await;
    // Sees the first process's writes through its own watch.
    eventually("the first process's keys", async || {
        count(&store, "first/") > 0
    })
    .await;
}

fn count(store: &Store, prefix: &str) -> usize {
    store
        .keys()
        .iter()
        .filter(|k| k.starts_with(prefix))
        .count()
}

//! Concurrent `update`s of one key from one store combine into one conditional
//! write per round: fewer writes, and still no lost or doubled change, every
//! caller getting the value its own change made.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use store_core::backend::{Applied, Batch, Entry, Listing, WatchStream};
use store_core::{Backend, Capabilities, MemoryBackend, Result, Revision, Store};

/// A memory backend that answers every write after a delay, as a server
/// would, and counts the writes.
#[derive(Clone)]
struct Remote {
    inner: Arc<MemoryBackend>,
    writes: Arc<AtomicUsize>,
}

impl Remote {
    fn new() -> Self {
        Remote {
            inner: Arc::new(MemoryBackend::new()),
            writes: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }
}

impl Backend for Remote {
    fn name(&self) -> &'static str {
        "remote"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn read(&self, key: &str) -> Result<Option<Entry>> {
        self.inner.read(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Listing> {
        self.inner.list(prefix).await
    }
    async fn apply(&self, batch: Batch) -> Result<Applied> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.inner.apply(batch).await
    }
    async fn watch(&self, from: Revision) -> Result<WatchStream> {
        self.inner.watch(from).await
    }
}

async fn open(backend: &Remote) -> Store {
    Store::builder()
        .backend(backend.clone())
        .timeout(Duration::from_secs(60))
        .open()
        .await
        .expect("store opens")
}

/// `tasks` tasks on `store`, each adding 1 to `counter` `each` times; every
/// value an update returned.
async fn increments(store: &Store, tasks: usize, each: usize) -> Vec<u64> {
    let mut running = Vec::new();
    for _ in 0..tasks {
        let store = store.clone();
        running.push(tokio::spawn(async move {
            let mut seen = Vec::with_capacity(each);
            for _ in 0..each {
                let updated = store
                    .update("counter", |n: Option<&u64>| n.copied().unwrap_or(0) + 1)
                    .await
                    .expect("update");
                seen.push(*updated.value);
            }
            seen
        }));
    }
    let mut seen = Vec::new();
    for task in running {
        seen.extend(task.await.expect("task"));
    }
    seen
}

/// What `store` holds at `counter`.
fn counter(store: &Store) -> Option<u64> {
    store
        .get::<u64>("counter")
        .expect("get")
        .as_deref()
        .copied()
}

/// Every value from 1 to `n` returned exactly once: no change lost or doubled,
/// and each caller saw its own.
fn each_once(seen: Vec<u64>, n: u64) {
    let count = seen.len();
    let distinct: BTreeSet<u64> = seen.into_iter().collect();
    assert_eq!(count, distinct.len(), "two updates returned the same value");
    assert_eq!(distinct, (1..=n).collect::<BTreeSet<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_of_one_key_combine_into_few_writes() {
    let backend = Remote::new();
    let store = open(&backend).await;
    let seen = increments(&store, 8, 200).await;
    each_once(seen, 1600);
    assert_eq!(counter(&store), Some(1600));
    let writes = backend.writes();
    // One write per update would be 1,600 (more with conflicts); combined,
    // each round carries several.
    assert!(writes <= 1600 / 4, "{writes} writes for 1,600 updates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_updating_one_key_lose_and_double_nothing() {
    let backend = Remote::new();
    let (a, b) = (open(&backend).await, open(&backend).await);
    let (from_a, from_b) = tokio::join!(increments(&a, 4, 100), increments(&b, 4, 100));
    each_once(from_a.into_iter().chain(from_b).collect(), 800);
    a.flush().await.expect("flush");
    b.flush().await.expect("flush");
    for store in [&a, &b] {
        let mut changes = store.subscribe().key("counter");
        let converged = tokio::time::timeout(Duration::from_secs(30), async {
            while counter(store) != Some(800) {
                changes.next().await.expect("open").expect("no lag");
            }
        });
        converged.await.expect("both stores show 800");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declines_decide_on_confirmed_values() {
    let backend = Remote::new();
    let store = open(&backend).await;
    let mut running = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        running.push(tokio::spawn(async move {
            let mut made = 0;
            while store
                .update_if("counter", |n: Option<&u64>| {
                    let n = n.copied().unwrap_or(0);
                    (n < 300).then_some(n + 1)
                })
                .await
                .expect("update_if")
                .is_some()
            {
                made += 1;
            }
            made
        }));
    }
    let mut made = 0;
    for task in running {
        made += task.await.expect("task");
    }
    assert_eq!(
        made, 300,
        "exactly as many updates made as the bound allows"
    );
    assert_eq!(counter(&store), Some(300));
}

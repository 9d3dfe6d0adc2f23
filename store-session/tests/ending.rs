//! Ending a session touches only that session's keys, however many other
//! sessions the registry and the backend hold.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use common::replicas::{Held, kube_backend};
use store_core::backend::{Applied, Batch, Entry, Listing, Op, WatchStream};
use store_core::{Backend, Capabilities, MemoryBackend, Payload, Revision};
use store_session::{Error, ScopeKind, Sessions, layout};

/// A memory backend recording every key it lists or writes while recording is on.
#[derive(Default)]
struct Recording {
    inner: MemoryBackend,
    on: AtomicBool,
    listed: Mutex<Vec<String>>,
    written: Mutex<Vec<String>>,
}

impl Recording {
    fn record(&self, into: &Mutex<Vec<String>>, keys: impl Iterator<Item = String>) {
        if self.on.load(Ordering::SeqCst) {
            into.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(keys);
        }
    }

    fn take(list: &Mutex<Vec<String>>) -> Vec<String> {
        std::mem::take(&mut *list.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Backend for Recording {
    fn name(&self) -> &'static str {
        "recording"
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn read(&self, key: &str) -> store_core::Result<Option<Entry>> {
        self.inner.read(key).await
    }

    async fn list(&self, prefix: &str) -> store_core::Result<Listing> {
        let listing = self.inner.list(prefix).await?;
        self.record(
            &self.listed,
            listing.entries.iter().map(|e| e.key().to_string()),
        );
        Ok(listing)
    }

    async fn apply(&self, batch: Batch) -> store_core::Result<Applied> {
        self.record(&self.written, batch.ops.iter().map(|op| op.key.clone()));
        self.inner.apply(batch).await
    }

    async fn watch(&self, from: Revision) -> store_core::Result<WatchStream> {
        self.inner.watch(from).await
    }
}

const OTHERS: usize = 1_000;
const OWN_LIVE: usize = 5_000;
const OWN_DURABLE: usize = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_a_session_of_ten_thousand_keys_among_a_thousand_others_touches_only_its_own()
-> Result<(), Error> {
    let backend = Arc::new(Recording::default());
    let sessions = Sessions::builder()
        .shared_backend(Arc::clone(&backend))
        .build();

    // A thousand other sessions, each with live data and durable data on the backend.
    let mut seed = Vec::new();
    for i in 0..OTHERS {
        let id = format!("other-{i}");
        let session = sessions.open(&id).await?;
        session.global()?.use_value("k", i)?;
        let prefix = layout::scope_prefix("", &id, 0, &ScopeKind::Global);
        for k in 0..3 {
            seed.push(Op::put(format!("{prefix}k{k}"), Payload::from("1")));
        }
    }
    backend
        .apply(Batch {
            ops: seed,
            atomic: false,
        })
        .await?;

    // The session to end: 5,000 live and 5,000 durable keys over several scopes.
    let big = sessions.open("big").await?;
    for i in 0..OWN_LIVE {
        let scope = if i % 2 == 0 {
            big.local("env")?
        } else {
            big.realm("red")?
        };
        scope.use_value(&format!("live-{i}"), i)?;
    }
    let global = big.global()?.durable().await?;
    let local = big.local_in("red", "env")?.durable().await?;
    for i in 0..OWN_DURABLE {
        let scope = if i % 2 == 0 { &global } else { &local };
        scope.use_value(&format!("durable-{i}"), i).await?;
    }
    assert_eq!(big.usage()?.entries, OWN_LIVE + OWN_DURABLE);

    backend.on.store(true, Ordering::SeqCst);
    let ended = sessions.end("big").await?;
    backend.on.store(false, Ordering::SeqCst);

    assert_eq!(
        (ended.live_entries, ended.durable_keys),
        (OWN_LIVE, OWN_DURABLE)
    );
    let own = layout::session_prefix("", "big");
    let meta = layout::meta_key("", "big");
    let used = layout::use_key("", "big");
    let listed = Recording::take(&backend.listed);
    let written = Recording::take(&backend.written);
    assert_eq!(
        listed.len(),
        OWN_DURABLE + 1,
        "the listings visit this session's keys and its record only"
    );
    assert!(
        listed.iter().all(|k| k.starts_with(&own) || *k == meta),
        "a listed key of another session"
    );
    assert_eq!(
        written.len(),
        OWN_DURABLE + 2,
        "one delete per key, plus the generation record and the use mark"
    );
    assert!(
        written
            .iter()
            .all(|k| k.starts_with(&own) || *k == meta || *k == used),
        "a write outside the session"
    );

    // Everyone else is untouched.
    assert_eq!(sessions.len(), OTHERS);
    assert_eq!(backend.inner.list("s/").await?.entries.len(), OTHERS * 3);
    assert_eq!(
        sessions
            .get("other-7")?
            .global()?
            .use_value("k", 0_usize)?
            .get()?,
        7
    );
    Ok(())
}

/// Opens `others` sessions, each with a key in an open durable scope, then
/// writes `writes` keys one by one into one more session and ends it. Counts
/// the watch events the backend hands out meanwhile: with scopes sharing one
/// watch that is filtered at the source, they follow this session's own
/// writes, not the number of other sessions watching.
async fn one_sessions_writes_cost_no_watch_events_in_other_sessions<B: Backend>(
    backend: Arc<Held<B>>,
    others: usize,
    writes: usize,
) -> Result<(), Error> {
    let sessions = Sessions::builder()
        .shared_backend(Arc::clone(&backend))
        .timeout(std::time::Duration::from_secs(30))
        .build();
    let mut open = Vec::with_capacity(others);
    for i in 0..others {
        let session = sessions.open(&format!("other-{i}")).await?;
        let durable = session.global()?.durable().await?;
        durable.use_value("k", i).await?;
        open.push((session, durable));
    }
    let session = sessions.open("busy").await?;
    let durable = session.global()?.durable().await?;

    let before = backend.delivered.load(Ordering::SeqCst);
    for i in 0..writes {
        durable
            .use_value(&format!("key-{i}"), 0_usize)
            .await?
            .set_and_wait(i)
            .await?;
    }
    let ended = session.end().await?;
    let events = backend.delivered.load(Ordering::SeqCst) - before;
    assert_eq!(ended.durable_keys, writes);
    // Each write is two revisions (create, then set), ending a few more.
    assert!(
        events <= 2 * writes + 20,
        "{events} watch events for {writes} writes beside {others} open scopes"
    );
    // The other sessions' scopes still follow their own keys.
    let (_, last) = open.last().expect("other sessions");
    last.use_value("k", 0_usize).await?.set_and_wait(7).await?;
    assert_eq!(*last.use_value("k", 0_usize).await?.get()?, 7);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sessions_writes_cost_no_watch_events_in_other_sessions_on_memory() -> Result<(), Error>
{
    let backend = Arc::new(Held::new(Arc::new(MemoryBackend::new())));
    one_sessions_writes_cost_no_watch_events_in_other_sessions(backend, 200, 100).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sessions_writes_cost_no_watch_events_in_other_sessions_on_kube() -> Result<(), Error> {
    let server = store_kube_testing::FakeApiServer::start()
        .await
        .expect("fake API server starts");
    server
        .apply_crd(&store_kube::resource::store_shard_crd())
        .expect("CRD applies");
    let backend = Arc::new(Held::new(Arc::new(kube_backend(&server).await)));
    one_sessions_writes_cost_no_watch_events_in_other_sessions(backend, 30, 30).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sessions_writes_cost_no_watch_events_in_other_sessions_on_redis() -> Result<(), Error>
{
    let server = common::redis::RedisServer::start();
    let backend = Arc::new(Held::new(Arc::new(
        common::redis::redis_backend(&server, "sessions").await,
    )));
    one_sessions_writes_cost_no_watch_events_in_other_sessions(backend, 100, 50).await
}

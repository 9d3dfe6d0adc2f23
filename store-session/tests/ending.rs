//! Ending a session touches only that session's keys, however many other
//! sessions the registry and the backend hold.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

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
        self.record(&self.listed, listing.entries.iter().map(|e| e.key.clone()));
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
    let listed = Recording::take(&backend.listed);
    let written = Recording::take(&backend.written);
    assert_eq!(
        listed.len(),
        OWN_DURABLE,
        "the listing visits this session's keys only"
    );
    assert!(
        listed.iter().all(|k| k.starts_with(&own)),
        "a listed key of another session"
    );
    assert_eq!(
        written.len(),
        OWN_DURABLE + 1,
        "one delete per key, plus the generation record"
    );
    assert!(
        written.iter().all(|k| k.starts_with(&own) || *k == meta),
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

//! The flush interval policy (`StoreBuilder::flush_interval`), on Tokio's paused
//! clock: queued writes leave on a fixed schedule, coalesced per key, and the
//! default stays group commit with no timer in the way.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use store_core::backend::{Applied, Batch, Entry, Listing, WatchStream};
use store_core::{Backend, Capabilities, MemoryBackend, Result, Revision, Store};
use tokio::time::Instant;

/// The memory backend, recording when each batch arrived and how many writes it held.
#[derive(Clone, Default)]
struct Recording {
    inner: MemoryBackend,
    batches: Arc<Mutex<Vec<(Instant, usize)>>>,
}

impl Recording {
    fn batches(&self) -> Vec<(Instant, usize)> {
        self.batches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Backend for Recording {
    fn name(&self) -> &'static str {
        "recording"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn read(&self, key: &str) -> impl Future<Output = Result<Option<Entry>>> + Send {
        self.inner.read(key)
    }
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Listing>> + Send {
        self.inner.list(prefix)
    }
    async fn apply(&self, batch: Batch) -> Result<Applied> {
        self.batches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((Instant::now(), batch.ops.len()));
        self.inner.apply(batch).await
    }
    fn watch(&self, from: Revision) -> impl Future<Output = Result<WatchStream>> + Send {
        self.inner.watch(from)
    }
}

const INTERVAL: Duration = Duration::from_secs(4);

#[tokio::test(start_paused = true)]
async fn writes_wait_for_the_next_tick_and_leave_together() -> Result<()> {
    let backend = Recording::default();
    let started = Instant::now();
    let store = Store::builder()
        .backend(backend.clone())
        .flush_interval(INTERVAL)
        .open()
        .await?;

    for round in 0..10_u32 {
        for key in ["a", "b", "c"] {
            store.set(key, &round)?;
        }
    }
    // Read-your-writes does not wait for the tick.
    assert_eq!(store.get::<u32>("a")?.as_deref(), Some(&9));
    store.flush().await?;
    let batches = backend.batches();
    assert_eq!(
        batches.len(),
        1,
        "thirty writes on three keys leave as one batch"
    );
    assert_eq!(batches[0].1, 3, "coalesced per key");
    assert!(
        batches[0].0 >= started + INTERVAL,
        "sent at the first tick, not before: {:?}",
        batches[0].0 - started
    );
    assert_eq!(store.get::<u32>("c")?.as_deref(), Some(&9));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn consecutive_batches_are_an_interval_apart() -> Result<()> {
    let backend = Recording::default();
    let store = Store::builder()
        .backend(backend.clone())
        .flush_interval(INTERVAL)
        .timeout(Duration::from_secs(60))
        .open()
        .await?;

    for n in 0..3_u32 {
        let began = Instant::now();
        store.set_and_wait("counter", &n).await?;
        assert!(
            began.elapsed() <= INTERVAL,
            "a write waits at most one interval, waited {:?}",
            began.elapsed()
        );
    }
    let times: Vec<Instant> = backend.batches().into_iter().map(|(at, _)| at).collect();
    assert_eq!(times.len(), 3);
    for pair in times.windows(2) {
        assert!(
            pair[1] - pair[0] >= INTERVAL,
            "batches {:?} apart",
            pair[1] - pair[0]
        );
    }
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn closing_sends_what_is_queued_without_waiting_for_the_tick() -> Result<()> {
    let backend = Recording::default();
    let store = Store::builder()
        .backend(backend.clone())
        .flush_interval(Duration::from_secs(3600))
        .open()
        .await?;
    store.set("last", &1)?;
    let began = Instant::now();
    drop(store);
    while backend.batches().is_empty() {
        assert!(began.elapsed() < Duration::from_secs(60), "never sent");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(began.elapsed() < Duration::from_secs(60));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn by_default_no_timer_delays_a_write() -> Result<()> {
    let backend = Recording::default();
    let store = Store::builder().backend(backend.clone()).open().await?;
    let began = Instant::now();
    store.set_and_wait("now", &1).await?;
    assert_eq!(
        began.elapsed(),
        Duration::ZERO,
        "group commit sends at once: the paused clock never moved"
    );
    assert_eq!(backend.batches().len(), 1);
    Ok(())
}

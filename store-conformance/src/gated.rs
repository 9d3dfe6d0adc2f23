//! The fault layer: wraps any backend so a test can hold its writes back,
//! make them fail, or make it forget its history.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use futures_util::StreamExt;
use tokio::sync::watch;

use store_core::backend::{
    Applied, Backend, Batch, Capabilities, Entry, Listing, Revision, WatchEvent, WatchStream,
};
use store_core::{Error, Result};

/// Wraps a backend so a test can hold its writes back, make them fail, or
/// make it forget its history.
///
/// Clones share one gate. To fault several connections to one store at once
/// and each on its own, wrap the shared backend once and each connection
/// again: `Gated::new(Gated::new(backend))`.
#[derive(Debug)]
pub struct Gated<B> {
    inner: Arc<B>,
    gate: Arc<Gate>,
}

impl<B> Clone for Gated<B> {
    fn clone(&self) -> Self {
        Gated {
            inner: Arc::clone(&self.inner),
            gate: Arc::clone(&self.gate),
        }
    }
}

#[derive(Debug)]
struct Gate {
    open: watch::Sender<bool>,
    fail_next: AtomicUsize,
    /// Watches from before this revision see a gap at once.
    compacted: AtomicU64,
    /// Counts [`Gated::compact`] calls; a change ends every open watch.
    compactions: watch::Sender<u64>,
}

impl<B: Backend> Gated<B> {
    /// The backend with its gate open.
    pub fn new(inner: B) -> Self {
        Gated {
            inner: Arc::new(inner),
            gate: Arc::new(Gate {
                open: watch::Sender::new(true),
                fail_next: AtomicUsize::new(0),
                compacted: AtomicU64::new(0),
                compactions: watch::Sender::new(0),
            }),
        }
    }

    /// Holds every batch back until [`open`](Self::open).
    pub fn close(&self) {
        self.gate.open.send_replace(false);
    }

    /// Lets batches through again.
    pub fn open(&self) {
        self.gate.open.send_replace(true);
    }

    /// Fails the next `n` batches with a transient error, applying nothing.
    pub fn fail_next(&self, n: usize) {
        self.gate.fail_next.store(n, Ordering::SeqCst);
    }

    /// Forgets the history up to the backend's current revision, as a
    /// compaction would: every open watch, and every watch later opened from
    /// an older revision, sees a [`WatchEvent::Gap`] and must re-list.
    ///
    /// # Errors
    ///
    /// When the backend cannot say its current revision (a failed listing).
    pub async fn compact(&self) -> Result<()> {
        let revision = self.inner.list("").await?.revision;
        self.gate.compacted.fetch_max(revision.0, Ordering::SeqCst);
        self.gate.compactions.send_modify(|n| *n += 1);
        Ok(())
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }
}

impl<B: Backend> Backend for Gated<B> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn store_name(&self) -> Option<&str> {
        self.inner.store_name()
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
        let mut open = self.gate.open.subscribe();
        // The sender lives in `self`, so this cannot fail while we wait.
        let _ = open.wait_for(|o| *o).await;
        let failing = self
            .gate
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(Error::unavailable(
                self.inner.name(),
                "gate: injected failure",
            ));
        }
        self.inner.apply(batch).await
    }

    async fn watch(&self, from: Revision) -> Result<WatchStream> {
        self.cut_on_compaction(from, self.inner.watch(from)).await
    }

    async fn watch_prefix(&self, from: Revision, prefix: &str) -> Result<WatchStream> {
        self.cut_on_compaction(from, self.inner.watch_prefix(from, prefix))
            .await
    }
}

impl<B: Backend> Gated<B> {
    /// The watch `open` opens, ended by a gap at the next [`compact`](Self::compact);
    /// a gap at once for a watch from before the last one.
    async fn cut_on_compaction(
        &self,
        from: Revision,
        open: impl Future<Output = Result<WatchStream>>,
    ) -> Result<WatchStream> {
        let mut compactions = self.gate.compactions.subscribe();
        compactions.mark_unchanged();
        if from.0 < self.gate.compacted.load(Ordering::SeqCst) {
            return Ok(Box::pin(futures_util::stream::iter([Ok(WatchEvent::Gap)])));
        }
        let inner = open.await?;
        let cut = futures_util::stream::unfold(Some((inner, compactions)), |state| async move {
            let (mut inner, mut compactions) = state?;
            tokio::select! {
                biased;
                _ = compactions.changed() => Some((Ok(WatchEvent::Gap), None)),
                event = inner.next() => event.map(|event| (event, Some((inner, compactions)))),
            }
        });
        Ok(Box::pin(cut))
    }
}

//! [`ScopedBackend`]: one key prefix of an inner backend, seen as a backend of its own.
//!
//! Keys are prefixed on the way in and un-prefixed on the way out; listings and
//! watches pass only keys under the prefix. Revisions and versions are the inner
//! backend's, so a revision made only by other scopes reaches this scope's watch
//! as [`WatchEvent::Progress`]: the watcher stays current without seeing them.

use std::sync::Arc;

use futures_util::StreamExt;
use store_core::backend::{Applied, Batch, Change, Entry, Listing, WatchEvent, WatchStream};
use store_core::{Backend, Capabilities, Result, Revision};

use crate::fanout::Routed;

/// A prefix of an inner backend, as a [`Backend`] of its own.
///
/// Several scoped backends share one inner backend without seeing each other's
/// keys, as long as no prefix is a prefix of another (the [`layout`](crate::layout)
/// guarantees that for session scopes). It passes `store-core`'s conformance
/// suite whenever the inner backend does.
///
/// ```
/// use std::sync::Arc;
/// use store_core::{MemoryBackend, Store};
/// use store_session::ScopedBackend;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> store_core::Result<()> {
/// let inner = Arc::new(MemoryBackend::new());
/// let a = Store::builder().backend(ScopedBackend::new(Arc::clone(&inner), "a/")).open().await?;
/// let b = Store::builder().backend(ScopedBackend::new(Arc::clone(&inner), "b/")).open().await?;
/// a.set_and_wait("k", &1).await?;
/// assert_eq!(b.get::<i32>("k")?, None);
/// # Ok(()) }
/// ```
pub struct ScopedBackend<B> {
    inner: Arc<B>,
    prefix: Arc<str>,
    /// Set when made by a [`SharedWatch`](crate::SharedWatch): the watch comes
    /// from it instead of a watch of its own on the inner backend.
    routed: Option<Arc<Routed>>,
}

impl<B> std::fmt::Debug for ScopedBackend<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopedBackend")
            .field("prefix", &self.prefix)
            .field("shared_watch", &self.routed.is_some())
            .finish_non_exhaustive()
    }
}

impl<B> Clone for ScopedBackend<B> {
    fn clone(&self) -> Self {
        ScopedBackend {
            inner: Arc::clone(&self.inner),
            prefix: Arc::clone(&self.prefix),
            routed: self.routed.clone(),
        }
    }
}

impl<B: Backend> ScopedBackend<B> {
    /// The keys of `inner` that start with `prefix`, with the prefix taken off.
    ///
    /// Its watch is a watch of its own on `inner`, which hears of every
    /// revision of `inner`; for many scopes on one backend, make them with a
    /// [`SharedWatch`](crate::SharedWatch) instead.
    pub fn new(inner: Arc<B>, prefix: impl Into<Arc<str>>) -> Self {
        ScopedBackend {
            inner,
            prefix: prefix.into(),
            routed: None,
        }
    }

    pub(crate) fn routed(inner: Arc<B>, prefix: Arc<str>, routed: Routed) -> Self {
        ScopedBackend {
            inner,
            prefix,
            routed: Some(Arc::new(routed)),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The inner backend.
    pub fn inner(&self) -> &Arc<B> {
        &self.inner
    }

    fn full(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.prefix.len() + key.len());
        full.push_str(&self.prefix);
        full.push_str(key);
        full
    }
}

/// Takes `prefix` off every entry (all of which start with it).
fn strip_entries(prefix: &str, entries: Vec<Entry>) -> Vec<Entry> {
    entries
        .into_iter()
        .filter_map(|entry| Some(entry.rekeyed(entry.key().strip_prefix(prefix)?)))
        .collect()
}

/// Keeps the changes under `prefix`, un-prefixed; a revision with none left
/// becomes a progress mark. The inner backend's prefix watch already dropped
/// the others; this is what makes the keys relative.
fn filter_event(prefix: &str, event: WatchEvent) -> WatchEvent {
    match event {
        WatchEvent::Changes {
            revision, changes, ..
        } => {
            let mine: Vec<Change> = changes
                .iter()
                .filter_map(|change| change.strip_prefix(prefix))
                .collect();
            if mine.is_empty() {
                WatchEvent::Progress(revision)
            } else {
                WatchEvent::Changes {
                    revision,
                    changes: mine,
                    index: None,
                }
            }
        }
        other => other,
    }
}

impl<B: Backend> Backend for ScopedBackend<B> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn read(&self, key: &str) -> Result<Option<Entry>> {
        let entry = self.inner.read(&self.full(key)).await?;
        Ok(entry.map(|entry| entry.rekeyed(key)))
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        let listing = self.inner.list(&self.full(prefix)).await?;
        if let Some(routed) = &self.routed {
            routed.want(listing.revision);
        }
        Ok(Listing {
            entries: strip_entries(&self.prefix, listing.entries),
            revision: listing.revision,
        })
    }

    async fn apply(&self, mut batch: Batch) -> Result<Applied> {
        for op in &mut batch.ops {
            op.key = self.full(&op.key);
        }
        let applied = self.inner.apply(batch).await?;
        if let Some(routed) = &self.routed {
            // The store waits for its view to reach this revision, which may
            // carry no change of this scope (a delete of a missing key).
            routed.want(applied.revision);
        }
        Ok(applied)
    }

    async fn watch(&self, from: Revision) -> Result<WatchStream> {
        if let Some(routed) = &self.routed {
            return Ok(routed.watch(from));
        }
        let stream = self.inner.watch_prefix(from, &self.prefix).await?;
        let prefix = Arc::clone(&self.prefix);
        Ok(Box::pin(stream.map(move |event| {
            event.map(|event| filter_event(&prefix, event))
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use store_core::MemoryBackend;
    use store_core::Payload;
    use store_core::backend::Op;

    fn put(key: &str) -> Batch {
        Batch {
            ops: vec![Op::put(key, Payload::from("1"))],
            atomic: false,
        }
    }

    #[tokio::test]
    async fn a_scope_lists_and_reads_only_its_own_keys_without_the_prefix() {
        let inner = Arc::new(MemoryBackend::new());
        let a = ScopedBackend::new(Arc::clone(&inner), "a/");
        let ab = ScopedBackend::new(Arc::clone(&inner), "ab/");
        a.apply(put("k")).await.expect("apply");
        ab.apply(put("k")).await.expect("apply");
        let listing = a.list("").await.expect("list");
        assert_eq!(listing.entries.len(), 1);
        assert_eq!(listing.entries[0].key(), "k");
        assert_eq!(
            a.read("k").await.expect("read").map(|e| e.key().to_owned()),
            Some("k".into())
        );
        assert!(inner.read("a/k").await.expect("read").is_some());
    }

    #[tokio::test]
    async fn a_watch_turns_other_scopes_changes_into_progress() {
        let inner = Arc::new(MemoryBackend::new());
        let a = ScopedBackend::new(Arc::clone(&inner), "a/");
        let b = ScopedBackend::new(Arc::clone(&inner), "b/");
        let mut watch = a.watch(Revision(0)).await.expect("watch");
        b.apply(put("k")).await.expect("apply");
        a.apply(put("k")).await.expect("apply");
        let first = watch.next().await.and_then(Result::ok);
        assert_eq!(first, Some(WatchEvent::Progress(Revision(1))));
        let second = watch.next().await.and_then(Result::ok);
        assert!(
            matches!(second, Some(WatchEvent::Changes { ref changes, .. }) if changes[0].key() == "k"),
            "{second:?}"
        );
    }
}

//! Subscriptions: the backend's confirmed changes as an ordered stream.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, watch};

use crate::backend::{Change, Payload, Revision};
use crate::error::{Error, Result};
use crate::readiness::Readiness;
use crate::value;

/// One key's confirmed change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    change: Change,
    revision: Revision,
    /// The backend keeps values as text ([`crate::Capabilities::text_values`]).
    text: bool,
}

impl ChangeEvent {
    pub(crate) fn new(change: Change, revision: Revision, text: bool) -> Self {
        ChangeEvent {
            change,
            revision,
            text,
        }
    }

    /// The key that changed.
    pub fn key(&self) -> &str {
        self.change.key()
    }

    /// The revision the change happened at.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// Whether the key was removed.
    pub fn is_removal(&self) -> bool {
        self.change.value().is_none()
    }

    /// The new encoded value, `None` for a removal.
    pub fn payload(&self) -> Option<&Payload> {
        self.change.value()
    }

    /// The new value decoded as `T`, `None` for a removal.
    pub fn value<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        self.change
            .value()
            .map(|payload| value::decode_stored(self.key(), payload, self.text, None))
            .transpose()
    }
}

#[derive(Debug, Clone)]
enum Filter {
    All,
    Key(String),
    Prefix(String),
}

impl Filter {
    fn accepts(&self, key: &str) -> bool {
        match self {
            Filter::All => true,
            Filter::Key(k) => k == key,
            Filter::Prefix(p) => key.starts_with(p.as_str()),
        }
    }
}

type Inner = Pin<Box<dyn Stream<Item = Result<ChangeEvent>> + Send>>;

/// A stream of [`ChangeEvent`]s in revision order, from [`Store::subscribe`](crate::Store::subscribe).
///
/// Items are `Err(`[`Error::Lagged`]`)` when this subscriber fell more than the
/// store's subscriber capacity behind; the stream goes on after it. The stream
/// ends when the store closes, or when start-up failed.
pub struct Subscription {
    filter: Filter,
    inner: Inner,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    pub(crate) fn new(
        changes: broadcast::Receiver<ChangeEvent>,
        readiness: watch::Receiver<Readiness>,
        closed: watch::Receiver<bool>,
    ) -> Self {
        let state = (changes, readiness, closed, false);
        let inner = futures_util::stream::unfold(
            state,
            |(mut changes, mut readiness, mut closed, mut ready)| async move {
                if !ready {
                    // Nothing is delivered before the on-ready hooks finished.
                    let state = tokio::select! {
                        r = readiness.wait_for(|r| !matches!(r, Readiness::Starting)) => r.map(|r| r.clone()).ok(),
                        _ = closed.wait_for(|c| *c) => None,
                    };
                    match state {
                        Some(Readiness::Ready) => ready = true,
                        _ => return None,
                    }
                }
                let item = tokio::select! {
                    biased;
                    item = changes.recv() => item,
                    _ = closed.wait_for(|c| *c) => return None,
                };
                let item = match item {
                    Ok(event) => Ok(event),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        Err(Error::Lagged { missed })
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                };
                Some((item, (changes, readiness, closed, ready)))
            },
        );
        Subscription {
            filter: Filter::All,
            inner: Box::pin(inner),
        }
    }

    /// Only changes of this one key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.filter = Filter::Key(key.into());
        self
    }

    /// Only changes of keys starting with `prefix`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.filter = Filter::Prefix(prefix.into());
        self
    }
}

impl Stream for Subscription {
    type Item = Result<ChangeEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match self.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(event))) if !self.filter.accepts(event.key()) => continue,
                other => return other,
            }
        }
    }
}

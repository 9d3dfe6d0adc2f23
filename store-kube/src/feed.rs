//! The feed: one kube-runtime watcher per backend, turned into a history of
//! per-key changes that every store on the backend replays from.
//!
//! One watcher (not one per store) keeps a single diff cache, so every key
//! gets one version (the resourceVersion at which its value changed) however
//! many stores read it, and a change seen first for one store is not lost for
//! another. The history is bounded; a watch from before it, an object that
//! vanished, or a watcher that had to re-list (history gone on the server)
//! all end in a `Gap`, and the store re-lists.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use futures_util::StreamExt;
use kube::api::DynamicObject;
use kube::runtime::{WatchStreamExt, watcher};
use store_core::Revision;
use store_core::backend::{Change, WatchEvent, WatchStream};
use tokio::sync::broadcast;

use crate::backend::Inner;
use crate::cache::parse_object;

/// Revisions kept for stores that watch from an older revision.
const HISTORY: usize = 10_000;
/// Key changes kept in all: the initial listing of a large store is one burst
/// of changes no store replays (stores list first), and must not stay in memory.
const HISTORY_CHANGES: usize = 10_000;

#[derive(Debug, Clone)]
enum Item {
    Changes(Revision, Arc<Vec<Change>>),
    Progress(Revision),
    Gap,
}

impl Item {
    /// Key changes it carries.
    fn len(&self) -> usize {
        match self {
            Item::Changes(_, changes) => changes.len(),
            Item::Progress(_) | Item::Gap => 0,
        }
    }

    fn to_event(&self) -> WatchEvent {
        match self {
            Item::Changes(revision, changes) => WatchEvent::Changes {
                revision: *revision,
                changes: changes.as_ref().clone(),
            },
            Item::Progress(revision) => WatchEvent::Progress(*revision),
            Item::Gap => WatchEvent::Gap,
        }
    }
}

/// The history and its subscribers.
pub(crate) struct Feed {
    history: VecDeque<(Revision, Item)>,
    /// Key changes in `history`.
    changes: usize,
    /// Watches from before this revision cannot be served.
    oldest: Revision,
    /// The latest revision the feed has reached.
    pub(crate) latest: Revision,
    tx: broadcast::Sender<Item>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            history: VecDeque::new(),
            changes: 0,
            oldest: Revision(0),
            latest: Revision(0),
            tx: broadcast::channel(4096).0,
        }
    }
}

impl Feed {
    fn push(&mut self, item: Item) {
        match &item {
            Item::Changes(revision, _) | Item::Progress(revision) => {
                if *revision <= self.latest {
                    return;
                }
                self.latest = *revision;
                self.changes += item.len();
                self.history.push_back((*revision, item.clone()));
                while self.history.len() > HISTORY || self.changes > HISTORY_CHANGES {
                    let Some((revision, old)) = self.history.pop_front() else {
                        break;
                    };
                    self.changes -= old.len();
                    self.oldest = revision;
                }
            }
            Item::Gap => {
                self.history.clear();
                self.changes = 0;
                self.oldest = self.latest;
            }
        }
        let _ = self.tx.send(item);
    }

    /// The changes after `from`, then live ones.
    pub(crate) fn watch(&self, from: Revision) -> WatchStream {
        if from < self.oldest {
            return Box::pin(futures_util::stream::iter([Ok(WatchEvent::Gap)]));
        }
        let backlog: Vec<_> = self
            .history
            .iter()
            .filter(|(revision, _)| *revision > from)
            .map(|(_, item)| Ok(item.to_event()))
            .collect();
        let live = futures_util::stream::unfold(
            (self.tx.subscribe(), false),
            |(mut rx, done)| async move {
                if done {
                    return None;
                }
                match rx.recv().await {
                    Ok(item) => {
                        let end = matches!(item, Item::Gap);
                        Some((Ok(item.to_event()), (rx, end)))
                    }
                    // Too slow to keep up: the store must re-list.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        Some((Ok(WatchEvent::Gap), (rx, true)))
                    }
                    Err(broadcast::error::RecvError::Closed) => None,
                }
            },
        );
        Box::pin(futures_util::stream::iter(backlog).chain(live))
    }
}

/// Runs the backend's watcher until the backend is dropped.
pub(crate) async fn run(inner: Weak<Inner>, mut stop: tokio::sync::watch::Receiver<()>) {
    let (api, config) = match inner.upgrade() {
        Some(inner) => (inner.api.clone(), inner.watcher_config()),
        None => return,
    };
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    let mut buffer: Option<Vec<DynamicObject>> = None;
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            // The sender lives in the backend: this resolves when it is dropped.
            _ = stop.changed() => return,
        };
        let Some(event) = event else { return };
        let Some(inner) = inner.upgrade() else { return };
        match event {
            Ok(watcher::Event::Init) => buffer = Some(Vec::new()),
            Ok(watcher::Event::InitApply(object)) => {
                if let Some(buffer) = buffer.as_mut() {
                    buffer.push(object);
                }
            }
            Ok(watcher::Event::InitDone) => {
                let listed = buffer.take().unwrap_or_default();
                init_done(&inner, &listed);
            }
            Ok(watcher::Event::Apply(object)) => applied(&inner, &object),
            Ok(watcher::Event::Delete(object)) => deleted(&inner, &object),
            Err(error) => {
                // The watcher backs off and resumes by itself.
                tracing::warn!(%error, "watch failed; backing off");
            }
        }
        inner.advanced.notify_waiters();
    }
}

/// A complete listing from the watcher: diff every object against the cache.
fn init_done(inner: &Inner, listed: &[DynamicObject]) {
    let mut seen = Vec::with_capacity(listed.len());
    for object in listed {
        match Inner::to_json(object).and_then(|json| parse_object(&inner.layout, &json)) {
            Ok(parsed) => seen.push(parsed),
            Err(error) => tracing::warn!(%error, "skipping an object that does not parse"),
        }
    }
    seen.sort_by_key(|s| s.revision);
    let mut cache = inner.cache();
    let mut feed = inner.feed();
    let vanished = cache
        .shards
        .keys()
        .any(|name| !seen.iter().any(|s| &s.name == name));
    let mut latest = feed.latest;
    let mut items = Vec::new();
    let mut gap = vanished;
    for object in seen {
        let revision = Revision(object.revision);
        latest = latest.max(revision);
        let changes = cache.apply(&inner.layout, object);
        if changes.is_empty() {
            continue;
        }
        if revision <= feed.latest {
            // Changed without a newer revision than we hold: only a re-list can say.
            gap = true;
        }
        items.push(Item::Changes(revision, Arc::new(changes)));
    }
    if gap {
        cache.shards.retain(|name, _| {
            listed
                .iter()
                .any(|o| o.metadata.name.as_deref() == Some(name))
        });
        feed.push(Item::Gap);
        feed.latest = latest;
        return;
    }
    for item in items {
        feed.push(item);
    }
    // Writes acknowledged while the watcher listed may have changed no key
    // (metadata only); stores must still reach their revision.
    feed.push(Item::Progress(latest));
}

fn applied(inner: &Inner, object: &DynamicObject) {
    let seen = match Inner::to_json(object).and_then(|json| parse_object(&inner.layout, &json)) {
        Ok(seen) => seen,
        Err(error) => {
            tracing::warn!(%error, "skipping an object that does not parse");
            return;
        }
    };
    let revision = Revision(seen.revision);
    let mut cache = inner.cache();
    let stale = cache
        .shards
        .get(&seen.name)
        .is_some_and(|shard| shard.revision >= seen.revision);
    if stale {
        return;
    }
    let changes = cache.apply(&inner.layout, seen);
    let mut feed = inner.feed();
    if changes.is_empty() {
        feed.push(Item::Progress(revision));
    } else {
        feed.push(Item::Changes(revision, Arc::new(changes)));
    }
}

fn deleted(inner: &Arc<Inner>, object: &DynamicObject) {
    let name = object.metadata.name.clone().unwrap_or_default();
    tracing::warn!(object = %name, namespace = %inner.namespace, "store object deleted; recreating it");
    inner.cache().remove(&name);
    // Stores re-list: the object's keys read as removed, subscribers see it.
    inner.feed().push(Item::Gap);
    let inner = Arc::clone(inner);
    tokio::spawn(async move {
        if let Err(error) = inner.ensure_object(&name).await {
            tracing::error!(object = %name, %error, "could not recreate store object");
        }
    });
}

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
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use futures_util::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use store_core::Revision;
use store_core::backend::{Change, WatchEvent, WatchStream};
use tokio::sync::{Notify, broadcast, mpsc};

use crate::cache::{Cache, parse_dynamic, parse_revision};
use crate::layout::Layout;
use crate::metrics::KubeMetrics;

/// Revisions kept for stores that watch from an older revision.
const HISTORY: usize = 10_000;
/// Key changes kept in all: a re-listing of a large store is one burst of
/// changes, and must not stay in memory.
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

    /// Drops what the history holds up to `reached`: a watch from before it
    /// re-lists.
    fn forget_through(&mut self, reached: Revision) {
        while let Some((revision, item)) = self.history.pop_front() {
            if revision > reached {
                self.history.push_front((revision, item));
                break;
            }
            self.changes -= item.len();
        }
        self.oldest = self.oldest.max(reached);
    }

    /// The feed lost track up to `reached`: every watch from before it, live
    /// or yet to start, must re-list. A store that listed before the gap and
    /// starts watching after it would otherwise resume from a revision the
    /// history no longer covers and miss what the gap changed.
    fn gap(&mut self, reached: Revision) {
        self.latest = self.latest.max(reached);
        self.push(Item::Gap);
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

/// What the watcher task keeps: the local view of the store's objects and
/// the history of changes stores replay. The backend reads both; only the
/// task writes them.
pub(crate) struct FeedState {
    pub(crate) layout: Layout,
    cache: Mutex<Cache>,
    history: Mutex<Feed>,
    /// Woken whenever the feed moved, for listings waiting on it.
    pub(crate) advanced: Notify,
    /// Whether the watcher has completed a listing (`Some(true)`), or
    /// failed before its first (`Some(false)`).
    listed: tokio::sync::watch::Sender<Option<bool>>,
}

impl FeedState {
    pub(crate) fn new(layout: Layout) -> Self {
        FeedState {
            layout,
            cache: Mutex::new(Cache::default()),
            history: Mutex::new(Feed::default()),
            advanced: Notify::new(),
            listed: tokio::sync::watch::Sender::new(None),
        }
    }

    pub(crate) fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn history(&self) -> MutexGuard<'_, Feed> {
        self.history.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits, at most `limit`, for the watcher's first listing; whether it
    /// completed (`false` as soon as the watcher fails before it).
    pub(crate) async fn first_listing(&self, limit: std::time::Duration) -> bool {
        let mut listed = self.listed.subscribe();
        let outcome = tokio::time::timeout(limit, listed.wait_for(Option::is_some)).await;
        matches!(outcome, Ok(Ok(done)) if *done == Some(true))
    }
}

/// Runs the backend's watcher until the backend is dropped (`stop` ends) or
/// its state goes. An object deleted by someone else is dropped from the view
/// (stores re-list) and its name reported on `deleted`: what to do about it
/// is the backend's call.
pub(crate) async fn run(
    state: Weak<FeedState>,
    metrics: Arc<KubeMetrics>,
    api: Api<DynamicObject>,
    config: watcher::Config,
    mut stop: tokio::sync::watch::Receiver<()>,
    deleted: mpsc::UnboundedSender<String>,
) {
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    let mut buffer: Option<Vec<DynamicObject>> = None;
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            // The sender lives in the backend: this resolves when it is dropped.
            _ = stop.changed() => return,
        };
        let Some(event) = event else { return };
        let Some(state) = state.upgrade() else { return };
        match event {
            Ok(watcher::Event::Init) => {
                metrics.listing_started();
                buffer = Some(Vec::new());
            }
            Ok(watcher::Event::InitApply(object)) => {
                if let Some(buffer) = buffer.as_mut() {
                    buffer.push(object);
                }
            }
            Ok(watcher::Event::InitDone) => {
                let listed = buffer.take().unwrap_or_default();
                init_done(&state, &listed);
                state.listed.send_replace(Some(true));
            }
            Ok(watcher::Event::Apply(object)) => applied(&state, &object),
            Ok(watcher::Event::Delete(object)) => {
                let name = gone(&state, &object);
                // No receiver: the backend is going away.
                let _ = deleted.send(name);
            }
            Err(error) => {
                metrics.watch_error(&error);
                state.listed.send_if_modified(|listed| {
                    let first = listed.is_none();
                    if first {
                        *listed = Some(false);
                    }
                    first
                });
                // The watcher backs off and resumes by itself.
                tracing::warn!(%error, "watch failed; backing off");
            }
        }
        state.advanced.notify_waiters();
    }
}

/// A complete listing from the watcher: diff every object against the cache.
fn init_done(state: &FeedState, listed: &[DynamicObject]) {
    let mut seen = Vec::with_capacity(listed.len());
    for object in listed {
        match parse_dynamic(&state.layout, object) {
            Ok(parsed) => seen.push(parsed),
            Err(error) => tracing::warn!(%error, "skipping an object that does not parse"),
        }
    }
    seen.sort_by_key(|s| s.revision);
    let mut cache = state.cache();
    let mut feed = state.history();
    let first = feed.latest == Revision(0);
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
        let changes = cache.observe(&state.layout, object);
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
        feed.gap(latest);
        return;
    }
    for item in items {
        feed.push(item);
    }
    // Writes acknowledged while the watcher listed may have changed no key
    // (metadata only); stores must still reach their revision.
    feed.push(Item::Progress(latest));
    if first {
        // No store is behind the first listing: a store lists, from the cache
        // this listing filled, before it watches. Its changes (every key of
        // the store) are not kept for replay.
        feed.forget_through(latest);
    }
}

fn applied(state: &FeedState, object: &DynamicObject) {
    let seen = match parse_dynamic(&state.layout, object) {
        Ok(seen) => seen,
        Err(error) => {
            tracing::warn!(%error, "skipping an object that does not parse");
            return;
        }
    };
    let revision = Revision(seen.revision);
    let mut cache = state.cache();
    let stale = cache
        .shards
        .get(&seen.name)
        .is_some_and(|shard| shard.revision >= seen.revision);
    if stale {
        return;
    }
    let changes = cache.observe(&state.layout, seen);
    let mut feed = state.history();
    if changes.is_empty() {
        feed.push(Item::Progress(revision));
    } else {
        feed.push(Item::Changes(revision, Arc::new(changes)));
    }
}

/// Drops a deleted object from the view; stores re-list, so its keys read as
/// removed and subscribers see it. Returns its name.
fn gone(state: &FeedState, object: &DynamicObject) -> String {
    let name = object.metadata.name.clone().unwrap_or_default();
    let mut cache = state.cache();
    cache.remove(&name);
    let mut feed = state.history();
    // The deletion's own revision; without one, a revision past everything seen.
    let reached = parse_revision(object.metadata.resource_version.as_deref())
        .map_or(Revision(feed.latest.0 + 1), Revision);
    feed.gap(reached);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(revision: u64, key: &str) -> Item {
        Item::Changes(
            Revision(revision),
            Arc::new(vec![Change::Removed(key.into())]),
        )
    }

    async fn first(feed: &Feed, from: u64) -> Option<WatchEvent> {
        next_of(feed.watch(Revision(from))).await
    }

    async fn next_of(mut stream: WatchStream) -> Option<WatchEvent> {
        tokio::time::timeout(std::time::Duration::from_millis(50), stream.next())
            .await
            .ok()
            .flatten()
            .and_then(Result::ok)
    }

    #[tokio::test]
    async fn a_store_that_listed_before_a_gap_re_lists_when_it_starts_watching_after_it() {
        let mut feed = Feed::default();
        feed.push(changes(5, "a"));
        // A store lists here (revision 5); then the watcher re-lists and
        // finds changes up to 9 it cannot place in the history.
        feed.gap(Revision(9));
        assert_eq!(first(&feed, 5).await, Some(WatchEvent::Gap));
        // A store that listed after the gap resumes without one.
        assert_eq!(first(&feed, 9).await, None);
        feed.push(changes(10, "b"));
        assert!(matches!(
            first(&feed, 9).await,
            Some(WatchEvent::Changes {
                revision: Revision(10),
                ..
            })
        ));
    }

    fn shard(revision: u64, data: serde_json::Value) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "typed-store.dev/v1",
            "kind": "StoreShard",
            "metadata": { "name": "s-0", "resourceVersion": revision.to_string() },
            "spec": { "data": data },
        }))
        .expect("an object")
    }

    #[tokio::test]
    async fn the_first_listing_is_not_kept_for_replay_and_a_later_one_is() {
        let state = FeedState::new(Layout::Native {
            store: "s".into(),
            shards: 1,
        });
        init_done(&state, &[shard(5, serde_json::json!({"a": "1", "b": "2"}))]);
        assert_eq!(
            state.history().changes,
            0,
            "the first listing's changes are dropped"
        );
        assert_eq!(state.history().latest, Revision(5));
        // A store lists at 5 and watches from there; nothing is behind it.
        assert_eq!(first_of(&state, 5).await, None);
        assert_eq!(first_of(&state, 4).await, Some(WatchEvent::Gap));
        // A re-listing (after the watch lost its place) finds `b` changed: a
        // store at 5 must be told.
        init_done(&state, &[shard(8, serde_json::json!({"a": "1", "b": "3"}))]);
        assert_eq!(state.history().changes, 1);
        assert!(matches!(
            first_of(&state, 5).await,
            Some(WatchEvent::Changes { revision: Revision(8), ref changes }) if changes.len() == 1
        ));
    }

    /// [`first`] through the state's lock, not held while waiting.
    async fn first_of(state: &FeedState, from: u64) -> Option<WatchEvent> {
        let stream = state.history().watch(Revision(from));
        next_of(stream).await
    }

    #[tokio::test]
    async fn a_deletion_without_a_revision_still_sends_earlier_watches_back_to_list() {
        let mut feed = Feed::default();
        feed.push(changes(5, "a"));
        feed.gap(Revision(feed.latest.0 + 1));
        assert_eq!(first(&feed, 5).await, Some(WatchEvent::Gap));
        assert_eq!(feed.latest, Revision(6));
    }
}

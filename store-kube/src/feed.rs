//! The feed: one kube-runtime watcher per backend, turned into a history of
//! per-key changes that every store on the backend replays from.
//!
//! One watcher (not one per store) keeps a single diff cache, so every key
//! gets one version (the resourceVersion at which its value changed) however
//! many stores read it, and a change seen first for one store is not lost for
//! another. Every watch, live ones included, is a cursor into that one
//! history, so a change is held once however many stores watch. The history
//! is bounded; a watch it has passed (a store that fell that far behind), a
//! watch from before it, an object that vanished, or a watcher that had to
//! re-list (history gone on the server) all end in a `Gap`, and the store
//! re-lists.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use futures_util::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use store_core::Revision;
use store_core::backend::{Change, SharedIndex, WatchEvent, WatchStream};
use tokio::sync::{Notify, mpsc};

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
    Changes(Arc<Vec<Change>>),
    Progress,
}

impl Item {
    /// Key changes it carries.
    fn len(&self) -> usize {
        match self {
            Item::Changes(changes) => changes.len(),
            Item::Progress => 0,
        }
    }

    fn to_event(&self, revision: Revision, index: Option<SharedIndex>) -> WatchEvent {
        match self {
            Item::Changes(changes) => WatchEvent::Changes {
                revision,
                changes: changes.as_ref().clone(),
                index,
            },
            Item::Progress => WatchEvent::Progress(revision),
        }
    }
}

/// Items a watch takes from the history at a time.
const BATCH: usize = 256;

/// The history every watch reads from, live ones included: a watch is a
/// cursor into it, not a buffer of its own.
pub(crate) struct Feed {
    /// Each item at its revision, oldest first.
    history: VecDeque<(Revision, Item)>,
    /// Key changes in `history`.
    changes: usize,
    /// Watches from before this revision cannot be served.
    oldest: Revision,
    /// The latest revision the feed has reached.
    pub(crate) latest: Revision,
    /// Gaps so far: a watch that sees one it did not start with re-lists.
    gaps: u64,
    /// The cache's index as of the newest item of changes, handed out with
    /// it. Only the newest: an index held for older items would keep their
    /// objects' old entries alive.
    index: Option<(Revision, SharedIndex)>,
    /// Told of every item and gap; watches that have read everything wait on it.
    moved: tokio::sync::watch::Sender<()>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            history: VecDeque::new(),
            changes: 0,
            oldest: Revision(0),
            latest: Revision(0),
            gaps: 0,
            index: None,
            moved: tokio::sync::watch::Sender::new(()),
        }
    }
}

/// An item of the history, with the cache's index as of it when the feed
/// still has that.
type Read = (Revision, Item, Option<SharedIndex>);

/// What a watch reads next.
enum Next {
    /// Shared with the history: made into events outside its lock.
    Items(Vec<Read>),
    Gap,
    Nothing,
}

impl Feed {
    /// Adds an item of changes, with the cache's index as of it.
    fn push_changes(&mut self, revision: Revision, changes: Vec<Change>, index: SharedIndex) {
        if revision > self.latest {
            self.index = Some((revision, index));
            self.push(revision, Item::Changes(Arc::new(changes)));
        }
    }

    fn push(&mut self, revision: Revision, item: Item) {
        if revision <= self.latest {
            return;
        }
        self.latest = revision;
        self.changes += item.len();
        self.history.push_back((revision, item));
        // The newest item stays however large it is: live watches read it here.
        while self.history.len() > 1
            && (self.history.len() > HISTORY || self.changes > HISTORY_CHANGES)
        {
            let Some((revision, old)) = self.history.pop_front() else {
                break;
            };
            self.changes -= old.len();
            self.oldest = revision;
        }
        self.moved.send_replace(());
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
        self.history.clear();
        self.index = None;
        self.changes = 0;
        self.oldest = self.latest;
        self.gaps += 1;
        self.moved.send_replace(());
    }

    /// What a watch that has read up to `at`, and started after `gaps` gaps,
    /// reads next.
    fn next(&self, at: Revision, gaps: u64) -> Next {
        if gaps != self.gaps || at < self.oldest {
            return Next::Gap;
        }
        let start = self
            .history
            .partition_point(|(revision, _)| *revision <= at);
        let index = |revision: Revision| {
            self.index
                .as_ref()
                .filter(|(at, _)| *at == revision)
                .map(|(_, index)| index.clone())
        };
        let items: Vec<Read> = self
            .history
            .range(start..)
            .take(BATCH)
            .map(|(revision, item)| (*revision, item.clone(), index(*revision)))
            .collect();
        if items.is_empty() {
            Next::Nothing
        } else {
            Next::Items(items)
        }
    }
}

/// The changes after `from`, then live ones, read from the feed's history
/// until a gap (then the stream ends) or until the backend goes.
pub(crate) fn watch(state: &Arc<FeedState>, from: Revision) -> WatchStream {
    let (gaps, moved) = {
        let feed = state.history();
        (feed.gaps, feed.moved.subscribe())
    };
    let cursor = Cursor {
        state: Arc::downgrade(state),
        at: from,
        gaps,
        moved,
        ready: VecDeque::new(),
    };
    Box::pin(futures_util::stream::unfold(
        Some(cursor),
        |cursor| async move {
            let mut cursor = cursor?;
            loop {
                if let Some((revision, item, index)) = cursor.ready.pop_front() {
                    return Some((Ok(item.to_event(revision, index)), Some(cursor)));
                }
                // Seen before reading, so an item pushed after the read wakes us.
                cursor.moved.borrow_and_update();
                let next = cursor
                    .state
                    .upgrade()?
                    .history()
                    .next(cursor.at, cursor.gaps);
                match next {
                    Next::Gap => return Some((Ok(WatchEvent::Gap), None)),
                    Next::Items(items) => {
                        cursor.at = items.last().map_or(cursor.at, |(at, ..)| *at);
                        cursor.ready.extend(items);
                    }
                    // The sender goes with the backend: then the stream ends.
                    Next::Nothing => cursor.moved.changed().await.ok()?,
                }
            }
        },
    ))
}

/// A watch's place in the feed.
struct Cursor {
    /// Not kept alive by its watches: the backend owns it.
    state: Weak<FeedState>,
    /// The revision read up to.
    at: Revision,
    /// Gaps there had been when the watch started.
    gaps: u64,
    moved: tokio::sync::watch::Receiver<()>,
    /// Read from the history, not yet handed on.
    ready: VecDeque<Read>,
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
            cache: Mutex::new(Cache::new(&layout)),
            layout,
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
        items.push((revision, changes));
    }
    if gap {
        cache.retain(|name| {
            listed
                .iter()
                .any(|o| o.metadata.name.as_deref() == Some(name))
        });
        feed.gap(latest);
        return;
    }
    // The cache's index now is as of the last item of changes (the objects
    // after it changed no key); the feed keeps it for the newest item only.
    let index = cache.index();
    for (revision, changes) in items {
        feed.push_changes(revision, changes, index.clone());
    }
    // Writes acknowledged while the watcher listed may have changed no key
    // (metadata only); stores must still reach their revision.
    feed.push(latest, Item::Progress);
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
        feed.push(revision, Item::Progress);
    } else {
        feed.push_changes(revision, changes, cache.index());
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

    fn native() -> Arc<FeedState> {
        Arc::new(FeedState::new(Layout::Native {
            store: "s".into(),
            shards: 1,
        }))
    }

    fn push(state: &FeedState, revision: u64, key: &str) {
        state.history().push(
            Revision(revision),
            Item::Changes(Arc::new(vec![Change::Removed(key.into())])),
        );
    }

    /// The first event of a watch from `from`, if one comes at once.
    async fn first(state: &Arc<FeedState>, from: u64) -> Option<WatchEvent> {
        next_of(&mut watch(state, Revision(from))).await
    }

    async fn next_of(stream: &mut WatchStream) -> Option<WatchEvent> {
        tokio::time::timeout(std::time::Duration::from_millis(50), stream.next())
            .await
            .ok()
            .flatten()
            .and_then(Result::ok)
    }

    fn revision_of(event: Option<WatchEvent>) -> Option<u64> {
        match event {
            Some(WatchEvent::Changes { revision, .. }) => Some(revision.0),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_store_that_listed_before_a_gap_re_lists_when_it_starts_watching_after_it() {
        let state = native();
        push(&state, 5, "a");
        // A store lists here (revision 5); then the watcher re-lists and
        // finds changes up to 9 it cannot place in the history.
        state.history().gap(Revision(9));
        assert_eq!(first(&state, 5).await, Some(WatchEvent::Gap));
        // A store that listed after the gap resumes without one.
        assert_eq!(first(&state, 9).await, None);
        push(&state, 10, "b");
        assert_eq!(revision_of(first(&state, 9).await), Some(10));
    }

    #[tokio::test]
    async fn a_live_watch_gets_every_later_item_in_order_then_the_gap() {
        let state = native();
        push(&state, 5, "a");
        let mut live = watch(&state, Revision(5));
        assert_eq!(next_of(&mut live).await, None, "nothing after 5 yet");
        for revision in 6..=(6 + 2 * BATCH as u64) {
            push(&state, revision, "a");
        }
        for revision in 6..=(6 + 2 * BATCH as u64) {
            assert_eq!(revision_of(next_of(&mut live).await), Some(revision));
        }
        // A gap that reaches no further than the watch (a re-list that found
        // changes at revisions it already held) still sends it to re-list.
        let latest = state.history().latest;
        state.history().gap(latest);
        assert_eq!(next_of(&mut live).await, Some(WatchEvent::Gap));
        assert!(live.next().await.is_none(), "the stream ends at a gap");
    }

    #[tokio::test]
    async fn a_watch_thousands_of_items_behind_catches_up_from_the_history() {
        let state = native();
        push(&state, 1, "a");
        let mut slow = watch(&state, Revision(1));
        // Far behind, but the history still holds all of it: no re-list.
        let last = 1 + HISTORY as u64 / 2;
        for revision in 2..=last {
            push(&state, revision, "a");
        }
        for revision in 2..=last {
            assert_eq!(revision_of(next_of(&mut slow).await), Some(revision));
        }
    }

    #[tokio::test]
    async fn a_watch_the_history_has_passed_re_lists_and_one_ends_with_its_backend() {
        let state = native();
        push(&state, 1, "a");
        let mut behind = watch(&state, Revision(1));
        for revision in 2..=(2 + HISTORY as u64) {
            push(&state, revision, "a");
        }
        // Revision 2 is gone from the history before the watch read it.
        assert_eq!(next_of(&mut behind).await, Some(WatchEvent::Gap));
        let latest = state.history().latest;
        let mut live = watch(&state, latest);
        drop(state);
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), live.next()).await;
        assert!(matches!(ended, Ok(None)), "the stream ends with the feed");
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
        let state = native();
        init_done(&state, &[shard(5, serde_json::json!({"a": "1", "b": "2"}))]);
        assert_eq!(
            state.history().changes,
            0,
            "the first listing's changes are dropped"
        );
        assert_eq!(state.history().latest, Revision(5));
        // A store lists at 5 and watches from there; nothing is behind it.
        assert_eq!(first(&state, 5).await, None);
        assert_eq!(first(&state, 4).await, Some(WatchEvent::Gap));
        // A re-listing (after the watch lost its place) finds `b` changed: a
        // store at 5 must be told.
        init_done(&state, &[shard(8, serde_json::json!({"a": "1", "b": "3"}))]);
        assert_eq!(state.history().changes, 1);
        assert!(matches!(
            first(&state, 5).await,
            Some(WatchEvent::Changes { revision: Revision(8), ref changes, .. }) if changes.len() == 1
        ));
    }

    /// The index an event hands on, if any.
    fn index_of(event: Option<&WatchEvent>) -> Option<SharedIndex> {
        match event {
            Some(WatchEvent::Changes { index, .. }) => index.clone(),
            _ => None,
        }
    }

    #[tokio::test]
    async fn only_the_newest_change_carries_the_cache_s_index_and_a_gap_drops_it() {
        let state = native();
        init_done(&state, &[shard(5, serde_json::json!({"a": "1"}))]);
        applied(&state, &shard(6, serde_json::json!({"a": "2"})));
        applied(&state, &shard(7, serde_json::json!({"a": "3"})));
        let mut catching_up = watch(&state, Revision(5));
        let older = next_of(&mut catching_up).await;
        assert_eq!(revision_of(older.clone()), Some(6));
        assert!(
            index_of(older.as_ref()).is_none(),
            "no index for an older item"
        );
        let newest = next_of(&mut catching_up).await;
        assert_eq!(revision_of(newest.clone()), Some(7));
        let index = index_of(newest.as_ref()).expect("the newest carries one");
        assert!(index == state.cache().index(), "the cache's own index");
        assert_eq!(
            index.get("a").map(|e| e.value().as_str().to_owned()),
            Some("3".into())
        );
        // A change of metadata alone (progress) leaves the index with the
        // item of changes before it.
        applied(&state, &shard(8, serde_json::json!({"a": "3"})));
        let again = first(&state, 6).await;
        assert_eq!(revision_of(again.clone()), Some(7));
        assert!(index_of(again.as_ref()).is_some());
        // After a gap the history holds no index: stores re-list for one.
        state.history().gap(Revision(9));
        assert!(state.history().index.is_none());
    }

    #[tokio::test]
    async fn a_deletion_without_a_revision_still_sends_earlier_watches_back_to_list() {
        let state = native();
        push(&state, 5, "a");
        let latest = state.history().latest;
        state.history().gap(Revision(latest.0 + 1));
        assert_eq!(first(&state, 5).await, Some(WatchEvent::Gap));
        assert_eq!(state.history().latest, Revision(6));
    }
}

//! [`SharedWatch`]: one watch of an inner backend, shared by every
//! [`ScopedBackend`] made from it.
//!
//! Each change goes only to the scopes whose prefix it starts with, found by
//! looking up the key's `/`-ended prefixes in a map, so a change costs the
//! same however many scopes are open, and a scope hears nothing of the
//! others: no event, not even a progress mark. A scope's store still needs
//! its view to reach the revisions of its own calls (a delete of a missing
//! key, a listing), so each revision a scope's call returns is noted, and a
//! progress mark is sent to that scope alone once the watch has passed it.
//!
//! Invariant: everything sent to a scope is sent under the hub's lock, in
//! revision order, so a progress mark never overtakes a change it covers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use store_core::backend::{Change, WatchEvent, WatchStream};
use store_core::{Backend, Result, Revision};
use tokio::sync::Notify;

use crate::lock;
use crate::scoped::ScopedBackend;

/// Revisions of changes kept for scopes that start watching a little behind.
const RING_REVISIONS: usize = 1024;
/// Key changes kept in all for the same purpose.
const RING_CHANGES: usize = 8192;
/// Events a scope may leave unread before it is told to re-list instead.
const INBOX_LIMIT: usize = 16_384;

/// One watch of `inner` under a prefix, shared by many [`ScopedBackend`]s.
///
/// A scoped backend made with [`scoped`](Self::scoped) gets from it only the
/// changes under its own prefix, so the work a change costs does not grow
/// with the number of scopes watching. Cheap to clone; the watch stops when
/// the last clone and every scoped backend made from it are dropped.
///
/// ```
/// use std::sync::Arc;
/// use store_core::{MemoryBackend, Store};
/// use store_session::SharedWatch;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> store_core::Result<()> {
/// let watch = SharedWatch::start(Arc::new(MemoryBackend::new()), "").await?;
/// let a = Store::builder().backend(watch.scoped("a/")).open().await?;
/// let b = Store::builder().backend(watch.scoped("b/")).open().await?;
/// a.set_and_wait("k", &1).await?;
/// assert_eq!(b.get::<i32>("k")?, None);
/// # Ok(()) }
/// ```
pub struct SharedWatch<B> {
    hub: Arc<Hub<B>>,
}

impl<B> Clone for SharedWatch<B> {
    fn clone(&self) -> Self {
        SharedWatch {
            hub: Arc::clone(&self.hub),
        }
    }
}

impl<B> std::fmt::Debug for SharedWatch<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedWatch")
            .field("prefix", &self.hub.prefix)
            .finish_non_exhaustive()
    }
}

/// Told about changes under a prefix and about gaps (after which anything may
/// have changed); called outside the hub's lock, from the watch task.
pub(crate) trait Listener: Send + Sync + 'static {
    fn changes(&self, revision: Revision, changes: &[Change]);
    fn gap(&self);
}

pub(crate) struct Hub<B> {
    inner: Arc<B>,
    prefix: Arc<str>,
    state: Mutex<State>,
    /// Dropping it stops the watch task.
    _stop: tokio::sync::watch::Sender<()>,
}

#[derive(Default)]
struct State {
    /// The last revision passed on.
    position: Revision,
    /// A scope watching from before this is told to re-list.
    oldest: Revision,
    ring: VecDeque<(Revision, Arc<Vec<Change>>)>,
    ring_changes: usize,
    /// Routes by their prefix, for prefixes ending in `/`.
    routes: HashMap<Arc<str>, Vec<Arc<Route>>>,
    /// Routes whose prefix does not end in `/`, checked one by one.
    odd: Vec<Arc<Route>>,
    /// Routes waiting for the watch to pass a revision.
    waiters: BTreeMap<Revision, Vec<Weak<Route>>>,
    listeners: Vec<(String, Arc<dyn Listener>)>,
}

/// One scoped backend's place in the hub.
pub(crate) struct Route {
    prefix: Arc<str>,
    /// The live watch's inbox, if one is live. Changed under the hub's lock.
    inbox: Mutex<Option<Arc<Inbox>>>,
}

struct Inbox {
    queue: Mutex<VecDeque<WatchEvent>>,
    notify: Notify,
}

impl Inbox {
    fn new() -> Arc<Self> {
        Arc::new(Inbox {
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
        })
    }

    /// Queues `event`; `false` if the reader fell too far behind, in which
    /// case the queue now holds a gap alone.
    fn push(&self, event: WatchEvent) -> bool {
        let mut queue = lock(&self.queue);
        let kept = queue.len() < INBOX_LIMIT;
        if kept {
            queue.push_back(event);
        } else {
            queue.clear();
            queue.push_back(WatchEvent::Gap);
        }
        drop(queue);
        self.notify.notify_one();
        kept
    }
}

impl Route {
    fn send(&self, event: WatchEvent) {
        let mut inbox = lock(&self.inbox);
        if let Some(current) = inbox.as_ref() {
            let gap = matches!(event, WatchEvent::Gap);
            if !current.push(event) || gap {
                *inbox = None;
            }
        }
    }

    fn is_live(&self) -> bool {
        lock(&self.inbox).is_some()
    }
}

impl State {
    /// The routes whose prefix `key` starts with.
    fn routes_for<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Arc<Route>> + 'a {
        let slashed = key
            .char_indices()
            .filter(|(_, c)| *c == '/')
            .filter_map(move |(at, _)| self.routes.get(&key[..=at]))
            .flatten();
        let odd = self
            .odd
            .iter()
            .filter(move |route| key.starts_with(&*route.prefix));
        slashed.chain(odd)
    }

    fn remember(&mut self, revision: Revision, changes: Arc<Vec<Change>>) {
        self.ring_changes += changes.len();
        self.ring.push_back((revision, changes));
        while self.ring.len() > RING_REVISIONS || self.ring_changes > RING_CHANGES {
            let Some((dropped, changes)) = self.ring.pop_front() else {
                break;
            };
            self.ring_changes -= changes.len();
            self.oldest = dropped;
        }
    }

    /// Sends a progress mark to every route waiting for `revision` or less.
    fn wake_waiters(&mut self, revision: Revision) {
        let later = self.waiters.split_off(&Revision(revision.0 + 1));
        let due = std::mem::replace(&mut self.waiters, later);
        for route in due.into_values().flatten() {
            if let Some(route) = route.upgrade() {
                route.send(WatchEvent::Progress(revision));
            }
        }
    }
}

/// `changes` under `prefix`, with the prefix taken off.
fn strip(prefix: &str, changes: &[Change]) -> Vec<Change> {
    changes
        .iter()
        .filter_map(|change| change.strip_prefix(prefix))
        .collect()
}

impl<B: Backend> SharedWatch<B> {
    /// Starts one watch of every key of `inner` under `prefix` (`""` for all).
    pub async fn start(inner: Arc<B>, prefix: impl Into<String>) -> Result<Self> {
        let prefix: Arc<str> = Arc::from(prefix.into());
        let start = probe(&*inner, &prefix).await?;
        let stream = inner.watch_prefix(start, &prefix).await?;
        let (stop, stopped) = tokio::sync::watch::channel(());
        let hub = Arc::new(Hub {
            inner,
            prefix,
            state: Mutex::new(State {
                position: start,
                oldest: start,
                ..State::default()
            }),
            _stop: stop,
        });
        tokio::spawn(run(Arc::downgrade(&hub), stream, stopped));
        Ok(SharedWatch { hub })
    }

    /// The keys under `prefix`, as a backend of their own, fed by this watch.
    ///
    /// A prefix outside the watched one gets a watch of its own.
    pub fn scoped(&self, prefix: impl Into<Arc<str>>) -> ScopedBackend<B> {
        let prefix: Arc<str> = prefix.into();
        if !prefix.starts_with(&*self.hub.prefix) {
            return ScopedBackend::new(Arc::clone(&self.hub.inner), prefix);
        }
        let route = Arc::new(Route {
            prefix: Arc::clone(&prefix),
            inbox: Mutex::new(None),
        });
        {
            let mut state = lock(&self.hub.state);
            if prefix.ends_with('/') {
                state
                    .routes
                    .entry(Arc::clone(&prefix))
                    .or_default()
                    .push(Arc::clone(&route));
            } else {
                state.odd.push(Arc::clone(&route));
            }
        }
        ScopedBackend::routed(
            Arc::clone(&self.hub.inner),
            prefix,
            Routed {
                hub: Arc::clone(&self.hub) as Arc<dyn HubRef>,
                route,
            },
        )
    }

    /// Calls `listener` with every change under `prefix`, and on every gap.
    pub(crate) fn listen(&self, prefix: String, listener: Arc<dyn Listener>) {
        lock(&self.hub.state).listeners.push((prefix, listener));
    }
}

/// A revision to start watching from: that of an empty listing (a prefix no
/// valid key has, as keys hold no control character).
async fn probe<B: Backend>(inner: &B, prefix: &str) -> Result<Revision> {
    Ok(inner.list(&format!("{prefix}\u{7f}")).await?.revision)
}

/// What a routed scoped backend needs of its hub, whatever the backend type.
pub(crate) trait HubRef: Send + Sync + 'static {
    fn watch(&self, route: &Arc<Route>, from: Revision) -> WatchStream;
    fn want(&self, route: &Arc<Route>, revision: Revision);
    fn remove(&self, route: &Arc<Route>);
}

/// A scoped backend's link to its hub; dropping the last clone removes the route.
pub(crate) struct Routed {
    hub: Arc<dyn HubRef>,
    route: Arc<Route>,
}

impl Routed {
    pub(crate) fn watch(&self, from: Revision) -> WatchStream {
        self.hub.watch(&self.route, from)
    }

    pub(crate) fn want(&self, revision: Revision) {
        self.hub.want(&self.route, revision);
    }
}

impl Drop for Routed {
    fn drop(&mut self) {
        self.hub.remove(&self.route);
    }
}

impl<B: Backend> HubRef for Hub<B> {
    fn watch(&self, route: &Arc<Route>, from: Revision) -> WatchStream {
        let state = lock(&self.state);
        if from < state.oldest {
            return Box::pin(futures_util::stream::iter([Ok(WatchEvent::Gap)]));
        }
        let inbox = Inbox::new();
        for (revision, changes) in &state.ring {
            if *revision > from {
                let mine = strip(&route.prefix, changes);
                if !mine.is_empty() {
                    inbox.push(WatchEvent::Changes {
                        revision: *revision,
                        changes: mine,
                        index: None,
                    });
                }
            }
        }
        if state.position > from {
            inbox.push(WatchEvent::Progress(state.position));
        }
        *lock(&route.inbox) = Some(Arc::clone(&inbox));
        drop(state);
        let detach = Detach {
            route: Arc::downgrade(route),
            inbox: Arc::clone(&inbox),
        };
        Box::pin(futures_util::stream::unfold(
            (detach, false),
            move |(detach, done)| async move {
                if done {
                    return None;
                }
                loop {
                    let next = lock(&detach.inbox.queue).pop_front();
                    match next {
                        Some(WatchEvent::Changes { revision, .. }) if revision <= from => {}
                        Some(WatchEvent::Gap) => {
                            return Some((Ok(WatchEvent::Gap), (detach, true)));
                        }
                        Some(event) => return Some((Ok(event), (detach, false))),
                        None => detach.inbox.notify.notified().await,
                    }
                }
            },
        ))
    }

    fn want(&self, route: &Arc<Route>, revision: Revision) {
        let mut state = lock(&self.state);
        if state.position >= revision {
            if route.is_live() {
                let position = state.position;
                route.send(WatchEvent::Progress(position));
            }
        } else {
            state
                .waiters
                .entry(revision)
                .or_default()
                .push(Arc::downgrade(route));
        }
    }

    fn remove(&self, route: &Arc<Route>) {
        let mut state = lock(&self.state);
        if let Some(routes) = state.routes.get_mut(&*route.prefix) {
            routes.retain(|r| !Arc::ptr_eq(r, route));
            if routes.is_empty() {
                state.routes.remove(&*route.prefix);
            }
        }
        state.odd.retain(|r| !Arc::ptr_eq(r, route));
    }
}

/// Takes the inbox off its route when the stream reading it is dropped.
struct Detach {
    route: Weak<Route>,
    inbox: Arc<Inbox>,
}

impl Drop for Detach {
    fn drop(&mut self) {
        if let Some(route) = self.route.upgrade() {
            let mut inbox = lock(&route.inbox);
            if inbox.as_ref().is_some_and(|i| Arc::ptr_eq(i, &self.inbox)) {
                *inbox = None;
            }
        }
    }
}

impl<B: Backend> Hub<B> {
    /// Passes one event of the inner watch on; `false` on a gap, which the
    /// caller recovers from.
    fn dispatch(&self, event: WatchEvent) -> bool {
        let mut heard: Vec<(Arc<dyn Listener>, Revision, Vec<Change>)> = Vec::new();
        {
            let mut state = lock(&self.state);
            match event {
                WatchEvent::Changes {
                    revision, changes, ..
                } => {
                    if revision <= state.position {
                        return true;
                    }
                    // Group per route, so each scope gets one event per revision.
                    let mut per_route: HashMap<*const Route, (Arc<Route>, Vec<Change>)> =
                        HashMap::new();
                    for change in &changes {
                        for route in state.routes_for(change.key()) {
                            if !route.is_live() {
                                continue;
                            }
                            let Some(mine) = change.strip_prefix(&route.prefix) else {
                                continue;
                            };
                            per_route
                                .entry(Arc::as_ptr(route))
                                .or_insert_with(|| (Arc::clone(route), Vec::new()))
                                .1
                                .push(mine);
                        }
                    }
                    for (route, mine) in per_route.into_values() {
                        route.send(WatchEvent::Changes {
                            revision,
                            changes: mine,
                            index: None,
                        });
                    }
                    for (prefix, listener) in &state.listeners {
                        let theirs: Vec<Change> = changes
                            .iter()
                            .filter(|c| c.key().starts_with(prefix.as_str()))
                            .cloned()
                            .collect();
                        if !theirs.is_empty() {
                            heard.push((Arc::clone(listener), revision, theirs));
                        }
                    }
                    state.remember(revision, Arc::new(changes));
                    state.position = revision;
                    state.wake_waiters(revision);
                }
                WatchEvent::Progress(revision) => {
                    if revision > state.position {
                        state.position = revision;
                        state.wake_waiters(revision);
                    }
                }
                WatchEvent::Gap => return false,
            }
        }
        for (listener, revision, changes) in heard {
            listener.changes(revision, &changes);
        }
        true
    }

    /// After a gap: starts watching afresh from now, and tells every scope
    /// and listener to re-read.
    async fn recover(&self) -> Result<WatchStream> {
        let start = probe(&*self.inner, &self.prefix).await?;
        let stream = self.inner.watch_prefix(start, &self.prefix).await?;
        let listeners: Vec<Arc<dyn Listener>> = {
            let mut state = lock(&self.state);
            state.position = state.position.max(start);
            state.oldest = state.position;
            state.ring.clear();
            state.ring_changes = 0;
            let routes: Vec<Arc<Route>> = state
                .routes
                .values()
                .flatten()
                .chain(state.odd.iter())
                .cloned()
                .collect();
            for route in routes {
                route.send(WatchEvent::Gap);
            }
            state.listeners.iter().map(|(_, l)| Arc::clone(l)).collect()
        };
        for listener in listeners {
            listener.gap();
        }
        Ok(stream)
    }
}

/// Follows the inner watch until the hub is dropped.
async fn run<B: Backend>(
    hub: Weak<Hub<B>>,
    mut stream: WatchStream,
    mut stop: tokio::sync::watch::Receiver<()>,
) {
    loop {
        let event = tokio::select! {
            event = stream.next() => event,
            // The sender lives in the hub: this resolves when it is dropped.
            _ = stop.changed() => return,
        };
        let gap = {
            let Some(hub) = hub.upgrade() else { return };
            match event {
                Some(Ok(event)) => {
                    if hub.dispatch(event) {
                        continue;
                    }
                    true
                }
                Some(Err(error)) => {
                    tracing::warn!(prefix = %hub.prefix, %error, "shared watch failed; resuming");
                    false
                }
                None => false,
            }
        };
        let mut delay = Duration::from_millis(10);
        loop {
            let resumed = {
                let Some(hub) = hub.upgrade() else { return };
                if gap {
                    hub.recover().await
                } else {
                    let from = lock(&hub.state).position;
                    hub.inner.watch_prefix(from, &hub.prefix).await
                }
            };
            match resumed {
                Ok(next) => {
                    stream = next;
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "shared watch could not resume; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => return,
                    }
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use store_core::backend::{Applied, Batch, Entry, Listing, Op};
    use store_core::{Capabilities, MemoryBackend, Payload, Store};
    use tokio::sync::mpsc;

    use super::*;

    /// A memory backend whose watches can be broken with a gap on demand.
    struct Gappy {
        inner: MemoryBackend,
        gaps: Mutex<Vec<mpsc::UnboundedSender<()>>>,
        watches: AtomicUsize,
    }

    impl Gappy {
        fn gap(&self) {
            for tx in lock(&self.gaps).drain(..) {
                let _ = tx.send(());
            }
        }
    }

    impl Backend for Gappy {
        fn name(&self) -> &'static str {
            "gappy"
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
            self.inner.apply(batch).await
        }
        async fn watch(&self, from: Revision) -> Result<WatchStream> {
            self.watch_prefix(from, "").await
        }
        async fn watch_prefix(&self, from: Revision, prefix: &str) -> Result<WatchStream> {
            self.watches.fetch_add(1, Ordering::SeqCst);
            let (tx, rx) = mpsc::unbounded_channel::<()>();
            lock(&self.gaps).push(tx);
            let gaps = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await?;
                Some((Ok(WatchEvent::Gap), rx))
            });
            let inner = self.inner.watch_prefix(from, prefix).await?;
            Ok(Box::pin(futures_util::stream::select(inner, gaps)))
        }
    }

    fn put(key: &str, value: &str) -> Batch {
        Batch {
            ops: vec![Op::put(key, Payload::from(value))],
            atomic: false,
        }
    }

    #[tokio::test]
    async fn after_a_gap_the_shared_watch_starts_afresh_and_scopes_catch_up() {
        let backend = Arc::new(Gappy {
            inner: MemoryBackend::new(),
            gaps: Mutex::new(Vec::new()),
            watches: AtomicUsize::new(0),
        });
        let watch = SharedWatch::start(Arc::clone(&backend), "")
            .await
            .expect("starts");
        let store = Store::builder()
            .backend(watch.scoped("a/"))
            .open()
            .await
            .expect("store opens");
        backend.apply(put("a/k", "1")).await.expect("apply");
        backend.gap();
        backend.apply(put("a/k", "2")).await.expect("apply");
        backend.apply(put("b/k", "3")).await.expect("apply");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while store.get::<i32>("k").ok().flatten().as_deref() != Some(&2) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the scope catches up after the gap"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(store.keys(), vec!["k".to_owned()]);
        assert!(
            backend.watches.load(Ordering::SeqCst) >= 2,
            "the shared watch was started again"
        );
        // A write through the scope still completes: its store hears of it.
        store.set_and_wait("k", &5).await.expect("written");
        assert_eq!(store.get::<i32>("k").expect("get").as_deref(), Some(&5));
    }
}

//! The in-memory backend: the embedded default, and what tests swap in.
//!
//! Every capability is honoured: compare-and-set, atomic batches, TTL, and
//! sharing between stores (clones of one [`MemoryBackend`] are one store).
//! History is kept for a bounded number of revisions; a watch from before
//! that window gets [`WatchEvent::Gap`], as a real backend's would. To make
//! it fail, hold writes back or forget its history in a test, wrap it in
//! `store_conformance::Gated`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::backend::{
    Applied, Backend, Batch, Capabilities, Change, Entry, Listing, OpKind, Outcome, Payload,
    Precondition, Revision, SharedKey, Version, WatchEvent, WatchStream, check_batch,
};
use crate::error::{Error, Result};

/// Revisions of history kept for watches unless configured otherwise.
pub const DEFAULT_HISTORY: usize = 10_000;

/// The largest value the `store-kube` backend stores with its default limits,
/// in bytes of the value's JSON text once written into the custom resource as
/// a JSON string (quotes and escapes counted). See
/// [`MemoryBackend::with_kube_limits`].
pub const KUBE_MAX_VALUE_SIZE: usize = 1_572_864 - 4096 - 16 * 1024;

const NAME: &str = "memory";

struct Stored {
    entry: Entry,
    expires: Option<Instant>,
}

type Event = (Revision, Arc<Vec<Change>>);

struct State {
    entries: BTreeMap<SharedKey, Stored>,
    /// Keys with a time to live, by deadline: the reaper and every call look at
    /// the front only, so expiry costs nothing per key that never expires.
    expiring: BTreeSet<(Instant, SharedKey)>,
    revision: Revision,
    /// Revisions after `compacted` are in `history`.
    history: VecDeque<Event>,
    compacted: Revision,
    history_limit: usize,
    events: broadcast::Sender<Event>,
    reaper: bool,
}

/// An in-process backend with every capability. Clones share one store.
#[derive(Clone)]
pub struct MemoryBackend {
    state: Arc<Mutex<State>>,
    max_value_size: Option<usize>,
    /// Measure a value as a JSON string holding its text, as a Kubernetes
    /// object stores it, instead of by its own length.
    size_as_string: bool,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("MemoryBackend")
            .field("keys", &state.entries.len())
            .field("revision", &state.revision)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBackend {
    /// An empty store keeping [`DEFAULT_HISTORY`] revisions of history.
    pub fn new() -> Self {
        Self::with_history(DEFAULT_HISTORY)
    }

    /// An empty store keeping `revisions` revisions of history for watches.
    pub fn with_history(revisions: usize) -> Self {
        let (events, _) = broadcast::channel(1024);
        MemoryBackend {
            state: Arc::new(Mutex::new(State {
                entries: BTreeMap::new(),
                expiring: BTreeSet::new(),
                revision: Revision(0),
                history: VecDeque::new(),
                compacted: Revision(0),
                history_limit: revisions.max(1),
                events,
                reaper: false,
            })),
            max_value_size: None,
            size_as_string: false,
        }
    }

    /// The same store, refusing values over `bytes` (advertised in
    /// [`Capabilities::max_value_size`], so a [`Store`](crate::Store) refuses
    /// them at the call).
    pub fn with_max_value_size(mut self, bytes: usize) -> Self {
        self.max_value_size = Some(bytes);
        self
    }

    /// The same store, refusing values as the `store-kube` backend does with
    /// its default limits, so code tested on memory meets the limits it will
    /// meet on a cluster.
    ///
    /// There is no limit by default. With this, a value over
    /// [`KUBE_MAX_VALUE_SIZE`] bytes is refused with [`Error::ValueTooLarge`]
    /// at the call; a value just under it whose quotes and backslashes grow
    /// past it once stored as a string in the object fails its write, as on
    /// the kube backend.
    ///
    /// ```
    /// use store_core::{Error, MemoryBackend, Store};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> store_core::Result<()> {
    /// let store = Store::builder()
    ///     .backend(MemoryBackend::new().with_kube_limits())
    ///     .open()
    ///     .await?;
    /// let too_big = "x".repeat(2 * 1024 * 1024);
    /// assert!(matches!(store.set("big", &too_big), Err(Error::ValueTooLarge { .. })));
    /// # Ok(()) }
    /// ```
    pub fn with_kube_limits(mut self) -> Self {
        self.max_value_size = Some(KUBE_MAX_VALUE_SIZE);
        self.size_as_string = true;
        self
    }

    /// The size of a value as this backend measures it against its limit.
    fn stored_size(&self, value: &Payload) -> usize {
        if !self.size_as_string {
            return value.len();
        }
        let escapes: usize = value
            .as_str()
            .chars()
            .map(|c| match c {
                '"' | '\\' | '\n' | '\r' | '\t' | '\u{08}' | '\u{0C}' => 1,
                c if u32::from(c) < 0x20 => 5,
                _ => 0,
            })
            .sum();
        value.len() + escapes + 2
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current revision.
    pub fn revision(&self) -> Revision {
        self.lock().revision
    }

    fn ensure_reaper(&self, state: &mut State) {
        if state.reaper {
            return;
        }
        state.reaper = true;
        let weak = Arc::downgrade(&self.state);
        tokio::spawn(reap(weak));
    }
}

impl State {
    /// Records the changes of one revision and tells the watches.
    fn commit(&mut self, changes: Vec<Change>) -> Revision {
        self.revision = Revision(self.revision.0 + 1);
        let event = (self.revision, Arc::new(changes));
        self.history.push_back(event.clone());
        while self.history.len() > self.history_limit {
            if let Some((revision, _)) = self.history.pop_front() {
                self.compacted = revision;
            }
        }
        let _ = self.events.send(event);
        self.revision
    }

    /// Removes expired keys in one revision of their own.
    fn expire(&mut self, now: Instant) {
        let mut expired = Vec::new();
        while let Some((at, _)) = self.expiring.first()
            && *at <= now
        {
            if let Some((_, key)) = self.expiring.pop_first() {
                self.entries.remove(&key);
                expired.push(key);
            }
        }
        if expired.is_empty() {
            return;
        }
        self.commit(expired.into_iter().map(Change::Removed).collect());
    }

    fn next_expiry(&self) -> Option<Instant> {
        self.expiring.first().map(|(at, _)| *at)
    }

    /// Stores `key`, keeping the expiry index in step.
    fn insert(&mut self, key: SharedKey, stored: Stored) {
        if let Some(at) = self.entries.get(&key).and_then(|s| s.expires) {
            self.expiring.remove(&(at, key.clone()));
        }
        if let Some(at) = stored.expires {
            self.expiring.insert((at, key.clone()));
        }
        self.entries.insert(key, stored);
    }

    /// Removes `key`, keeping the expiry index in step; whether it was there.
    fn remove(&mut self, key: &str) -> bool {
        let Some((key, stored)) = self.entries.remove_entry(key) else {
            return false;
        };
        if let Some(at) = stored.expires {
            self.expiring.remove(&(at, key));
        }
        true
    }

    fn holds(
        &self,
        key: &str,
        precondition: Precondition,
    ) -> std::result::Result<(), Option<Version>> {
        let actual = self.entries.get(key).map(|s| s.entry.version());
        let ok = match precondition {
            Precondition::Absent => actual.is_none(),
            Precondition::Version(v) => actual == Some(v),
        };
        if ok { Ok(()) } else { Err(actual) }
    }
}

/// Expires keys on time while the backend exists.
async fn reap(state: Weak<Mutex<State>>) {
    loop {
        let next = {
            let Some(state) = state.upgrade() else { return };
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            state.expire(Instant::now());
            state.next_expiry()
        };
        // Wake at least once a second to notice new, earlier deadlines and a dropped backend.
        let wake = next.map_or(Instant::now() + Duration::from_secs(1), |at| {
            at.min(Instant::now() + Duration::from_secs(1))
        });
        tokio::time::sleep_until(wake).await;
    }
}

impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        // Not durable, and shared only between stores in this process.
        Capabilities::default()
            .with_compare_and_set()
            .with_atomic_batch()
            .with_ttl()
            .with_max_value_size(self.max_value_size)
    }

    async fn read(&self, key: &str) -> Result<Option<Entry>> {
        let mut state = self.lock();
        state.expire(Instant::now());
        Ok(state.entries.get(key).map(|s| s.entry.clone()))
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        let mut state = self.lock();
        state.expire(Instant::now());
        let entries = state
            .entries
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, s)| s.entry.clone())
            .collect();
        Ok(Listing {
            entries,
            revision: state.revision,
        })
    }

    async fn apply(&self, batch: Batch) -> Result<Applied> {
        check_batch(NAME, &self.capabilities(), &batch)?;
        let mut state = self.lock();
        let now = Instant::now();
        state.expire(now);
        if batch.atomic
            && let Some(limit) = self.max_value_size
            && let Some(index) = batch.ops.iter().position(|op| {
                matches!(&op.kind, OpKind::Put { value, .. } if self.stored_size(value) > limit)
            })
        {
            // All or nothing: one value over the limit fails the batch.
            let outcomes = (0..batch.ops.len())
                .map(|i| match &batch.ops[i].kind {
                    OpKind::Put { value, .. } if i == index => {
                        Outcome::Failed(Error::ValueTooLarge {
                            key: batch.ops[i].key.clone(),
                            size: self.stored_size(value),
                            limit,
                        })
                    }
                    _ => Outcome::Aborted,
                })
                .collect();
            return Ok(Applied {
                revision: state.revision,
                outcomes,
            });
        }
        if batch.atomic {
            // Check every precondition against the state as each earlier op leaves it.
            let mut shadow: BTreeMap<&str, Option<Version>> = BTreeMap::new();
            let failed = batch.ops.iter().position(|op| {
                let current = shadow.get(op.key.as_str()).copied().unwrap_or_else(|| {
                    state
                        .entries
                        .get(op.key.as_str())
                        .map(|s| s.entry.version())
                });
                let ok = match op.precondition {
                    None => true,
                    Some(Precondition::Absent) => current.is_none(),
                    Some(Precondition::Version(v)) => current == Some(v),
                };
                let next = match op.kind {
                    OpKind::Put { .. } => Some(Version(u64::MAX)),
                    OpKind::Delete => None,
                };
                shadow.insert(&op.key, next);
                !ok
            });
            if let Some(index) = failed {
                let actual = state
                    .entries
                    .get(batch.ops[index].key.as_str())
                    .map(|s| s.entry.version());
                let outcomes = (0..batch.ops.len())
                    .map(|i| {
                        if i == index {
                            Outcome::Conflict { actual }
                        } else {
                            Outcome::Aborted
                        }
                    })
                    .collect();
                return Ok(Applied {
                    revision: state.revision,
                    outcomes,
                });
            }
        }
        let next = Version(state.revision.0 + 1);
        let mut outcomes = Vec::with_capacity(batch.ops.len());
        // One change per key, at the position of its last write in the batch.
        let mut changes: Vec<Option<Change>> = Vec::new();
        // The front-end coalesces plain writes, so keys rarely repeat in a
        // batch: only then is the key of every change remembered.
        let repeats = {
            let mut seen = HashSet::with_capacity(batch.ops.len());
            !batch.ops.iter().all(|op| seen.insert(op.key.as_str()))
        };
        let mut positions: HashMap<String, usize> = HashMap::new();
        let mut record = |change: Change| {
            if repeats
                && let Some(earlier) = positions.insert(change.key().to_owned(), changes.len())
            {
                changes[earlier] = None;
            }
            changes.push(Some(change));
        };
        let mut needs_reaper = false;
        for op in batch.ops {
            if let Some(precondition) = op.precondition
                && let Err(actual) = state.holds(&op.key, precondition)
            {
                outcomes.push(Outcome::Conflict { actual });
                continue;
            }
            match op.kind {
                OpKind::Put { value, ttl } => {
                    if let Some(limit) = self.max_value_size
                        && self.stored_size(&value) > limit
                    {
                        outcomes.push(Outcome::Failed(Error::ValueTooLarge {
                            key: op.key,
                            size: self.stored_size(&value),
                            limit,
                        }));
                        continue;
                    }
                    let expires = ttl.map(|t| now + t);
                    needs_reaper |= expires.is_some();
                    let unchanged = state
                        .entries
                        .get(op.key.as_str())
                        .is_some_and(|s| *s.entry.value() == value && s.expires == expires);
                    if unchanged {
                        // A write that changes nothing makes no new version and no event.
                        let version = state
                            .entries
                            .get(op.key.as_str())
                            .map_or(next, |s| s.entry.version());
                        outcomes.push(Outcome::Applied(version));
                        continue;
                    }
                    let entry = Entry::new(&op.key, value.as_str(), next);
                    state.insert(
                        SharedKey::from(op.key),
                        Stored {
                            entry: entry.clone(),
                            expires,
                        },
                    );
                    record(Change::Put(entry));
                    outcomes.push(Outcome::Applied(next));
                }
                OpKind::Delete => {
                    if state.remove(&op.key) {
                        record(Change::Removed(op.key.into()));
                        outcomes.push(Outcome::Applied(next));
                    } else {
                        outcomes.push(Outcome::Applied(Version(state.revision.0)));
                    }
                }
            }
        }
        let changes: Vec<Change> = changes.into_iter().flatten().collect();
        let revision = if changes.is_empty() {
            state.revision
        } else {
            state.commit(changes)
        };
        if needs_reaper {
            self.ensure_reaper(&mut state);
        }
        Ok(Applied { revision, outcomes })
    }

    async fn watch(&self, from: Revision) -> Result<WatchStream> {
        self.watch_prefix(from, "").await
    }

    /// Filters each revision's changes before copying them out, so a watcher of
    /// one prefix pays only for the changes under it.
    async fn watch_prefix(&self, from: Revision, prefix: &str) -> Result<WatchStream> {
        let mut state = self.lock();
        state.expire(Instant::now());
        if from < state.compacted {
            return Ok(Box::pin(futures_util::stream::iter([Ok(WatchEvent::Gap)])));
        }
        let backlog: Vec<Event> = state
            .history
            .iter()
            .filter(|(revision, _)| *revision > from)
            .cloned()
            .collect();
        let live = state.events.subscribe();
        drop(state);
        let prefix: Arc<str> = Arc::from(prefix);
        let to_event = move |(revision, changes): Event| -> Result<WatchEvent> {
            let mine: Vec<Change> = changes
                .iter()
                .filter(|change| change.key().starts_with(&*prefix))
                .cloned()
                .collect();
            Ok(if mine.is_empty() {
                WatchEvent::Progress(revision)
            } else {
                WatchEvent::Changes {
                    revision,
                    changes: mine,
                    index: None,
                }
            })
        };
        let backlog = futures_util::stream::iter(backlog.into_iter().map(to_event.clone()));
        let live = futures_util::stream::unfold((live, false), move |(mut rx, done)| {
            let to_event = to_event.clone();
            async move {
                if done {
                    return None;
                }
                match rx.recv().await {
                    Ok(event) => Some((to_event(event), (rx, false))),
                    // Too slow to keep up, or compacted: the caller must re-list.
                    Err(
                        broadcast::error::RecvError::Lagged(_)
                        | broadcast::error::RecvError::Closed,
                    ) => Some((Ok(WatchEvent::Gap), (rx, true))),
                }
            }
        });
        Ok(Box::pin(backlog.chain(live)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Op;

    fn put(key: &str, value: &str) -> Op {
        Op::put(key, Payload::from(value))
    }

    #[tokio::test]
    async fn a_batch_repeating_a_key_reports_its_last_write_once() {
        let backend = MemoryBackend::new();
        let mut watch = backend.watch(Revision(0)).await.expect("watch");
        backend
            .apply(Batch {
                ops: vec![put("a", "1"), put("b", "1"), put("a", "2")],
                atomic: false,
            })
            .await
            .expect("apply");
        let event = futures_util::StreamExt::next(&mut watch).await;
        let Some(Ok(WatchEvent::Changes { changes, .. })) = event else {
            panic!("expected changes, got {event:?}");
        };
        let seen: Vec<(&str, Option<&str>)> = changes
            .iter()
            .map(|c| (c.key(), c.value().map(Payload::as_str)))
            .collect();
        assert_eq!(seen, [("b", Some("1")), ("a", Some("2"))]);
    }

    #[tokio::test]
    async fn a_prefix_watch_sees_only_its_keys_and_progress_for_the_rest() {
        let backend = MemoryBackend::new();
        let mut watch = backend
            .watch_prefix(Revision(0), "a/")
            .await
            .expect("watch");
        for key in ["b/1", "a/1"] {
            backend
                .apply(Batch {
                    ops: vec![put(key, "1")],
                    atomic: false,
                })
                .await
                .expect("apply");
        }
        let first = futures_util::StreamExt::next(&mut watch).await;
        assert!(
            matches!(first, Some(Ok(WatchEvent::Progress(Revision(1))))),
            "{first:?}"
        );
        let second = futures_util::StreamExt::next(&mut watch).await;
        assert!(
            matches!(&second, Some(Ok(WatchEvent::Changes { changes, .. })) if changes.len() == 1 && changes[0].key() == "a/1"),
            "{second:?}"
        );
    }

    #[tokio::test]
    async fn a_noop_write_makes_no_revision() {
        let backend = MemoryBackend::new();
        let first = backend
            .apply(Batch {
                ops: vec![put("a", "1")],
                atomic: false,
            })
            .await
            .expect("apply");
        let again = backend
            .apply(Batch {
                ops: vec![put("a", "1")],
                atomic: false,
            })
            .await
            .expect("apply");
        assert_eq!(first.revision, again.revision);
        assert!(
            matches!(again.outcomes[..], [Outcome::Applied(v)] if v == Version(first.revision.0))
        );
    }

    #[tokio::test]
    async fn an_atomic_batch_with_a_failed_precondition_applies_nothing() {
        let backend = MemoryBackend::new();
        let batch = Batch {
            ops: vec![
                put("a", "1"),
                put("b", "1").when(Precondition::Version(Version(9))),
            ],
            atomic: true,
        };
        let applied = backend.apply(batch).await.expect("apply");
        assert!(matches!(
            applied.outcomes[..],
            [Outcome::Aborted, Outcome::Conflict { actual: None }]
        ));
        assert!(backend.read("a").await.expect("read").is_none());
    }

    #[tokio::test]
    async fn a_watch_from_before_the_history_window_reports_a_gap() {
        let backend = MemoryBackend::with_history(2);
        for i in 0..5 {
            backend
                .apply(Batch {
                    ops: vec![put("a", &i.to_string())],
                    atomic: false,
                })
                .await
                .expect("apply");
        }
        let mut old = backend.watch(Revision(1)).await.expect("watch");
        assert_eq!(old.next().await.and_then(Result::ok), Some(WatchEvent::Gap));
        let mut recent = backend.watch(Revision(3)).await.expect("watch");
        assert!(matches!(
            recent.next().await.and_then(Result::ok),
            Some(WatchEvent::Changes {
                revision: Revision(4),
                ..
            })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn keys_expire_after_their_ttl() {
        let backend = MemoryBackend::new();
        let op = Op {
            key: "t".into(),
            kind: OpKind::Put {
                value: Payload::from("1"),
                ttl: Some(Duration::from_secs(5)),
            },
            precondition: None,
        };
        backend
            .apply(Batch {
                ops: vec![op],
                atomic: false,
            })
            .await
            .expect("apply");
        let mut watch = backend.watch(backend.revision()).await.expect("watch");
        assert!(backend.read("t").await.expect("read").is_some());
        // The reaper removes it on time, with a watch event, without any call.
        let event = watch.next().await.and_then(Result::ok);
        assert!(
            matches!(event, Some(WatchEvent::Changes { ref changes, .. }) if changes[0].value().is_none())
        );
        assert!(backend.read("t").await.expect("read").is_none());
    }
}

//! The fake's etcd: objects, one global revision counter, a bounded history
//! window and the fan-out of changes to watchers.
//!
//! Invariants: every committed change gets the next revision and is both
//! recorded in the history and offered to every registered watcher while the
//! lock is held, so a watch started "after revision N" sees each later change
//! exactly once and in order. A change that leaves an object as it was is not
//! committed (no revision, no event), as in kube-apiserver.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::mpsc;

use super::api_status::ApiError;

/// etcd's default `--max-request-bytes`: the largest object kube-apiserver can store.
pub(crate) const MAX_OBJECT_BYTES: usize = 1_572_864;

/// A stored object: the full JSON document, `metadata.resourceVersion` included.
pub(crate) type Object = Arc<Value>;

/// Where one kind of object lives: `group` ("" for core) and plural resource name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ResourceKey {
    pub(crate) group: String,
    pub(crate) resource: String,
}

/// One object's address; `namespace` is empty for cluster-scoped objects.
/// Ordered like etcd keys, so listings come out sorted by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ObjectKey {
    pub(crate) resource: ResourceKey,
    pub(crate) namespace: String,
    pub(crate) name: String,
}

/// A committed change. `old` and `new` are `None` for creation and deletion.
#[derive(Debug)]
pub(crate) struct Change {
    pub(crate) revision: u64,
    pub(crate) key: ObjectKey,
    pub(crate) old: Option<Object>,
    pub(crate) new: Option<Object>,
}

/// What a write callback decides.
pub(crate) enum Write {
    /// Store this document (its resourceVersion is stamped by the store).
    Put(Value),
    /// Remove the object.
    Delete,
}

/// The result of a write: the object as stored (or as it was before a
/// delete) and whether anything changed.
#[derive(Debug)]
pub(crate) struct Written {
    pub(crate) object: Object,
    pub(crate) created: bool,
    pub(crate) deleted: bool,
}

/// A revision older than the history window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TooOld {
    /// The oldest revision still answerable.
    pub(crate) compacted: u64,
}

/// A registered watcher: receives every change of its resource.
struct WatcherSlot {
    resource: ResourceKey,
    sender: mpsc::UnboundedSender<Arc<Change>>,
}

struct State {
    revision: u64,
    /// Revisions up to and including this one are forgotten.
    compacted: u64,
    objects: BTreeMap<ObjectKey, Object>,
    history: VecDeque<Arc<Change>>,
    watchers: Vec<WatcherSlot>,
}

/// The storage engine. Cheap operations under one mutex; nothing awaits while
/// holding it.
pub(crate) struct Etcd {
    state: Mutex<State>,
    window: u64,
}

/// How a watch starts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum WatchStart {
    /// Synthetic ADDED events for every current object, then live changes.
    Now,
    /// Every change after this revision, then live changes.
    After(u64),
}

/// What a new watch sees first, and where the rest arrives.
pub(crate) struct WatchFeed {
    /// Changes to replay before live ones (synthetic creations for `Now`).
    pub(crate) backlog: Vec<Arc<Change>>,
    pub(crate) live: mpsc::UnboundedReceiver<Arc<Change>>,
    /// The revision the watch starts after: backlog and live changes are newer,
    /// or (for a start from now) the backlog is the state at this revision.
    pub(crate) start: u64,
}

impl Etcd {
    /// A store that answers revisions up to `window` revisions back.
    pub(crate) fn new(window: u64) -> Self {
        Self {
            state: Mutex::new(State {
                // etcd starts at 1; "0" means "any version" to clients.
                revision: 1,
                compacted: 0,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                watchers: Vec::new(),
            }),
            window: window.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not take the server down with it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn revision(&self) -> u64 {
        self.lock().revision
    }

    pub(crate) fn get(&self, key: &ObjectKey) -> Option<Object> {
        self.lock().objects.get(key).cloned()
    }

    /// Objects of `resource` (in `namespace` if given) at the latest revision
    /// or at exactly `at`, with the revision the listing reflects.
    pub(crate) fn list(
        &self,
        resource: &ResourceKey,
        namespace: Option<&str>,
        at: Option<u64>,
    ) -> Result<(Vec<(ObjectKey, Object)>, u64), TooOld> {
        let state = self.lock();
        let in_scope = |key: &ObjectKey| {
            &key.resource == resource && namespace.is_none_or(|ns| key.namespace == ns)
        };
        let mut objects: BTreeMap<ObjectKey, Object> = state
            .objects
            .iter()
            .filter(|(key, _)| in_scope(key))
            .map(|(key, object)| (key.clone(), object.clone()))
            .collect();
        let revision = match at {
            None => state.revision,
            Some(at) if at >= state.revision => state.revision,
            Some(at) => {
                if at < state.compacted {
                    return Err(TooOld {
                        compacted: state.compacted,
                    });
                }
                // Undo the changes made after `at`, newest first.
                for change in state.history.iter().rev() {
                    if change.revision <= at {
                        break;
                    }
                    if !in_scope(&change.key) {
                        continue;
                    }
                    match &change.old {
                        Some(old) => objects.insert(change.key.clone(), old.clone()),
                        None => objects.remove(&change.key),
                    };
                }
                at
            }
        };
        Ok((objects.into_iter().collect(), revision))
    }

    /// Reads the current object, lets `decide` compute the next state, and
    /// commits it atomically. A `Put` equal to the current object (ignoring
    /// nothing but the version stamp) commits nothing. `dry_run` computes the
    /// outcome without committing.
    pub(crate) fn write<F>(
        &self,
        key: &ObjectKey,
        dry_run: bool,
        decide: F,
    ) -> Result<Written, ApiError>
    where
        F: FnOnce(Option<&Object>) -> Result<Write, ApiError>,
    {
        let mut state = self.lock();
        let current = state.objects.get(key).cloned();
        match decide(current.as_ref())? {
            Write::Put(mut value) => {
                if let Some(current) = &current {
                    set_resource_version(&mut value, resource_version_of(current));
                    if value == **current {
                        return Ok(Written {
                            object: current.clone(),
                            created: false,
                            deleted: false,
                        });
                    }
                }
                let revision = state.revision + 1;
                set_resource_version(&mut value, &revision.to_string());
                let size = serde_json::to_vec(&value)
                    .map(|bytes| bytes.len())
                    .unwrap_or(usize::MAX);
                if size > MAX_OBJECT_BYTES {
                    return Err(ApiError::etcd_request_too_large());
                }
                let object = Arc::new(value);
                if !dry_run {
                    state.commit(
                        self.window,
                        key.clone(),
                        current.clone(),
                        Some(object.clone()),
                    );
                }
                Ok(Written {
                    object,
                    created: current.is_none(),
                    deleted: false,
                })
            }
            Write::Delete => {
                let Some(current) = current else {
                    return Err(ApiError::internal("delete of a missing object"));
                };
                if !dry_run {
                    state.commit(self.window, key.clone(), Some(current.clone()), None);
                }
                Ok(Written {
                    object: current,
                    created: false,
                    deleted: true,
                })
            }
        }
    }

    /// Deletes every object `doomed` selects, one revision each.
    pub(crate) fn delete_where(&self, doomed: impl Fn(&ObjectKey) -> bool) {
        let mut state = self.lock();
        let keys: Vec<ObjectKey> = state
            .objects
            .keys()
            .filter(|key| doomed(key))
            .cloned()
            .collect();
        for key in keys {
            let old = state.objects.get(&key).cloned();
            state.commit(self.window, key, old, None);
        }
    }

    /// Registers a watcher of `resource` starting at `start`.
    pub(crate) fn watch(
        &self,
        resource: &ResourceKey,
        start: WatchStart,
    ) -> Result<WatchFeed, TooOld> {
        let mut state = self.lock();
        let backlog = match start {
            WatchStart::Now => state
                .objects
                .iter()
                .filter(|(key, _)| &key.resource == resource)
                .map(|(key, object)| {
                    Arc::new(Change {
                        revision: parse_revision(object),
                        key: key.clone(),
                        old: None,
                        new: Some(object.clone()),
                    })
                })
                .collect(),
            WatchStart::After(after) => {
                if after < state.compacted {
                    return Err(TooOld {
                        compacted: state.compacted,
                    });
                }
                state
                    .history
                    .iter()
                    .filter(|change| change.revision > after && &change.key.resource == resource)
                    .cloned()
                    .collect()
            }
        };
        let (sender, live) = mpsc::unbounded_channel();
        state.watchers.push(WatcherSlot {
            resource: resource.clone(),
            sender,
        });
        let start = match start {
            WatchStart::Now => state.revision,
            WatchStart::After(after) => after,
        };
        Ok(WatchFeed {
            backlog,
            live,
            start,
        })
    }

    /// Ends every watch stream: their receivers see the channel close.
    pub(crate) fn drop_watchers(&self) {
        self.lock().watchers.clear();
    }

    /// Number of watch streams still connected.
    pub(crate) fn open_watchers(&self) -> usize {
        let mut state = self.lock();
        state.watchers.retain(|slot| !slot.sender.is_closed());
        state.watchers.len()
    }
}

impl State {
    fn commit(&mut self, window: u64, key: ObjectKey, old: Option<Object>, new: Option<Object>) {
        self.revision += 1;
        match &new {
            Some(object) => self.objects.insert(key.clone(), object.clone()),
            None => self.objects.remove(&key),
        };
        let change = Arc::new(Change {
            revision: self.revision,
            key,
            old,
            new,
        });
        self.watchers.retain(|slot| {
            slot.resource != change.key.resource || slot.sender.send(change.clone()).is_ok()
        });
        self.history.push_back(change);
        // Keep exactly the changes a watch from `compacted` onwards needs.
        self.compacted = self.compacted.max(self.revision.saturating_sub(window));
        while self
            .history
            .front()
            .is_some_and(|change| change.revision <= self.compacted)
        {
            self.history.pop_front();
        }
    }
}

fn resource_version_of(object: &Value) -> &str {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn parse_revision(object: &Value) -> u64 {
    resource_version_of(object).parse().unwrap_or(0)
}

fn set_resource_version(object: &mut Value, version: &str) {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.insert(
            "resourceVersion".to_owned(),
            Value::String(version.to_owned()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            resource: ResourceKey {
                group: "example.com".into(),
                resource: "foos".into(),
            },
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn put(store: &Etcd, name: &str, value: i64) -> u64 {
        let written = store
            .write(&key(name), false, |_| {
                Ok(Write::Put(
                    json!({ "metadata": { "name": name }, "value": value }),
                ))
            })
            .expect("write");
        parse_revision(&written.object)
    }

    #[test]
    fn an_unchanged_put_commits_no_revision() {
        let store = Etcd::new(100);
        let first = put(&store, "a", 1);
        let again = put(&store, "a", 1);
        assert_eq!(first, again);
        assert_eq!(store.revision(), first);
    }

    #[test]
    fn an_exact_list_undoes_later_changes() {
        let store = Etcd::new(100);
        let at = put(&store, "a", 1);
        put(&store, "a", 2);
        put(&store, "b", 1);
        let resource = key("a").resource;
        let (objects, revision) = store.list(&resource, None, Some(at)).expect("list");
        assert_eq!(revision, at);
        assert_eq!(objects.len(), 1);
        assert_eq!(objects[0].1["value"], 1);
    }

    #[test]
    fn revisions_before_the_window_are_too_old() {
        let store = Etcd::new(2);
        let first = put(&store, "a", 1);
        put(&store, "a", 2);
        put(&store, "a", 3);
        put(&store, "a", 4);
        let resource = key("a").resource;
        assert!(store.watch(&resource, WatchStart::After(first)).is_err());
        assert!(store.list(&resource, None, Some(first)).is_err());
        let recent = store.revision() - 2;
        let feed = store
            .watch(&resource, WatchStart::After(recent))
            .expect("watch");
        assert_eq!(feed.backlog.len(), 2);
    }

    #[test]
    fn an_oversized_object_is_refused_like_etcd() {
        let store = Etcd::new(10);
        let big = "x".repeat(MAX_OBJECT_BYTES);
        let result = store.write(&key("big"), false, |_| {
            Ok(Write::Put(
                json!({ "metadata": { "name": "big" }, "data": big }),
            ))
        });
        let error = result.expect_err("refused");
        assert_eq!(error.code, 500);
        assert_eq!(error.message, "etcdserver: request is too large");
        assert!(store.get(&key("big")).is_none());
    }
}

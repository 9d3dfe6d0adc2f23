//! What the backend last saw of each object, from listings and the watch.
//!
//! Watch events carry whole objects; diffing each against the cached copy
//! turns them into per-key changes, and a key's version is the
//! resourceVersion of the object when its value last changed. Only the watch
//! and listings write here: a write's own response never does, or the watch
//! event that follows would diff to nothing and the view would miss it.
//!
//! Each key's [`Entry`] (the key, the value's payload and its version, in one
//! allocation) is kept across events while its value does not change, and
//! handed to stores in changes and listings: each key and value is in memory
//! once per process, however many stores read it.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kube::api::DynamicObject;
use store_core::backend::{Change, Entry, Index, SharedIndex, SharedKey};
use store_core::{Error, Payload, Version};

use crate::error::NAME;
use crate::layout::{Layout, Route};

/// A string of an object's data map, as a parsed object holds it.
pub(crate) type Stored = Payload;

/// One object as last seen.
#[derive(Debug, Clone)]
pub(crate) struct Shard {
    pub(crate) revision: u64,
    /// Every store key's entry, in key order (built whole on each event, so
    /// kept at its exact size: one pointer a key, and shared as it is by the
    /// [`ShardIndex`] every store's view holds). An entry's version is the
    /// object's revision when the value last changed.
    pub(crate) data: Arc<[Entry]>,
    /// Serialized size of the whole object, `managedFields` included.
    pub(crate) size: usize,
    /// The shard count its spec declares (native layout).
    pub(crate) declared_shards: Option<u64>,
    /// Its position among the layout's objects; `None` for another object
    /// carrying the store's label.
    pub(crate) home: Option<usize>,
    /// How many of its keys the layout routes to another object (edited in
    /// by hand, or written under another shard count).
    pub(crate) stray: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Shard {
            revision: 0,
            data: Arc::new([]),
            size: 0,
            declared_shards: None,
            home: None,
            stray: 0,
        }
    }
}

impl Shard {
    pub(crate) fn entry(&self, key: &str) -> Option<&Entry> {
        find(&self.data, key)
    }

    pub(crate) fn version(&self, key: &str) -> Option<Version> {
        self.entry(key).map(Entry::version)
    }

    /// The string the object's data map holds for `key`.
    pub(crate) fn stored<'a>(&'a self, layout: &Layout, key: &str) -> Option<Cow<'a, str>> {
        self.entry(key)
            .map(|entry| layout.stored_text(entry.value().as_str()))
    }
}

/// `key`'s entry among `entries`, which are in key order.
fn find<'a>(entries: &'a [Entry], key: &str) -> Option<&'a Entry> {
    entries
        .binary_search_by(|entry| entry.key().cmp(key))
        .ok()
        .map(|at| &entries[at])
}

/// Every object's entries as the cache held them at one revision: what a
/// store's view holds, shared, instead of a table of its own. A read looks
/// in the object the layout routes the key to (a binary search); only when
/// some object holds a key routed elsewhere does a miss look in the others.
pub(crate) struct ShardIndex {
    /// The layout's objects' entries in its order (empty for one not seen),
    /// then those of any other object of the store.
    objects: Box<[Arc<[Entry]>]>,
    route: Route,
    /// Whether some key sits outside the object it is routed to.
    stray: bool,
    len: usize,
}

impl Index for ShardIndex {
    fn get(&self, key: &str) -> Option<&Entry> {
        let home = self.route.of(key);
        let found = self
            .objects
            .get(home)
            .and_then(|entries| find(entries, key));
        if found.is_some() || !self.stray {
            return found;
        }
        self.objects
            .iter()
            .enumerate()
            .filter(|(at, _)| *at != home)
            .find_map(|(_, entries)| find(entries, key))
    }

    fn len(&self) -> usize {
        self.len
    }

    fn entries(&self) -> Box<dyn Iterator<Item = &Entry> + '_> {
        Box::new(self.objects.iter().flat_map(|entries| entries.iter()))
    }
}

/// Store key to stored string, as an object holds them.
pub(crate) type Data = BTreeMap<SharedKey, Stored>;

/// A parsed object: its revision, its store keys and its size. Keys and
/// values borrow the object they were read from: a watch event copies only
/// what changed, into entries.
#[derive(Debug, Clone)]
pub(crate) struct Seen<'a> {
    pub(crate) name: String,
    pub(crate) revision: u64,
    /// Store key and the string the data map holds for it, in key order.
    pub(crate) data: Vec<(&'a str, Cow<'a, str>)>,
    pub(crate) size: usize,
    /// Entries of the data map whose value is not a string (edited by hand).
    pub(crate) malformed: Vec<String>,
    /// The shard count its spec declares (native layout).
    pub(crate) declared_shards: Option<u64>,
    pub(crate) has_data_map: bool,
    pub(crate) has_labels: bool,
}

impl Seen<'_> {
    /// The string the data map holds for `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.data
            .binary_search_by(|(k, _)| (*k).cmp(key))
            .ok()
            .map(|at| &*self.data[at].1)
    }

    /// The store keys, in order.
    #[cfg(test)]
    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.data.iter().map(|(key, _)| *key)
    }

    /// The data map, copied out of the object.
    pub(crate) fn to_data(&self) -> Data {
        self.data
            .iter()
            .map(|(key, stored)| (SharedKey::from(*key), Stored::from(&**stored)))
            .collect()
    }
}

/// An object as JSON, to parse.
pub(crate) fn to_json(object: &kube::api::DynamicObject) -> Result<serde_json::Value, Error> {
    serde_json::to_value(object).map_err(|e| Error::backend(NAME, e))
}

/// Parses a `resourceVersion`. Kubernetes calls it opaque; every API server in use
/// (etcd-backed) makes it the decimal etcd revision, which ordering relies on.
pub(crate) fn parse_revision(resource_version: Option<&str>) -> Result<u64, Error> {
    let text = resource_version.unwrap_or("0");
    text.parse().map_err(|_| {
        Error::backend(
            NAME,
            format!("resourceVersion {text:?} is not a decimal revision; this backend needs an etcd-backed API server"),
        )
    })
}

/// The shard count a native object's spec declares.
pub(crate) fn declared_shards(object: &serde_json::Value) -> Option<u64> {
    object
        .pointer("/spec/shards")
        .and_then(serde_json::Value::as_u64)
}

/// Reads an object's JSON through the layout.
pub(crate) fn parse_object<'a>(
    layout: &Layout,
    object: &'a serde_json::Value,
) -> Result<Seen<'a>, Error> {
    let metadata = object.get("metadata");
    let text = |field: &str| {
        metadata
            .and_then(|m| m.get(field))
            .and_then(serde_json::Value::as_str)
    };
    let has_labels = metadata
        .and_then(|m| m.get("labels"))
        .is_some_and(serde_json::Value::is_object);
    read_parts(
        layout,
        Parts {
            name: text("name").unwrap_or_default(),
            resource_version: text("resourceVersion"),
            has_labels,
            body: object,
            size: json_size(object)?,
        },
    )
}

/// Reads an object as the watcher hands it over, without first turning it
/// into one JSON value (a copy of every key and value).
pub(crate) fn parse_dynamic<'a>(
    layout: &Layout,
    object: &'a DynamicObject,
) -> Result<Seen<'a>, Error> {
    read_parts(
        layout,
        Parts {
            name: object.metadata.name.as_deref().unwrap_or_default(),
            resource_version: object.metadata.resource_version.as_deref(),
            has_labels: object.metadata.labels.is_some(),
            // Everything but `apiVersion`, `kind` and `metadata`, where the
            // layout's data pointer leads as in the whole object.
            body: &object.data,
            size: json_size(object)?,
        },
    )
}

/// The length of `value`'s JSON, counted as it is written, never held whole.
fn json_size(value: &impl serde::Serialize) -> Result<usize, Error> {
    let mut counted = Counted(0);
    serde_json::to_writer(&mut counted, value).map_err(|e| Error::backend(NAME, e))?;
    Ok(counted.0)
}

/// Counts the bytes written to it.
struct Counted(usize);

impl std::io::Write for Counted {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What [`Seen`] is read from.
struct Parts<'a> {
    name: &'a str,
    resource_version: Option<&'a str>,
    has_labels: bool,
    /// Holds `spec` (native layout) or `data` (Pepr layout).
    body: &'a serde_json::Value,
    /// Serialized size of the whole object.
    size: usize,
}

fn read_parts<'a>(layout: &Layout, parts: Parts<'a>) -> Result<Seen<'a>, Error> {
    let revision = parse_revision(parts.resource_version)?;
    let mut data = Vec::new();
    let mut malformed = Vec::new();
    let map = layout.data_of(parts.body);
    for (map_key, value) in map.into_iter().flatten() {
        let Some(key) = layout.store_key(map_key) else {
            continue;
        };
        match value.as_str() {
            Some(text) => data.push((key, Cow::Borrowed(text))),
            // Not a string: someone edited the object by hand. Keep it visible as
            // its JSON text so reads give a decode error for this key alone.
            None => {
                malformed.push(key.to_owned());
                data.push((key, Cow::Owned(value.to_string())));
            }
        }
    }
    // A map's keys come in order already, unless serde_json keeps insertion
    // order (its `preserve_order` feature); sorting sorted keys is one pass.
    data.sort_unstable_by_key(|(key, _)| *key);
    Ok(Seen {
        name: parts.name.to_owned(),
        revision,
        data,
        size: parts.size,
        malformed,
        declared_shards: declared_shards(parts.body),
        has_data_map: map.is_some(),
        has_labels: parts.has_labels,
    })
}

pub(crate) struct Cache {
    pub(crate) shards: HashMap<String, Shard>,
    /// The layout's objects, in its order.
    objects: Vec<String>,
    route: Route,
    /// Every object's entries as of the last change, for stores' views.
    index: SharedIndex,
}

impl Cache {
    pub(crate) fn new(layout: &Layout) -> Self {
        let shards = HashMap::new();
        let objects = layout.objects();
        let route = layout.route();
        Cache {
            index: index_of(&shards, &objects, route),
            shards,
            objects,
            route,
        }
    }

    /// Every object's entries as of the last change.
    pub(crate) fn index(&self) -> SharedIndex {
        self.index.clone()
    }

    /// Replaces one object's copy; returns the changes, with keys whose value
    /// changed taking the object's revision as their version. Keys and values
    /// that did not change keep the allocations stores already share.
    pub(crate) fn observe(&mut self, layout: &Layout, seen: Seen<'_>) -> Vec<Change> {
        let home = self.objects.iter().position(|name| *name == seen.name);
        let route = self.route;
        let stray = |key: &str| home != Some(route.of(key));
        let shard = self.shards.entry(seen.name).or_insert_with(|| Shard {
            home,
            ..Shard::default()
        });
        // Both in key order: one pass over the two.
        let previous = std::mem::replace(&mut shard.data, Arc::new([]));
        let mut old = previous.iter().peekable();
        let mut changes = Vec::new();
        let mut removed = Vec::new();
        let mut data = Vec::with_capacity(seen.data.len());
        for (key, stored) in seen.data {
            while let Some(gone) = old.next_if(|entry| entry.key() < key) {
                shard.stray = shard.stray.saturating_sub(usize::from(stray(gone.key())));
                removed.push(Change::Removed(SharedKey::from(gone.key())));
            }
            let existing = old.next_if(|entry| entry.key() == key);
            if existing.is_none() {
                shard.stray += usize::from(stray(key));
            }
            let kept = existing.filter(|entry| layout.holds(entry, &stored));
            data.push(kept.cloned().unwrap_or_else(|| {
                let entry = layout.entry(key, &stored, Version(seen.revision));
                changes.push(Change::Put(entry.clone()));
                entry
            }));
        }
        for gone in old {
            shard.stray = shard.stray.saturating_sub(usize::from(stray(gone.key())));
            removed.push(Change::Removed(SharedKey::from(gone.key())));
        }
        changes.extend(removed);
        shard.revision = shard.revision.max(seen.revision);
        shard.size = seen.size;
        shard.declared_shards = seen.declared_shards;
        if changes.is_empty() {
            // The same entries: stores' views and the index keep sharing them.
            shard.data = previous;
        } else {
            shard.data = data.into();
            self.reindex();
        }
        changes
    }

    /// Makes the index anew from every object's entries (a pointer each).
    fn reindex(&mut self) {
        self.index = index_of(&self.shards, &self.objects, self.route);
    }

    /// Forgets an object.
    pub(crate) fn remove(&mut self, name: &str) {
        self.shards.remove(name);
        self.reindex();
    }

    /// Forgets every object but those `keep` names.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.shards.retain(|name, _| keep(name));
        self.reindex();
    }

    /// Every entry whose key starts with `prefix`, in key order.
    pub(crate) fn entries(&self, prefix: &str) -> Vec<Entry> {
        let mut entries: Vec<Entry> = self
            .shards
            .values()
            .flat_map(|shard| {
                shard
                    .data
                    .iter()
                    .filter(|entry| entry.key().starts_with(prefix))
                    .cloned()
            })
            .collect();
        entries.sort_by(|a, b| a.key().cmp(b.key()));
        entries
    }
}

/// The index of `shards`: the layout's `objects` in its order, then any other.
fn index_of(shards: &HashMap<String, Shard>, objects: &[String], route: Route) -> SharedIndex {
    let mut slices: Vec<Arc<[Entry]>> = Vec::with_capacity(objects.len());
    let mut stray = false;
    for name in objects {
        let shard = shards.get(name);
        stray |= shard.is_some_and(|shard| shard.stray > 0);
        slices.push(shard.map_or_else(
            || Arc::new([]) as Arc<[Entry]>,
            |shard| Arc::clone(&shard.data),
        ));
    }
    for shard in shards.values() {
        if shard.home.is_none() && !shard.data.is_empty() {
            stray = true;
            slices.push(Arc::clone(&shard.data));
        }
    }
    SharedIndex::new(ShardIndex {
        len: slices.iter().map(|entries| entries.len()).sum(),
        objects: slices.into(),
        route,
        stray,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(revision: u64, data: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "metadata": { "name": "s-0", "resourceVersion": revision.to_string() },
            "spec": { "data": data }
        })
    }

    fn observe(cache: &mut Cache, layout: &Layout, object: &serde_json::Value) -> Vec<Change> {
        cache.observe(layout, parse_object(layout, object).expect("parses"))
    }

    fn native() -> Layout {
        Layout::Native {
            store: "s".into(),
            shards: 1,
        }
    }

    #[test]
    fn a_diff_reports_changed_and_removed_keys_and_keeps_old_versions() {
        let layout = native();
        let mut cache = Cache::new(&layout);
        assert_eq!(
            observe(
                &mut cache,
                &layout,
                &object(5, serde_json::json!({"a": "1", "b": "2"}))
            )
            .len(),
            2
        );
        let changes = observe(
            &mut cache,
            &layout,
            &object(9, serde_json::json!({"a": "1", "c": "3"})),
        );
        let summary: Vec<_> = changes
            .iter()
            .map(|c| (c.key(), c.value().is_some()))
            .collect();
        assert_eq!(summary, [("c", true), ("b", false)]);
        let shard = &cache.shards["s-0"];
        assert_eq!(
            shard.version("a"),
            Some(Version(5)),
            "unchanged keys keep their version"
        );
        assert_eq!(shard.version("c"), Some(Version(9)));
    }

    #[test]
    fn each_key_is_one_allocation_shared_with_changes_and_listings() {
        let layout = native();
        let mut cache = Cache::new(&layout);
        let changes = observe(
            &mut cache,
            &layout,
            &object(5, serde_json::json!({"a": "1", "b": "2"})),
        );
        let Some(Change::Put(change)) = changes.iter().find(|c| c.key() == "a") else {
            panic!("a put of `a`");
        };
        let same = |cache: &Cache| {
            cache.shards["s-0"]
                .entry("a")
                .expect("cached")
                .ptr_eq(change)
        };
        assert!(same(&cache), "the change carries the cache's own entry");
        // `b` changes, `a` does not: `a` keeps what stores already hold.
        assert_eq!(
            observe(
                &mut cache,
                &layout,
                &object(9, serde_json::json!({"a": "1", "b": "3"}))
            )
            .len(),
            1
        );
        assert!(same(&cache), "an unchanged key keeps its allocations");
        let entries = cache.entries("");
        let listed = entries.iter().find(|e| e.key() == "a").expect("listed");
        assert!(listed.ptr_eq(change));
    }

    fn named(name: &str, revision: u64, data: serde_json::Value) -> serde_json::Value {
        let mut object = object(revision, data);
        object["metadata"]["name"] = name.into();
        object
    }

    #[test]
    fn the_index_finds_every_key_wherever_it_sits_and_shares_the_cache_s_entries() {
        let layout = Layout::Native {
            store: "s".into(),
            shards: 4,
        };
        let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
        let home = |key: &str| format!("s-{}", layout.shard_of(key));
        let mut cache = Cache::new(&layout);
        for shard in 0..4 {
            let name = format!("s-{shard}");
            let data: serde_json::Map<String, serde_json::Value> = keys
                .iter()
                .filter(|key| home(key) == name)
                .map(|key| (key.clone(), "1".into()))
                .collect();
            observe(&mut cache, &layout, &named(&name, 5, data.into()));
        }
        let index = cache.index();
        assert_eq!(index.len(), 40);
        for key in &keys {
            let held = index.get(key).expect("found in its object");
            let cached = cache.shards[&home(key)].entry(key).expect("cached");
            assert!(held.ptr_eq(cached), "the cache's own entry");
        }
        assert!(index.get("missing").is_none());
        // A key edited by hand into another object than its own, and an
        // object outside the layout (another shard count) holding one more.
        let stray = keys
            .iter()
            .map(|i| format!("stray-{i}"))
            .find(|key| home(key) != "s-0")
            .expect("some key is routed elsewhere");
        let mut data = serde_json::Map::new();
        for key in keys.iter().filter(|key| home(key) == "s-0") {
            data.insert(key.clone(), "1".into());
        }
        data.insert(stray.clone(), "2".into());
        observe(&mut cache, &layout, &named("s-0", 6, data.into()));
        observe(
            &mut cache,
            &layout,
            &named("s-9", 7, serde_json::json!({"elsewhere": "3"})),
        );
        let index = cache.index();
        assert_eq!(index.len(), 42);
        assert_eq!(index.get(&stray).map(|e| e.version()), Some(Version(6)));
        assert_eq!(
            index.get("elsewhere").map(|e| e.version()),
            Some(Version(7))
        );
        assert!(index.get("missing").is_none());
        assert_eq!(index.entries().count(), 42);
        // The stray key gone, and the other object: routed reads alone again.
        let mut data = serde_json::Map::new();
        for key in keys.iter().filter(|key| home(key) == "s-0") {
            data.insert(key.clone(), "1".into());
        }
        observe(&mut cache, &layout, &named("s-0", 8, data.into()));
        cache.remove("s-9");
        assert_eq!(cache.shards["s-0"].stray, 0);
        let index = cache.index();
        assert_eq!(index.len(), 40);
        assert!(index.get(&stray).is_none() && index.get("elsewhere").is_none());
    }

    #[test]
    fn a_watched_object_reads_as_its_json_does() {
        let pepr = Layout::Pepr {
            object: "pepr-u-store".into(),
            capability: "cap".into(),
        };
        let objects = [
            (native(), object(7, serde_json::json!({"a": "1", "b": 2}))),
            (
                pepr,
                serde_json::json!({
                    "apiVersion": "pepr.dev/v1",
                    "kind": "PeprStore",
                    "metadata": { "name": "pepr-u-store", "resourceVersion": "4", "labels": {"x": "y"} },
                    "data": { "__pepr_do_not_delete__": "k-v", "cap-v2-a": "one", "other-v2-b": "two" },
                }),
            ),
        ];
        for (layout, json) in objects {
            let dynamic: DynamicObject = serde_json::from_value(json).expect("an object");
            let json = to_json(&dynamic).expect("json");
            let from_json = parse_object(&layout, &json).expect("parses");
            let watched = parse_dynamic(&layout, &dynamic).expect("parses");
            assert_eq!(watched.name, from_json.name);
            assert_eq!(watched.revision, from_json.revision);
            assert_eq!(watched.data, from_json.data);
            assert_eq!(watched.size, from_json.size);
            assert_eq!(watched.malformed, from_json.malformed);
            assert_eq!(watched.declared_shards, from_json.declared_shards);
            assert_eq!(watched.has_data_map, from_json.has_data_map);
            assert_eq!(watched.has_labels, from_json.has_labels);
            assert!(!watched.data.is_empty());
        }
    }

    #[test]
    fn a_value_edited_by_hand_into_a_number_is_kept_as_text_for_that_key_only() {
        let layout = native();
        let object = object(3, serde_json::json!({"a": 7, "b": "\"ok\""}));
        let seen = parse_object(&layout, &object).expect("parses");
        assert_eq!(seen.malformed, ["a"]);
        assert_eq!(seen.get("a"), Some("7"));
        assert_eq!(seen.get("b"), Some("\"ok\""));
    }

    #[test]
    fn a_non_numeric_resource_version_is_a_typed_error() {
        assert!(parse_revision(Some("abc")).is_err());
        assert_eq!(parse_revision(Some("42")).ok(), Some(42));
        assert_eq!(parse_revision(None).ok(), Some(0));
    }
}

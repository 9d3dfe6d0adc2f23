//! What the backend last saw of each object, from listings and the watch.
//!
//! Watch events carry whole objects; diffing each against the cached copy
//! turns them into per-key changes, and a key's version is the
//! resourceVersion of the object when its value last changed. Only the watch
//! and listings write here: a write's own response never does, or the watch
//! event that follows would diff to nothing and the view would miss it.

use std::collections::{BTreeMap, HashMap};

use store_core::backend::{Change, Entry};
use store_core::{Error, Version};

use crate::error::NAME;
use crate::layout::Layout;

/// One object as last seen.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shard {
    pub(crate) revision: u64,
    /// Store key to stored string.
    pub(crate) data: BTreeMap<String, String>,
    pub(crate) versions: HashMap<String, Version>,
    /// Serialized size of the whole object, `managedFields` included.
    pub(crate) size: usize,
}

impl Shard {
    pub(crate) fn version(&self, key: &str) -> Option<Version> {
        self.versions.get(key).copied()
    }
}

/// A parsed object: its revision, its store keys and its size.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) name: String,
    pub(crate) revision: u64,
    pub(crate) data: BTreeMap<String, String>,
    pub(crate) size: usize,
    /// Entries of the data map whose value is not a string (edited by hand).
    pub(crate) malformed: Vec<String>,
    pub(crate) has_data_map: bool,
    pub(crate) has_labels: bool,
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

/// Reads an object's JSON through the layout.
pub(crate) fn parse_object(layout: &Layout, object: &serde_json::Value) -> Result<Seen, Error> {
    let metadata = object.get("metadata");
    let name = metadata
        .and_then(|m| m.get("name"))
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let revision = parse_revision(
        metadata
            .and_then(|m| m.get("resourceVersion"))
            .and_then(serde_json::Value::as_str),
    )?;
    let has_labels = metadata
        .and_then(|m| m.get("labels"))
        .is_some_and(serde_json::Value::is_object);
    let mut data = BTreeMap::new();
    let mut malformed = Vec::new();
    let map = layout.data_of(object);
    for (map_key, value) in map.into_iter().flatten() {
        let Some(key) = layout.store_key(map_key) else {
            continue;
        };
        match value.as_str() {
            Some(text) => {
                data.insert(key.to_owned(), text.to_owned());
            }
            // Not a string: someone edited the object by hand. Keep it visible as
            // its JSON text so reads give a decode error for this key alone.
            None => {
                malformed.push(key.to_owned());
                data.insert(key.to_owned(), value.to_string());
            }
        }
    }
    Ok(Seen {
        name,
        revision,
        data,
        size: object.to_string().len(),
        malformed,
        has_data_map: map.is_some(),
        has_labels,
    })
}

#[derive(Debug, Default)]
pub(crate) struct Cache {
    pub(crate) shards: HashMap<String, Shard>,
}

impl Cache {
    /// Replaces one object's copy; returns the changes, with keys whose value
    /// changed taking the object's revision as their version.
    pub(crate) fn observe(&mut self, layout: &Layout, seen: Seen) -> Vec<Change> {
        let shard = self.shards.entry(seen.name.clone()).or_default();
        let mut changes = Vec::new();
        let mut versions = HashMap::with_capacity(seen.data.len());
        for (key, value) in &seen.data {
            let unchanged = shard.data.get(key) == Some(value);
            let version = match shard.versions.get(key) {
                Some(v) if unchanged => *v,
                _ => {
                    if !unchanged {
                        changes.push(Change {
                            key: key.clone(),
                            value: Some(layout.payload(value)),
                        });
                    }
                    Version(seen.revision)
                }
            };
            versions.insert(key.clone(), version);
        }
        for key in shard.data.keys() {
            if !seen.data.contains_key(key) {
                changes.push(Change {
                    key: key.clone(),
                    value: None,
                });
            }
        }
        shard.revision = shard.revision.max(seen.revision);
        shard.data = seen.data;
        shard.versions = versions;
        shard.size = seen.size;
        changes
    }

    /// Forgets an object.
    pub(crate) fn remove(&mut self, name: &str) {
        self.shards.remove(name);
    }

    /// Every entry whose key starts with `prefix`, values already in the layout's
    /// encoding.
    pub(crate) fn entries(&self, layout: &Layout, prefix: &str) -> Vec<Entry> {
        let mut entries: Vec<Entry> = self
            .shards
            .values()
            .flat_map(|shard| {
                shard
                    .data
                    .iter()
                    .filter(|(k, _)| k.starts_with(prefix))
                    .map(|(k, v)| Entry {
                        key: k.clone(),
                        value: layout.payload(v),
                        version: shard.version(k).unwrap_or(Version(shard.revision)),
                    })
            })
            .collect();
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        entries
    }
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

    fn native() -> Layout {
        Layout::Native {
            store: "s".into(),
            shards: 1,
        }
    }

    #[test]
    fn a_diff_reports_changed_and_removed_keys_and_keeps_old_versions() {
        let layout = native();
        let mut cache = Cache::default();
        let first = parse_object(&layout, &object(5, serde_json::json!({"a": "1", "b": "2"})))
            .expect("parses");
        assert_eq!(cache.observe(&layout, first).len(), 2);
        let second = parse_object(&layout, &object(9, serde_json::json!({"a": "1", "c": "3"})))
            .expect("parses");
        let changes = cache.observe(&layout, second);
        let summary: Vec<_> = changes
            .iter()
            .map(|c| (c.key.as_str(), c.value.is_some()))
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
    fn a_value_edited_by_hand_into_a_number_is_kept_as_text_for_that_key_only() {
        let layout = native();
        let seen = parse_object(
            &layout,
            &object(3, serde_json::json!({"a": 7, "b": "\"ok\""})),
        )
        .expect("parses");
        assert_eq!(seen.malformed, ["a"]);
        assert_eq!(seen.data["a"], "7");
        assert_eq!(seen.data["b"], "\"ok\"");
    }

    #[test]
    fn a_non_numeric_resource_version_is_a_typed_error() {
        assert!(parse_revision(Some("abc")).is_err());
        assert_eq!(parse_revision(Some("42")).ok(), Some(42));
        assert_eq!(parse_revision(None).ok(), Some(0));
    }
}

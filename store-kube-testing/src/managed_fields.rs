//! `metadata.managedFields`: which field manager owns which fields.
//!
//! Ownership is tracked per leaf path, one entry per (manager, operation,
//! subresource), serialized as `FieldsV1` like kube-apiserver does. Maps are
//! walked field by field; lists and scalars are owned as a whole (the real
//! server also merges lists marked `x-kubernetes-list-type: map|set` item by
//! item; the fake treats every list as atomic).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

/// A path from the object root through map keys.
pub(crate) type FieldPath = Vec<String>;

/// A set of owned leaf paths.
pub(crate) type FieldPaths = BTreeSet<FieldPath>;

/// Metadata fields the server owns: never tracked, never applied.
const STRIPPED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The leaf paths of an object's content, without the server-owned fields.
pub(crate) fn leaf_paths(object: &Value) -> FieldPaths {
    let mut paths = FieldPaths::new();
    if let Some(map) = object.as_object() {
        for (key, value) in map {
            if key == "apiVersion" || key == "kind" {
                continue;
            }
            if key == "metadata" {
                if let Some(metadata) = value.as_object() {
                    for (field, value) in metadata {
                        if !STRIPPED_METADATA.contains(&field.as_str()) {
                            collect(
                                value,
                                vec!["metadata".to_owned(), field.clone()],
                                &mut paths,
                            );
                        }
                    }
                }
                continue;
            }
            collect(value, vec![key.clone()], &mut paths);
        }
    }
    paths
}

fn collect(value: &Value, path: FieldPath, paths: &mut FieldPaths) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                let mut child_path = path.clone();
                child_path.push(key.clone());
                collect(child, child_path, paths);
            }
        }
        // Explicit nulls carry no value to own.
        Value::Null => {}
        _ => {
            paths.insert(path);
        }
    }
}

/// The value at `path`, if the object has one.
pub(crate) fn value_at<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(object, |value, key| {
        value.as_object().and_then(|map| map.get(key))
    })
}

/// Removes the field at `path`, then maps left empty below the top level.
pub(crate) fn remove_at(object: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cursor = &mut *object;
    for key in parents {
        match cursor.as_object_mut().and_then(|map| map.get_mut(key)) {
            Some(next) => cursor = next,
            None => return,
        }
    }
    if let Some(map) = cursor.as_object_mut() {
        map.remove(last);
    }
    for depth in (2..path.len()).rev() {
        let parent_path = &path[..depth];
        if value_at(object, parent_path).is_some_and(|v| v.as_object().is_some_and(Map::is_empty)) {
            remove_at_exact(object, parent_path);
        } else {
            break;
        }
    }
}

fn remove_at_exact(object: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cursor = object;
    for key in parents {
        match cursor.as_object_mut().and_then(|map| map.get_mut(key)) {
            Some(next) => cursor = next,
            None => return,
        }
    }
    if let Some(map) = cursor.as_object_mut() {
        map.remove(last);
    }
}

/// Whether two paths overlap: equal, or one lies inside the other.
pub(crate) fn overlaps(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// `.spec.x`, as the server names fields in conflict messages.
pub(crate) fn display_path(path: &[String]) -> String {
    path.iter().map(|key| format!(".{key}")).collect()
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ManagedEntry {
    pub(crate) manager: String,
    pub(crate) operation: String,
    pub(crate) api_version: String,
    pub(crate) time: String,
    pub(crate) subresource: Option<String>,
    pub(crate) fields: FieldPaths,
}

impl ManagedEntry {
    pub(crate) fn is(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }

    /// How conflict messages name this manager.
    pub(crate) fn label(&self) -> String {
        if self.operation == "Apply" {
            format!("{:?}", self.manager)
        } else {
            format!("{:?} using {}", self.manager, self.api_version)
        }
    }

    fn to_json(&self) -> Value {
        let mut entry = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_v1(&self.fields),
        });
        if let Some(subresource) = &self.subresource {
            entry["subresource"] = json!(subresource);
        }
        entry
    }

    fn from_json(value: &Value) -> Option<Self> {
        let text = |field: &str| value.get(field).and_then(Value::as_str).map(str::to_owned);
        let mut fields = FieldPaths::new();
        if let Some(v1) = value.get("fieldsV1") {
            parse_fields_v1(v1, &mut Vec::new(), &mut fields);
        }
        Some(Self {
            manager: text("manager")?,
            operation: text("operation").unwrap_or_else(|| "Update".to_owned()),
            api_version: text("apiVersion").unwrap_or_default(),
            time: text("time").unwrap_or_default(),
            subresource: text("subresource"),
            fields,
        })
    }
}

/// The entries of an object (unparseable entries are dropped).
pub(crate) fn read_entries(object: &Value) -> Vec<ManagedEntry> {
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|entries| entries.iter().filter_map(ManagedEntry::from_json).collect())
        .unwrap_or_default()
}

/// Replaces the object's `managedFields`; empty entries are left out.
pub(crate) fn write_entries(object: &mut Value, entries: &[ManagedEntry]) {
    let Some(metadata) = super::metadata::metadata_mut(object) else {
        return;
    };
    let entries: Vec<Value> = entries
        .iter()
        .filter(|entry| !entry.fields.is_empty())
        .map(ManagedEntry::to_json)
        .collect();
    if entries.is_empty() {
        metadata.remove("managedFields");
    } else {
        metadata.insert("managedFields".to_owned(), Value::Array(entries));
    }
}

/// Who made a write, and through which version and subresource.
pub(crate) struct Writer<'a> {
    pub(crate) manager: &'a str,
    pub(crate) api_version: &'a str,
    pub(crate) subresource: Option<&'a str>,
    pub(crate) now: &'a str,
}

/// Records a non-apply write (create, update, patch) in `new`'s managedFields:
/// the writer takes every field whose value it changed, from whoever owned
/// it; fields that are gone leave every entry.
pub(crate) fn record_update(old: Option<&Value>, new: &mut Value, writer: &Writer<'_>) {
    let mut entries = old.map(read_entries).unwrap_or_default();
    let changed: FieldPaths = leaf_paths(new)
        .into_iter()
        .filter(|path| old.and_then(|old| value_at(old, path)) != value_at(new, path))
        .collect();
    let exists = |path: &FieldPath| value_at(new, path).is_some();
    for entry in &mut entries {
        entry
            .fields
            .retain(|path| exists(path) && !changed.contains(path));
    }
    let position = entries
        .iter()
        .position(|entry| entry.is(writer.manager, "Update", writer.subresource));
    match position {
        Some(index) => {
            let entry = &mut entries[index];
            if !changed.is_empty() {
                entry.fields.extend(changed);
                entry.time = writer.now.to_owned();
                entry.api_version = writer.api_version.to_owned();
            }
        }
        None if !changed.is_empty() => entries.push(ManagedEntry {
            manager: writer.manager.to_owned(),
            operation: "Update".to_owned(),
            api_version: writer.api_version.to_owned(),
            time: writer.now.to_owned(),
            subresource: writer.subresource.map(str::to_owned),
            fields: changed,
        }),
        None => {}
    }
    write_entries(new, &entries);
}

/// Serializes owned paths as `FieldsV1`: `{"f:spec":{"f:x":{}}}`, with a
/// `"."` member where a path owns a map that also has owned children.
fn fields_v1(paths: &FieldPaths) -> Value {
    #[derive(Default)]
    struct Node {
        member: bool,
        children: BTreeMap<String, Node>,
    }
    fn to_json(node: &Node) -> Value {
        let mut map = Map::new();
        if node.member && !node.children.is_empty() {
            map.insert(".".to_owned(), json!({}));
        }
        for (key, child) in &node.children {
            map.insert(format!("f:{key}"), to_json(child));
        }
        Value::Object(map)
    }
    let mut root = Node::default();
    for path in paths {
        let mut node = &mut root;
        for key in path {
            node = node.children.entry(key.clone()).or_default();
        }
        node.member = true;
    }
    to_json(&root)
}

fn parse_fields_v1(value: &Value, path: &mut FieldPath, out: &mut FieldPaths) {
    let Some(map) = value.as_object() else {
        return;
    };
    if map.is_empty() && !path.is_empty() {
        out.insert(path.clone());
        return;
    }
    for (key, child) in map {
        if key == "." {
            out.insert(path.clone());
        } else if let Some(field) = key.strip_prefix("f:") {
            path.push(field.to_owned());
            parse_fields_v1(child, path, out);
            path.pop();
        } else if !path.is_empty() {
            // List items (k:, v:, i:): the fake owns lists as a whole.
            out.insert(path.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(path: &str) -> FieldPath {
        path.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn fields_v1_round_trips() {
        let paths: FieldPaths = [p("spec.x"), p("spec.list"), p("metadata.labels.app")].into();
        let encoded = fields_v1(&paths);
        assert_eq!(
            encoded,
            json!({ "f:metadata": { "f:labels": { "f:app": {} } }, "f:spec": { "f:list": {}, "f:x": {} } })
        );
        let mut decoded = FieldPaths::new();
        parse_fields_v1(&encoded, &mut Vec::new(), &mut decoded);
        assert_eq!(decoded, paths);
    }

    #[test]
    fn leaf_paths_skip_server_owned_fields() {
        let object = json!({
            "apiVersion": "v1", "kind": "X",
            "metadata": { "name": "a", "uid": "u", "labels": { "k": "v" } },
            "spec": { "a": 1, "b": { "c": [1] }, "n": null },
        });
        let paths = leaf_paths(&object);
        assert_eq!(
            paths,
            [p("metadata.labels.k"), p("spec.a"), p("spec.b.c")].into()
        );
    }

    #[test]
    fn an_update_takes_the_fields_it_changes() {
        let now = "2024-01-01T00:00:00Z";
        let mut created = json!({ "metadata": { "name": "a" }, "spec": { "x": 1, "y": 1 } });
        let creator = Writer {
            manager: "a",
            api_version: "v1",
            subresource: None,
            now,
        };
        record_update(None, &mut created, &creator);
        let mut updated = created.clone();
        updated["spec"]["x"] = json!(2);
        let updater = Writer {
            manager: "b",
            api_version: "v1",
            subresource: None,
            now,
        };
        record_update(Some(&created), &mut updated, &updater);
        let entries = read_entries(&updated);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].fields, [p("spec.y")].into());
        assert_eq!(entries[1].fields, [p("spec.x")].into());
    }

    #[test]
    fn removing_a_field_prunes_empty_parents() {
        let mut object = json!({ "spec": { "a": { "b": 1 } , "c": 2 } });
        remove_at(&mut object, &p("spec.a.b"));
        assert_eq!(object, json!({ "spec": { "c": 2 } }));
    }
}

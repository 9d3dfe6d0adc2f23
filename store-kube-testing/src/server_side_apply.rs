//! Server-side apply: merges an applied configuration into the live object,
//! refuses to change fields other managers own (409 unless `force=true`),
//! and removes fields the applier stopped applying.
//!
//! Semantics follow structured-merge-diff for maps; lists are atomic (see
//! `managed_fields.rs`). A field is in conflict only when the applied value
//! differs from the live one: applying an equal value shares ownership.

use serde_json::{Map, Value, json};

use super::api_status::ApiError;
use super::managed_fields::{
    FieldPaths, ManagedEntry, Writer, display_path, leaf_paths, overlaps, read_entries, remove_at,
    value_at, write_entries,
};

/// Applies `config` as `writer.manager` onto `live` (None: create). Returns
/// the merged object with its managedFields; server-owned metadata is left
/// to the caller.
pub(crate) fn server_side_apply(
    live: Option<&Value>,
    config: &Value,
    writer: &Writer<'_>,
    force: bool,
) -> Result<Value, ApiError> {
    let applied = leaf_paths(config);
    let mut entries = live.map(read_entries).unwrap_or_default();
    let is_mine = |entry: &ManagedEntry| entry.is(writer.manager, "Apply", writer.subresource);

    let mut conflicts: Vec<(String, Vec<String>)> = Vec::new();
    let mut contested: FieldPaths = FieldPaths::new();
    for path in &applied {
        if live.and_then(|live| value_at(live, path)) == value_at(config, path) {
            continue;
        }
        for entry in entries.iter().filter(|entry| !is_mine(entry)) {
            if entry.fields.iter().any(|owned| overlaps(owned, path)) {
                conflicts.push((entry.label(), path.clone()));
                contested.insert(path.clone());
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&conflicts));
    }

    let mut merged = live.cloned().unwrap_or_else(|| json!({}));
    merge_into(&mut merged, config);

    // Fields this manager applied before but not now, that nobody else
    // owns, are removed from the object.
    let previous: FieldPaths = entries
        .iter()
        .find(|entry| is_mine(entry))
        .map(|entry| entry.fields.clone())
        .unwrap_or_default();
    for path in previous.difference(&applied) {
        let still_applied = applied.iter().any(|now| now.starts_with(path));
        let owned_elsewhere = entries
            .iter()
            .filter(|entry| !is_mine(entry))
            .any(|entry| entry.fields.iter().any(|owned| overlaps(owned, path)));
        if !still_applied && !owned_elsewhere {
            remove_at(&mut merged, path);
        }
    }

    for entry in entries.iter_mut().filter(|entry| !is_mine(entry)) {
        entry
            .fields
            .retain(|owned| !contested.iter().any(|path| overlaps(owned, path)));
        entry
            .fields
            .retain(|owned| value_at(&merged, owned).is_some());
    }
    let content_changed =
        live.is_none_or(|live| without_managed_fields(live) != without_managed_fields(&merged));
    match entries.iter().position(is_mine) {
        Some(index) => {
            let entry = &mut entries[index];
            if content_changed || entry.fields != applied {
                entry.time = writer.now.to_owned();
                entry.api_version = writer.api_version.to_owned();
            }
            entry.fields = applied;
        }
        None => entries.push(ManagedEntry {
            manager: writer.manager.to_owned(),
            operation: "Apply".to_owned(),
            api_version: writer.api_version.to_owned(),
            time: writer.now.to_owned(),
            subresource: writer.subresource.map(str::to_owned),
            fields: applied,
        }),
    }
    write_entries(&mut merged, &entries);
    Ok(merged)
}

/// Maps merge key by key; everything else (lists, scalars) replaces; `null` removes.
fn merge_into(target: &mut Value, config: &Value) {
    let Some(config) = config.as_object() else {
        *target = config.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(target) = target.as_object_mut() else {
        return;
    };
    for (key, value) in config {
        if key == "metadata" {
            // managedFields in an applied configuration are not a request to own them.
            let mut value = value.clone();
            if let Some(metadata) = value.as_object_mut() {
                metadata.remove("managedFields");
            }
            merge_value(target, key, &value);
        } else {
            merge_value(target, key, value);
        }
    }
}

fn merge_value(target: &mut Map<String, Value>, key: &str, value: &Value) {
    match value {
        Value::Null => {
            target.remove(key);
        }
        Value::Object(_) => {
            let slot = target
                .entry(key.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            merge_into(slot, value);
        }
        _ => {
            target.insert(key.to_owned(), value.clone());
        }
    }
}

fn without_managed_fields(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(metadata) = copy.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
        metadata.remove("resourceVersion");
    }
    copy
}

/// kube-apiserver's message: `Apply failed with 1 conflict: conflict with "m": .spec.x`.
fn conflict_error(conflicts: &[(String, Vec<String>)]) -> ApiError {
    let count = conflicts.len();
    let plural = if count == 1 { "" } else { "s" };
    let detail = if let [(manager, path)] = conflicts {
        format!("conflict with {manager}: {}", display_path(path))
    } else {
        let mut managers: Vec<&String> = conflicts.iter().map(|(manager, _)| manager).collect();
        managers.sort();
        managers.dedup();
        let mut lines = Vec::new();
        for manager in managers {
            lines.push(format!("conflicts with {manager}:"));
            for (_, path) in conflicts.iter().filter(|(m, _)| m == manager) {
                lines.push(format!("- {}", display_path(path)));
            }
        }
        lines.join("\n")
    };
    let causes = conflicts
        .iter()
        .map(|(manager, path)| {
            json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with {manager}"),
                "field": display_path(path),
            })
        })
        .collect();
    ApiError::apply_conflict(
        format!("Apply failed with {count} conflict{plural}: {detail}"),
        causes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2024-01-01T00:00:00Z";

    fn writer(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            api_version: "example.com/v1",
            subresource: None,
            now: NOW,
        }
    }

    fn config(spec: Value) -> Value {
        json!({ "apiVersion": "example.com/v1", "kind": "Foo", "metadata": { "name": "a" }, "spec": spec })
    }

    #[test]
    fn a_second_manager_changing_a_field_conflicts_unless_forced() {
        let live = server_side_apply(None, &config(json!({ "x": 1 })), &writer("one"), false)
            .expect("create");
        let error = server_side_apply(
            Some(&live),
            &config(json!({ "x": 2 })),
            &writer("two"),
            false,
        )
        .expect_err("conflict");
        assert_eq!(error.code, 409);
        assert_eq!(
            error.message,
            "Apply failed with 1 conflict: conflict with \"one\": .spec.x"
        );
        let forced = server_side_apply(
            Some(&live),
            &config(json!({ "x": 2 })),
            &writer("two"),
            true,
        )
        .expect("force");
        assert_eq!(forced["spec"]["x"], 2);
        let entries = read_entries(&forced);
        assert_eq!(
            entries.len(),
            1,
            "the loser owns nothing and its entry goes"
        );
        assert_eq!(entries[0].manager, "two");
    }

    #[test]
    fn applying_an_equal_value_shares_ownership() {
        let live = server_side_apply(None, &config(json!({ "x": 1 })), &writer("one"), false)
            .expect("create");
        let shared = server_side_apply(
            Some(&live),
            &config(json!({ "x": 1 })),
            &writer("two"),
            false,
        )
        .expect("share");
        assert_eq!(read_entries(&shared).len(), 2);
    }

    #[test]
    fn fields_no_longer_applied_are_removed() {
        let live = server_side_apply(
            None,
            &config(json!({ "x": 1, "y": 2 })),
            &writer("one"),
            false,
        )
        .expect("create");
        let next = server_side_apply(
            Some(&live),
            &config(json!({ "x": 1 })),
            &writer("one"),
            false,
        )
        .expect("apply");
        assert_eq!(next["spec"], json!({ "x": 1 }));
    }

    #[test]
    fn reapplying_the_same_configuration_changes_nothing() {
        let live = server_side_apply(None, &config(json!({ "x": 1 })), &writer("one"), false)
            .expect("create");
        let later = Writer {
            now: "2030-01-01T00:00:00Z",
            ..writer("one")
        };
        let again = server_side_apply(Some(&live), &config(json!({ "x": 1 })), &later, false)
            .expect("apply");
        assert_eq!(again, live);
    }
}

//! Server-owned metadata: uids, timestamps, generated names and name rules,
//! as kube-apiserver sets and checks them.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

/// Fields clients may send but the server owns.
pub(crate) const SERVER_OWNED: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The current time as Kubernetes writes it: RFC 3339, UTC, whole seconds.
pub(crate) fn now_rfc3339() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0);
    format_rfc3339(seconds)
}

fn format_rfc3339(unix_seconds: u64) -> String {
    let days = unix_seconds / 86_400;
    let rest = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// A random RFC 4122 version 4 UUID, as the server gives every object.
pub(crate) fn new_uid() -> String {
    let mut bytes = [0u8; 16];
    for byte in &mut bytes {
        *byte = fastrand::u8(..);
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// `generateName` plus five characters from the server's alphabet.
pub(crate) fn generate_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let suffix: String = (0..5)
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect();
    format!("{prefix}{suffix}")
}

/// Why `name` is not a DNS-1123 subdomain (object names), if it is not.
pub(crate) fn subdomain_problem(name: &str) -> Option<&'static str> {
    if name.len() > 253 {
        return Some("must be no more than 253 characters");
    }
    let ok = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        None
    } else {
        Some(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        )
    }
}

/// Why `name` is not a DNS-1123 label (namespace names), if it is not.
pub(crate) fn label_problem(name: &str) -> Option<&'static str> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        None
    } else {
        Some(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        )
    }
}

/// The `metadata` map of an object, created if absent or not a map.
pub(crate) fn metadata_mut(object: &mut Value) -> Option<&mut Map<String, Value>> {
    let map = object.as_object_mut()?;
    let metadata = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !metadata.is_object() {
        *metadata = Value::Object(Map::new());
    }
    metadata.as_object_mut()
}

/// A string field of `metadata`, or "".
pub(crate) fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
    object
        .get("metadata")
        .and_then(|metadata| metadata.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The finalizers of an object.
pub(crate) fn finalizers(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Brings client-set `ObjectMeta` fields to what kube-apiserver keeps after
/// decoding them into `ObjectMeta`: a `null` label or annotation value is the
/// empty string there. Fields of the wrong shape (which the real server
/// refuses, and which no client could decode back) give the field and why.
/// Server-owned fields are overwritten by the handlers and not checked here.
pub(crate) fn conform_object_meta(
    metadata: &mut Map<String, Value>,
) -> Result<(), (&'static str, &'static str)> {
    for field in ["labels", "annotations"] {
        match metadata.get_mut(field) {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for value in map.values_mut() {
                    match value {
                        Value::String(_) => {}
                        Value::Null => *value = Value::String(String::new()),
                        _ => return Err((field, "must be a map of strings")),
                    }
                }
            }
            Some(_) => return Err((field, "must be a map of strings")),
        }
    }
    match metadata.get("finalizers") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items))
            if items
                .iter()
                .all(|item| item.as_str().is_some_and(|s| !s.is_empty())) => {}
        Some(_) => return Err(("finalizers", "must be a list of non-empty strings")),
    }
    let owner_is_valid = |owner: &Value| {
        let Some(owner) = owner.as_object() else {
            return false;
        };
        let named = ["apiVersion", "kind", "name", "uid"].iter().all(|field| {
            owner
                .get(*field)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
        });
        let flags = ["controller", "blockOwnerDeletion"]
            .iter()
            .all(|field| matches!(owner.get(*field), None | Some(Value::Null | Value::Bool(_))));
        named && flags
    };
    match metadata.get("ownerReferences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(owners)) if owners.iter().all(owner_is_valid) => {}
        Some(_) => {
            return Err((
                "ownerReferences",
                "must be a list of references with apiVersion, kind, name and uid",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_no_client_could_decode_is_refused_and_null_labels_become_empty() {
        let conform = |metadata: Value| {
            let mut metadata = metadata.as_object().cloned().unwrap_or_default();
            conform_object_meta(&mut metadata).map(|()| Value::Object(metadata))
        };
        assert_eq!(
            conform(serde_json::json!({ "labels": { "a": null, "b": "x" } })),
            Ok(serde_json::json!({ "labels": { "a": "", "b": "x" } }))
        );
        for bad in [
            serde_json::json!({ "labels": { "a": 1 } }),
            serde_json::json!({ "labels": "a" }),
            serde_json::json!({ "annotations": { "a": { "b": "c" } } }),
            serde_json::json!({ "finalizers": "a" }),
            serde_json::json!({ "finalizers": [1] }),
            serde_json::json!({ "ownerReferences": [{ "name": "a" }] }),
        ] {
            assert!(conform(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_seconds() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn uids_are_version_4() {
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
    }

    #[test]
    fn names_follow_dns_rules() {
        assert!(subdomain_problem("a.b-c").is_none());
        assert!(subdomain_problem("Bad_Name").is_some());
        assert!(subdomain_problem("").is_some());
        assert!(label_problem("a.b").is_some());
        assert!(label_problem("ns-1").is_none());
    }
}

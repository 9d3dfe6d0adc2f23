//! Patch bodies: JSON Patch (RFC 6902, via the `json-patch` crate) and JSON
//! merge patch (RFC 7386, `json_patch::merge`), with kube-apiserver's limits
//! and answers. Server-side apply lives in `apply.rs`.

use serde_json::{Map, Value};

use super::api_status::ApiError;

/// kube-apiserver refuses JSON patches with more operations than this.
pub(crate) const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// The patch content types a custom resource accepts.
pub(crate) const CUSTOM_RESOURCE_PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
];

/// Which kind of patch a request carries, from its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchKind {
    Json,
    Merge,
    Apply,
    Strategic,
}

impl PatchKind {
    pub(crate) fn from_content_type(content_type: &str) -> Option<Self> {
        match content_type {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            _ => None,
        }
    }
}

/// Applies an RFC 6902 patch atomically: on any failing operation (a `test`
/// included) the result is an error and nothing of the patch is kept.
/// Answers as kube-apiserver does: 400 when the body is not a JSON array of
/// objects, 413 above 10,000 operations, 422 when an operation is malformed
/// or does not apply.
pub(crate) fn apply_json_patch(document: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let operations: Vec<Map<String, Value>> = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "json: cannot unmarshal into Go value of type jsonpatch.Patch: {e}"
        ))
    })?;
    if operations.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(ApiError::entity_too_large(format!(
            "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {}",
            operations.len()
        )));
    }
    let operations = Value::Array(operations.into_iter().map(Value::Object).collect());
    let patch: json_patch::Patch =
        serde_json::from_value(operations).map_err(|_| ApiError::patch_rejected())?;
    let mut patched = document.clone();
    // Applied to a copy that is dropped on failure: atomic without relying on
    // the crate's undo path.
    json_patch::patch_unsafe(&mut patched, &patch).map_err(|_| ApiError::patch_rejected())?;
    Ok(patched)
}

/// Applies an RFC 7386 merge patch: `null` deletes, maps merge, the rest
/// replaces. Unparseable bodies get kube-apiserver's 500 "Invalid JSON
/// Patch", bodies that are not objects its 422.
pub(crate) fn apply_merge_patch(document: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let patch: Value =
        serde_json::from_slice(body).map_err(|_| ApiError::internal_plain("Invalid JSON Patch"))?;
    if !patch.is_object() {
        let found = match patch {
            Value::Array(_) => "array",
            Value::String(_) => "string",
            Value::Number(_) => "number",
            Value::Bool(_) => "bool",
            _ => "null",
        };
        let text = String::from_utf8_lossy(body);
        return Err(ApiError::invalid(
            "",
            "",
            "",
            "patch",
            "FieldValueInvalid",
            &format!(
                "Invalid value: {text:?}: couldn't get version/kind; json parse error: json: cannot unmarshal {found} into Go value of type struct {{ APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \"json:\\\"kind,omitempty\\\"\" }}"
            ),
        ));
    }
    let mut patched = document.clone();
    json_patch::merge(&mut patched, &patch);
    Ok(patched)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_failed_test_rejects_the_whole_patch() {
        let document = json!({ "spec": { "x": 1 } });
        let patch = json!([
            { "op": "replace", "path": "/spec/x", "value": 2 },
            { "op": "test", "path": "/spec/x", "value": 1 },
        ]);
        let error =
            apply_json_patch(&document, patch.to_string().as_bytes()).expect_err("rejected");
        assert_eq!(error.code, 422);
    }

    #[test]
    fn too_many_operations_are_refused() {
        let op = json!({ "op": "test", "path": "/spec", "value": {} });
        let patch = Value::Array(vec![op; MAX_JSON_PATCH_OPERATIONS + 1]);
        let error =
            apply_json_patch(&json!({}), patch.to_string().as_bytes()).expect_err("refused");
        assert_eq!(error.code, 413);
    }

    #[test]
    fn merge_patch_null_deletes() {
        let document = json!({ "spec": { "x": 1, "y": 2 } });
        let patched = apply_merge_patch(&document, br#"{"spec":{"x":null,"z":3}}"#).expect("patch");
        assert_eq!(patched, json!({ "spec": { "y": 2, "z": 3 } }));
    }

    #[test]
    fn malformed_patches_are_bad_requests() {
        assert_eq!(
            apply_json_patch(&json!({}), b"[{").err().map(|e| e.code),
            Some(400)
        );
        assert_eq!(
            apply_json_patch(&json!({}), br#"{"op":"add"}"#)
                .err()
                .map(|e| e.code),
            Some(400)
        );
        assert_eq!(
            apply_json_patch(&json!({}), br#"[{"op":"nope"}]"#)
                .err()
                .map(|e| e.code),
            Some(422)
        );
        assert_eq!(
            apply_merge_patch(&json!({}), b"{\"a\":")
                .err()
                .map(|e| e.code),
            Some(500)
        );
        assert_eq!(
            apply_merge_patch(&json!({}), b"[1]").err().map(|e| e.code),
            Some(422)
        );
    }
}

//! Kubernetes failures as store errors: what may pass is `Unavailable` (the
//! store retries it), the rest is `Backend`.

use std::time::Duration;

use store_core::Error;

pub(crate) const NAME: &str = "kube";

/// Whether an API error says the object is missing.
pub(crate) fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// Whether an API error says the object exists already.
pub(crate) fn is_already_exists(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// Whether the server answered 422: a JSON Patch whose `test` failed or whose
/// path was missing (no causes), or an object the schema refuses (see
/// [`invalid_fields`]).
pub(crate) fn is_patch_rejected(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 422)
}

/// The fields a 422 `Invalid` answer blames, each with what is wrong with it,
/// or `None` when the answer names no field (a failed JSON-Patch `test` or a
/// missing path, which kube-apiserver answers with empty details).
///
/// The server quotes refused values in its messages (`Invalid value: "..."`),
/// and values are secrets: only the text after the field's own name is kept
/// (`in body must be of type string: "null"`), else the cause's reason code.
pub(crate) fn invalid_fields(error: &kube::Error) -> Option<Vec<(String, String)>> {
    let kube::Error::Api(status) = error else {
        return None;
    };
    if status.code != 422 {
        return None;
    }
    let causes: Vec<(String, String)> = status
        .details
        .as_ref()?
        .causes
        .iter()
        .filter(|cause| !cause.field.is_empty())
        .map(|cause| {
            let tail = cause
                .message
                .rsplit_once(&format!("{} ", cause.field))
                .map(|(_, tail)| tail)
                .filter(|tail| !tail.contains("Invalid value") && !tail.contains("value: "));
            let reason = match tail {
                Some(tail) => format!("{} {tail}", cause.field),
                None => format!("{}: {}", cause.field, cause.reason),
            };
            (cause.field.clone(), reason)
        })
        .collect();
    (!causes.is_empty()).then_some(causes)
}

/// Whether the object would be over etcd's size limit.
pub(crate) fn is_too_large(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status)
        if status.code == 413 || (status.code == 500 && status.message.contains("request is too large")))
}

/// Maps a client error to the store's error type.
pub(crate) fn from_kube(error: kube::Error) -> Error {
    match &error {
        kube::Error::Api(status) => {
            let transient = matches!(status.code, 409 | 429 | 500..=599) && !is_too_large(&error);
            let retry_after = status
                .details
                .as_ref()
                .map(|d| u64::from(d.retry_after_seconds))
                .filter(|s| *s > 0)
                .map(Duration::from_secs);
            if transient {
                // Not `Error::not_applied`, even for 409 and 429, which the API
                // server gives before acting: a batch spans objects and patches,
                // and others of them may have applied.
                let source: store_core::SharedError = std::sync::Arc::new(error);
                Error::Unavailable {
                    backend: NAME,
                    source,
                    retry_after,
                }
            } else {
                Error::backend(NAME, error)
            }
        }
        // Connection refused or reset, TLS and timeouts below the API: may pass.
        kube::Error::HyperError(_) | kube::Error::Service(_) => Error::unavailable(NAME, error),
        _ => Error::backend(NAME, error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(body: serde_json::Value) -> kube::Error {
        kube::Error::Api(Box::new(serde_json::from_value(body).expect("a Status")))
    }

    #[test]
    fn a_failed_test_operation_names_no_field() {
        // kube-apiserver 1.20.2's answer to a failed `test` or a missing path.
        let error = status(serde_json::json!({
            "status": "Failure", "code": 422, "reason": "Invalid", "details": {},
            "message": "the server rejected our request due to an error in our request",
        }));
        assert!(is_patch_rejected(&error));
        assert_eq!(invalid_fields(&error), None);
    }

    #[test]
    fn a_schema_refusal_names_its_fields_without_the_values() {
        let error = status(serde_json::json!({
            "status": "Failure", "code": 422, "reason": "Invalid",
            "message": "PeprStore.pepr.dev \"p\" is invalid: [data.a: ..., data.b: ...]",
            "details": { "name": "p", "group": "pepr.dev", "kind": "PeprStore", "causes": [
                { "reason": "FieldValueInvalid", "field": "data.a",
                  "message": "Invalid value: \"null\": data.a in body must be of type string: \"null\"" },
                { "reason": "FieldValueNotSupported", "field": "data.b",
                  "message": "Unsupported value: \"s3cret\": supported values: \"x\"" },
            ]},
        }));
        let fields = invalid_fields(&error).expect("fields named");
        assert_eq!(
            fields,
            [
                (
                    "data.a".to_owned(),
                    "data.a in body must be of type string: \"null\"".to_owned()
                ),
                (
                    "data.b".to_owned(),
                    "data.b: FieldValueNotSupported".to_owned()
                ),
            ]
        );
        assert!(fields.iter().all(|(_, reason)| !reason.contains("s3cret")));
    }
}

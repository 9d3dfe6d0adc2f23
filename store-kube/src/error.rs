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

/// Whether a JSON Patch was rejected because a `test` failed or a path was missing.
pub(crate) fn is_patch_rejected(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 422)
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
                Error::Unavailable {
                    backend: NAME,
                    source: std::sync::Arc::new(error),
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

//! Kubernetes `Status` failures, shaped like kube-apiserver's.
//!
//! Every refusal of the fake goes through [`ApiError`], so a client always
//! gets a `Status` body with the code and reason the real server uses, and
//! the server never answers a bad request by panicking.

use serde_json::{Value, json};

/// A failed request: HTTP code, `reason` and message of the `Status` body.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    pub(crate) details: Option<Value>,
    /// Seconds for a `Retry-After` header (429 answers).
    pub(crate) retry_after: Option<u64>,
}

/// Names an object in messages: `foos.example.com "name"`.
#[derive(Debug, Clone)]
pub(crate) struct Subject<'a> {
    pub(crate) group: &'a str,
    pub(crate) resource: &'a str,
    pub(crate) name: &'a str,
}

impl Subject<'_> {
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_owned()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    fn details(&self) -> Value {
        let mut details = json!({ "name": self.name, "kind": self.resource });
        if !self.group.is_empty() {
            details["group"] = json!(self.group);
        }
        details
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// A path the server does not serve (what real discovery misses answer).
    pub(crate) fn unknown_path() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    pub(crate) fn not_found(subject: &Subject<'_>) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", subject.qualified(), subject.name),
        )
        .with_details(subject.details())
    }

    pub(crate) fn namespace_not_found(namespace: &str) -> Self {
        Self::not_found(&Subject {
            group: "",
            resource: "namespaces",
            name: namespace,
        })
    }

    pub(crate) fn already_exists(subject: &Subject<'_>) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!(
                "{} \"{}\" already exists",
                subject.qualified(),
                subject.name
            ),
        )
        .with_details(subject.details())
    }

    /// The optimistic-concurrency refusal: a stale `resourceVersion`.
    pub(crate) fn stale(subject: &Subject<'_>) -> Self {
        Self::conflict(
            subject,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub(crate) fn conflict(subject: &Subject<'_>, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": {why}",
                subject.qualified(),
                subject.name
            ),
        )
        .with_details(subject.details())
    }

    /// The 409 of [`Fault::Conflict`](super::Fault::Conflict).
    pub(crate) fn injected_conflict() -> Self {
        Self::new(
            409,
            "Conflict",
            "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again (injected fault)",
        )
    }

    /// A failed delete precondition (uid or resourceVersion).
    pub(crate) fn precondition_failed(subject: &Subject<'_>, message: String) -> Self {
        Self::conflict(subject, &message)
    }

    /// Server-side apply found fields owned by other managers.
    pub(crate) fn apply_conflict(message: String, causes: Vec<Value>) -> Self {
        Self::new(409, "Conflict", message).with_details(json!({ "causes": causes }))
    }

    /// 422 with one field cause, as validation failures are reported.
    pub(crate) fn invalid(
        kind: &str,
        group: &str,
        name: &str,
        field: &str,
        cause: &str,
        detail: &str,
    ) -> Self {
        let qualified = if group.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}.{group}")
        };
        let mut details = json!({
            "causes": [{ "reason": cause, "message": detail, "field": field }],
        });
        for (key, value) in [("name", name), ("group", group), ("kind", kind)] {
            if !value.is_empty() {
                details[key] = json!(value);
            }
        }
        Self::new(
            422,
            "Invalid",
            format!("{qualified} \"{name}\" is invalid: {field}: {detail}"),
        )
        .with_details(details)
    }

    /// 422 listing every field that breaks the schema, as kube-apiserver
    /// words it (one cause: `field: detail`; several: `[a: x, b: y]`).
    pub(crate) fn invalid_fields(
        kind: &str,
        group: &str,
        name: &str,
        causes: &[(String, &'static str, String)],
    ) -> Self {
        let listed: Vec<String> = causes
            .iter()
            .map(|(field, _, detail)| format!("{field}: {detail}"))
            .collect();
        let summary = if let [single] = listed.as_slice() {
            single.clone()
        } else {
            format!("[{}]", listed.join(", "))
        };
        let causes: Vec<Value> = causes
            .iter()
            .map(|(field, reason, detail)| json!({ "reason": reason, "message": detail, "field": field }))
            .collect();
        let mut details = json!({ "kind": kind, "causes": causes });
        for (key, value) in [("name", name), ("group", group)] {
            if !value.is_empty() {
                details[key] = json!(value);
            }
        }
        Self::new(
            422,
            "Invalid",
            format!("{kind}.{group} \"{name}\" is invalid: {summary}"),
        )
        .with_details(details)
    }

    /// 422 for a JSON Patch that does not apply (failed `test`, bad path).
    /// kube-apiserver drops the patch library's reason and answers this
    /// generic message.
    pub(crate) fn patch_rejected() -> Self {
        Self::new(
            422,
            "Invalid",
            "the server rejected our request due to an error in our request",
        )
        .with_details(json!({}))
    }

    /// `Status` of a completed deletion (custom resources return no object).
    pub(crate) fn deleted(subject: &Subject<'_>, uid: &str) -> Value {
        let mut details = subject.details();
        details["uid"] = json!(uid);
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        })
    }

    pub(crate) fn unsupported_media_type(accepted: &[&str]) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
        )
        .with_details(json!({}))
    }

    pub(crate) fn method_not_allowed(method: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
        .with_details(json!({}))
    }

    pub(crate) fn entity_too_large(message: impl Into<String>) -> Self {
        Self::new(413, "RequestEntityTooLarge", message)
    }

    /// What kube-apiserver relays when etcd refuses an oversized write.
    pub(crate) fn etcd_request_too_large() -> Self {
        Self::new(500, "", "etcdserver: request is too large")
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }

    /// A 500 whose message is the server's own words (no "Internal error occurred").
    pub(crate) fn internal_plain(message: impl Into<String>) -> Self {
        Self::new(500, "", message)
    }

    pub(crate) fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub(crate) fn too_many_requests(retry_after: u64) -> Self {
        let mut error = Self::new(
            429,
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
        )
        .with_details(json!({ "retryAfterSeconds": retry_after }));
        error.retry_after = Some(retry_after);
        error
    }

    pub(crate) fn timeout(message: impl Into<String>) -> Self {
        Self::new(504, "Timeout", message).with_details(json!({}))
    }

    /// The `Status` object, as sent in a response body or a watch ERROR event.
    pub(crate) fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        if !self.reason.is_empty() {
            status["reason"] = json!(self.reason);
        }
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

//! Every request the fake answered, in order, for tests that count API calls
//! ("one PATCH per batch") or check what a client sent.

use std::sync::Mutex;

/// The Kubernetes verb of a resource request (as in audit logs and RBAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Verb {
    /// Read one object.
    Get,
    /// Read a collection.
    List,
    /// Stream changes of a collection.
    Watch,
    /// `POST` a new object.
    Create,
    /// `PUT` a whole object.
    Update,
    /// `PATCH` an object (any patch type, server-side apply included).
    Patch,
    /// Delete one object.
    Delete,
    /// Delete every object of a collection that a selector matches.
    DeleteCollection,
}

/// One answered request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordedRequest {
    /// HTTP method, e.g. `PATCH`.
    pub method: String,
    /// URL path, e.g. `/apis/example.com/v1/namespaces/default/foos/a`.
    pub path: String,
    /// Raw query string, without `?` (empty if none).
    pub query: String,
    /// `Content-Type` without parameters, if the request had one.
    pub content_type: Option<String>,
    /// HTTP status of the answer (for a watch, of the stream's start).
    pub status: u16,
    /// The verb, for requests on resources; `None` for discovery and health.
    pub verb: Option<Verb>,
    /// The client's name, for a client made by
    /// [`FakeApiServer::client_as`](crate::FakeApiServer::client_as).
    pub client: Option<String>,
}

/// The log, shared by every connection.
#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    entries: Mutex<Vec<RecordedRequest>>,
}

impl RequestLog {
    pub(crate) fn record(&self, request: RecordedRequest) {
        self.lock().push(request);
    }

    pub(crate) fn snapshot(&self) -> Vec<RecordedRequest> {
        self.lock().clone()
    }

    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<RecordedRequest>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

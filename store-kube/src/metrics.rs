//! The backend's figures, exported through the [`metrics`] facade beside
//! the store's own (`store_core::metrics`).
//!
//! Every figure carries the label `store` (the store's name; in Pepr mode,
//! the capability's). Install the recorder before building the backend: it
//! takes its handles then.
//!
//! | name | type | more labels | what it counts |
//! |---|---|---|---|
//! | `typed_store_kube_requests_total` | counter | `verb`, `outcome` | requests to the API server |
//! | `typed_store_kube_request_duration_seconds` | histogram | `verb` | time to the answer (for `watch`, to the answer's head: a watch then streams for minutes) |
//! | `typed_store_kube_watch_restarts_total` | counter | | watch requests after the first: the watcher following again after a watch ended, failed or was refused, or after a re-list |
//! | `typed_store_kube_relists_total` | counter | | the watcher listing every object again after its first listing (after `410 Gone` or a failure) |
//! | `typed_store_kube_watch_errors_total` | counter | `reason` = `list`, `watch_start`, `watch`, `expired`, `other` | failures the watcher reported; it backs off and resumes by itself |
//!
//! `verb` is the Kubernetes verb: `get`, `list`, `watch`, `create`, `patch`
//! (JSON patches, the Pepr v1 migration's among them, and server-side
//! apply). `outcome` is `ok`, or what failed: `conflict` (409), `not_found`
//! (404), `invalid` (422, a failed JSON Patch `test` among them), `expired`
//! (410), `too_large` (413), `throttled` (429), `forbidden` (401, 403),
//! `bad_request` (other 4xx), `unavailable` (5xx, or no answer: connection
//! refused or reset), `timeout` (no answer within the request timeout) or
//! `error` (anything else).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ::metrics::{Counter, Unit, counter, describe_counter, describe_histogram, histogram};

/// Requests to the API server (counter; labels `store`, `verb`, `outcome`).
pub const REQUESTS: &str = "typed_store_kube_requests_total";
/// Time to the API server's answer (histogram, seconds; labels `store`, `verb`).
pub const REQUEST_DURATION: &str = "typed_store_kube_request_duration_seconds";
/// Watch requests after the first (counter; label `store`).
pub const WATCH_RESTARTS: &str = "typed_store_kube_watch_restarts_total";
/// Listings after the first (counter; label `store`).
pub const RELISTS: &str = "typed_store_kube_relists_total";
/// Failures the watcher reported (counter; labels `store`, `reason`).
pub const WATCH_ERRORS: &str = "typed_store_kube_watch_errors_total";

/// Gives the installed recorder the help text and unit of every figure above
/// (a backend calls it once, when the first one is built).
pub fn describe() {
    describe_counter!(
        REQUESTS,
        Unit::Count,
        "Requests to the Kubernetes API server, by verb and outcome."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time to the Kubernetes API server's answer (for watch, to its head), by verb."
    );
    describe_counter!(
        WATCH_RESTARTS,
        Unit::Count,
        "Watch requests after the first one."
    );
    describe_counter!(
        RELISTS,
        Unit::Count,
        "The watcher listing every object again after its first listing."
    );
    describe_counter!(
        WATCH_ERRORS,
        Unit::Count,
        "Failures the watcher reported, by reason (list, watch_start, watch, expired, other)."
    );
}

/// One backend's handles and labels.
pub(crate) struct KubeMetrics {
    store: Arc<str>,
    watched: AtomicBool,
    listed: AtomicBool,
    watch_restarts: Counter,
    relists: Counter,
}

impl KubeMetrics {
    pub(crate) fn new(store: &str) -> Self {
        static DESCRIBED: std::sync::Once = std::sync::Once::new();
        DESCRIBED.call_once(describe);
        let store: Arc<str> = Arc::from(store);
        KubeMetrics {
            watch_restarts: counter!(WATCH_RESTARTS, "store" => Arc::clone(&store)),
            relists: counter!(RELISTS, "store" => Arc::clone(&store)),
            store,
            watched: AtomicBool::new(false),
            listed: AtomicBool::new(false),
        }
    }

    /// One request's verb, outcome and time. Requests go over the network,
    /// so building their labels here costs nothing worth a cache.
    pub(crate) fn request(&self, verb: &'static str, outcome: &'static str, took: Duration) {
        counter!(REQUESTS, "store" => Arc::clone(&self.store), "verb" => verb, "outcome" => outcome)
            .increment(1);
        histogram!(REQUEST_DURATION, "store" => Arc::clone(&self.store), "verb" => verb)
            .record(took);
    }

    /// A watch request went out.
    fn watch_started(&self) {
        if self.watched.swap(true, Ordering::Relaxed) {
            self.watch_restarts.increment(1);
        }
    }

    /// The watcher started a listing.
    pub(crate) fn listing_started(&self) {
        if self.listed.swap(true, Ordering::Relaxed) {
            self.relists.increment(1);
        }
    }

    /// The watcher reported a failure.
    pub(crate) fn watch_error(&self, error: &kube::runtime::watcher::Error) {
        use kube::runtime::watcher::Error as W;
        let reason = match error {
            W::InitialListFailed(_) => "list",
            W::WatchStartFailed(_) => "watch_start",
            W::WatchError(status) if status.code == 410 => "expired",
            W::WatchError(_) | W::WatchFailed(_) => "watch",
            _ => "other",
        };
        counter!(WATCH_ERRORS, "store" => Arc::clone(&self.store), "reason" => reason).increment(1);
    }
}

/// What an answer's status code says, as an `outcome` label.
pub(crate) fn status_outcome(code: u16) -> &'static str {
    match code {
        200..=299 => "ok",
        401 | 403 => "forbidden",
        404 => "not_found",
        409 => "conflict",
        410 => "expired",
        413 => "too_large",
        422 => "invalid",
        429 => "throttled",
        400..=499 => "bad_request",
        500..=599 => "unavailable",
        _ => "error",
    }
}

/// What a failed request says, as an `outcome` label.
pub(crate) fn error_outcome(error: &kube::Error) -> &'static str {
    match error {
        kube::Error::Api(status) => status_outcome(status.code),
        kube::Error::HyperError(_) | kube::Error::Service(_) => "unavailable",
        _ => "error",
    }
}

/// A client for the watcher that counts its requests (lists and watches,
/// which the watcher makes on its own) and hands them to `client` unchanged.
pub(crate) fn counting_client(client: kube::Client, metrics: Arc<KubeMetrics>) -> kube::Client {
    let namespace = client.default_namespace().to_owned();
    let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        let client = client.clone();
        let metrics = Arc::clone(&metrics);
        async move {
            let watch = request
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|pair| pair == "watch=true"));
            let verb = if watch { "watch" } else { "list" };
            let started = Instant::now();
            let answer = client.send(request).await;
            let outcome = match &answer {
                Ok(response) => status_outcome(response.status().as_u16()),
                Err(error) => error_outcome(error),
            };
            metrics.request(verb, outcome, started.elapsed());
            if watch {
                metrics.watch_started();
            }
            answer
        }
    });
    kube::Client::new(service, namespace)
}

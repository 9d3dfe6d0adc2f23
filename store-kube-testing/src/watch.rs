//! One watch stream: newline-delimited JSON events over a chunked response,
//! filtered by namespace and selectors, with BOOKMARK events, the watch's
//! timeout, and an ERROR event carrying a 410 `Status` when the requested
//! resourceVersion is older than the history window.
//!
//! A change that makes an object start (stop) matching the selectors is sent
//! as ADDED (DELETED), as kube-apiserver's watch cache does.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use super::api_status::ApiError;
use crate::etcd::{Change, WatchStart};
use crate::state::App;
use crate::target::{Selectors, Target};

/// A parsed watch request.
pub(crate) struct WatchSpec {
    pub(crate) target: Target,
    pub(crate) selectors: Selectors,
    pub(crate) start: WatchStart,
    pub(crate) timeout: Duration,
    pub(crate) bookmarks: bool,
    pub(crate) bookmark_interval: Duration,
}

impl WatchSpec {
    fn event(&self, kind: &str, object: &Value) -> Bytes {
        let mut object = object.clone();
        if let Some(map) = object.as_object_mut() {
            map.insert(
                "apiVersion".to_owned(),
                json!(self.target.info.api_version(&self.target.version)),
            );
        }
        line(&json!({ "type": kind, "object": object }))
    }

    /// The event this watcher sees for a change, if any.
    fn translate(&self, change: &Change) -> Option<Bytes> {
        if let Some(namespace) = &self.target.namespace
            && &change.key.namespace != namespace
        {
            return None;
        }
        let was = change
            .old
            .as_deref()
            .is_some_and(|old| self.selectors.matches(old));
        let is = change
            .new
            .as_deref()
            .is_some_and(|new| self.selectors.matches(new));
        match (was, is, &change.new, &change.old) {
            (false, true, Some(new), _) => Some(self.event("ADDED", new)),
            (true, true, Some(new), _) => Some(self.event("MODIFIED", new)),
            (true, false, _, Some(old)) => {
                // The last state the watcher matched, at the revision it left.
                let mut gone = (**old).clone();
                if let Some(metadata) = gone.get_mut("metadata").and_then(Value::as_object_mut) {
                    metadata.insert(
                        "resourceVersion".to_owned(),
                        json!(change.revision.to_string()),
                    );
                }
                Some(self.event("DELETED", &gone))
            }
            _ => None,
        }
    }

    fn bookmark(&self, revision: u64) -> Bytes {
        line(&json!({
            "type": "BOOKMARK",
            "object": {
                "kind": self.target.info.kind,
                "apiVersion": self.target.info.api_version(&self.target.version),
                "metadata": { "resourceVersion": revision.to_string(), "creationTimestamp": null },
            },
        }))
    }
}

fn line(value: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// A deadline far enough away to stand for "no timeout".
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The body of a watch response. Events are produced by a task that ends
/// when the client goes away, the timeout passes, or watches are dropped.
///
/// Each event leaves when the watch delay of `client` (read as it is
/// produced) has passed since it was produced, so a delayed watch lags in
/// order and a delay set later applies to later events.
pub(crate) fn stream(
    app: &Arc<App>,
    spec: WatchSpec,
    client: Option<&str>,
) -> BoxBody<Bytes, Infallible> {
    let (sender, receiver) = mpsc::channel::<(Instant, Bytes)>(256);
    let frames = Frames {
        sender,
        app: Arc::clone(app),
        client: client.map(str::to_owned),
    };
    let feed = app.etcd.watch(&spec.target.info.key(), spec.start);
    match feed {
        Err(too_old) => {
            let requested = match spec.start {
                WatchStart::After(revision) => revision,
                WatchStart::Now => 0,
            };
            let error = ApiError::expired(format!(
                "too old resource version: {requested} ({})",
                too_old.compacted
            ));
            let event = line(&json!({ "type": "ERROR", "object": error.to_status() }));
            // The sender then drops, ending the body.
            frames.try_send(event);
        }
        Ok(mut feed) => {
            let app = Arc::clone(app);
            tokio::spawn(async move {
                // `timeoutSeconds` can be any u64: past the clock's range means never.
                let deadline = Instant::now()
                    .checked_add(spec.timeout)
                    .unwrap_or_else(|| Instant::now() + NEVER);
                let mut last_sent = 0u64;
                for change in &feed.backlog {
                    if let Some(event) = spec.translate(change) {
                        last_sent = last_sent.max(change.revision);
                        if frames.send(event).await.is_err() {
                            return;
                        }
                    }
                }
                let mut ticks = tokio::time::interval_at(
                    Instant::now() + spec.bookmark_interval,
                    spec.bookmark_interval.max(Duration::from_millis(1)),
                );
                ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = frames.closed() => return,
                        () = tokio::time::sleep_until(deadline) => return,
                        change = feed.live.recv() => {
                            let Some(change) = change else { return };
                            if let Some(event) = spec.translate(&change) {
                                last_sent = last_sent.max(change.revision);
                                if frames.send(event).await.is_err() {
                                    return;
                                }
                            }
                        }
                        _ = ticks.tick(), if spec.bookmarks => {
                            // Every change up to `revision` is already queued on `live`:
                            // deliver those first so the bookmark never skips one.
                            let revision = app.etcd.revision();
                            while let Ok(change) = feed.live.try_recv() {
                                if let Some(event) = spec.translate(&change) {
                                    last_sent = last_sent.max(change.revision);
                                    if frames.send(event).await.is_err() {
                                        return;
                                    }
                                }
                            }
                            // Like the watch cache, never bookmark a version the
                            // watcher already has.
                            let at = revision.max(last_sent);
                            if at > feed.start && frames.send(spec.bookmark(at)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    }
    let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let (due, bytes) = receiver.recv().await?;
        // Tokio's timer rounds a deadline up to its next millisecond tick, so
        // sleeping until a moment already past would hold every event up to
        // 1 ms: a frame already due leaves at once.
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        Some((Ok::<_, Infallible>(Frame::data(bytes)), receiver))
    });
    StreamBody::new(body).boxed()
}

/// The sending end of a watch body: stamps each frame with when it may leave.
struct Frames {
    sender: mpsc::Sender<(Instant, Bytes)>,
    app: Arc<App>,
    client: Option<String>,
}

impl Frames {
    async fn send(&self, bytes: Bytes) -> Result<(), mpsc::error::SendError<(Instant, Bytes)>> {
        self.sender.send((self.due(), bytes)).await
    }

    fn try_send(&self, bytes: Bytes) {
        // A fresh channel has room for one frame.
        let _ = self.sender.try_send((self.due(), bytes));
    }

    fn due(&self) -> Instant {
        Instant::now() + self.app.faults.watch_delay(self.client.as_deref())
    }

    async fn closed(&self) {
        self.sender.closed().await;
    }
}

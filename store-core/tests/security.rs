//! Values are secrets: they never reach a log at any level, and the public
//! types that hold them print them redacted. Every event and span of the
//! process is captured at TRACE while a store on the memory backend writes,
//! reads, fails and retries, then the captured text is searched for the values.

use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use store_conformance::Gated;
use store_conformance::support::LogCapture;
use store_core::backend::{Applied, Batch, Change, Entry, Listing, Op, Outcome, WatchEvent};
use store_core::{Backend, Error, MemoryBackend, Payload, Precondition, Revision, Store, Version};

fn logs() -> &'static LogCapture {
    LogCapture::global()
}

fn assert_not_logged(secret: &str) {
    logs().assert_not_logged(secret);
}

/// A value that looks like what people keep in a store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Credentials {
    user: String,
    token: String,
}

async fn open(backend: impl Backend, max_value_size: Option<usize>) -> Store {
    let mut builder = Store::builder()
        .backend(backend)
        .name("secrets")
        .linked_hooks(false)
        .timeout(Duration::from_secs(10))
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(10));
    if let Some(limit) = max_value_size {
        builder = builder.max_value_size(limit);
    }
    builder.open().await.expect("store opens")
}

fn assert_debug_clean(secret: &str, what: &str, debug: &str) {
    assert!(
        !debug.contains(secret),
        "{what} prints the value in its Debug output: {debug}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_capture_sees_trace_events_and_the_stores_own_spans() {
    let logs = logs();
    tracing::trace!(marker = "capture-canary-7f3a", "canary");
    let backend = Gated::new(MemoryBackend::new());
    let store = open(backend.clone(), None).await;
    backend.fail_next(1);
    store.set_and_wait("canary", &1).await.expect("set");
    let text = logs.text();
    assert!(
        text.contains("capture-canary-7f3a"),
        "TRACE events are captured"
    );
    assert!(
        text.contains("flush failed; retrying"),
        "the store's own warnings are captured"
    );
    assert!(
        text.contains("flush{store=secrets"),
        "span fields are captured"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_never_reach_the_log_whatever_the_store_does_with_them() {
    logs();
    let secret = "hunter2-memory-5b1d0e";
    let credentials = Credentials {
        user: "ops".to_owned(),
        token: secret.to_owned(),
    };
    let backend = Gated::new(MemoryBackend::new());
    let store = open(backend.clone(), Some(4096)).await;
    let mut changes = store.subscribe();

    store.set("plain", &secret).expect("set");
    store
        .set_and_wait("credentials", &credentials)
        .await
        .expect("set_and_wait");
    let version = store
        .update("credentials", |current: Option<&Credentials>| {
            let mut next = current.cloned().unwrap_or_else(|| credentials.clone());
            next.user = "ops2".to_owned();
            next
        })
        .await
        .expect("update")
        .version;
    let conflict = store
        .compare_and_set("credentials", Precondition::Absent, &credentials)
        .await
        .expect_err("the key exists");
    assert!(matches!(conflict, Error::Conflict { .. }), "{conflict:?}");
    store
        .compare_and_set("credentials", Precondition::Version(version), &credentials)
        .await
        .expect("compare_and_set");

    // Transient failures are logged and retried.
    backend.fail_next(3);
    store
        .set_and_wait("retried", &vec![secret; 3])
        .await
        .expect("retried until it lands");

    // Refused at the call: too large, bad key.
    let too_large = store
        .set("big", &secret.repeat(500))
        .expect_err("over the limit");
    assert!(
        matches!(too_large, Error::ValueTooLarge { .. }),
        "{too_large:?}"
    );
    let bad_key = store
        .set("bad\nkey", &secret)
        .expect_err("control character");
    assert!(matches!(bad_key, Error::InvalidKey { .. }), "{bad_key:?}");

    // A type that no longer fits is a decode error (its wording is checked
    // separately); it must not be logged either.
    let decode = store
        .get::<u64>("credentials")
        .expect_err("a struct is not a number");
    assert!(matches!(decode, Error::Decode { .. }), "{decode:?}");

    let event = tokio::time::timeout(Duration::from_secs(10), changes.next())
        .await
        .expect("a change")
        .expect("open")
        .expect("no lag");
    store.flush().await.expect("flush");
    let snapshot = store.snapshot();
    store.remove_and_wait("plain").await.expect("remove");
    store.clear().await.expect("clear");

    for (what, debug) in [
        ("Error::Conflict", format!("{conflict:?} {conflict}")),
        ("Error::ValueTooLarge", format!("{too_large:?} {too_large}")),
        ("Error::InvalidKey", format!("{bad_key:?} {bad_key}")),
        ("ChangeEvent", format!("{event:?}")),
        ("Snapshot", format!("{snapshot:?}")),
        ("Store", format!("{store:?}")),
        ("MemoryBackend", format!("{backend:?}")),
        ("Subscription", format!("{changes:?}")),
    ] {
        assert_debug_clean(secret, what, &debug);
    }
    store.close().await.expect("close");
    assert_not_logged(secret);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_types_holding_values_print_them_redacted() {
    let secret = "hunter2-payload-9c44";
    let payload = Payload::from(format!("{{\"token\":\"{secret}\"}}"));
    let backend = MemoryBackend::new();
    let batch = Batch {
        ops: vec![
            Op::put("a", payload.clone()),
            Op::put("b", payload.clone()).when(Precondition::Absent),
            Op::delete("c").when(Precondition::Version(Version(1))),
        ],
        atomic: false,
    };
    let applied: Applied = backend.apply(batch.clone()).await.expect("apply");
    let listing: Listing = backend.list("").await.expect("list");
    let entry: Option<Entry> = backend.read("a").await.expect("read");
    let change = Change::Put(Entry::new("a", payload.as_str(), Version(1)));
    let event = WatchEvent::Changes {
        revision: Revision(1),
        changes: vec![change.clone()],
        index: None,
    };
    let failed = Outcome::Failed(Error::StoreFull {
        key: "a".to_owned(),
        needed: payload.len(),
        available: 0,
    });
    for (what, debug) in [
        ("Payload", format!("{payload:?}")),
        ("Op", format!("{:?}", batch.ops[0])),
        ("Batch", format!("{batch:?}")),
        ("Applied", format!("{applied:?}")),
        ("Listing", format!("{listing:?}")),
        ("Entry", format!("{entry:?}")),
        ("Change", format!("{change:?}")),
        ("WatchEvent", format!("{event:?}")),
        ("Outcome", format!("{failed:?}")),
        ("MemoryBackend", format!("{backend:?}")),
    ] {
        assert_debug_clean(secret, what, &debug);
    }
    assert!(format!("{payload:?}").contains("redacted"), "{payload:?}");
}

/// A decode error names the key, the type and the path; serde's message in it
/// quotes the offending value (`invalid type: string "…", expected u32`), so
/// logging the error (as any caller does) logs the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decode_errors_never_quote_the_stored_value() {
    let secret = "hunter2-decode-31ef";
    let store = open(MemoryBackend::new(), None).await;
    store.set_and_wait("token", &secret).await.expect("set");
    store
        .set_and_wait("pin", &987_654_321_u64)
        .await
        .expect("set");
    let errors = [
        store
            .get::<u32>("token")
            .expect_err("a string is not a number"),
        store
            .get::<bool>("token")
            .expect_err("a string is not a bool"),
        store_core::decode::<u8>("pin", &Payload::from("987654321")).expect_err("out of range"),
    ];
    for error in errors {
        assert!(matches!(error, Error::Decode { .. }), "{error:?}");
        for text in [format!("{error}"), format!("{error:?}")] {
            assert!(
                !text.contains(secret) && !text.contains("987654321"),
                "the decode error quotes the value: {text}"
            );
        }
    }
}

/// Refuses every write for good, per write, as a server's validation would.
struct RefusesAll(MemoryBackend);

impl Backend for RefusesAll {
    fn name(&self) -> &'static str {
        "refuses-all"
    }
    fn capabilities(&self) -> store_core::Capabilities {
        self.0.capabilities()
    }
    async fn read(&self, key: &str) -> store_core::Result<Option<Entry>> {
        self.0.read(key).await
    }
    async fn list(&self, prefix: &str) -> store_core::Result<Listing> {
        self.0.list(prefix).await
    }
    async fn apply(&self, batch: Batch) -> store_core::Result<Applied> {
        let outcomes = batch
            .ops
            .into_iter()
            .map(|op| {
                Outcome::Failed(Error::Rejected {
                    key: op.key,
                    reason: "refused by validation".to_owned(),
                })
            })
            .collect();
        Ok(Applied {
            revision: self.0.revision(),
            outcomes,
        })
    }
    async fn watch(&self, from: Revision) -> store_core::Result<store_core::backend::WatchStream> {
        self.0.watch(from).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failed_write_is_logged_once_at_warn_with_its_key_and_not_its_value() {
    let logs = logs();
    let secret = "hunter2-refused-91c4";
    let store = Store::builder()
        .backend(RefusesAll(MemoryBackend::new()))
        .name("refusing")
        .linked_hooks(false)
        .timeout(Duration::from_secs(10))
        .open()
        .await
        .expect("store opens");
    store
        .set("refused-in-background-3e1", &secret)
        .expect("queued");
    store
        .set_and_wait("refused-with-waiter-3e1", &secret)
        .await
        .expect_err("refused");
    store
        .flush()
        .await
        .expect_err("the background write failed");
    let text = logs.text();
    for key in ["refused-in-background-3e1", "refused-with-waiter-3e1"] {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("write failed") && l.contains(key))
            .collect();
        assert_eq!(lines.len(), 1, "logged once: {lines:?}");
        assert!(lines[0].contains("WARN"), "{}", lines[0]);
    }
    assert_not_logged(secret);
}

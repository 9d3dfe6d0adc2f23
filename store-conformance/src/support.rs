//! What every test suite of a store backend needs and would otherwise write
//! again: deadlines scaled for slow machines, waiting on a condition, a
//! proptest configuration, and a capture of every log line.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::FmtSpan;

/// The environment variable that scales every deadline of the test kits:
/// conformance cases, the model runner, the kube test harness (which reads
/// the same variable) and the test suites built on them.
/// `STORE_TEST_DEADLINE_SCALE=3` triples every limit, for a machine much
/// slower or busier than the 2-core runner the defaults are sized for;
/// unset, empty or unparsable means 1. Only limits scale: nothing waits
/// longer when things go well.
pub const DEADLINE_SCALE_ENV: &str = "STORE_TEST_DEADLINE_SCALE";

/// `base` multiplied by [`DEADLINE_SCALE_ENV`] (at least 1).
pub fn deadline(base: Duration) -> Duration {
    static SCALE: OnceLock<f64> = OnceLock::new();
    let scale = *SCALE.get_or_init(|| {
        std::env::var(DEADLINE_SCALE_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 1.0)
            .unwrap_or(1.0)
    });
    base.mul_f64(scale)
}

/// How long [`eventually`] waits, before scaling.
pub const EVENTUALLY: Duration = Duration::from_secs(30);

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(2);

/// Polls `check` until it holds; `Err` naming `what` once `limit` (scaled by
/// [`DEADLINE_SCALE_ENV`]) has passed. For callers that report failure their
/// own way (a proptest case, say); tests mostly want [`eventually`].
pub async fn wait_until(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> bool,
) -> Result<(), String> {
    let limit = deadline(limit);
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// Polls `check` until it holds, for at most [`EVENTUALLY`] (scaled).
///
/// # Panics
///
/// When the time is up, with a message naming `what` was awaited.
pub async fn eventually(what: &str, check: impl FnMut() -> bool) {
    eventually_within(what, EVENTUALLY, check).await;
}

/// [`eventually`] with a limit of its own (scaled).
///
/// # Panics
///
/// When the time is up, with a message naming `what` was awaited.
pub async fn eventually_within(what: &str, limit: Duration, check: impl FnMut() -> bool) {
    if let Err(message) = wait_until(what, limit, check).await {
        panic!("{message}");
    }
}

/// [`eventually`] for a check that must await.
///
/// # Panics
///
/// When the time is up, with a message naming `what` was awaited.
pub async fn eventually_async(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let limit = deadline(EVENTUALLY);
    let wait = async {
        while !check().await {
            tokio::time::sleep(POLL).await;
        }
    };
    if tokio::time::timeout(limit, wait).await.is_err() {
        panic!("timed out after {limit:?} waiting for {what}");
    }
}

/// A proptest configuration with `default` cases, or more when
/// `PROPTEST_CASES` asks for more, and no failure files written into the
/// source tree (a failing case prints its seed instead).
pub fn proptest_config(default: u32) -> proptest::test_runner::Config {
    let requested = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    proptest::test_runner::Config {
        cases: default.max(requested),
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}

/// Everything the process logs, at every level, spans included, from the
/// first call of [`LogCapture::global`] on: the way to check that no value
/// ever reaches a log.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl std::fmt::Debug for LogCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogCapture").finish_non_exhaustive()
    }
}

/// A writer appending to a [`LogCapture`].
#[derive(Debug)]
pub struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CaptureWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogCapture {
    type Writer = CaptureWriter;

    fn make_writer(&'a self) -> Self::Writer {
        CaptureWriter(Arc::clone(&self.0))
    }
}

impl LogCapture {
    /// The process-wide capture at TRACE, installed as the global subscriber
    /// on first use, for every test of the binary.
    ///
    /// # Panics
    ///
    /// When another global subscriber was installed first.
    pub fn global() -> &'static LogCapture {
        static LOGS: OnceLock<LogCapture> = OnceLock::new();
        LOGS.get_or_init(|| {
            let captured = LogCapture::default();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_span_events(FmtSpan::FULL)
                .with_writer(captured.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("the only global subscriber");
            captured
        })
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }

    /// The first captured line holding `needle`, if any.
    pub fn line_with(&self, needle: &str) -> Option<String> {
        let text = self.text();
        let at = text.find(needle)?;
        let start = text[..at].rfind('\n').map_or(0, |n| n + 1);
        let end = text[at..].find('\n').map_or(text.len(), |n| at + n);
        Some(text[start..end].to_owned())
    }

    /// Fails the test when a captured line holds `secret`.
    ///
    /// # Panics
    ///
    /// When one does, showing that line.
    pub fn assert_not_logged(&self, secret: &str) {
        if let Some(line) = self.line_with(secret) {
            panic!("a value reached the log: {line}");
        }
    }
}

/// Proptest strategies the fuzz suites share.
pub mod strategies {
    use proptest::prelude::*;
    use serde_json::Value;

    /// Characters that stress escaping: a JSON Pointer's own `/` and `~`,
    /// the digits of its escapes, Pepr's `-v2-`, controls and multi-byte text.
    pub fn tricky_char() -> impl Strategy<Value = char> {
        prop_oneof![
            3 => prop::sample::select(vec!['a', 'b', '/', '~', '0', '1', '2', '-', 'v', '.']),
            1 => prop::sample::select(vec!['\0', '\n', '\u{7f}', '\u{85}', 'é', '日', '😀', '%', '"', '\\']),
            1 => any::<char>(),
        ]
    }

    /// Text of up to `max` [`tricky_char`]s.
    pub fn tricky_text(max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(tricky_char(), 0..max).prop_map(|c| c.into_iter().collect())
    }

    /// JSON values of every kind, nested up to three levels, with
    /// [`tricky_text`] in strings and object keys.
    pub fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u32>().prop_map(|n| Value::from(f64::from(n) / 8.0)),
            tricky_text(10).prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(tricky_text(6), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}

//! Deadlines for tests, scaled for slow machines, and names that never clash.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

/// The environment variable that scales every deadline of the test kits
/// (this crate's and `store-conformance`'s, which reads the same variable):
/// `STORE_TEST_DEADLINE_SCALE=3` triples every limit, for a machine much
/// slower or busier than the 2-core runner the defaults are sized for;
/// unset, empty or unparsable means 1. Only limits scale: nothing waits
/// longer when things go well.
pub const DEADLINE_SCALE_ENV: &str = "STORE_TEST_DEADLINE_SCALE";

/// How long one expectation of [`within`] may take, before scaling.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(20);

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

/// Awaits `future`, failing the test if it takes longer than
/// [`DEFAULT_DEADLINE`] (scaled).
///
/// # Panics
///
/// When the deadline passes; the message names `what` was awaited.
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    let limit = deadline(DEFAULT_DEADLINE);
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// `<prefix>-<8 random characters>`: a name no other test, nor an earlier run
/// on a shared control plane, uses.
pub fn unique_name(prefix: &str) -> String {
    let suffix: String = (0..8)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[fastrand::usize(..36)]))
        .collect();
    format!("{prefix}-{suffix}")
}

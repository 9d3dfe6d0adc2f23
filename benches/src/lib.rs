//! Shared pieces of the benchmark suite run by `cargo xtask bench`.
//!
//! Every figure is measured beside its baseline in the same process and run.
//! Figures criterion can express are criterion benchmarks, read back by xtask
//! from `target/criterion/<group>/<id>/new/estimates.json`; the others (counts,
//! percentiles, one-off timings) are printed as one `@figure <id> <name> <value>`
//! line each on stdout. Two environment variables steer a run:
//!
//! - `STORE_BENCH_QUICK=1`: short timings, for the CI smoke run;
//! - `STORE_BENCH_ONLY=B1,B7`: run only these benchmarks.

use std::time::Duration;

use criterion::Criterion;
use serde::{Deserialize, Serialize};

/// Whether this is the short smoke run.
pub fn quick() -> bool {
    std::env::var_os("STORE_BENCH_QUICK").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Whether benchmark `id` (`"B1"`) is selected in this run.
pub fn selected(id: &str) -> bool {
    match std::env::var("STORE_BENCH_ONLY") {
        Ok(only) if !only.trim().is_empty() => only
            .split(',')
            .any(|wanted| wanted.trim().eq_ignore_ascii_case(id)),
        _ => true,
    }
}

/// Criterion set up for a quick or a full run; command-line flags still win.
pub fn criterion() -> Criterion {
    let base = Criterion::default().without_plots();
    let configured = if quick() {
        base.warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
            .sample_size(10)
    } else {
        base.warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4))
            .sample_size(60)
    };
    configured.configure_from_args()
}

/// Prints one figure for xtask to collect.
pub fn report(id: &str, name: &str, value: f64) {
    println!("@figure {id} {name} {value}");
}

/// Whether the binary runs as a test: `cargo test --all-targets` runs bench
/// targets without the `--bench` flag `cargo bench` passes. Hand-timed
/// benchmarks then run once at a small size, as a smoke test of their code.
pub fn smoke() -> bool {
    !std::env::args().any(|arg| arg == "--bench")
}

/// How many repetitions a hand-timed figure takes: fewer in a quick run, one
/// in a smoke run.
pub fn repetitions(full: usize, quick_run: usize) -> usize {
    if smoke() {
        1
    } else if quick() {
        quick_run
    } else {
        full
    }
}

/// A workload size: `full`, or a hundredth of it (at least 1) in a smoke run.
pub fn size(full: usize) -> usize {
    if smoke() { (full / 100).max(1) } else { full }
}

/// A Tokio runtime with `workers` worker threads.
///
/// # Panics
///
/// When the runtime cannot start; a benchmark cannot go on without it.
pub fn runtime(workers: usize) -> tokio::runtime::Runtime {
    #[expect(clippy::expect_used, reason = "no benchmark can run without a runtime")]
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Measured values of one quantity.
#[derive(Debug, Clone, Default)]
pub struct Samples(Vec<f64>);

impl Samples {
    /// No values yet.
    pub fn new() -> Self {
        Samples(Vec::new())
    }

    /// Adds one value.
    pub fn push(&mut self, value: f64) {
        self.0.push(value);
    }

    /// Adds one duration, in milliseconds.
    pub fn push_ms(&mut self, elapsed: Duration) {
        self.push(elapsed.as_secs_f64() * 1e3);
    }

    /// Adds every value of `other`.
    pub fn append(&mut self, other: &Samples) {
        self.0.extend_from_slice(&other.0);
    }

    /// How many values there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `p`-th percentile (0 to 100), nearest rank; `NaN` when empty.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let mut sorted = self.0.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    /// The median.
    pub fn median(&self) -> f64 {
        self.percentile(50.0)
    }
}

/// The small struct the typed benchmarks read and write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// An id.
    pub id: u64,
    /// A short name.
    pub name: String,
    /// A flag.
    pub active: bool,
    /// A score.
    pub score: u32,
}

impl Profile {
    /// The `i`-th sample value.
    pub fn sample(i: u64) -> Self {
        Profile {
            id: i,
            name: format!("user-{i}"),
            active: i.is_multiple_of(2),
            score: (i % 1000) as u32,
        }
    }
}

/// `n` keys `<prefix><i>`.
pub fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut s = Samples::new();
        for v in 1..=100 {
            s.push(f64::from(v));
        }
        assert_eq!(s.median(), 50.0);
        assert_eq!(s.percentile(99.0), 99.0);
        assert_eq!(s.percentile(100.0), 100.0);
        assert_eq!(s.percentile(0.0), 1.0);
    }

    #[test]
    fn an_empty_set_of_samples_has_no_median() {
        assert!(Samples::new().median().is_nan());
    }
}

//! Figures for the summary line.

use std::collections::BTreeMap;

/// Figures for the summary line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Cases run, shrinking runs included.
    pub cases: u64,
    /// Steps run.
    pub steps: u64,
    /// Checkpoints passed or failed, the final one of each case included.
    pub checkpoints: u64,
    /// Faults injected, by name.
    pub faults: BTreeMap<&'static str, u64>,
    /// Writes acknowledged (`Ok` from a waiting call, or a key covered by a `flush`).
    pub acknowledged_writes: u64,
    /// Calls that failed, leaving their write to land or not.
    pub ambiguous: u64,
    /// Keys found holding a value the model rules out: an acknowledged write
    /// lost, or a write that should be gone back.
    pub lost: u64,
    /// Panics on the runner's threads (background tasks included).
    pub panics: u64,
    /// Cases that failed.
    pub failed: u64,
}

impl Stats {
    /// The summary line: `model: backend=<name> seed=<seed> cases=<n> ...`.
    pub fn summary(&self, backend: &str, seed: u64) -> String {
        format!(
            "model: backend={backend} seed={seed} cases={} steps={} checkpoints={} faults={} acknowledged_writes={} ambiguous={} lost={} panics={} failed={}",
            self.cases,
            self.steps,
            self.checkpoints,
            join_counts(&self.faults),
            self.acknowledged_writes,
            self.ambiguous,
            self.lost,
            self.panics,
            self.failed,
        )
    }
}

/// `name:count` pairs, comma-separated.
fn join_counts(counts: &BTreeMap<&'static str, u64>) -> String {
    counts
        .iter()
        .map(|(name, count)| format!("{name}:{count}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl Stats {
    pub(super) fn add(&mut self, other: &Stats) {
        self.cases += other.cases;
        self.steps += other.steps;
        self.checkpoints += other.checkpoints;
        for (name, count) in &other.faults {
            *self.faults.entry(name).or_default() += count;
        }
        self.acknowledged_writes += other.acknowledged_writes;
        self.ambiguous += other.ambiguous;
        self.lost += other.lost;
        self.panics += other.panics;
        self.failed += other.failed;
    }
}

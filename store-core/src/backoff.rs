//! Exponential backoff with full jitter, for the flush and sync tasks.

use std::time::Duration;

/// How the background tasks back off after transient failures.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
}

/// Exponential backoff with full jitter.
pub(crate) struct Backoff {
    policy: RetryPolicy,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(policy: RetryPolicy) -> Self {
        Backoff { policy, attempt: 0 }
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next delay; at least what the backend asked for, when it asked.
    pub(crate) fn next_delay(&mut self, asked: Option<Duration>) -> Duration {
        let ceiling = self
            .policy
            .initial
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.policy.max);
        self.attempt = self.attempt.saturating_add(1);
        let jittered = ceiling.mul_f64(fastrand::f64());
        asked.map_or(jittered, |a| a.max(jittered))
    }
}

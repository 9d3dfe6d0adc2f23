//! Quota counting: what a session holds against its limits.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Adds `n` to `counter` unless that passes `limit`; on refusal, what it would have been.
pub(crate) fn reserve(
    counter: &AtomicUsize,
    n: usize,
    limit: Option<usize>,
) -> std::result::Result<(), usize> {
    let Some(limit) = limit else {
        counter.fetch_add(n, Ordering::AcqRel);
        return Ok(());
    };
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
            current.checked_add(n).filter(|next| *next <= limit)
        })
        .map(|_| ())
        .map_err(|current| current.saturating_add(n))
}

pub(crate) fn release(counter: &AtomicUsize, n: usize) {
    let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
        Some(current.saturating_sub(n))
    });
}

/// What a session holds against its quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Entries, live and durable together.
    pub entries: usize,
    /// Bytes of encoded JSON in the durable tier.
    pub durable_bytes: usize,
}

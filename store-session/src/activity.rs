//! When a session was last used, for idle expiry.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// When a session was last seen in use, for idle expiry.
///
/// Kept off the hot path: a call only raises a flag (a plain read once it is
/// up, so threads using one session don't fight over a cache line, and no
/// clock read), and the expiry task turns a raised flag into a time when it
/// looks (see [`seen`](Self::seen)). A use is therefore dated up to one of the
/// task's checks late, never early.
pub(crate) struct Activity {
    used: AtomicBool,
    /// Nanoseconds after the registry's epoch.
    last_seen: AtomicU64,
}

impl Activity {
    /// Seen in use now; times count from `epoch`, the registry's.
    pub(crate) fn new(epoch: Instant) -> Self {
        let activity = Activity {
            used: AtomicBool::new(false),
            last_seen: AtomicU64::new(0),
        };
        activity.seen(epoch, Instant::now());
        activity
    }

    /// Marks the session as used.
    pub(crate) fn touch(&self) {
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
    }

    /// The last time the session was seen in use, counting a use since the last
    /// look as happening at `now`, and whether there was such a use here.
    pub(crate) fn seen(&self, epoch: Instant, now: Instant) -> (Instant, bool) {
        let used = self.used.swap(false, Ordering::AcqRel);
        if used {
            self.heard(epoch, now);
        }
        let at = epoch + Duration::from_nanos(self.last_seen.load(Ordering::Acquire));
        (at, used)
    }

    /// Counts a use elsewhere (another replica's) as happening at `now`,
    /// without marking a use here.
    pub(crate) fn heard(&self, epoch: Instant, now: Instant) {
        let nanos = now.saturating_duration_since(epoch).as_nanos();
        self.last_seen
            .fetch_max(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::AcqRel);
    }
}

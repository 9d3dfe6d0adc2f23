//! Scripted failures: failing the next requests, added latency, and pausing
//! request handling. Dropping watches and restarts act on connections and
//! live in `server.rs`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::request_log::Verb;

/// How an injected failure answers a request. The request is not processed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// `500 InternalError`, as when etcd is unavailable.
    InternalError,
    /// `429 TooManyRequests` with a `Retry-After` header (whole seconds,
    /// rounded up), as API priority and fairness answers under load.
    TooManyRequests {
        /// The delay the client is asked to wait.
        retry_after: Duration,
    },
    /// `409 Conflict`, as if another writer had just won a race.
    Conflict,
    /// Holds the request this long before answering `504 Timeout`; longer
    /// than the client's read timeout, the client gives up first.
    Hang(Duration),
}

/// A fault and the requests it hits: by default the next request, once.
#[derive(Debug, Clone)]
pub struct FaultRule {
    fault: Fault,
    remaining: usize,
    verb: Option<Verb>,
    path_contains: Option<String>,
}

impl FaultRule {
    /// Fails the next request with `fault`.
    pub fn new(fault: Fault) -> Self {
        Self {
            fault,
            remaining: 1,
            verb: None,
            path_contains: None,
        }
    }

    /// Fails the next `count` matching requests instead of one.
    #[must_use]
    pub fn times(mut self, count: usize) -> Self {
        self.remaining = count;
        self
    }

    /// Only hits requests with this verb.
    #[must_use]
    pub fn verb(mut self, verb: Verb) -> Self {
        self.verb = Some(verb);
        self
    }

    /// Only hits requests whose path contains `fragment`.
    #[must_use]
    pub fn path_contains(mut self, fragment: impl Into<String>) -> Self {
        self.path_contains = Some(fragment.into());
        self
    }

    fn matches(&self, verb: Option<Verb>, path: &str) -> bool {
        self.remaining > 0
            && self.verb.is_none_or(|wanted| verb == Some(wanted))
            && self
                .path_contains
                .as_deref()
                .is_none_or(|fragment| path.contains(fragment))
    }
}

/// The fault state every request consults.
pub(crate) struct Faults {
    rules: Mutex<Vec<FaultRule>>,
    latency: Mutex<Duration>,
    paused: watch::Sender<bool>,
    held: AtomicUsize,
}

/// Counts a request as held while it waits; the guard keeps the count right
/// when the client gives up mid-wait.
struct Held<'a>(&'a AtomicUsize);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Faults {
    pub(crate) fn new() -> Self {
        Self {
            rules: Mutex::new(Vec::new()),
            latency: Mutex::new(Duration::ZERO),
            paused: watch::Sender::new(false),
            held: AtomicUsize::new(0),
        }
    }

    pub(crate) fn add(&self, rule: FaultRule) {
        if rule.remaining > 0 {
            lock(&self.rules).push(rule);
        }
    }

    pub(crate) fn clear(&self) {
        lock(&self.rules).clear();
        *lock(&self.latency) = Duration::ZERO;
        self.paused.send_replace(false);
    }

    /// The fault for this request, if a rule hits it (consuming one use).
    pub(crate) fn take(&self, verb: Option<Verb>, path: &str) -> Option<Fault> {
        let mut rules = lock(&self.rules);
        let index = rules.iter().position(|rule| rule.matches(verb, path))?;
        let rule = &mut rules[index];
        rule.remaining -= 1;
        let fault = rule.fault.clone();
        if rule.remaining == 0 {
            rules.remove(index);
        }
        Some(fault)
    }

    pub(crate) fn set_latency(&self, latency: Duration) {
        *lock(&self.latency) = latency;
    }

    pub(crate) fn latency(&self) -> Duration {
        *lock(&self.latency)
    }

    pub(crate) fn pause(&self) {
        self.paused.send_replace(true);
    }

    pub(crate) fn resume(&self) {
        self.paused.send_replace(false);
    }

    /// Returns once requests are not paused.
    pub(crate) async fn wait_while_paused(&self) {
        let mut paused = self.paused.subscribe();
        if !*paused.borrow_and_update() {
            return;
        }
        self.held.fetch_add(1, Ordering::SeqCst);
        let _held = Held(&self.held);
        // The sender lives as long as `self`, so this cannot fail while we wait.
        let _ = paused.wait_for(|paused| !paused).await;
    }

    /// Requests currently held by a pause.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_hits_only_matching_requests_the_given_number_of_times() {
        let faults = Faults::new();
        faults.add(
            FaultRule::new(Fault::Conflict)
                .times(2)
                .verb(Verb::Patch)
                .path_contains("/foos/"),
        );
        assert_eq!(faults.take(Some(Verb::Get), "/x/foos/a"), None);
        assert_eq!(faults.take(Some(Verb::Patch), "/x/bars/a"), None);
        assert_eq!(
            faults.take(Some(Verb::Patch), "/x/foos/a"),
            Some(Fault::Conflict)
        );
        assert_eq!(
            faults.take(Some(Verb::Patch), "/x/foos/a"),
            Some(Fault::Conflict)
        );
        assert_eq!(faults.take(Some(Verb::Patch), "/x/foos/a"), None);
    }
}

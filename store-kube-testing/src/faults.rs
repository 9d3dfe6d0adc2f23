//! Scripted failures: failing the next requests, added latency, delayed
//! watch events and pausing request handling, for every client or for one
//! named client. Dropping watches and restarts act on connections and live
//! in `server.rs`.

use std::collections::HashMap;
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
    client: Option<String>,
}

impl FaultRule {
    /// Fails the next request with `fault`.
    pub fn new(fault: Fault) -> Self {
        Self {
            fault,
            remaining: 1,
            verb: None,
            path_contains: None,
            client: None,
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

    /// Only hits requests of the client named `name`
    /// ([`FakeApiServer::client_as`](crate::FakeApiServer::client_as)).
    #[must_use]
    pub fn client(mut self, name: impl Into<String>) -> Self {
        self.client = Some(name.into());
        self
    }

    fn matches(&self, verb: Option<Verb>, path: &str, client: Option<&str>) -> bool {
        self.remaining > 0
            && self.verb.is_none_or(|wanted| verb == Some(wanted))
            && self
                .client
                .as_deref()
                .is_none_or(|wanted| client == Some(wanted))
            && self
                .path_contains
                .as_deref()
                .is_none_or(|fragment| path.contains(fragment))
    }
}

/// The fault state every request consults.
pub(crate) struct Faults {
    rules: Mutex<Vec<FaultRule>>,
    latency: Mutex<Delays>,
    watch_delay: Mutex<Delays>,
    paused: watch::Sender<bool>,
    held: AtomicUsize,
}

/// A delay for every client, and more for named ones.
#[derive(Default)]
struct Delays {
    all: Duration,
    clients: HashMap<String, Duration>,
}

impl Delays {
    fn set(&mut self, client: Option<&str>, delay: Duration) {
        match client {
            None => self.all = delay,
            Some(name) if delay.is_zero() => {
                self.clients.remove(name);
            }
            Some(name) => {
                self.clients.insert(name.to_owned(), delay);
            }
        }
    }

    /// What a request of `client` waits: the delay for all plus its own.
    fn of(&self, client: Option<&str>) -> Duration {
        let own = client
            .and_then(|name| self.clients.get(name))
            .copied()
            .unwrap_or_default();
        self.all + own
    }
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
            latency: Mutex::new(Delays::default()),
            watch_delay: Mutex::new(Delays::default()),
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
        *lock(&self.latency) = Delays::default();
        *lock(&self.watch_delay) = Delays::default();
        self.paused.send_replace(false);
    }

    /// The fault for this request, if a rule hits it (consuming one use).
    pub(crate) fn take(
        &self,
        verb: Option<Verb>,
        path: &str,
        client: Option<&str>,
    ) -> Option<Fault> {
        let mut rules = lock(&self.rules);
        let index = rules
            .iter()
            .position(|rule| rule.matches(verb, path, client))?;
        let rule = &mut rules[index];
        rule.remaining -= 1;
        let fault = rule.fault.clone();
        if rule.remaining == 0 {
            rules.remove(index);
        }
        Some(fault)
    }

    /// Sets the latency of every client (`None`) or adds one for a client.
    pub(crate) fn set_latency(&self, client: Option<&str>, latency: Duration) {
        lock(&self.latency).set(client, latency);
    }

    pub(crate) fn latency(&self, client: Option<&str>) -> Duration {
        lock(&self.latency).of(client)
    }

    /// Sets how long every watch event waits (`None`) or adds a wait for a
    /// client's watches.
    pub(crate) fn set_watch_delay(&self, client: Option<&str>, delay: Duration) {
        lock(&self.watch_delay).set(client, delay);
    }

    pub(crate) fn watch_delay(&self, client: Option<&str>) -> Duration {
        lock(&self.watch_delay).of(client)
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
        assert_eq!(faults.take(Some(Verb::Get), "/x/foos/a", None), None);
        assert_eq!(faults.take(Some(Verb::Patch), "/x/bars/a", None), None);
        assert_eq!(
            faults.take(Some(Verb::Patch), "/x/foos/a", None),
            Some(Fault::Conflict)
        );
        assert_eq!(
            faults.take(Some(Verb::Patch), "/x/foos/a", None),
            Some(Fault::Conflict)
        );
        assert_eq!(faults.take(Some(Verb::Patch), "/x/foos/a", None), None);
    }

    #[test]
    fn a_rule_for_a_client_hits_only_that_clients_requests() {
        let faults = Faults::new();
        faults.add(FaultRule::new(Fault::InternalError).client("b"));
        assert_eq!(faults.take(None, "/x", None), None);
        assert_eq!(faults.take(None, "/x", Some("a")), None);
        assert_eq!(
            faults.take(None, "/x", Some("b")),
            Some(Fault::InternalError)
        );
        assert_eq!(faults.take(None, "/x", Some("b")), None);
    }

    #[test]
    fn a_clients_delay_adds_to_everyones() {
        let faults = Faults::new();
        let ms = Duration::from_millis;
        faults.set_latency(None, ms(5));
        faults.set_latency(Some("b"), ms(20));
        faults.set_watch_delay(Some("b"), ms(100));
        assert_eq!(faults.latency(None), ms(5));
        assert_eq!(faults.latency(Some("a")), ms(5));
        assert_eq!(faults.latency(Some("b")), ms(25));
        assert_eq!(faults.watch_delay(Some("a")), Duration::ZERO);
        assert_eq!(faults.watch_delay(Some("b")), ms(100));
        faults.set_latency(Some("b"), Duration::ZERO);
        assert_eq!(faults.latency(Some("b")), ms(5));
        faults.clear();
        assert_eq!(faults.latency(None), Duration::ZERO);
        assert_eq!(faults.watch_delay(Some("b")), Duration::ZERO);
    }
}

//! A metrics recorder for tests: keeps every figure a store records, never
//! resets one on reading, and answers by name and labels.
//!
//! Stores take their metric handles when they start, and a handle keeps
//! recording into the recorder it came from on any thread. Start the store
//! with this recorder installed for the current thread
//! ([`Figures::install`]), and everything the store's tasks record later
//! lands here, whichever thread they run on.

use std::sync::Arc;

use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, LocalRecorderGuard, Metadata, Recorder,
    SharedString, Unit,
};
use metrics_util::registry::{AtomicStorage, Registry};

/// Every figure recorded through it, by name and labels.
#[derive(Clone)]
pub struct Figures {
    registry: Arc<Registry<Key, AtomicStorage>>,
}

impl Default for Figures {
    fn default() -> Self {
        Figures {
            registry: Arc::new(Registry::atomic()),
        }
    }
}

impl std::fmt::Debug for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Figures").finish_non_exhaustive()
    }
}

/// Whether `key` is named `name` and carries every label in `labels`.
fn matches(key: &Key, name: &str, labels: &[(&str, &str)]) -> bool {
    key.name() == name
        && labels.iter().all(|(label, value)| {
            key.labels()
                .any(|l: &Label| l.key() == *label && l.value() == *value)
        })
}

impl Figures {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes this the current thread's recorder until the guard drops. Metric
    /// handles taken meanwhile (a store's, when it starts) keep recording
    /// here from any thread.
    pub fn install(&self) -> LocalRecorderGuard<'_> {
        metrics::set_default_local_recorder(self)
    }

    /// The sum of every counter named `name` whose labels include `labels`
    /// (0 when none was registered).
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let mut sum = 0;
        self.registry.visit_counters(|key, counter| {
            if matches(key, name, labels) {
                sum += counter.load(std::sync::atomic::Ordering::SeqCst);
            }
        });
        sum
    }

    /// The value of the gauge named `name` whose labels include `labels`, if
    /// one was registered.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        self.registry.visit_gauges(|key, gauge| {
            if found.is_none() && matches(key, name, labels) {
                found = Some(f64::from_bits(
                    gauge.load(std::sync::atomic::Ordering::SeqCst),
                ));
            }
        });
        found
    }

    /// Every value recorded in histograms named `name` whose labels include
    /// `labels`.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        let mut values = Vec::new();
        self.registry.visit_histograms(|key, histogram| {
            if matches(key, name, labels) {
                values.extend(histogram.data());
            }
        });
        values
    }

    /// The value of `label` on every registered series named `name` (counters,
    /// gauges and histograms), sorted, without repeats.
    pub fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut values = Vec::new();
        let mut note = |key: &Key| {
            if key.name() == name
                && let Some(l) = key.labels().find(|l| l.key() == label)
            {
                values.push(l.value().to_owned());
            }
        };
        self.registry.visit_counters(|key, _| note(key));
        self.registry.visit_gauges(|key, _| note(key));
        self.registry.visit_histograms(|key, _| note(key));
        values.sort();
        values.dedup();
        values
    }
}

impl Recorder for Figures {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.registry
            .get_or_create_counter(key, |c| Counter::from_arc(Arc::clone(c)))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.registry
            .get_or_create_gauge(key, |g| Gauge::from_arc(Arc::clone(g)))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.registry
            .get_or_create_histogram(key, |h| Histogram::from_arc(Arc::clone(h)))
    }
}

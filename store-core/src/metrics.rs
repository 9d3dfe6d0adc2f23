//! The store's figures, exported through the [`metrics`] facade.
//!
//! Nothing is exported until the application installs a recorder (for
//! Prometheus, `metrics-exporter-prometheus`); without one every figure is a
//! no-op. A store takes its handles when it starts ([`StoreBuilder::start`]),
//! so install the recorder before opening stores. Each name is a constant
//! here; [`describe`] gives the recorder their help texts and units (the
//! first store to start calls it).
//!
//! Every figure carries the labels `store` (the store's
//! [name](crate::Store::name), or the label set with
//! [`StoreBuilder::metrics_label`]) and `backend` (`memory`, `kube`, `redis`,
//! or another backend's [`name`](crate::Backend::name)). No key and no value
//! is ever a label. Stores that share a `store` label add up: counters and
//! histograms gather every store's figures, the queue depth is the sum of
//! their queues and `typed_store_ready` counts the ready ones; that is how
//! `store-session` keeps one label per registry, not one per session.
//!
//! [`StoreBuilder::metrics_label`]: crate::StoreBuilder::metrics_label
//!
//! | name | type | more labels | what it counts |
//! |---|---|---|---|
//! | `typed_store_writes_queued_total` | counter | `kind` = `set`, `remove`, `conditional` | writes queued by `set`, `remove`, their `_and_wait` forms, `clear` (`remove`), `update` and `compare_and_set` (`conditional`); coalesced writes count too |
//! | `typed_store_write_queue_depth` | gauge | | writes queued and not yet taken for sending (coalesced writes count once) |
//! | `typed_store_batches_total` | counter | `outcome` = `applied`, `failed` | batches the flush task sent: `applied` when the backend answered (some writes may still have been refused), `failed` when the whole batch failed |
//! | `typed_store_batch_size` | histogram | | writes per batch sent |
//! | `typed_store_batch_duration_seconds` | histogram | | time from a batch's first attempt to its outcome, retries included |
//! | `typed_store_conflicts_total` | counter | | conditional writes (`update`, `compare_and_set`, transactions) the backend refused because the key had changed |
//! | `typed_store_retries_total` | counter | `reason` = `transient`, `conflict` | a batch sent again after a transient failure; an `update` that ran its closure again after a conflict |
//! | `typed_store_set_and_wait_duration_seconds` | histogram | | how long `set_and_wait` calls took, failed ones included |
//! | `typed_store_view_lag_seconds` | histogram | | time from the backend acknowledging a batch to the local view reaching the batch's revision (how far the watch trails this store's own writes) |
//! | `typed_store_watch_restarts_total` | counter | `reason` = `list_failed`, `start_failed`, `error`, `ended` | the sync task listing again after a failed listing, or following the watch again after it failed to start, failed, or ended |
//! | `typed_store_watch_gaps_total` | counter | | the backend's watch reported a gap, so the view was listed afresh |
//! | `typed_store_ready` | gauge | | 1 once the store is ready, 0 while it starts, after start-up failed, and once closed (with a shared label: how many stores are ready) |
//!
//! The writes of a [`Transaction`](crate::Transaction) go to the backend
//! directly, not through the queue: they count in no `batches` figure, and
//! their conflicts count in `typed_store_conflicts_total`.
//!
//! The cost without a recorder: each figure is a handle the store keeps, and
//! recording on a no-op handle is one branch; `get` records nothing, and
//! only `set_and_wait` and each batch read the clock.
//! `cargo xtask bench` measures `set` and `get` with and without a recorder
//! (see `BENCHMARKS.md`).
//!
//! [`StoreBuilder::start`]: crate::StoreBuilder::start

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};

use ::metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};

/// Writes queued (counter; labels `store`, `backend`, `kind`).
pub const WRITES_QUEUED: &str = "typed_store_writes_queued_total";
/// Writes queued and not yet taken for sending (gauge; labels `store`, `backend`).
pub const WRITE_QUEUE_DEPTH: &str = "typed_store_write_queue_depth";
/// Batches sent by the flush task (counter; labels `store`, `backend`, `outcome`).
pub const BATCHES: &str = "typed_store_batches_total";
/// Writes per batch (histogram; labels `store`, `backend`).
pub const BATCH_SIZE: &str = "typed_store_batch_size";
/// Time from a batch's first attempt to its outcome (histogram, seconds; labels `store`, `backend`).
pub const BATCH_DURATION: &str = "typed_store_batch_duration_seconds";
/// Conditional writes refused by the backend (counter; labels `store`, `backend`).
pub const CONFLICTS: &str = "typed_store_conflicts_total";
/// Batches sent again and updates run again (counter; labels `store`, `backend`, `reason`).
pub const RETRIES: &str = "typed_store_retries_total";
/// How long `set_and_wait` took (histogram, seconds; labels `store`, `backend`).
pub const SET_AND_WAIT_DURATION: &str = "typed_store_set_and_wait_duration_seconds";
/// Time from a batch's acknowledgement to the view showing it (histogram, seconds; labels `store`, `backend`).
pub const VIEW_LAG: &str = "typed_store_view_lag_seconds";
/// The sync task listing or watching again (counter; labels `store`, `backend`, `reason`).
pub const WATCH_RESTARTS: &str = "typed_store_watch_restarts_total";
/// Gaps the backend's watch reported (counter; labels `store`, `backend`).
pub const WATCH_GAPS: &str = "typed_store_watch_gaps_total";
/// 1 once the store is ready, else 0; summed over stores sharing a label (gauge; labels `store`, `backend`).
pub const READY: &str = "typed_store_ready";

/// Gives the installed recorder the help text and unit of every figure above.
///
/// Stores call this once, when the first one starts; call it yourself when
/// the recorder is installed later, or is a thread's local recorder.
pub fn describe() {
    describe_counter!(
        WRITES_QUEUED,
        Unit::Count,
        "Writes queued, by kind (set, remove, conditional)."
    );
    describe_gauge!(
        WRITE_QUEUE_DEPTH,
        Unit::Count,
        "Writes queued and not yet taken for sending."
    );
    describe_counter!(
        BATCHES,
        Unit::Count,
        "Write batches sent to the backend, by outcome (applied, failed)."
    );
    describe_histogram!(
        BATCH_SIZE,
        Unit::Count,
        "Writes per batch sent to the backend."
    );
    describe_histogram!(
        BATCH_DURATION,
        Unit::Seconds,
        "Time from a batch's first attempt to its outcome, retries included."
    );
    describe_counter!(
        CONFLICTS,
        Unit::Count,
        "Conditional writes the backend refused because the key had changed."
    );
    describe_counter!(
        RETRIES,
        Unit::Count,
        "Batches sent again after a transient failure (transient) and updates run again after a conflict (conflict)."
    );
    describe_histogram!(
        SET_AND_WAIT_DURATION,
        Unit::Seconds,
        "How long set_and_wait calls took."
    );
    describe_histogram!(
        VIEW_LAG,
        Unit::Seconds,
        "Time from the backend acknowledging a batch to the local view reaching its revision."
    );
    describe_counter!(
        WATCH_RESTARTS,
        Unit::Count,
        "The sync task listing or watching again, by reason (list_failed, start_failed, error, ended)."
    );
    describe_counter!(
        WATCH_GAPS,
        Unit::Count,
        "Gaps the backend's watch reported; each re-lists the store."
    );
    describe_gauge!(
        READY,
        Unit::Count,
        "1 once the store is ready, 0 while it starts, after start-up failed, and once closed."
    );
}

/// Runs [`describe`] once per process.
fn describe_once() {
    static DESCRIBED: Once = Once::new();
    DESCRIBED.call_once(describe);
}

/// One store's handles, taken once when it starts so recording costs no
/// label building.
pub(crate) struct StoreMetrics {
    pub(crate) queued_set: Counter,
    pub(crate) queued_remove: Counter,
    pub(crate) queued_conditional: Counter,
    pub(crate) queue_depth: Gauge,
    pub(crate) batches_applied: Counter,
    pub(crate) batches_failed: Counter,
    pub(crate) batch_size: Histogram,
    pub(crate) batch_duration: Histogram,
    pub(crate) conflicts: Counter,
    pub(crate) retries_transient: Counter,
    pub(crate) retries_conflict: Counter,
    pub(crate) set_and_wait: Histogram,
    pub(crate) view_lag: Histogram,
    pub(crate) restarts_list_failed: Counter,
    pub(crate) restarts_start_failed: Counter,
    pub(crate) restarts_error: Counter,
    pub(crate) restarts_ended: Counter,
    pub(crate) gaps: Counter,
    ready: Gauge,
    /// Whether this store counts in `ready`.
    counted_ready: AtomicBool,
}

impl StoreMetrics {
    pub(crate) fn new(store: &str, backend: &'static str) -> Self {
        describe_once();
        let store: Arc<str> = Arc::from(store);
        let s = || Arc::clone(&store);
        StoreMetrics {
            queued_set: counter!(WRITES_QUEUED, "store" => s(), "backend" => backend, "kind" => "set"),
            queued_remove: counter!(WRITES_QUEUED, "store" => s(), "backend" => backend, "kind" => "remove"),
            queued_conditional: counter!(WRITES_QUEUED, "store" => s(), "backend" => backend, "kind" => "conditional"),
            queue_depth: gauge!(WRITE_QUEUE_DEPTH, "store" => s(), "backend" => backend),
            batches_applied: counter!(BATCHES, "store" => s(), "backend" => backend, "outcome" => "applied"),
            batches_failed: counter!(BATCHES, "store" => s(), "backend" => backend, "outcome" => "failed"),
            batch_size: histogram!(BATCH_SIZE, "store" => s(), "backend" => backend),
            batch_duration: histogram!(BATCH_DURATION, "store" => s(), "backend" => backend),
            conflicts: counter!(CONFLICTS, "store" => s(), "backend" => backend),
            retries_transient: counter!(RETRIES, "store" => s(), "backend" => backend, "reason" => "transient"),
            retries_conflict: counter!(RETRIES, "store" => s(), "backend" => backend, "reason" => "conflict"),
            set_and_wait: histogram!(SET_AND_WAIT_DURATION, "store" => s(), "backend" => backend),
            view_lag: histogram!(VIEW_LAG, "store" => s(), "backend" => backend),
            restarts_list_failed: counter!(WATCH_RESTARTS, "store" => s(), "backend" => backend, "reason" => "list_failed"),
            restarts_start_failed: counter!(WATCH_RESTARTS, "store" => s(), "backend" => backend, "reason" => "start_failed"),
            restarts_error: counter!(WATCH_RESTARTS, "store" => s(), "backend" => backend, "reason" => "error"),
            restarts_ended: counter!(WATCH_RESTARTS, "store" => s(), "backend" => backend, "reason" => "ended"),
            gaps: counter!(WATCH_GAPS, "store" => s(), "backend" => backend),
            ready: gauge!(READY, "store" => s(), "backend" => backend),
            counted_ready: AtomicBool::new(false),
        }
    }

    /// Counts the store in `typed_store_ready`, or stops counting it; each
    /// store adds at most one, so stores sharing a label add up.
    pub(crate) fn set_ready(&self, ready: bool) {
        if self.counted_ready.swap(ready, Ordering::AcqRel) != ready {
            if ready {
                self.ready.increment(1.0);
            } else {
                self.ready.decrement(1.0);
            }
        }
    }

    /// `added` writes joined the queue (by changes, so stores sharing a label
    /// add up).
    pub(crate) fn queued(&self, added: usize) {
        if added > 0 {
            self.queue_depth.increment(depth(added));
        }
    }

    /// `taken` writes left the queue.
    pub(crate) fn unqueued(&self, taken: usize) {
        if taken > 0 {
            self.queue_depth.decrement(depth(taken));
        }
    }
}

/// A queue length as a gauge value.
pub(crate) fn depth(len: usize) -> f64 {
    // Exact up to 2^53 writes, far past any queue.
    len as f64
}

//! The backend's figures, exported through the [`metrics`] facade beside
//! the store's own (`store_core::metrics`).
//!
//! Every figure carries the label `store` (the store's name). Install the
//! recorder before building the backend: it takes its handles then.
//!
//! | name | type | more labels | what it counts |
//! |---|---|---|---|
//! | `typed_store_redis_commands_total` | counter | `command`, `outcome` | commands sent to Redis |
//! | `typed_store_redis_command_duration_seconds` | histogram | `command` | time to the answer (`xread` blocks on the change log for up to 5 s by design) |
//! | `typed_store_redis_resends_total` | counter | | write batches sent again because the answer to the last attempt was lost (the batch script applies a batch once however often it is sent) |
//!
//! `command` is the store's script (`apply`, `read`, `list`, `since`,
//! `reap`) or Redis command (`xread`, `wait`, `config`) sent. `outcome` is
//! `ok`, `timeout` (no answer within the request timeout), `unavailable`
//! (a failure worth retrying: connection lost or refused, a cluster
//! redirection, a server loading or read-only) or `error` (anything else).

use std::sync::Arc;
use std::time::Duration;

use ::metrics::{Counter, Unit, counter, describe_counter, describe_histogram, histogram};

use crate::error::is_transient;

/// Commands sent to Redis (counter; labels `store`, `command`, `outcome`).
pub const COMMANDS: &str = "typed_store_redis_commands_total";
/// Time to Redis's answer (histogram, seconds; labels `store`, `command`).
pub const COMMAND_DURATION: &str = "typed_store_redis_command_duration_seconds";
/// Write batches sent again after a lost answer (counter; label `store`).
pub const RESENDS: &str = "typed_store_redis_resends_total";

/// Gives the installed recorder the help text and unit of every figure above
/// (a backend calls it once, when the first one is built).
pub fn describe() {
    describe_counter!(
        COMMANDS,
        Unit::Count,
        "Commands sent to Redis, by command (script or Redis command) and outcome."
    );
    describe_histogram!(
        COMMAND_DURATION,
        Unit::Seconds,
        "Time to Redis's answer, by command."
    );
    describe_counter!(
        RESENDS,
        Unit::Count,
        "Write batches sent again because the answer to the last attempt was lost."
    );
}

/// One backend's handles and labels.
pub(crate) struct RedisMetrics {
    store: Arc<str>,
    pub(crate) resends: Counter,
}

impl RedisMetrics {
    pub(crate) fn new(store: &str) -> Self {
        static DESCRIBED: std::sync::Once = std::sync::Once::new();
        DESCRIBED.call_once(describe);
        let store: Arc<str> = Arc::from(store);
        RedisMetrics {
            resends: counter!(RESENDS, "store" => Arc::clone(&store)),
            store,
        }
    }

    /// One command's outcome and time. Commands go over the network, so
    /// building their labels here costs nothing worth a cache.
    pub(crate) fn command(&self, command: &'static str, outcome: &'static str, took: Duration) {
        counter!(COMMANDS, "store" => Arc::clone(&self.store), "command" => command, "outcome" => outcome)
            .increment(1);
        histogram!(COMMAND_DURATION, "store" => Arc::clone(&self.store), "command" => command)
            .record(took);
    }
}

/// What a command's answer says, as an `outcome` label; `None` for no
/// answer within the timeout.
pub(crate) fn outcome<T>(answer: Option<&redis::RedisResult<T>>) -> &'static str {
    match answer {
        Some(Ok(_)) => "ok",
        Some(Err(error)) if is_transient(error) => "unavailable",
        Some(Err(_)) => "error",
        None => "timeout",
    }
}

//! Redis failures as store errors: what may pass is `Unavailable` (the store
//! retries it), the rest is `Backend`. The sources are [`RedisStoreError`], so a
//! caller can tell a write whose outcome is unknown from one that surely did
//! not happen.

use std::sync::Arc;
use std::time::Duration;

use redis::{ErrorKind, ServerErrorKind};
use store_core::Error;

pub(crate) const NAME: &str = "redis";

/// What went wrong talking to Redis: the source inside the store's
/// [`Error::Unavailable`] and [`Error::Backend`] from this backend.
///
/// Messages never hold a value or a credential.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RedisStoreError {
    /// A write batch was sent, the connection failed before the answer came,
    /// and resending it (with the same batch id, which the server answers
    /// from its record when the batch had applied) did not get an answer
    /// within the retry window. The batch may or may not have applied.
    ///
    /// Carried in [`Error::Unavailable`], so the store sends the writes
    /// again: plain puts and deletes land once more harmlessly, and
    /// conditional writes are checked against the server again.
    #[error(
        "the outcome of a write batch is unknown: {attempts} attempts over {elapsed:?}, last: {last}"
    )]
    OutcomeUnknown {
        /// How many times the batch was sent.
        attempts: u32,
        /// How long the attempts took.
        elapsed: Duration,
        /// The last failure.
        last: String,
    },

    /// A batch applied on the primary, but fewer replicas than
    /// [`wait_for_replicas`](crate::RedisBackendBuilder::wait_for_replicas)
    /// asks for confirmed it in time: a failover now could lose it. Carried in
    /// [`Error::Unavailable`], so the store sends the writes again.
    #[error("a write batch reached {acknowledged} of {wanted} replicas in time")]
    NotReplicated {
        /// Replicas that confirmed the batch.
        acknowledged: u64,
        /// Replicas asked for.
        wanted: u32,
    },

    /// A request got no answer in time.
    #[error("no answer from Redis within {0:?}")]
    Timeout(Duration),

    /// The client or the server reported an error.
    #[error("{0}")]
    Redis(Arc<redis::RedisError>),

    /// The server answered something this backend did not expect (a key of
    /// the wrong type, a malformed record). Nothing of the answer is quoted.
    #[error("unexpected answer from Redis: {0}")]
    BadReply(String),
}

impl From<redis::RedisError> for RedisStoreError {
    fn from(error: redis::RedisError) -> Self {
        RedisStoreError::Redis(Arc::new(error))
    }
}

/// Whether the request may have reached the server and run: the connection
/// failed or timed out after it was written.
pub(crate) fn outcome_unknown(error: &redis::RedisError) -> bool {
    match error.kind() {
        ErrorKind::Io => !error.is_connection_refusal(),
        // The client gave up on a connection; the request may have been written.
        ErrorKind::ClusterConnectionNotFound | ErrorKind::Parse => true,
        _ => false,
    }
}

/// Whether retrying later may succeed.
pub(crate) fn is_transient(error: &redis::RedisError) -> bool {
    match error.kind() {
        ErrorKind::Io | ErrorKind::ClusterConnectionNotFound | ErrorKind::Parse => true,
        ErrorKind::Server(kind) => match kind {
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly
            | ServerErrorKind::Moved
            | ServerErrorKind::Ask
            | ServerErrorKind::NoScript => true,
            // `BUSY` (a script or DEBUG SLEEP running), `OOM`, `MISCONF`
            // (persistence failing) and `NOREPLICAS` pass on their own.
            _ => matches!(
                error.code(),
                Some("BUSY" | "OOM" | "MISCONF" | "NOREPLICAS" | "LOADING")
            ),
        },
        _ => false,
    }
}

/// Maps a client error to the store's error type.
pub(crate) fn from_redis(error: redis::RedisError) -> Error {
    if is_transient(&error) {
        unavailable(RedisStoreError::from(error))
    } else {
        Error::backend(NAME, RedisStoreError::from(error))
    }
}

pub(crate) fn unavailable(error: RedisStoreError) -> Error {
    Error::unavailable(NAME, error)
}

pub(crate) fn bad_reply(what: impl Into<String>) -> Error {
    Error::backend(NAME, RedisStoreError::BadReply(what.into()))
}

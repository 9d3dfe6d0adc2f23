//! The one error type of `store-core`.
//!
//! Every variant names what failed and carries the key and the limit involved,
//! so a log line or a test assertion needs nothing else. Sources are kept in
//! `Arc`s so one failure can be handed to every waiter of a batch.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::{Precondition, Version};

/// A boxed error from user code or from a backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A shared error source, as carried by [`Error`].
pub type SharedError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a store call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key breaks the rules in [`crate::key`]; nothing was written.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The rejected key.
        key: String,
        /// Which rule it breaks.
        reason: crate::key::KeyError,
    },

    /// The encoded value is larger than the backend (or the store) accepts.
    #[error("value for key `{key}` is {size} bytes, over the limit of {limit} bytes")]
    ValueTooLarge {
        /// The key being written.
        key: String,
        /// Size of the encoded value in bytes; when the store refused it at the
        /// call, encoding stopped once past the limit and this is the size by then.
        size: usize,
        /// The largest size accepted, in bytes.
        limit: usize,
    },

    /// The value would fit the backend's limits, but the part of the store its key
    /// lives in (for example one Kubernetes object) has no room left for it.
    #[error("no room for key `{key}`: it needs {needed} bytes, {available} are left")]
    StoreFull {
        /// The key being written.
        key: String,
        /// Bytes the write needs.
        needed: usize,
        /// Bytes left where the key lives.
        available: usize,
    },

    /// The backend refused this write for good, for a reason of its own that
    /// retrying will not change (for example the Kubernetes API server's
    /// validation). Only this write failed: others in the same batch are not
    /// held up by it.
    #[error("the backend refused the write to key `{key}`: {reason}")]
    Rejected {
        /// The key being written.
        key: String,
        /// What the backend said, with any value it quoted taken out.
        reason: String,
    },

    /// Several queued writes failed and no caller was told yet: what
    /// [`Store::flush`](crate::Store::flush) reports, each failure once, in the
    /// order the writes were made.
    #[error("{} writes failed: {}", .errors.len() as u64 + .more, list_failures(.errors, *.more))]
    WritesFailed {
        /// Each failure (every one names its key).
        errors: Arc<[Error]>,
        /// How many more failed beyond those kept (each was logged).
        more: u64,
    },

    /// The value could not be encoded (its `Serialize` impl failed).
    #[error("value for key `{key}` could not be encoded: {source}")]
    Encode {
        /// The key being written.
        key: String,
        /// What the serializer said.
        #[source]
        source: SharedError,
    },

    /// The stored value does not decode into the requested type.
    #[error("value at key `{key}` does not decode as `{type_name}` (at `{path}`): {source}")]
    Decode {
        /// The key read.
        key: String,
        /// The requested Rust type.
        type_name: &'static str,
        /// Where in the value decoding failed (`.` for the root).
        path: String,
        /// What the deserializer said.
        #[source]
        source: SharedError,
    },

    /// A precondition did not hold: the key changed since it was read.
    #[error("conflict on key `{key}`: expected {expected}, found {}", display_version(*.actual))]
    Conflict {
        /// The key written.
        key: String,
        /// The precondition that failed.
        expected: Precondition,
        /// The key's version on the backend when the write was refused, `None` when absent
        /// or unknown.
        actual: Option<Version>,
    },

    /// A conditional write's outcome cannot be told: an attempt failed in a
    /// way that may have applied it (an answer lost with the connection, a
    /// timeout), and the retry found its precondition no longer held, which is
    /// what the first attempt having applied would also look like.
    ///
    /// The store never guesses: the write may or may not be in the store.
    /// Read the key (with its version) and decide; an [`update`](crate::Store::update)
    /// that ends so is not retried, since its change may already be counted.
    /// Only conditional writes end so: an unconditional write is retried until
    /// it lands (writing the same value again is harmless).
    #[error(
        "the outcome of the write to key `{key}` (expecting {expected}) is unknown: an attempt \
         may have applied before its answer was lost; read the key to find out"
    )]
    OutcomeUnknown {
        /// The key written.
        key: String,
        /// The write's precondition.
        expected: Precondition,
    },

    /// A wait ran out before the backend acknowledged the write or the view caught up.
    ///
    /// The write itself is not cancelled: it stays queued and may still land.
    #[error("timed out after {timeout:?} waiting for {waiting_for}")]
    Timeout {
        /// What the call was waiting for (for example ``"`a` to be acknowledged"``).
        waiting_for: String,
        /// The timeout that ran out.
        timeout: Duration,
    },

    /// The store was closed (or its last handle dropped) before the call completed.
    #[error("the store is closed")]
    Closed,

    /// The backend cannot honour this operation (see [`crate::Capabilities`]).
    #[error("the {backend} backend does not support {operation}")]
    Unsupported {
        /// The backend's name.
        backend: &'static str,
        /// The operation refused.
        operation: &'static str,
    },

    /// A subscriber fell behind and missed changes; re-read with
    /// [`Store::snapshot`](crate::Store::snapshot) and carry on.
    #[error("subscriber lagged behind and missed {missed} changes")]
    Lagged {
        /// How many changes were dropped for this subscriber.
        missed: u64,
    },

    /// An on-ready hook failed, so start-up failed.
    #[error("on-ready hook `{hook}` failed: {source}")]
    Hook {
        /// The hook's name (the function name for `#[on_ready]`).
        hook: String,
        /// What the hook returned.
        #[source]
        source: SharedError,
    },

    /// The backend failed for a reason that retrying will not fix.
    #[error("{backend} backend error: {source}")]
    Backend {
        /// The backend's name.
        backend: &'static str,
        /// The underlying error.
        #[source]
        source: SharedError,
    },

    /// The backend is unreachable or overloaded for now; the store retries such failures
    /// itself, and returns this only where a single attempt was asked for.
    #[error("{backend} backend unavailable: {source}")]
    Unavailable {
        /// The backend's name.
        backend: &'static str,
        /// The underlying error.
        #[source]
        source: SharedError,
        /// How long the backend asked the client to wait, when it said (HTTP `Retry-After`).
        retry_after: Option<Duration>,
    },
}

fn list_failures(errors: &[Error], more: u64) -> String {
    const SHOWN: usize = 8;
    let mut out = errors
        .iter()
        .take(SHOWN)
        .map(Error::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let hidden = (errors.len().saturating_sub(SHOWN) as u64) + more;
    if hidden > 0 {
        out.push_str(&format!("; and {hidden} more"));
    }
    out
}

fn display_version(version: Option<Version>) -> String {
    match version {
        Some(v) => format!("version {v}"),
        None => "no value".to_owned(),
    }
}

impl Error {
    /// A permanent backend error.
    pub fn backend(backend: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Backend {
            backend,
            source: Arc::from(source.into()),
        }
    }

    /// A transient backend error: the store retries the operation with backoff.
    pub fn unavailable(backend: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Unavailable {
            backend,
            source: Arc::from(source.into()),
            retry_after: None,
        }
    }

    /// A transient backend error from a request that is known to have
    /// applied nothing (the server refused it before acting, as with HTTP 429,
    /// or it was never sent). The store retries it like any
    /// [`unavailable`](Self::unavailable) error, and a conditional write
    /// retried after it keeps a definite answer; after any other transient
    /// failure, a conditional write whose retry conflicts ends in
    /// [`Error::OutcomeUnknown`].
    pub fn not_applied(backend: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Unavailable {
            backend,
            source: Arc::new(NotApplied(source.into())),
            retry_after: None,
        }
    }

    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    /// Whether the failed operation is known to have applied nothing: a
    /// backend said so with [`Error::not_applied`] (or a source wrapped in
    /// [`NotApplied`]).
    pub fn is_not_applied(&self) -> bool {
        match self {
            Error::Unavailable { source, .. } => source.downcast_ref::<NotApplied>().is_some(),
            _ => false,
        }
    }

    /// The key the error is about, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Error::InvalidKey { key, .. }
            | Error::ValueTooLarge { key, .. }
            | Error::StoreFull { key, .. }
            | Error::Rejected { key, .. }
            | Error::Encode { key, .. }
            | Error::Decode { key, .. }
            | Error::Conflict { key, .. }
            | Error::OutcomeUnknown { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// The source of a transient backend error whose request applied nothing; see
/// [`Error::not_applied`]. Shows as its inner error.
#[derive(Debug)]
pub struct NotApplied(pub BoxError);

impl std::fmt::Display for NotApplied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for NotApplied {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

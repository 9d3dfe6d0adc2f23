//! The one error type of `store-session`.
//!
//! Variants name what failed and carry the key, the session or the limit
//! involved; failures of the durable tier's store keep their own type in
//! [`Error::Store`].

use std::fmt;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which per-session quota was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QuotaKind {
    /// Entries, live and durable together.
    Entries,
    /// Bytes of encoded JSON held by the durable tier.
    DurableBytes,
}

impl fmt::Display for QuotaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuotaKind::Entries => f.write_str("entries"),
            QuotaKind::DurableBytes => f.write_str("durable bytes"),
        }
    }
}

/// Everything a session call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The handle (or scope) points at data that is gone: its entry was removed
    /// or cleared, or its session was ended, reset or expired. Ask the scope
    /// again for a fresh handle; nothing was written.
    #[error("the handle for key `{key}` is outdated: its entry or session instance is gone")]
    Outdated {
        /// The handle's key (empty for a scope-wide call).
        key: String,
    },

    /// The key holds a value of another type than the one requested.
    #[error("key `{key}` holds a `{stored}`, not a `{requested}`")]
    TypeMismatch {
        /// The key.
        key: String,
        /// The type stored at the key.
        stored: &'static str,
        /// The type the caller asked for.
        requested: &'static str,
    },

    /// Writing would take the session over one of its quotas; nothing was written.
    #[error(
        "session `{session}` would hold {requested} {kind} for key `{key}`, over its limit of {limit}"
    )]
    QuotaExceeded {
        /// The session.
        session: String,
        /// The key being written.
        key: String,
        /// Which quota.
        kind: QuotaKind,
        /// The quota.
        limit: usize,
        /// What the session would hold after the write.
        requested: usize,
    },

    /// The session has ended (explicitly or by idle expiry).
    #[error("session `{session}` has ended")]
    SessionEnded {
        /// The session.
        session: String,
    },

    /// No session with this id is open in this registry.
    #[error("no session `{session}` is open")]
    NotFound {
        /// The session asked for.
        session: String,
    },

    /// A session id, realm or environment name is empty or holds a control character.
    #[error("invalid {what} name {name:?}: it must be non-empty and free of control characters")]
    InvalidName {
        /// What was named: `"session"`, `"realm"` or `"environment"`.
        what: &'static str,
        /// The rejected name.
        name: String,
    },

    /// The durable tier's store or its backend failed.
    #[error(transparent)]
    Store(#[from] store_core::Error),
}

impl Error {
    /// The key the error is about, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Error::Outdated { key }
            | Error::TypeMismatch { key, .. }
            | Error::QuotaExceeded { key, .. } => Some(key),
            Error::Store(e) => e.key(),
            _ => None,
        }
    }
}

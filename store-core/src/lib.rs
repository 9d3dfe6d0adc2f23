//! A typed, backend-agnostic async key-value store.
//!
//! ```
//! use store_core::{Key, Store};
//!
//! const GREETING: Key<String> = Key::new("https://onReady");
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> store_core::Result<()> {
//! // The in-memory backend is the embedded default.
//! let store = Store::builder()
//!     .on_ready("greet", |store: Store| async move {
//!         store.set_and_wait(GREETING, &"yep".to_owned()).await.map(|_| ())
//!     })
//!     .open()
//!     .await?;
//!
//! // Reads come from the local view; no backend call.
//! assert_eq!(store.get(GREETING)?.as_deref().map(String::as_str), Some("yep"));
//!
//! // Writes are queued and coalesced per key, and you see your own at once.
//! store.set("counter", &1)?;
//! store.set("counter", &2)?;
//! assert_eq!(store.get::<u32>("counter")?.as_deref(), Some(&2));
//!
//! // Read-modify-write with compare-and-set: no lost updates.
//! store.update("counter", |n: Option<&u32>| n.copied().unwrap_or(0) + 1).await?;
//! assert_eq!(store.get::<u32>("counter")?.as_deref(), Some(&3));
//!
//! store.remove_and_wait(GREETING).await?;
//! assert!(store.get(GREETING)?.is_none());
//! # Ok(()) }
//! ```
//!
//! # The calls
//!
//! | call | semantics |
//! |---|---|
//! | [`get`](Store::get) | synchronous, from the local view; sees this handle's pending writes; typed decode errors are errors, never panics |
//! | [`set`](Store::set) | returns at once after validation (key, encoding, size); queued, coalesced per key in call order, flushed in the background |
//! | [`set_and_wait`](Store::set_and_wait) | resolves when the backend acknowledged the write and the local view shows it; returns the new version |
//! | [`remove`](Store::remove) / [`remove_and_wait`](Store::remove_and_wait) | as above; removing a missing key is not an error |
//! | [`clear`](Store::clear) | removes every key the backend holds for this store (server truth, not the local view) |
//! | [`update`](Store::update) | read-modify-write with compare-and-set retry; no lost updates across replicas |
//! | [`update_if`](Store::update_if) | the same, but the closure may return `None` to leave the key alone: nothing is sent |
//! | [`compare_and_set`](Store::compare_and_set) | explicit precondition on version or absence |
//! | [`transaction`](Store::transaction) | several keys, each with an optional precondition, applied together or not at all (backends with atomic batches) |
//! | [`subscribe`](Store::subscribe) | a `Stream` of confirmed changes in order, filtered by key or prefix |
//! | [`keys`](Store::keys), [`len`](Store::len), [`snapshot`](Store::snapshot) | from the local view, with the revision it reflects |
//! | [`flush`](Store::flush), [`ready`](Store::ready) | wait for queued writes; wait for initial sync and on-ready hooks |
//!
//! Every wait is bounded by the store's timeout ([`StoreBuilder::timeout`],
//! [`Store::with_timeout`]) and fails with [`Error::Timeout`]; a timed-out write
//! is not cancelled. Keys follow the rules in [`key`]; an invalid key is refused
//! at the call with [`Error::InvalidKey`].
//!
//! A write that fails in the background is logged once at WARN with its key
//! (never its value) and reported by the next [`flush`](Store::flush) unless a
//! waiting call already returned it; several are reported together as
//! [`Error::WritesFailed`].
//!
//! # Backends
//!
//! A backend implements the small [`Backend`] trait and advertises what else it
//! can do in [`Capabilities`]. [`MemoryBackend`] is the embedded default;
//! `store-kube` keeps a store in Kubernetes custom resources. The memory backend
//! has no value-size limit by default; [`MemoryBackend::with_kube_limits`]
//! makes it refuse what the kube backend refuses, so tests on memory meet
//! production's limits. The `store-conformance` crate checks a backend
//! against every promise above.
//!
//! # Metrics
//!
//! Every store exports its figures through the [`metrics`](::metrics)
//! facade: writes queued, batches and their size, conflicts and retries,
//! `set_and_wait` latency, view lag and revision, watch restarts and gaps,
//! readiness. Names follow Prometheus conventions (`typed_store_*`, `_total`
//! counters, `_seconds` histograms) and are listed, with their labels, in
//! [`store_core::metrics`](crate::metrics). Without an installed recorder they cost a
//! branch each.
//!
//! # Features
//!
//! - `derive`: `#[derive(StoreValue)]` and `#[on_ready]`.
//! - `schema`: `#[store(schema)]` checks stored values against the type's
//!   `schemars` schema on reads.
//!
//! The conformance suite for backend authors, the fault layer and the
//! model-based runner are in the `store-conformance` crate, a dev-dependency.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backend;
mod backoff;
mod error;
mod flush;
pub mod hooks;
pub mod key;
mod memory;
pub mod metrics;
mod readiness;
mod shared;
mod store;
mod subscribe;
mod sync;
mod thin;
mod transaction;
mod value;
mod view;
mod writes;

pub use backend::{Backend, BoxBackend, Capabilities, Payload, Precondition, Revision, Version};
pub use error::{BoxError, Error, NotApplied, Result, SharedError};
pub use key::{AnyKey, AsKey, Key, KeyFamily};
pub use memory::{DEFAULT_HISTORY, KUBE_MAX_VALUE_SIZE, MemoryBackend};
pub use store::{DEFAULT_TIMEOUT, Snapshot, Store, StoreBuilder, Versioned};
pub use subscribe::{ChangeEvent, Subscription};
pub use transaction::Transaction;
pub use value::{PlainKey, StoreValue, decode};

#[cfg(feature = "derive")]
#[cfg_attr(docsrs, doc(cfg(feature = "derive")))]
pub use store_macros::{StoreValue, on_ready};

#[cfg(feature = "schema")]
mod schema;

/// What generated code names; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::hooks::{HookFuture, LinkedHook};
    pub use crate::key::{FromKeyArgs, KeyArg, KeyError, check as check_key, check_pattern};
    #[cfg(feature = "schema")]
    pub use crate::schema::{SchemaMismatch, validate as validate_schema};
    pub use crate::{BoxError, Error, Key, KeyFamily, PlainKey, Result, Store, StoreValue};
    pub use inventory;
    #[cfg(feature = "schema")]
    pub use schemars;
    pub use serde;
    pub use serde_json;
}

//! Kubernetes custom-resource backend for `store-core`.
//!
//! Every replica of an operator or admission webhook opens the same store and
//! shares it: reads come from a local view fed by a watch, writes are
//! coalesced, group-committed and sent as JSON Patch with `test` operations
//! for preconditions, and keys are spread over several objects so a store
//! holds far more than one object's 1.5 MiB.
//!
//! ```no_run
//! use store_core::Store;
//! use store_kube::KubeBackend;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = kube::Client::try_default().await?;
//! let backend = KubeBackend::builder(client, "my-operator")
//!     .namespace("my-operator-system")
//!     .capacity(8 * 1024 * 1024) // spread over enough shards for 8 MiB
//!     .build()
//!     .await?;
//! let store = Store::builder().backend(backend).open().await?;
//! store.set("exempt/kube-system", &true)?;
//! # Ok(()) }
//! ```
//!
//! # Resources
//!
//! A store named `s` lives in `StoreShard` objects (`storeshards.typedstore.dev`)
//! named `s-0` … `s-<n-1>`, labelled `typedstore.dev/store=s`, keys in
//! `spec.data`. `cargo xtask manifests` writes the CRD and a least-privilege
//! Role (`get`, `list`, `watch`, `create`, `patch` on `storeshards` in one
//! namespace) into `deploy/`.
//!
//! # Semantics worth knowing
//!
//! - **Versions** are the object's `resourceVersion` when a key last changed;
//!   a compare-and-set on a version tests the value the key had then (JSON
//!   Patch `test`), so a value changed and changed back passes, as the value is
//!   the same.
//! - **Absence** cannot be tested by JSON Patch; a write conditional on absence
//!   tests the object's `resourceVersion` and is re-planned on a fresh read if
//!   the object changed meanwhile. It is refused only when the server shows the
//!   key, never on the word of a watch that may lag behind.
//! - **Size**: each object is kept under a budget (by default etcd's 1.5 MiB
//!   request limit less 4 KiB, counting the object's JSON as the server
//!   returns it, `managedFields` included); a value that can never fit is
//!   refused at the call with `ValueTooLarge`; a write to a full shard fails
//!   alone with `StoreFull`.
//! - **A write the server refuses for good** (its schema refuses the object
//!   as patched, e.g. an empty string, which kube-apiserver 1.20 reads as
//!   `null` in a `data` map) fails alone with `Rejected`, at once, and the
//!   other writes of the same flush are applied.
//! - **A deleted object** is recreated at once, empty; its keys read as removed
//!   and subscribers see the removals.
//! - **Pepr-compatible mode** ([`KubeBackendBuilder::pepr`]) reads and writes
//!   the `PeprStore` layout so Rust and TypeScript Pepr pods share one store.
//!   Values there are strings, as in Pepr: a Rust `String` is stored as its
//!   text, any other value as its JSON text. Reading, a `String` gets the
//!   stored text exactly (even text that is itself JSON, such as `{"a":1}`),
//!   and any other type is decoded from the text as JSON, so `"42"` reads as
//!   `42u32` and `{"a":1}` as a struct.
//! - **Quiet gaps for Pepr pods**: a TypeScript Pepr pod applies a watch
//!   event only after a second without another, so in Pepr mode a store sends
//!   at most one batch per [`PEPR_WRITE_GAP`] (1.25 s), coalescing what is
//!   written meanwhile; the first write after a quiet gap goes at once. Tune
//!   or turn it off with [`KubeBackendBuilder::pepr_write_gap`].
//! - **Testing on memory with these limits**:
//!   `store_core::MemoryBackend::new().with_kube_limits()` refuses values as
//!   this backend does with its default limits, so code tested on the memory
//!   backend meets the limits it will meet here.
//! - **Pepr v1 keys** are copied to v2 at start-up and their originals removed
//!   after [`KubeBackendBuilder::pepr_v1_removal_delay`], so a Pepr pod starting
//!   beside the store completes its own migration.
//!
//! # Metrics
//!
//! Beside the store's own figures (`store_core::metrics`), the backend
//! exports its requests to the API server by verb and outcome, their
//! duration, watch restarts, re-lists and watcher errors through the
//! [`metrics`](::metrics) facade; every name and label is in [`metrics`].
//!
//! # Logs
//!
//! The backend never logs a value: its events name objects, count keys and
//! carry errors whose messages hold none. kube-client does in one case: a
//! response it cannot decode (from a proxy, or an API server answering
//! something other than the object) is logged whole at WARN under the
//! `kube_client::client` target, and a store object's body holds its values.
//! Where logs must never hold values, keep that target at ERROR, for example
//! `RUST_LOG=info,kube_client::client=error`.

mod backend;
mod cache;
mod config;
mod error;
mod feed;
pub mod layout;
pub mod metrics;
mod migration;
pub mod resource;
mod shared;
mod writer;

pub use backend::{KubeBackend, KubeBackendBuilder, PEPR_NAMESPACE, PEPR_WRITE_GAP};
pub use config::ConfigError;
pub use migration::{PeprV1Key, pepr_v1_keys};
pub use writer::DEFAULT_OBJECT_BUDGET;

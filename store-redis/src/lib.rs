//! Redis backend for `store-core`, for session servers that outgrow one
//! process.
//!
//! Every process that opens the same store name (under the same key prefix)
//! on the same Redis deployment shares one store: writes from one show up in
//! the others' watches, and compare-and-set between them is exact, decided on
//! the server.
//!
//! ```no_run
//! use store_core::Store;
//! use store_redis::RedisBackend;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let backend = RedisBackend::builder("redis://:password@127.0.0.1:6379/0", "sessions")
//!     .prefix("my-app")
//!     .build()
//!     .await?;
//! let store = Store::builder().backend(backend).open().await?;
//! store.set("session/42", &"alice")?;
//! store.flush().await?;
//! # Ok(()) }
//! ```
//!
//! # URLs
//!
//! - `redis://[user[:password]@]host[:port][/db]`: one server;
//!   `rediss://` for TLS (with the default `tls` feature: rustls, trusting
//!   the platform's roots, or those given to
//!   [`RedisBackendBuilder::tls_root_certificates`]).
//! - `redis+cluster://[user[:password]@]host:port[,host:port...]`: a Redis
//!   Cluster given by one or more seed nodes (`rediss+cluster://` for TLS);
//!   the rest of the cluster is discovered from them.
//! - `redis://a:6379,redis://b:6379`: a comma-separated list of URLs is a
//!   cluster seeded by those nodes.
//!
//! URLs are never shown with their credentials: [`Endpoint`]'s `Debug` and
//! `Display`, the builder's `Debug` and every error replace them with `***`.
//! Values never reach a log either: this crate logs store names, counts and
//! errors whose messages quote no value.
//!
//! # Layout
//!
//! A store `s` under prefix `p` is five keys sharing the hash tag `{p:s}`,
//! so they live in one hash slot: on a cluster, one store lives on one
//! node (and its replicas) and many stores spread over the cluster.
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `{p:s}:rev` | string | the store's revision |
//! | `{p:s}:val` | hash | key → value (JSON text) |
//! | `{p:s}:ver` | hash | key → version (the revision of its last change) |
//! | `{p:s}:exp` | sorted set | keys with a time to live, by deadline |
//! | `{p:s}:log` | stream | the change log: one entry per revision |
//!
//! plus short-lived `{p:s}:done:<batch>` keys holding a batch's answer for
//! resends (one per batch, about 50 bytes, kept for twice the write retry
//! window plus 10 s: 30 s by default).
//!
//! # Writes
//!
//! A batch is one Lua script (sent by hash with `EVALSHA`, loaded again on
//! `NOSCRIPT`): it checks preconditions, writes, bumps the revision and
//! appends the change-log entry atomically. An all-or-nothing batch whose
//! precondition fails writes nothing. A write that changes nothing (the same
//! value again) makes no revision.
//!
//! Every batch carries a random id, and the script records its answer under
//! that id for a while. When the connection fails before the answer arrives,
//! the backend reconnects and sends the same batch again; a batch that had
//! applied is answered from its record and applies once. Only when no
//! answer comes within [`RedisBackendBuilder::write_retry_window`] (default
//! 10 s) does the write fail, with [`Error::Unavailable`](store_core::Error)
//! whose source is [`RedisStoreError::OutcomeUnknown`]: the batch may or may
//! not have applied, and the store sends its writes again.
//!
//! # Watches
//!
//! A watch reads the change log after its revision. One extra connection per
//! backend blocks on the log (`XREAD BLOCK`) and wakes the watches when it
//! grows; they also ask on their own once a second. The log keeps about
//! [`RedisBackendBuilder::history`] revisions (`XADD MAXLEN ~`); a watch that
//! falls further behind, or finds the store's revision behind its own (the
//! data was lost), gets a gap and the store re-lists.
//!
//! # Revisions
//!
//! A store's first revision is the server's clock in microseconds, and each
//! revision that changes something adds one. Revisions are not dense from 0:
//! a watch from `Revision(0)` gets a gap (re-list), as a store's own watch,
//! which starts from its listing, never does. Starting from the clock keeps
//! revisions growing across a loss of the data, as long as the server's clock
//! does not go back and the store makes fewer than a million revisions a
//! second.
//!
//! # Time to live
//!
//! A put may carry a time to live, measured by the server's clock. Reads and
//! listings hide a key once its time is up; it is removed, with a change of
//! its own in the log, by the next write or by the expiry task that every
//! watching backend (and every backend that writes such a key) runs. The
//! task wakes at the next deadline: it hears of new deadlines from its own
//! writes and from its watches (the log marks puts with a time to live), so
//! keys expire on time, on every replica, even when their writer is gone.
//! It also looks once a second while keys are due to expire and every 5 s
//! while none are: one small script per backend.
//!
//! # Durability
//!
//! An acknowledged write (the script returned) is in the server's memory.
//! Whether it survives a crash of the server is Redis's persistence setting:
//!
//! - `appendonly yes` with `appendfsync always`: the append-only file is
//!   written and fsynced before the server answers, so every acknowledged
//!   write survives `kill -9` and a power cut (this crate's tests prove the
//!   first with `kill -9` and a restart). Each batch is one script, logged
//!   as one transaction, so a crash never leaves half a batch.
//! - `appendfsync everysec` (Redis's default with `appendonly yes`): up to
//!   about a second of acknowledged writes may be lost.
//! - RDB snapshots only, or no persistence: everything since the last
//!   snapshot is lost. A store whose data is lost starts again at a revision
//!   above every one it had (see *Revisions*): watches see a gap and stores
//!   re-list, so they show the loss instead of stalling on it.
//!
//! Replication is asynchronous: on a failover, writes the old primary
//! acknowledged but had not yet sent to the promoted replica are lost,
//! whatever the persistence setting, unless the backend waits for replicas:
//! with [`RedisBackendBuilder::wait_for_replicas`] a batch is acknowledged
//! only once that many replicas have it (`WAIT`), and fails with
//! [`RedisStoreError::NotReplicated`] otherwise (the store sends it again).
//! The tests fail a cluster primary over this way and find every
//! acknowledged write on the promoted replica. `WAIT` holds the backend's
//! connection until the replicas answer, so each batch costs a replication
//! round trip.
//!
//! [`RedisBackend::persistence`] reads the setting of the node that holds the
//! store, and `build` logs a warning when it does not keep every
//! acknowledged write through a crash.
//!
//! `appendfsync always` costs an fsync per batch: on the 2-core test
//! machine a one-op batch took about 3.2 ms with it and 0.14 ms with
//! `everysec` (a debug build, loopback, one connection); the store groups
//! queued writes into batches of up to [`MAX_BATCH_OPS`], so a busy store
//! pays it per batch, not per write (about 32,000 `set`s a second either way).
//!
//! [`Capabilities::durable`](store_core::Capabilities) is set because the
//! store outlives every client process; whether it outlives a crash of the
//! server is the setting above.
//!
//! # Cluster
//!
//! With a cluster URL the backend uses redis-rs's cluster client: it follows
//! `MOVED` and `ASK`, refreshes the slot map and reconnects after a node
//! restart or a failover. The scripts touch only keys of the store's hash
//! tag, so they run on the one node that owns it. Each backend holds one
//! multiplexed connection for requests and one for blocking on the log.
//!
//! # Metrics
//!
//! Beside the store's own figures (`store_core::metrics`), the backend
//! exports the commands it sends by script or command and outcome, their
//! duration, and resent batches through the [`metrics`](::metrics) facade;
//! every name and label is in [`metrics`].
//!
//! # Limits
//!
//! - A batch holds at most [`MAX_BATCH_OPS`] ops; the store splits larger
//!   flushes.
//! - Values are at most [`RedisBackendBuilder::max_value_size`] bytes
//!   (default 16 MiB).
//! - A listing is one script answer holding the whole matching store; a store
//!   is meant for what fits comfortably in one answer (tens of MiB).
//! - A store lives on one node: its size and write rate are one node's.
//! - Redis 7.0 or newer: scripts replicate by their effects there, so they may
//!   read the server's clock (`TIME`).

mod backend;
mod config;
mod conn;
mod error;
pub mod metrics;
mod scripts;

pub use backend::{
    BuildError, DEFAULT_HISTORY, DEFAULT_MAX_VALUE_SIZE, DEFAULT_PREFIX, MAX_BATCH_OPS,
    Persistence, RedisBackend, RedisBackendBuilder,
};
pub use config::{ConfigError, Endpoint, redact};
pub use error::RedisStoreError;

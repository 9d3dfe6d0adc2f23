//! The backend contract: what a storage engine implements so a [`Store`](crate::Store)
//! can sit on it.
//!
//! The required core is small: a versioned read, a prefix listing, applying a
//! batch of puts and deletes with optional preconditions, and a watch from a
//! revision that says plainly when it cannot continue (a gap: re-list). What a
//! backend can do beyond that it advertises in [`Capabilities`]; anything it
//! cannot honour it refuses with [`Error::Unsupported`], never silently.
//!
//! Revisions and versions: a backend keeps one monotonically increasing
//! [`Revision`] per store; every write that changes something happens at a new
//! revision, and a key's [`Version`] is the revision at which it last changed.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arcstr::ArcStr;
use futures_core::Stream;

use crate::error::{Error, Result};
use crate::thin::{DecodeCache, Thin};

/// A point in a backend's history. Only grows. A fresh store's history may
/// start anywhere at or above 0: store-redis starts each store at its
/// server's clock, so a store lost with its server and made again never goes
/// back to revisions its replicas have seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision(pub u64);

/// The revision at which a key last changed. Versions of one key only grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u64);

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An encoded value as the backend stores it: UTF-8 JSON text.
///
/// Cheap to clone (shared) and one pointer wide. The front-end encodes with
/// `serde_json`; a backend stores the text unchanged and hands it back
/// unchanged. The allocation also caches the value decoded, for the first
/// type a store asks for, so every store reading it shares one decode.
#[derive(Clone)]
pub struct Payload(Thin);

impl Payload {
    /// Wraps JSON text (copied once). The text is not checked: decoding
    /// reports bad JSON per key.
    pub fn new(json: impl AsRef<str>) -> Self {
        Payload(Thin::new("", json.as_ref(), 0))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.value()
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.as_str().len()
    }

    /// Whether the text is empty (never valid JSON).
    pub fn is_empty(&self) -> bool {
        self.as_str().is_empty()
    }

    /// Whether two payloads are one allocation (equal text is `==`).
    pub fn ptr_eq(&self, other: &Payload) -> bool {
        self.0.ptr_eq(&other.0)
    }

    /// The value decoded for the first type asked for.
    pub(crate) fn decoded(&self) -> &DecodeCache {
        self.0.decoded()
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.ptr_eq(other) || self.as_str() == other.as_str()
    }
}

impl Eq for Payload {}

impl std::hash::Hash for Payload {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for Payload {
    /// Values are redacted: they may hold secrets and must never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload(<{} bytes redacted>)", self.len())
    }
}

impl From<String> for Payload {
    fn from(json: String) -> Self {
        Payload::new(json)
    }
}

impl From<&str> for Payload {
    fn from(json: &str) -> Self {
        Payload::new(json)
    }
}

/// A key as backends hand out removals, and as stores index keys: one
/// allocation behind a one-pointer handle that compares, hashes and derefs as
/// its text (`"k".into()` makes one).
pub type SharedKey = ArcStr;

/// A stored key with its value and version, in one allocation shared by the
/// backend's cache and every store's view: a handle is one pointer, and the
/// key, the value's text and the version sit together behind it.
#[derive(Clone)]
pub struct Entry(Payload);

impl Entry {
    /// Copies `key` and `value` into a new entry.
    ///
    /// # Panics
    ///
    /// If `key` is 4 GiB or longer (front-end keys are at most 1,024 bytes).
    pub fn new(key: &str, value: &str, version: Version) -> Self {
        Entry(Payload(Thin::new(key, value, version.0)))
    }

    /// The key.
    pub fn key(&self) -> &str {
        self.0.0.key()
    }

    /// The encoded value (the same allocation: no copy).
    pub fn value(&self) -> &Payload {
        &self.0
    }

    /// The revision at which the key last changed.
    pub fn version(&self) -> Version {
        Version(self.0.0.version())
    }

    /// Whether two entries are one allocation.
    pub fn ptr_eq(&self, other: &Entry) -> bool {
        self.0.ptr_eq(&other.0)
    }

    /// The same value and version under another key (a copy).
    pub fn rekeyed(&self, key: &str) -> Entry {
        Entry::new(key, self.value().as_str(), self.version())
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.ptr_eq(other)
            || (self.key() == other.key()
                && self.version() == other.version()
                && self.value() == other.value())
    }
}

impl Eq for Entry {}

impl fmt::Debug for Entry {
    /// The value is redacted, as [`Payload`]'s is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("key", &self.key())
            .field("value", self.value())
            .field("version", &self.version())
            .finish()
    }
}

/// A backend's whole state at one revision, immutable and shared.
///
/// A backend that keeps its entries in immutable pieces (store-kube keeps
/// each object's entries as one sorted slice, rebuilt whole on every event)
/// can hand one out with a listing ([`Backend::list_index`]) and with each
/// watch event ([`WatchEvent::Changes`]'s `index`): every store's view on it
/// then holds a pointer to it, not a table of its own of every key.
pub trait Index: Send + Sync + 'static {
    /// The entry of `key`.
    fn get(&self, key: &str) -> Option<&Entry>;

    /// How many keys it holds.
    fn len(&self) -> usize;

    /// Whether it holds no key.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, in no particular order.
    fn entries(&self) -> Box<dyn Iterator<Item = &Entry> + '_>;
}

/// Entries by key are an index (for a small backend, or a backend's tests).
impl Index for std::collections::BTreeMap<String, Entry> {
    fn get(&self, key: &str) -> Option<&Entry> {
        std::collections::BTreeMap::get(self, key)
    }

    fn len(&self) -> usize {
        std::collections::BTreeMap::len(self)
    }

    fn entries(&self) -> Box<dyn Iterator<Item = &Entry> + '_> {
        Box::new(self.values())
    }
}

/// A shared [`Index`]; two are equal when they are one allocation.
#[derive(Clone)]
pub struct SharedIndex(pub Arc<dyn Index>);

impl SharedIndex {
    /// Shares `index`.
    pub fn new(index: impl Index) -> Self {
        SharedIndex(Arc::new(index))
    }
}

impl std::ops::Deref for SharedIndex {
    type Target = dyn Index;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl PartialEq for SharedIndex {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.0), Arc::as_ptr(&other.0))
    }
}

impl Eq for SharedIndex {}

impl fmt::Debug for SharedIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedIndex")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// The result of [`Backend::list`]: every matching entry as of one revision.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Entries in key order.
    pub entries: Vec<Entry>,
    /// The revision the listing reflects; watch from here to follow on.
    pub revision: Revision,
}

/// A condition a write needs to hold on the backend before it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// The key must not exist.
    Absent,
    /// The key must exist at exactly this version.
    Version(Version),
}

impl fmt::Display for Precondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Precondition::Absent => f.write_str("no value"),
            Precondition::Version(v) => write!(f, "version {v}"),
        }
    }
}

/// What an [`Op`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    /// Store a value, optionally expiring after a time to live
    /// (needs [`Capabilities::ttl`]).
    Put {
        /// The value.
        value: Payload,
        /// Expire the key this long after the write.
        ttl: Option<Duration>,
    },
    /// Remove the key; removing a missing key is not an error.
    Delete,
}

/// One write in a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// The key written.
    pub key: String,
    /// Put or delete.
    pub kind: OpKind,
    /// Apply only if this holds (needs [`Capabilities::compare_and_set`]).
    pub precondition: Option<Precondition>,
}

impl Op {
    /// An unconditional put.
    pub fn put(key: impl Into<String>, value: Payload) -> Self {
        Op {
            key: key.into(),
            kind: OpKind::Put { value, ttl: None },
            precondition: None,
        }
    }

    /// An unconditional delete.
    pub fn delete(key: impl Into<String>) -> Self {
        Op {
            key: key.into(),
            kind: OpKind::Delete,
            precondition: None,
        }
    }

    /// The same op, applied only if `precondition` holds.
    pub fn when(mut self, precondition: Precondition) -> Self {
        self.precondition = Some(precondition);
        self
    }
}

/// Writes sent to the backend together.
///
/// Ops on different keys are independent unless `atomic` is set. Ops on the
/// same key apply in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// The writes, in call order.
    pub ops: Vec<Op>,
    /// All or nothing: if any precondition fails, nothing applies
    /// (needs [`Capabilities::atomic_batch`]).
    pub atomic: bool,
}

/// What happened to one [`Op`] of a batch.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The op applied; the key now has this version (for a delete, the revision of the
    /// delete, or the current revision when the key was already missing).
    Applied(Version),
    /// The precondition failed; nothing was written for this op. `actual` is the key's
    /// version on the backend (`None` when absent).
    Conflict {
        /// The key's current version on the backend, `None` when absent.
        actual: Option<Version>,
    },
    /// Not applied because another op of an atomic batch failed its precondition.
    Aborted,
    /// Not applied, for good, for a reason of this op's own (for example
    /// [`Error::ValueTooLarge`] when its shard is full); the other ops are unaffected.
    Failed(Error),
}

/// The result of [`Backend::apply`].
#[derive(Debug, Clone)]
pub struct Applied {
    /// The backend's revision once the batch was applied. A watch from before this
    /// revision delivers every change the batch made by the time it reaches it.
    pub revision: Revision,
    /// One outcome per op, in the batch's order.
    pub outcomes: Vec<Outcome>,
}

/// One key's change, as seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The key now holds this entry, whose version is the revision of the
    /// [`WatchEvent::Changes`] that carries it.
    Put(Entry),
    /// The key was removed.
    Removed(SharedKey),
}

impl Change {
    /// The key changed.
    pub fn key(&self) -> &str {
        match self {
            Change::Put(entry) => entry.key(),
            Change::Removed(key) => key,
        }
    }

    /// The new value, `None` when removed.
    pub fn value(&self) -> Option<&Payload> {
        match self {
            Change::Put(entry) => Some(entry.value()),
            Change::Removed(_) => None,
        }
    }

    /// The change with `prefix` taken off its key (a copy); `None` when the
    /// key does not start with it.
    pub fn strip_prefix(&self, prefix: &str) -> Option<Change> {
        let key = self.key().strip_prefix(prefix)?;
        Some(match self {
            Change::Put(entry) => Change::Put(entry.rekeyed(key)),
            Change::Removed(_) => Change::Removed(key.into()),
        })
    }
}

/// What a watch delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The changes made at one revision, in order.
    Changes {
        /// The revision they happened at.
        revision: Revision,
        /// The changed keys (at least one).
        changes: Vec<Change>,
        /// The backend's whole state at `revision`, when it keeps one (see
        /// [`Index`]): a store's view then holds it rather than applying
        /// `changes` to a copy. `None` is always correct; a wrapper that
        /// changes keys or leaves changes out must make it `None`.
        index: Option<SharedIndex>,
    },
    /// Nothing changed up to this revision (a bookmark): the watcher is current.
    Progress(Revision),
    /// The watch cannot continue from where it is (history compacted, watcher too slow):
    /// the caller must re-list and watch again from the listing's revision.
    Gap,
}

/// A stream of watch events; it ends when the backend closes it (the caller
/// watches again from the last revision it saw).
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent>> + Send + 'static>>;

/// What a backend can do beyond the required core.
///
/// Start from [`Capabilities::default`] (nothing optional) and add what the
/// backend honours: `Capabilities::default().with_compare_and_set().with_ttl()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Capabilities {
    /// Ops may carry a [`Precondition`].
    pub compare_and_set: bool,
    /// A [`Batch`] may be `atomic`.
    pub atomic_batch: bool,
    /// Acknowledged writes survive a restart of this process.
    pub durable: bool,
    /// Several processes see one store (writes in one show up in the others' watches).
    pub shared: bool,
    /// Puts may carry a time to live.
    pub ttl: bool,
    /// The largest encoded value accepted, in bytes.
    pub max_value_size: Option<usize>,
    /// The most ops accepted in one batch.
    pub max_batch_ops: Option<usize>,
    /// Values are kept as text, as a Pepr store keeps them: every value reads
    /// back as a JSON string of its text. A `String` read returns that text
    /// exactly; a read of any other type that does not take a string decodes
    /// the text as JSON (so `"42"` reads as `42u32` and `{"a":1}` as a struct).
    /// An empty string is refused at the call with
    /// [`Error::Rejected`]: such a store cannot hold it
    /// (Pepr reads empty text as no value, and the API server refuses it).
    pub text_values: bool,
    /// The quiet time this backend asks for between two batches of one store:
    /// the store sends at most one batch per gap, coalescing what is queued
    /// meanwhile (see [`StoreBuilder::min_write_gap`](crate::StoreBuilder::min_write_gap)).
    /// `None`: send as soon as the backend is idle.
    pub min_write_gap: Option<Duration>,
}

impl Capabilities {
    /// Adds [`compare_and_set`](Self::compare_and_set).
    pub const fn with_compare_and_set(mut self) -> Self {
        self.compare_and_set = true;
        self
    }

    /// Adds [`atomic_batch`](Self::atomic_batch).
    pub const fn with_atomic_batch(mut self) -> Self {
        self.atomic_batch = true;
        self
    }

    /// Adds [`durable`](Self::durable).
    pub const fn with_durable(mut self) -> Self {
        self.durable = true;
        self
    }

    /// Adds [`shared`](Self::shared).
    pub const fn with_shared(mut self) -> Self {
        self.shared = true;
        self
    }

    /// Adds [`ttl`](Self::ttl).
    pub const fn with_ttl(mut self) -> Self {
        self.ttl = true;
        self
    }

    /// Adds [`text_values`](Self::text_values).
    pub const fn with_text_values(mut self) -> Self {
        self.text_values = true;
        self
    }

    /// Sets [`min_write_gap`](Self::min_write_gap).
    pub const fn with_min_write_gap(mut self, gap: Option<Duration>) -> Self {
        self.min_write_gap = gap;
        self
    }

    /// Sets [`max_value_size`](Self::max_value_size).
    pub const fn with_max_value_size(mut self, bytes: Option<usize>) -> Self {
        self.max_value_size = bytes;
        self
    }

    /// Sets [`max_batch_ops`](Self::max_batch_ops).
    pub const fn with_max_batch_ops(mut self, ops: Option<usize>) -> Self {
        self.max_batch_ops = ops;
        self
    }
}

/// A storage engine a [`Store`](crate::Store) can sit on.
///
/// Implement the five methods; the front-end does coalescing, batching,
/// retries of [`Error::Unavailable`], read-your-writes, waits and
/// subscriptions. A backend that keeps its whole state as an immutable
/// [`Index`] also implements [`list_index`](Self::list_index) and hands its
/// index out with each watch event, so stores share it. Return [`Error::Unavailable`] for failures that may pass
/// (the front-end retries with backoff) and [`Error::Backend`] for the rest.
pub trait Backend: Send + Sync + 'static {
    /// A short name for errors and logs, such as `"memory"` or `"kube"`.
    fn name(&self) -> &'static str;

    /// The name of the store this connection reaches, where the backend was
    /// given one (a kube backend's store or Pepr capability, a Redis
    /// backend's store). A [`Store`](crate::Store) on it takes this name
    /// unless [`StoreBuilder::name`](crate::StoreBuilder::name) sets another,
    /// so one store has one name, in logs and for
    /// `#[on_ready(store = "...")]` hooks alike. The default is `None`
    /// (the store is then called `"default"`).
    fn store_name(&self) -> Option<&str> {
        None
    }

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Reads one key with its version, straight from the backend.
    fn read(&self, key: &str) -> impl Future<Output = Result<Option<Entry>>> + Send;

    /// Lists every entry whose key starts with `prefix` (all for `""`), as of one revision.
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Listing>> + Send;

    /// Every entry as one shared [`Index`], with the revision it reflects (as
    /// `list("")` would give them), when the backend keeps one. A store's
    /// view holds it, and follows on with the indexes its watch events carry.
    /// The default is `None`: the store lists and keeps a table of its own.
    fn list_index(&self) -> impl Future<Output = Result<Option<(SharedIndex, Revision)>>> + Send {
        std::future::ready(Ok(None))
    }

    /// Applies a batch; see [`Batch`] and [`Outcome`]. Returns `Err` only when the
    /// whole batch failed: a failed precondition is an [`Outcome::Conflict`], not an error.
    fn apply(&self, batch: Batch) -> impl Future<Output = Result<Applied>> + Send;

    /// Watches every change after `from` (exclusive), in revision order.
    fn watch(&self, from: Revision) -> impl Future<Output = Result<WatchStream>> + Send;

    /// Like [`watch`](Self::watch), passing only changes to keys that start with
    /// `prefix`; a revision with none of them arrives as [`WatchEvent::Progress`].
    ///
    /// The default filters [`watch`](Self::watch)'s events. A backend that can
    /// filter before it copies changes out (as [`MemoryBackend`](crate::MemoryBackend)
    /// does) should, so many narrow watchers cost little.
    fn watch_prefix(
        &self,
        from: Revision,
        prefix: &str,
    ) -> impl Future<Output = Result<WatchStream>> + Send {
        let prefix = prefix.to_owned();
        async move {
            let stream = self.watch(from).await?;
            Ok(Box::pin(futures_util::StreamExt::map(stream, move |event| {
                event.map(|event| keep_prefix(&prefix, event))
            })) as WatchStream)
        }
    }
}

/// Keeps the changes under `prefix`; a revision with none left becomes progress.
fn keep_prefix(prefix: &str, event: WatchEvent) -> WatchEvent {
    match event {
        WatchEvent::Changes {
            revision,
            mut changes,
            index: _,
        } => {
            changes.retain(|change| change.key().starts_with(prefix));
            if changes.is_empty() {
                WatchEvent::Progress(revision)
            } else {
                // The index is the whole state, not what the filter keeps.
                WatchEvent::Changes {
                    revision,
                    changes,
                    index: None,
                }
            }
        }
        other => other,
    }
}

/// Checks a batch against the backend's capabilities, so every backend refuses
/// the same way.
pub fn check_batch(backend: &'static str, caps: &Capabilities, batch: &Batch) -> Result<()> {
    let unsupported = |operation| Err(Error::Unsupported { backend, operation });
    if batch.atomic && !caps.atomic_batch {
        return unsupported("atomic batches");
    }
    if let Some(max) = caps.max_batch_ops
        && batch.ops.len() > max
    {
        return unsupported("batches of this many operations");
    }
    for op in &batch.ops {
        if op.precondition.is_some() && !caps.compare_and_set {
            return unsupported("compare-and-set");
        }
        if let OpKind::Put {
            value,
            ttl: Some(_),
        } = &op.kind
        {
            if !caps.ttl {
                return unsupported("time to live");
            }
            check_size(&op.key, value, caps)?;
        } else if let OpKind::Put { value, .. } = &op.kind {
            check_size(&op.key, value, caps)?;
        }
    }
    Ok(())
}

fn check_size(key: &str, value: &Payload, caps: &Capabilities) -> Result<()> {
    match caps.max_value_size {
        Some(limit) if value.len() > limit => Err(Error::ValueTooLarge {
            key: key.to_owned(),
            size: value.len(),
            limit,
        }),
        _ => Ok(()),
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Any [`Backend`] behind one concrete type, as tower's `BoxService` is any
/// service: for code that holds "some backend" without being generic over it
/// (a registry of stores, a wrapper chosen at run time). Cheap to clone:
/// clones share the backend.
///
/// ```
/// use store_core::backend::BoxBackend;
/// use store_core::{MemoryBackend, Store};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> store_core::Result<()> {
/// let backends = vec![BoxBackend::new(MemoryBackend::new())];
/// let store = Store::builder().backend(backends[0].clone()).open().await?;
/// store.set_and_wait("k", &1).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct BoxBackend(Arc<dyn DynBackend>);

impl BoxBackend {
    /// Boxes `backend`.
    pub fn new(backend: impl Backend) -> Self {
        BoxBackend(Arc::new(backend))
    }
}

impl fmt::Debug for BoxBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BoxBackend").field(&self.0.name()).finish()
    }
}

impl Backend for BoxBackend {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn store_name(&self) -> Option<&str> {
        self.0.store_name()
    }
    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }
    async fn read(&self, key: &str) -> Result<Option<Entry>> {
        self.0.read(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Listing> {
        self.0.list(prefix).await
    }
    async fn list_index(&self) -> Result<Option<(SharedIndex, Revision)>> {
        self.0.list_index().await
    }
    fn apply(&self, batch: Batch) -> impl Future<Output = Result<Applied>> + Send {
        self.0.apply(batch)
    }
    fn watch(&self, from: Revision) -> impl Future<Output = Result<WatchStream>> + Send {
        self.0.watch(from)
    }
    async fn watch_prefix(&self, from: Revision, prefix: &str) -> Result<WatchStream> {
        self.0.watch_prefix(from, prefix).await
    }
}

/// A shared backend is a backend: `Arc<B>` delegates to `B`.
impl<B: Backend> Backend for Arc<B> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn store_name(&self) -> Option<&str> {
        (**self).store_name()
    }
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    fn read(&self, key: &str) -> impl Future<Output = Result<Option<Entry>>> + Send {
        (**self).read(key)
    }
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Listing>> + Send {
        (**self).list(prefix)
    }
    fn list_index(&self) -> impl Future<Output = Result<Option<(SharedIndex, Revision)>>> + Send {
        (**self).list_index()
    }
    fn apply(&self, batch: Batch) -> impl Future<Output = Result<Applied>> + Send {
        (**self).apply(batch)
    }
    fn watch(&self, from: Revision) -> impl Future<Output = Result<WatchStream>> + Send {
        (**self).watch(from)
    }
    fn watch_prefix(
        &self,
        from: Revision,
        prefix: &str,
    ) -> impl Future<Output = Result<WatchStream>> + Send {
        (**self).watch_prefix(from, prefix)
    }
}

/// Object-safe mirror of [`Backend`], behind [`BoxBackend`] and a
/// [`Store`](crate::Store)'s handle on its backend.
pub(crate) trait DynBackend: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn store_name(&self) -> Option<&str>;
    fn capabilities(&self) -> Capabilities;
    fn read<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>>>;
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Listing>>;
    fn list_index(&self) -> BoxFuture<'_, Result<Option<(SharedIndex, Revision)>>>;
    fn apply(&self, batch: Batch) -> BoxFuture<'_, Result<Applied>>;
    fn watch(&self, from: Revision) -> BoxFuture<'_, Result<WatchStream>>;
    fn watch_prefix<'a>(
        &'a self,
        from: Revision,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<WatchStream>>;
}

impl<B: Backend> DynBackend for B {
    fn name(&self) -> &'static str {
        Backend::name(self)
    }
    fn store_name(&self) -> Option<&str> {
        Backend::store_name(self)
    }
    fn capabilities(&self) -> Capabilities {
        Backend::capabilities(self)
    }
    fn read<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>>> {
        Box::pin(Backend::read(self, key))
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Listing>> {
        Box::pin(Backend::list(self, prefix))
    }
    fn list_index(&self) -> BoxFuture<'_, Result<Option<(SharedIndex, Revision)>>> {
        Box::pin(Backend::list_index(self))
    }
    fn apply(&self, batch: Batch) -> BoxFuture<'_, Result<Applied>> {
        Box::pin(Backend::apply(self, batch))
    }
    fn watch(&self, from: Revision) -> BoxFuture<'_, Result<WatchStream>> {
        Box::pin(Backend::watch(self, from))
    }
    fn watch_prefix<'a>(
        &'a self,
        from: Revision,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<WatchStream>> {
        Box::pin(Backend::watch_prefix(self, from, prefix))
    }
}

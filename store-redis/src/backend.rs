//! [`RedisBackend`]: a `store-core` backend on one Redis hash slot per store.
//!
//! Every read, listing and batch is one Lua script (see `scripts`), so a
//! batch, its revision bump and its change-log entry land together or not at
//! all. Watches read the change log after their revision; one connection per
//! backend blocks on the log (`XREAD BLOCK`) and wakes them when it grows.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::Value;
use store_core::backend::{
    Applied, Batch, Change, Entry, Listing, OpKind, Outcome, Precondition, WatchEvent, WatchStream,
    check_batch,
};
use store_core::{Backend, Capabilities, Error, Result, Revision, Version};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::config::{ConfigError, Endpoint, Keys, check_name};
use crate::conn::{Conn, Tls};
use crate::error::{
    self, NAME, RedisStoreError, bad_reply, from_redis, is_transient, outcome_unknown, unavailable,
};
use crate::metrics::{RedisMetrics, outcome};
use crate::scripts::scripts;

/// The key prefix used unless [`RedisBackendBuilder::prefix`] sets one.
pub const DEFAULT_PREFIX: &str = "typed-store";

/// Revisions kept in a store's change log unless
/// [`RedisBackendBuilder::history`] sets another number.
pub const DEFAULT_HISTORY: usize = 10_000;

/// The most ops one batch may hold (a Lua script's argument list is bounded).
pub const MAX_BATCH_OPS: usize = 1_000;

/// The largest value accepted unless [`RedisBackendBuilder::max_value_size`]
/// sets another limit, in bytes.
pub const DEFAULT_MAX_VALUE_SIZE: usize = 16 * 1024 * 1024;

/// How long a watch waits on the log-blocking connection before it asks the
/// server itself, in case a wake-up was lost.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How often a backend looks for keys to expire while none are due: keys
/// another backend writes with a time to live are expired by that backend,
/// and by the others at most this late if it is gone.
const IDLE_REAP: Duration = Duration::from_secs(5);

/// How long one `XREAD BLOCK` waits on the server.
const BLOCK: Duration = Duration::from_secs(2);

/// Log entries read per request.
const LOG_PAGE: usize = 256;

/// Configures a [`RedisBackend`].
#[derive(Clone)]
#[must_use = "a builder does nothing until `build` is awaited"]
pub struct RedisBackendBuilder {
    url: String,
    store: String,
    prefix: String,
    request_timeout: Duration,
    connect_timeout: Duration,
    retry_window: Duration,
    history: usize,
    max_value_size: usize,
    replicas: Option<(u32, Duration)>,
    tls: Tls,
}

impl std::fmt::Debug for RedisBackendBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackendBuilder")
            .field("url", &crate::config::redact(&self.url))
            .field("store", &self.store)
            .field("prefix", &self.prefix)
            .field("request_timeout", &self.request_timeout)
            .field("retry_window", &self.retry_window)
            .field("history", &self.history)
            .field("replicas", &self.replicas)
            .field("tls_roots", &self.tls.root_certificates.is_some())
            .finish_non_exhaustive()
    }
}

/// Why [`RedisBackendBuilder::build`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The configuration cannot work; nothing was connected.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The server did not answer; the configuration may be fine.
    #[error("cannot reach {endpoint}: {source}")]
    Connect {
        /// Where (credentials redacted).
        endpoint: String,
        /// What failed (an [`Error::Unavailable`] or [`Error::Backend`]).
        #[source]
        source: Error,
    },
}

impl From<BuildError> for Error {
    fn from(error: BuildError) -> Self {
        match error {
            BuildError::Config(config) => Error::backend(NAME, config),
            BuildError::Connect { source, .. } => source,
        }
    }
}

impl RedisBackendBuilder {
    /// The key prefix (namespace) of the store's keys (default
    /// [`DEFAULT_PREFIX`]): keys are `{<prefix>:<store>}:…`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long one request may take before it counts as failed (default 3 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long one connection attempt may take (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a batch whose answer was lost is resent (with the same batch
    /// id, so it applies at most once) before the backend reports its
    /// outcome as unknown (default 10 s). See
    /// [`RedisStoreError::OutcomeUnknown`].
    pub fn write_retry_window(mut self, window: Duration) -> Self {
        self.retry_window = window;
        self
    }

    /// About how many revisions the change log keeps (default
    /// [`DEFAULT_HISTORY`]; trimmed with `XADD MAXLEN ~`, so a few more may
    /// stay). A watch that falls further behind gets a gap and the store
    /// re-lists.
    pub fn history(mut self, revisions: usize) -> Self {
        self.history = revisions;
        self
    }

    /// The largest value accepted, in bytes (default
    /// [`DEFAULT_MAX_VALUE_SIZE`]; Redis itself takes up to 512 MiB).
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.max_value_size = bytes;
        self
    }

    /// Acknowledges a batch only once `replicas` replicas of the store's
    /// primary have it (`WAIT`), waiting at most `timeout`; fewer fail the
    /// batch with [`RedisStoreError::NotReplicated`] (the batch did apply on
    /// the primary, and the store sends it again). Off by default.
    ///
    /// Replication is asynchronous: without this, a failover can lose writes
    /// the old primary acknowledged. With it, a write acknowledged by
    /// `replicas` replicas survives the failover of the primary to any of
    /// them (Redis promotes the replica furthest along).
    pub fn wait_for_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.replicas = (replicas > 0).then_some((replicas, timeout));
        self
    }

    /// Trusts these PEM root certificates for `rediss://` URLs instead of the
    /// platform's (for a server whose certificate a private authority
    /// signed). Without the `tls` feature, `build` refuses it.
    pub fn tls_root_certificates(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.root_certificates = Some(pem.into());
        self
    }

    /// Checks the configuration, connects and checks that the server runs
    /// Lua scripts. A server that is not ready yet (a cluster answering
    /// CLUSTERDOWN while a restarted node rejoins, a server still loading
    /// its data) is asked again until three times the connect timeout has
    /// passed; a lasting refusal (bad credentials, no scripting) fails at
    /// once.
    pub async fn build(self) -> std::result::Result<RedisBackend, BuildError> {
        let endpoint = Endpoint::parse(&self.url)?;
        check_name("store name", &self.store)?;
        if self.tls.root_certificates.is_some() && !cfg!(feature = "tls") {
            return Err(ConfigError::TlsNotBuilt {
                url: endpoint.to_string(),
            }
            .into());
        }
        check_name("key prefix", &self.prefix)?;
        if self.history == 0 {
            return Err(ConfigError::InvalidSetting {
                setting: "history",
                reason: "the change log must keep at least one revision",
            }
            .into());
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(ConfigError::InvalidSetting {
                setting: "request_timeout",
                reason: "timeouts must be above zero",
            }
            .into());
        }
        let shown = endpoint.to_string();
        let connect_error = |source: Error| BuildError::Connect {
            endpoint: shown.clone(),
            source,
        };
        // Connecting and the first request share one deadline.
        let limit = Instant::now() + self.connect_timeout * 3;
        let conn = tokio::time::timeout_at(
            limit,
            Conn::connect(
                &endpoint,
                &self.tls,
                Some(self.request_timeout),
                self.connect_timeout,
            ),
        )
        .await
        .map_err(|_| {
            connect_error(unavailable(RedisStoreError::Timeout(
                self.connect_timeout * 3,
            )))
        })?
        .map_err(|e| connect_error(from_redis(e)))?;
        let keys = Keys::new(&self.prefix, &self.store);
        let (stop, _) = watch::channel(());
        let shared = Arc::new(Shared {
            endpoint,
            tls: self.tls,
            metrics: RedisMetrics::new(&self.store),
            store: self.store,
            keys,
            conn,
            request_timeout: self.request_timeout,
            connect_timeout: self.connect_timeout,
            retry_window: self.retry_window,
            replicas: self.replicas,
            history: self.history,
            max_value_size: self.max_value_size,
            latest: watch::Sender::new(0),
            feed_started: AtomicBool::new(false),
            reaper_started: AtomicBool::new(false),
            reap_now: Notify::new(),
            stop,
        });
        // One request up front: a server that cannot run the scripts (or
        // refuses the credentials) fails here, not at the first write. A
        // passing refusal (a cluster healing after a node restarted says
        // CLUSTERDOWN for a few seconds) is asked again until the deadline.
        let mut pause = Duration::from_millis(20);
        let revision = loop {
            match shared.current_revision().await {
                Ok(revision) => break revision,
                Err(error @ Error::Unavailable { .. }) if Instant::now() + pause < limit => {
                    tracing::debug!(store = %shared.store, %error, "the server is not ready yet; asking again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(error) => return Err(connect_error(error)),
            }
        };
        shared.saw(revision.0);
        tracing::debug!(store = %shared.store, endpoint = %shared.endpoint, %revision, "redis backend ready");
        match shared.persistence().await {
            Ok(persistence) if !persistence.survives_a_crash() => tracing::warn!(
                store = %shared.store,
                appendonly = persistence.append_only,
                appendfsync = %persistence.fsync,
                "acknowledged writes may be lost if the server crashes \
                 (appendonly yes with appendfsync always keeps them)"
            ),
            Ok(_) => {}
            // Managed services often refuse CONFIG: nothing to say then.
            Err(error) => {
                tracing::debug!(store = %shared.store, %error, "cannot read the server's persistence settings")
            }
        }
        Ok(RedisBackend {
            inner: Arc::new(Inner { shared }),
        })
    }
}

/// A store kept in Redis (one server or a cluster), shared by every process
/// that opens the same store name under the same prefix.
///
/// Clones share one connection and one set of background tasks, which end
/// when the last clone is dropped.
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Ends the change-log feed and the reaper.
        self.shared.stop.send_replace(());
    }
}

struct Shared {
    endpoint: Endpoint,
    tls: Tls,
    store: String,
    keys: Keys,
    conn: Conn,
    request_timeout: Duration,
    connect_timeout: Duration,
    retry_window: Duration,
    replicas: Option<(u32, Duration)>,
    history: usize,
    max_value_size: usize,
    /// The highest revision known to exist, from our own writes and the feed.
    latest: watch::Sender<u64>,
    feed_started: AtomicBool,
    reaper_started: AtomicBool,
    /// Wakes the reaper early (a write with a time to live).
    reap_now: Notify,
    /// Changed when the backend is dropped: background tasks end.
    stop: watch::Sender<()>,
    metrics: RedisMetrics,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shared = &self.inner.shared;
        f.debug_struct("RedisBackend")
            .field("endpoint", &shared.endpoint)
            .field("store", &shared.store)
            .field("tag", &shared.keys.tag)
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// A builder for the store called `store` on the Redis deployment at `url`
    /// (see [`Endpoint`] for the URL forms). Nothing is checked or connected
    /// until [`build`](RedisBackendBuilder::build).
    pub fn builder(url: impl Into<String>, store: impl Into<String>) -> RedisBackendBuilder {
        RedisBackendBuilder {
            url: url.into(),
            store: store.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            request_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(2),
            retry_window: Duration::from_secs(10),
            replicas: None,
            tls: Tls::default(),
            history: DEFAULT_HISTORY,
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
        }
    }

    /// The deployment this backend talks to (credentials redacted when shown).
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.shared.endpoint
    }

    /// The store's name.
    pub fn store(&self) -> &str {
        &self.inner.shared.store
    }

    /// The hash tag every key of this store carries, `{prefix:store}`: all
    /// of them live in the hash slot of this tag.
    pub fn hash_tag(&self) -> &str {
        &self.inner.shared.keys.tag
    }

    /// The store's current revision on the server.
    pub async fn revision(&self) -> Result<Revision> {
        self.inner.shared.current_revision().await
    }

    /// The persistence settings of the node that holds the store, read with
    /// `CONFIG GET` (which managed services may refuse). See the crate docs'
    /// *Durability*.
    pub async fn persistence(&self) -> Result<Persistence> {
        self.inner.shared.persistence().await
    }
}

/// A server's persistence settings, as far as acknowledged writes are
/// concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persistence {
    /// `appendonly`: the append-only file is on.
    pub append_only: bool,
    /// `appendfsync`: `always`, `everysec` or `no`.
    pub fsync: String,
}

impl Persistence {
    /// Whether every acknowledged write survives a crash of the server
    /// (`appendonly yes` with `appendfsync always`).
    pub fn survives_a_crash(&self) -> bool {
        self.append_only && self.fsync == "always"
    }
}

/// What the change log holds after a revision.
enum Since {
    /// The entries after it, in order (none when it is the latest).
    Entries(Vec<(Revision, Vec<Change>, bool)>),
    /// It cannot be followed from there: re-list.
    Gap,
}

impl Shared {
    fn caps(&self) -> Capabilities {
        Capabilities::default()
            .with_compare_and_set()
            .with_atomic_batch()
            .with_durable()
            .with_shared()
            .with_ttl()
            .with_max_value_size(Some(self.max_value_size))
            .with_max_batch_ops(Some(MAX_BATCH_OPS))
    }

    /// The five keys every script takes, in their order.
    fn key_list(&self) -> [&str; 5] {
        [
            &self.keys.revision,
            &self.keys.values,
            &self.keys.versions,
            &self.keys.expiry,
            &self.keys.log,
        ]
    }

    /// Runs a script invocation with the request timeout; `command` names
    /// the script in the metrics.
    async fn invoke(
        &self,
        command: &'static str,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<Value> {
        let mut conn = self.conn.clone();
        let started = Instant::now();
        let answer = tokio::time::timeout(
            self.request_timeout,
            invocation.invoke_async::<Value>(&mut conn),
        )
        .await;
        self.metrics
            .command(command, outcome(answer.as_ref().ok()), started.elapsed());
        match answer {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(from_redis(e)),
            Err(_) => Err(unavailable(RedisStoreError::Timeout(self.request_timeout))),
        }
    }

    /// Notes a revision known to exist, waking watches waiting for it.
    fn saw(&self, revision: u64) {
        self.latest.send_if_modified(|latest| {
            if revision > *latest {
                *latest = revision;
                true
            } else {
                false
            }
        });
    }

    async fn current_revision(&self) -> Result<Revision> {
        // Nothing follows the largest revision: the answer is the revision alone.
        Ok(self.since(u64::MAX, 1).await?.0)
    }

    /// The log after `from`, at most `count` entries, and the store's revision.
    async fn since(&self, from: u64, count: usize) -> Result<(Revision, Since)> {
        let mut invocation = scripts().since.prepare_invoke();
        for key in self.key_list() {
            invocation.key(key);
        }
        invocation.arg(self.history).arg(from).arg(count);
        let reply = self.invoke("since", &invocation).await?;
        parse_since(reply)
    }

    /// Waits until `replicas` replicas have every write sent on `conn`.
    async fn wait_for_replicas(
        &self,
        conn: &mut Conn,
        replicas: u32,
        timeout: Duration,
    ) -> Result<()> {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(replicas).arg(
            u64::try_from(timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        );
        let started = Instant::now();
        let answer =
            tokio::time::timeout(timeout + self.request_timeout, cmd.query_async::<u64>(conn))
                .await;
        self.metrics
            .command("wait", outcome(answer.as_ref().ok()), started.elapsed());
        let acknowledged = match answer {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(from_redis(e)),
            Err(_) => return Err(unavailable(RedisStoreError::Timeout(timeout))),
        };
        if acknowledged < u64::from(replicas) {
            tracing::warn!(store = %self.store, acknowledged, replicas, "a write batch reached too few replicas");
            return Err(unavailable(RedisStoreError::NotReplicated {
                acknowledged,
                wanted: replicas,
            }));
        }
        Ok(())
    }

    async fn persistence(&self) -> Result<Persistence> {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg("append*");
        let started = Instant::now();
        let answer = tokio::time::timeout(
            self.request_timeout,
            self.conn.on_node_of(&self.keys.revision, cmd),
        )
        .await;
        self.metrics
            .command("config", outcome(answer.as_ref().ok()), started.elapsed());
        let answer = answer
            .map_err(|_| unavailable(RedisStoreError::Timeout(self.request_timeout)))?
            .map_err(from_redis)?;
        let pairs: Vec<(String, String)> = match answer {
            Value::Array(items) => items
                .chunks(2)
                .filter_map(|pair| {
                    Some((
                        text(pair.first()?)?.to_owned(),
                        text(pair.get(1)?)?.to_owned(),
                    ))
                })
                .collect(),
            Value::Map(items) => items
                .iter()
                .filter_map(|(k, v)| Some((text(k)?.to_owned(), text(v)?.to_owned())))
                .collect(),
            _ => return Err(bad_reply("CONFIG GET did not answer pairs")),
        };
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        Ok(Persistence {
            append_only: get("appendonly").is_some_and(|v| v == "yes"),
            fsync: get("appendfsync").unwrap_or_default(),
        })
    }

    async fn reap(&self) -> Result<Option<Duration>> {
        let mut invocation = scripts().reap.prepare_invoke();
        for key in self.key_list() {
            invocation.key(key);
        }
        invocation.arg(self.history);
        match self.invoke("reap", &invocation).await? {
            Value::Int(ms) if ms >= 0 => Ok(Some(Duration::from_millis(ms.unsigned_abs()))),
            Value::Int(_) => Ok(None),
            _ => Err(bad_reply("the expiry script did not answer a number")),
        }
    }
}

/// Starts `task` once per flag, ending it when the backend is dropped.
fn start_once<F>(shared: &Arc<Shared>, flag: &AtomicBool, task: fn(Arc<Shared>) -> F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    if flag.swap(true, Ordering::SeqCst) {
        return;
    }
    let mut stop = shared.stop.subscribe();
    let run = task(Arc::clone(shared));
    tokio::spawn(async move {
        tokio::select! {
            () = run => {}
            _ = stop.changed() => {}
        }
    });
}

/// Blocks on the change log on a connection of its own and tells watches
/// when it grows.
async fn feed(shared: Arc<Shared>) {
    let mut conn: Option<Conn> = None;
    let mut delay = Duration::from_millis(50);
    loop {
        let current = match conn.as_mut() {
            Some(conn) => conn,
            None => {
                match Conn::connect(&shared.endpoint, &shared.tls, None, shared.connect_timeout)
                    .await
                {
                    Ok(fresh) => conn.insert(fresh),
                    Err(error) => {
                        tracing::debug!(store = %shared.store, error = %RedisStoreError::from(error), "change-log connection failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(1));
                        continue;
                    }
                }
            }
        };
        let after = *shared.latest.borrow();
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(LOG_PAGE)
            .arg("BLOCK")
            .arg(u64::try_from(BLOCK.as_millis()).unwrap_or(u64::MAX))
            .arg("STREAMS")
            .arg(&shared.keys.log)
            .arg(format!("{after}-0"));
        let started = Instant::now();
        let answer = tokio::time::timeout(
            BLOCK + shared.request_timeout,
            cmd.query_async::<Value>(current),
        )
        .await;
        shared
            .metrics
            .command("xread", outcome(answer.as_ref().ok()), started.elapsed());
        match answer {
            Ok(Ok(value)) => {
                delay = Duration::from_millis(50);
                if let Some(revision) = last_stream_revision(&value) {
                    shared.saw(revision);
                }
            }
            Ok(Err(error)) => {
                tracing::debug!(store = %shared.store, error = %RedisStoreError::from(error), "waiting on the change log failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Err(_) => {
                // A paused or hung server: start over on a fresh connection.
                conn = None;
            }
        }
    }
}

/// Removes keys whose time is up, waking at the next deadline (at least once
/// a second while keys are due to expire, every [`IDLE_REAP`] while none
/// are, and at once after this backend writes one).
async fn reaper(shared: Arc<Shared>) {
    loop {
        let wait = match shared.reap().await {
            Ok(Some(next)) => next.clamp(Duration::from_millis(5), POLL_INTERVAL),
            Ok(None) => IDLE_REAP,
            Err(error) => {
                tracing::debug!(store = %shared.store, %error, "expiring keys failed; retrying");
                POLL_INTERVAL
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.reap_now.notified() => {}
        }
    }
}

/// The highest `<revision>-0` id in an `XREAD` answer.
fn last_stream_revision(value: &Value) -> Option<u64> {
    // [[stream, [[id, fields], ...]]] (RESP2) or a map (RESP3).
    let streams = match value {
        Value::Array(streams) => streams.iter().filter_map(|s| match s {
            Value::Array(pair) => pair.get(1),
            _ => None,
        }),
        _ => return None,
    };
    let mut best = None;
    for entries in streams {
        let Value::Array(entries) = entries else {
            continue;
        };
        for entry in entries {
            if let Value::Array(parts) = entry
                && let Some(id) = parts.first().and_then(text)
                && let Some(revision) = parse_id(id)
            {
                best = best.max(Some(revision));
            }
        }
    }
    best
}

fn text(value: &Value) -> Option<&str> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => text(other)?.parse().ok(),
    }
}

/// `<revision>-0` → revision.
fn parse_id(id: &str) -> Option<u64> {
    let (revision, seq) = id.split_once('-')?;
    if seq != "0" {
        return None;
    }
    revision.parse().ok()
}

fn parse_since(reply: Value) -> Result<(Revision, Since)> {
    let Value::Array(parts) = reply else {
        return Err(bad_reply("the log script did not answer an array"));
    };
    let revision = parts
        .first()
        .and_then(number)
        .ok_or_else(|| bad_reply("the log script answered no revision"))?;
    let status = parts.get(1).and_then(text);
    let since = match status {
        Some("gap") => Since::Gap,
        Some("ok") => {
            let entries = match parts.get(2) {
                Some(Value::Array(entries)) => entries
                    .iter()
                    .map(parse_entry)
                    .collect::<Result<Vec<_>>>()?,
                None | Some(Value::Nil) => Vec::new(),
                Some(_) => return Err(bad_reply("the log's entries are not an array")),
            };
            Since::Entries(entries)
        }
        _ => return Err(bad_reply("the log script answered an unknown status")),
    };
    Ok((Revision(revision), since))
}

/// One log entry: its revision, its changes, and whether one of them is a
/// put with a time to live.
fn parse_entry(entry: &Value) -> Result<(Revision, Vec<Change>, bool)> {
    let malformed = || bad_reply("a change-log entry is malformed");
    let Value::Array(parts) = entry else {
        return Err(malformed());
    };
    let revision = parts
        .first()
        .and_then(text)
        .and_then(parse_id)
        .ok_or_else(malformed)?;
    let fields: Vec<&Value> = match parts.get(1) {
        Some(Value::Array(fields)) => fields.iter().collect(),
        // RESP3 answers a map.
        Some(Value::Map(pairs)) => pairs.iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => return Err(malformed()),
    };
    if !fields.len().is_multiple_of(2) || fields.is_empty() {
        return Err(malformed());
    }
    let mut changes = Vec::with_capacity(fields.len() / 2);
    let mut expiring = false;
    for pair in fields.chunks(2) {
        let key = text(pair[0]).ok_or_else(malformed)?;
        let change = text(pair[1]).ok_or_else(malformed)?;
        let put = |value| Change::Put(Entry::new(key, value, Version(revision)));
        changes.push(match change.split_at_checked(1) {
            Some(("+", value)) => put(value),
            Some(("~", value)) => {
                expiring = true;
                put(value)
            }
            Some(("-", "")) => Change::Removed(key.into()),
            _ => return Err(malformed()),
        });
    }
    Ok((Revision(revision), changes, expiring))
}

fn parse_outcome(outcome: &str) -> Option<Outcome> {
    let (kind, rest) = outcome.split_at_checked(1)?;
    match kind {
        "A" => Some(Outcome::Applied(Version(rest.parse().ok()?))),
        "C" if rest.is_empty() => Some(Outcome::Conflict { actual: None }),
        "C" => Some(Outcome::Conflict {
            actual: Some(Version(rest.parse().ok()?)),
        }),
        "X" if rest.is_empty() => Some(Outcome::Aborted),
        _ => None,
    }
}

fn parse_applied(answer: &str, ops: usize) -> Result<Applied> {
    let malformed = || bad_reply("the write script's answer is malformed");
    let mut parts = answer.split(',');
    let revision = parts
        .next()
        .and_then(|r| r.parse().ok())
        .ok_or_else(malformed)?;
    let outcomes = parts
        .map(|o| parse_outcome(o).ok_or_else(malformed))
        .collect::<Result<Vec<_>>>()?;
    if outcomes.len() != ops {
        return Err(malformed());
    }
    Ok(Applied {
        revision: Revision(revision),
        outcomes,
    })
}

fn stored_text(value: &Value) -> Result<&str> {
    text(value).ok_or_else(|| bad_reply("a stored value is not UTF-8 text"))
}

impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn store_name(&self) -> Option<&str> {
        Some(self.store())
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.shared.caps()
    }

    async fn read(&self, key: &str) -> Result<Option<Entry>> {
        let shared = &self.inner.shared;
        let mut invocation = scripts().read.prepare_invoke();
        for k in shared.key_list() {
            invocation.key(k);
        }
        invocation.arg(shared.history).arg(key);
        match shared.invoke("read", &invocation).await? {
            Value::Array(parts) if parts.is_empty() => Ok(None),
            Value::Nil => Ok(None),
            Value::Array(parts) if parts.len() == 2 => Ok(Some(Entry::new(
                key,
                stored_text(&parts[0])?,
                Version(
                    number(&parts[1])
                        .ok_or_else(|| bad_reply("a stored version is not a number"))?,
                ),
            ))),
            _ => Err(bad_reply("the read script's answer is malformed")),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        let shared = &self.inner.shared;
        let mut invocation = scripts().list.prepare_invoke();
        for k in shared.key_list() {
            invocation.key(k);
        }
        invocation.arg(shared.history).arg(prefix);
        let Value::Array(parts) = shared.invoke("list", &invocation).await? else {
            return Err(bad_reply("the list script did not answer an array"));
        };
        let Some((revision, rest)) = parts.split_first() else {
            return Err(bad_reply("the list script answered no revision"));
        };
        let revision = number(revision).ok_or_else(|| bad_reply("the revision is not a number"))?;
        if !rest.len().is_multiple_of(3) {
            return Err(bad_reply("the list script's answer is malformed"));
        }
        let mut entries = Vec::with_capacity(rest.len() / 3);
        for triple in rest.chunks(3) {
            let key = text(&triple[0]).ok_or_else(|| bad_reply("a stored key is not UTF-8"))?;
            entries.push(Entry::new(
                key,
                stored_text(&triple[1])?,
                Version(
                    number(&triple[2])
                        .ok_or_else(|| bad_reply("a stored version is not a number"))?,
                ),
            ));
        }
        entries.sort_by(|a, b| a.key().cmp(b.key()));
        shared.saw(revision);
        Ok(Listing {
            entries,
            revision: Revision(revision),
        })
    }

    async fn apply(&self, batch: Batch) -> Result<Applied> {
        let shared = &self.inner.shared;
        check_batch(NAME, &shared.caps(), &batch)?;
        if batch.ops.is_empty() {
            return Ok(Applied {
                revision: shared.current_revision().await?,
                outcomes: Vec::new(),
            });
        }
        let batch_id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let done_key = shared.keys.done(&batch_id);
        let mut invocation = scripts().apply.prepare_invoke();
        for k in shared.key_list() {
            invocation.key(k);
        }
        invocation.key(&done_key);
        // The answer is kept for resends, a while past the retry window:
        // one small key per batch, for about half a minute by default.
        let keep = shared.retry_window.as_secs().saturating_mul(2) + 10;
        invocation
            .arg(shared.history)
            .arg(if batch.atomic { "1" } else { "0" })
            .arg(keep);
        let mut expiring = false;
        for op in &batch.ops {
            let (kind, value, ttl) = match &op.kind {
                OpKind::Put { value, ttl } => {
                    expiring |= ttl.is_some();
                    let ttl = ttl.map_or(String::new(), |t| {
                        t.as_millis().clamp(1, u128::from(u64::MAX)).to_string()
                    });
                    ("p", value.as_str(), ttl)
                }
                OpKind::Delete => ("d", "", String::new()),
            };
            let precondition = match op.precondition {
                None => String::new(),
                Some(Precondition::Absent) => "a".to_owned(),
                Some(Precondition::Version(v)) => format!("v{}", v.0),
            };
            invocation
                .arg(kind)
                .arg(&op.key)
                .arg(value)
                .arg(ttl)
                .arg(precondition);
        }
        let started = Instant::now();
        let mut attempts = 0u32;
        let mut unknown = false;
        let mut delay = Duration::from_millis(20);
        let last = loop {
            attempts += 1;
            if attempts > 1 {
                shared.metrics.resends.increment(1);
            }
            let mut conn = shared.conn.clone();
            let sent = Instant::now();
            let answer = tokio::time::timeout(
                shared.request_timeout,
                invocation.invoke_async::<String>(&mut conn),
            )
            .await;
            shared
                .metrics
                .command("apply", outcome(answer.as_ref().ok()), sent.elapsed());
            let failure = match answer {
                Ok(Ok(answer)) => {
                    let applied = parse_applied(&answer, batch.ops.len())?;
                    if let Some((replicas, timeout)) = shared.replicas {
                        shared
                            .wait_for_replicas(&mut conn, replicas, timeout)
                            .await?;
                    }
                    shared.saw(applied.revision.0);
                    if expiring {
                        start_once(shared, &shared.reaper_started, reaper);
                        shared.reap_now.notify_one();
                    }
                    if attempts > 1 {
                        tracing::info!(store = %shared.store, attempts, "write batch answered after a resend");
                    }
                    return Ok(applied);
                }
                Ok(Err(error)) => {
                    if outcome_unknown(&error) {
                        unknown = true;
                    } else if !is_transient(&error) {
                        if unknown {
                            // Resending failed for good: say the outcome is open.
                            return Err(Error::backend(
                                NAME,
                                RedisStoreError::OutcomeUnknown {
                                    attempts,
                                    elapsed: started.elapsed(),
                                    last: RedisStoreError::from(error).to_string(),
                                },
                            ));
                        }
                        return Err(from_redis(error));
                    }
                    RedisStoreError::from(error)
                }
                Err(_) => {
                    unknown = true;
                    RedisStoreError::Timeout(shared.request_timeout)
                }
            };
            if !unknown {
                // Nothing was sent (or the server refused it unrun): the
                // store retries with its own backoff, coalescing meanwhile.
                return Err(error::unavailable(failure));
            }
            tracing::debug!(store = %shared.store, attempts, error = %failure, "write batch's answer lost; resending");
            if started.elapsed() + delay >= shared.retry_window {
                break failure;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        };
        tracing::warn!(store = %shared.store, attempts, error = %last, "outcome of a write batch unknown");
        Err(error::unavailable(RedisStoreError::OutcomeUnknown {
            attempts,
            elapsed: started.elapsed(),
            last: last.to_string(),
        }))
    }

    async fn watch(&self, from: Revision) -> Result<WatchStream> {
        let shared = Arc::clone(&self.inner.shared);
        start_once(&shared, &shared.feed_started, feed);
        // Keys expire through the reaper of some backend that watches.
        start_once(&shared, &shared.reaper_started, reaper);
        let state = WatchState {
            latest: shared.latest.subscribe(),
            shared,
            last: from.0,
            pending: VecDeque::new(),
            done: false,
        };
        Ok(Box::pin(futures_util::stream::unfold(state, next_event)))
    }
}

struct WatchState {
    shared: Arc<Shared>,
    latest: watch::Receiver<u64>,
    /// The last revision delivered (or the watch's start).
    last: u64,
    pending: VecDeque<WatchEvent>,
    done: bool,
}

async fn next_event(mut state: WatchState) -> Option<(Result<WatchEvent>, WatchState)> {
    loop {
        if let Some(event) = state.pending.pop_front() {
            return Some((Ok(event), state));
        }
        if state.done {
            return None;
        }
        // Anything the feed sees from here on wakes the wait below.
        state.latest.borrow_and_update();
        match state.shared.since(state.last, LOG_PAGE).await {
            Ok((_, Since::Gap)) => {
                state.done = true;
                return Some((Ok(WatchEvent::Gap), state));
            }
            Ok((revision, Since::Entries(entries))) if entries.is_empty() => {
                state.shared.saw(revision.0);
                // Wait for the feed (or our own writes) to see a newer
                // revision, asking again at least every POLL_INTERVAL.
                let _ = tokio::time::timeout(POLL_INTERVAL, state.latest.changed()).await;
            }
            Ok((_, Since::Entries(entries))) => {
                for (revision, changes, expiring) in entries {
                    if expiring {
                        // Another backend wrote a key with a time to live:
                        // expire it on time even if that backend goes away.
                        state.shared.reap_now.notify_one();
                    }
                    if revision.0 != state.last + 1 {
                        // Revisions are contiguous in the log; a hole is a gap.
                        state.pending.push_back(WatchEvent::Gap);
                        state.done = true;
                        break;
                    }
                    state.last = revision.0;
                    state.pending.push_back(WatchEvent::Changes {
                        revision,
                        changes,
                        index: None,
                    });
                }
                state.shared.saw(state.last);
            }
            Err(error) => {
                state.done = true;
                return Some((Err(error), state));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_and_garbage_is_an_error_not_a_panic() {
        let applied = parse_applied("7,A7,C,C3,X,A6", 5).expect("parses");
        assert_eq!(applied.revision, Revision(7));
        assert!(matches!(
            applied.outcomes[..],
            [
                Outcome::Applied(Version(7)),
                Outcome::Conflict { actual: None },
                Outcome::Conflict {
                    actual: Some(Version(3))
                },
                Outcome::Aborted,
                Outcome::Applied(Version(6)),
            ]
        ));
        for garbage in ["", "x", "1,A", "1,Q1", "1,A1", "1,A1,A2,A3,A4,A5,A6"] {
            assert!(parse_applied(garbage, 5).is_err(), "{garbage}");
        }
        assert!(parse_since(Value::Nil).is_err());
        assert!(parse_since(Value::Array(vec![Value::Int(3)])).is_err());
        let entry = Value::Array(vec![
            Value::BulkString(b"4-0".to_vec()),
            Value::Array(vec![
                Value::BulkString(b"k".to_vec()),
                Value::BulkString(b"?".to_vec()),
            ]),
        ]);
        assert!(parse_entry(&entry).is_err());
    }

    #[test]
    fn log_entries_decode() {
        let entry = Value::Array(vec![
            Value::BulkString(b"4-0".to_vec()),
            Value::Array(vec![
                Value::BulkString(b"a".to_vec()),
                Value::BulkString(b"+1".to_vec()),
                Value::BulkString(b"b".to_vec()),
                Value::BulkString(b"-".to_vec()),
            ]),
        ]);
        let (revision, changes, expiring) = parse_entry(&entry).expect("parses");
        assert!(!expiring);
        assert_eq!(revision, Revision(4));
        assert_eq!(
            changes,
            [
                Change::Put(Entry::new("a", "1", Version(4))),
                Change::Removed("b".into())
            ]
        );
    }
}

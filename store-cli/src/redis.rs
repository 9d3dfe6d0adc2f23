//! The Redis side of the tool: whether a store exists before it is opened
//! (opening one creates its revision), how failures map to exit codes, and
//! `stat` for a Redis store. URLs are only ever shown redacted.

use std::time::Duration;

use redis::ErrorKind;
use serde_json::json;
use store_core::Error as StoreError;
pub(crate) use store_redis::Endpoint;
use store_redis::{BuildError, RedisBackend};

use crate::failure::Failure;
use crate::open::Opened;
use crate::output::Printer;

/// Whether the store `store` under `prefix` has been written on the
/// deployment: its revision key (`{prefix:store}:rev`) exists.
pub(crate) async fn redis_store_exists(
    endpoint: &Endpoint,
    prefix: &str,
    store: &str,
    timeout: Duration,
) -> Result<bool, Failure> {
    for (what, name) in [("store name", store), ("key prefix", prefix)] {
        if name.is_empty()
            || name.contains(['{', '}'])
            || name.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Failure::BadInput(format!(
                "invalid {what} `{name}`: it must be non-empty, without `{{`, `}}` or whitespace"
            )));
        }
    }
    let key = format!("{{{prefix}:{store}}}:rev");
    let mut exists = redis::cmd("EXISTS");
    exists.arg(&key);
    let check = async {
        match endpoint {
            Endpoint::Standalone(url) => {
                let client = redis::Client::open(url.as_str())?;
                let mut conn = client.get_multiplexed_async_connection().await?;
                exists.query_async::<bool>(&mut conn).await
            }
            Endpoint::Cluster(seeds) => {
                let client =
                    redis::cluster::ClusterClientBuilder::new(seeds.iter().map(String::as_str))
                        .connection_timeout(timeout)
                        .response_timeout(timeout)
                        .build()?;
                let mut conn = client.get_async_connection().await?;
                exists.query_async::<bool>(&mut conn).await
            }
        }
    };
    match tokio::time::timeout(timeout, check).await {
        Ok(Ok(found)) => Ok(found),
        Ok(Err(error)) => Err(redis_failure(endpoint, &error)),
        Err(_) => Err(Failure::Unreachable(format!(
            "cannot reach Redis at {endpoint}: no answer within {timeout:?}"
        ))),
    }
}

/// A client error as a failure: refused credentials or a bad URL are the
/// command line's fault, the rest is the deployment being out of reach.
fn redis_failure(endpoint: &Endpoint, error: &redis::RedisError) -> Failure {
    let text = redacted(endpoint, &error.to_string());
    match error.kind() {
        ErrorKind::AuthenticationFailed => Failure::BadInput(format!(
            "Redis at {endpoint} refused the credentials: {text}"
        )),
        ErrorKind::InvalidClientConfig => {
            Failure::BadInput(format!("invalid Redis URL {endpoint}: {text}"))
        }
        ErrorKind::Io | ErrorKind::ClusterConnectionNotFound | ErrorKind::Parse => {
            Failure::Unreachable(format!("cannot reach Redis at {endpoint}: {text}"))
        }
        _ if error.code() == Some("NOAUTH") || error.code() == Some("WRONGPASS") => {
            Failure::BadInput(format!(
                "Redis at {endpoint} refused the credentials: {text}"
            ))
        }
        _ => Failure::Other(format!("Redis at {endpoint}: {text}")),
    }
}

/// `text` with any URL of `endpoint` replaced by its redacted form.
fn redacted(endpoint: &Endpoint, text: &str) -> String {
    let urls = match endpoint {
        Endpoint::Standalone(url) => std::slice::from_ref(url),
        Endpoint::Cluster(seeds) => seeds.as_slice(),
    };
    urls.iter().fold(text.to_owned(), |text, url| {
        text.replace(url.as_str(), &store_redis::redact(url))
    })
}

/// A failed [`RedisBackend`] build as a failure: a configuration that cannot
/// work is bad input, a server that does not answer is unreachable.
pub(crate) fn build_failure(error: BuildError) -> Failure {
    let line = error.to_string();
    match error {
        BuildError::Config(_) => Failure::BadInput(line),
        BuildError::Connect {
            source: StoreError::Unavailable { .. } | StoreError::Timeout { .. },
            ..
        } => Failure::Unreachable(line),
        _ => Failure::Other(line),
    }
}

/// A Redis store's keys and bytes (as this tool reads them), its revision on
/// the server, and the persistence settings of the node holding it (`-` when
/// the server refuses `CONFIG`).
pub(crate) async fn stat(
    opened: &Opened,
    backend: &RedisBackend,
    printer: &mut Printer<'_>,
) -> Result<(), Failure> {
    let snapshot = opened.store.snapshot();
    let bytes: usize = snapshot
        .entries
        .iter()
        .map(|(key, value)| key.len() + value.len())
        .sum();
    let revision = backend.revision().await?;
    let (append_only, fsync, survives) = match backend.persistence().await {
        Ok(persistence) => (
            json!(if persistence.append_only { "yes" } else { "no" }),
            json!(persistence.fsync),
            json!(if persistence.survives_a_crash() {
                "yes"
            } else {
                "no"
            }),
        ),
        Err(_) => (json!(null), json!(null), json!(null)),
    };
    let row = json!({
        "store": backend.store(),
        "slot": backend.hash_tag(),
        "keys": snapshot.entries.len(),
        "bytes": bytes,
        "revision": revision.0.to_string(),
        "appendonly": append_only,
        "appendfsync": fsync,
        "crash-safe": survives,
    });
    printer.rows(
        &[
            "STORE",
            "SLOT",
            "KEYS",
            "BYTES",
            "REVISION",
            "APPENDONLY",
            "APPENDFSYNC",
            "CRASH-SAFE",
        ],
        &[row],
    )
}

//! The Pepr "hello store" example, in Rust.
//!
//! An on-ready hook clears the store, sets-and-waits one key twice, reads it,
//! clears again and waits until the key is gone; then an asynchronous flow
//! (queued set, wait until found, get, remove, wait until gone) and a
//! synchronous one (set-and-wait, get, remove-and-wait). Each step logs one
//! JSON line with `key`, `value` and `msg`, `msg` named as in Pepr.
//!
//! ```sh
//! cargo run --example hello-store            # embedded in-memory backend
//! ```

use std::time::Duration;

use serde_json::json;
use store_core::{Error, Result, Store};

/// How long a wait in this example may take.
const DEADLINE: Duration = Duration::from_secs(10);

/// One JSON log line, shaped like Pepr's pino output.
fn log(key: &str, value: Option<&str>, msg: &str) {
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut line =
        json!({ "level": 30, "time": time, "pid": std::process::id(), "key": key, "msg": msg });
    if let Some(value) = value {
        line["value"] = json!(value);
    }
    println!("{line}");
}

/// Waits until `check` holds on the store's local view, with a deadline.
async fn until(store: &Store, what: &str, check: impl Fn(&Store) -> Result<bool>) -> Result<()> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut changes = store.subscribe();
    loop {
        if check(store)? {
            return Ok(());
        }
        let wait = tokio::time::timeout_at(deadline, futures_util::StreamExt::next(&mut changes));
        if wait.await.is_err() {
            return Err(Error::Timeout {
                waiting_for: what.to_owned(),
                timeout: DEADLINE,
            });
        }
    }
}

fn found(key: &'static str) -> impl Fn(&Store) -> Result<bool> {
    move |store| Ok(store.get::<String>(key)?.is_some())
}

fn gone(key: &'static str) -> impl Fn(&Store) -> Result<bool> {
    move |store| Ok(store.get::<String>(key)?.is_none())
}

async fn on_ready(store: Store) -> Result<()> {
    let key = "https://onReady";
    // Clearing an empty store is fine.
    store.clear().await?;
    store.set_and_wait(key, "yep").await?;
    // Setting the same key again is fine.
    store.set_and_wait(key, "yep").await?;
    let value = store.get::<String>(key)?;
    log(key, value.as_deref().map(String::as_str), "onReady");
    store.clear().await?;
    until(&store, "the key to be gone", gone(key)).await?;
    log(key, None, "onReady");
    Ok(())
}

async fn async_flow(store: &Store) -> Result<()> {
    let key = "https://async";
    store.set(key, "yep")?;
    until(store, "the key to be found", found(key)).await?;
    log(key, Some("yep"), "setItem");
    let value = store.get::<String>(key)?;
    log(key, value.as_deref().map(String::as_str), "getItem");
    store.remove(key)?;
    until(store, "the key to be gone", gone(key)).await?;
    log(key, None, "removeItem");
    Ok(())
}

async fn sync_flow(store: &Store) -> Result<()> {
    let key = "https://sync";
    store.set_and_wait(key, "yep").await?;
    log(key, Some("yep"), "setItemAndWait");
    let value = store.get::<String>(key)?;
    log(key, value.as_deref().map(String::as_str), "getItem");
    store.remove_and_wait(key).await?;
    log(key, None, "removeItemAndWait");
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let result = async {
        let store = Store::builder()
            .name("hello-store")
            .timeout(DEADLINE)
            .on_ready("onReady", on_ready)
            .open()
            .await?;
        async_flow(&store).await?;
        sync_flow(&store).await?;
        store.close().await
    };
    match result.await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hello-store failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

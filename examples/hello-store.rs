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
//! cargo run --example hello-store -- --fake  # kube backend, in-process fake API server, two replicas
//! cargo run --example hello-store -- --kube  # kube backend, the cluster of the current kubeconfig
//! ```
//!
//! With `--kube` the `StoreShard` CRD must be installed
//! (`kubectl apply -f deploy/storeshards.crd.json`) and the store lives in the
//! kubeconfig's namespace.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use store_core::{Error, Result, Store, StoreBuilder};
use store_kube::KubeBackend;
use store_kube_testing::FakeApiServer;

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
        let wait = tokio::time::timeout_at(deadline, changes.next());
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

fn builder() -> StoreBuilder {
    Store::builder().name("hello-store").timeout(DEADLINE)
}

async fn run(store: Store) -> Result<()> {
    async_flow(&store).await?;
    sync_flow(&store).await?;
    store.close().await
}

/// Logs what another replica sees, to show both share one store.
fn observe(replica: Store) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = replica.subscribe();
        while let Some(Ok(change)) = changes.next().await {
            let value = change.value::<String>().ok().flatten();
            let line =
                json!({ "replica": "b", "key": change.key(), "value": value, "msg": "observed" });
            println!("{line}");
        }
    })
}

async fn kube_backend(client: kube::Client, namespace: Option<&str>) -> Result<KubeBackend> {
    let builder = KubeBackend::builder(client, "hello-store");
    match namespace {
        Some(namespace) => builder.namespace(namespace),
        None => builder,
    }
    .build()
    .await
}

async fn on_fake() -> Result<()> {
    let failed = |e: store_kube_testing::Error| Error::backend("fake", e);
    let server = FakeApiServer::start().await.map_err(failed)?;
    server
        .apply_crd(&store_kube::resource::store_shard_crd())
        .map_err(failed)?;
    let replica_b = builder()
        .name("hello-store-b")
        .backend(kube_backend(server.client().map_err(failed)?, Some("default")).await?)
        .open()
        .await?;
    let observer = observe(replica_b.clone());
    let replica_a = builder()
        .backend(kube_backend(server.client().map_err(failed)?, Some("default")).await?)
        .on_ready("onReady", on_ready)
        .open()
        .await?;
    run(replica_a).await?;
    // Replica B converges on what A left: the store is empty again.
    until(&replica_b, "replica b to see the store empty", |s| {
        Ok(s.is_empty())
    })
    .await?;
    replica_b.close().await?;
    observer.abort();
    Ok(())
}

async fn on_cluster() -> Result<()> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| Error::backend("kube", e))?;
    let store = builder()
        .backend(kube_backend(client, None).await?)
        .on_ready("onReady", on_ready)
        .open()
        .await?;
    run(store).await
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mode = std::env::args().nth(1);
    let result = async {
        match mode.as_deref() {
            Some("--fake") => on_fake().await,
            Some("--kube") => on_cluster().await,
            Some(other) => Err(Error::backend(
                "hello-store",
                format!("unknown option {other}; use --fake or --kube"),
            )),
            None => {
                let store = builder().on_ready("onReady", on_ready).open().await?;
                run(store).await
            }
        }
    };
    match result.await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hello-store failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

//! Quick start: every call of the store on the embedded in-memory backend,
//! printing what it did.
//!
//! Run it with `cargo run --example quickstart`.

use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use store_core::{Key, Precondition, Store};

/// A typed key: the key and the type stored under it travel together.
const EXEMPT: Key<Vec<String>> = Key::new("exempt-namespaces");

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Token {
    value: String,
    expires_in_s: u64,
}

#[tokio::main]
async fn main() -> Result<(), store_core::Error> {
    let store = Store::builder()
        .name("quickstart")
        .timeout(Duration::from_secs(5))
        .on_ready("seed", |store: Store| async move {
            store
                .set_and_wait(EXEMPT, &vec!["kube-system".to_owned()])
                .await?;
            println!("on-ready hook: seeded {EXEMPT}");
            Ok::<(), store_core::Error>(())
        })
        .open()
        .await?;
    let caps = store.capabilities();
    println!(
        "ready: store `{}`, compare-and-set={} atomic-batch={} ttl={} durable={}",
        store.name(),
        caps.compare_and_set,
        caps.atomic_batch,
        caps.ttl,
        caps.durable
    );

    let mut changes = store.subscribe().prefix("token/");

    // set: validated, queued, returns at once; get sees it immediately.
    let token = Token {
        value: "s3cr3t".into(),
        expires_in_s: 3600,
    };
    store.set("token/api", &token)?;
    let read = store.get::<Token>("token/api")?;
    println!(
        "set + get (own write, before the backend confirmed it): expires_in_s={:?}",
        read.map(|t| t.expires_in_s)
    );

    // set_and_wait: resolves once acknowledged and visible, with the version.
    let version = store.set_and_wait("https://onReady", &"yep").await?;
    println!("set_and_wait https://onReady -> version {version}");

    // update: compare-and-set retry loop, no lost updates.
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..250 {
                    store
                        .update("hits", |n: Option<&u64>| n.copied().unwrap_or(0) + 1)
                        .await?;
                }
                Ok::<(), store_core::Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await
            .map_err(|e| store_core::Error::backend("quickstart", e))??;
    }
    println!(
        "update x1000 from 4 tasks -> hits = {:?}",
        store.get::<u64>("hits")?
    );

    // compare_and_set: explicit precondition.
    let current = store.get_versioned(EXEMPT)?.map(|v| v.version);
    if let Some(v) = current {
        let mut list = (*store.get(EXEMPT)?.unwrap_or_default()).clone();
        list.push("istio-system".into());
        store
            .compare_and_set(EXEMPT, Precondition::Version(v), &list)
            .await?;
    }
    println!("compare_and_set {EXEMPT} -> {:?}", store.get(EXEMPT)?);

    // Subscriptions see confirmed changes in order.
    store.flush().await?;
    if let Some(change) = changes.next().await {
        let change = change?;
        println!(
            "subscribe(prefix token/) saw {} at revision {}",
            change.key(),
            change.revision()
        );
    }

    // Bad input is a typed error at the call; nothing stored is lost.
    match store.set("", &1) {
        Err(e) => println!("set with an empty key -> {e}"),
        Ok(()) => println!("unexpected: an empty key was accepted"),
    }
    match store.get::<u64>("https://onReady") {
        Err(e) => println!("get as the wrong type -> {e}"),
        Ok(v) => println!("unexpected: decoded {v:?}"),
    }

    let snapshot = store.snapshot();
    println!(
        "snapshot at revision {}: keys {:?}",
        snapshot.revision,
        store.keys()
    );

    store.remove_and_wait("https://onReady").await?;
    store.clear().await?;
    println!("clear -> {} keys left", store.len());
    store.close().await?;
    println!("closed");
    Ok(())
}

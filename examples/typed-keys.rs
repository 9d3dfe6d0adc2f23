//! Typed keys: `#[derive(StoreValue)]`, key families, and what happens when a
//! stored value no longer fits its type.
//!
//! ```sh
//! cargo run --example typed-keys
//! ```

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use store_core::{Key, Store, StoreValue};

/// One value with a fixed key.
#[derive(Debug, Serialize, Deserialize, StoreValue)]
#[store(key = "settings/exemptions")]
struct Exemptions {
    namespaces: Vec<String>,
}

/// A family of keys: one profile per user id.
#[derive(Debug, Serialize, Deserialize, JsonSchema, StoreValue)]
#[store(key = "profile/{id}", schema)]
struct Profile {
    name: String,
    retries: u32,
}

/// An ad-hoc typed key constant.
const LAST_SYNC: Key<u64> = Key::new("last-sync");

#[tokio::main]
async fn main() -> Result<(), store_core::Error> {
    let store = Store::memory().await?;

    store.set(
        Exemptions::key(),
        &Exemptions {
            namespaces: vec!["kube-system".into()],
        },
    )?;
    let exemptions = store.get(Exemptions::key())?;
    println!("derive: {} -> {exemptions:?}", Exemptions::KEY);

    let key = Profile::key_for(7)?;
    store
        .set_and_wait(
            &key,
            &Profile {
                name: "ada".into(),
                retries: 0,
            },
        )
        .await?;
    println!("family: {} formats to {key}", Profile::KEY);
    let id: Option<(u32,)> = Profile::parse_key(key.as_str());
    println!("family: {key} parses back to id {:?}", id.map(|(id,)| id));

    store.set(LAST_SYNC, &1_700_000_000)?;
    println!("constant: {LAST_SYNC} -> {:?}", store.get(LAST_SYNC)?);

    // Another writer (an older version, a person with kubectl) stores a value
    // that no longer fits the type: the read names the key and the path.
    store
        .set_and_wait(
            "profile/8",
            &serde_json::json!({"name": "bob", "retries": "three"}),
        )
        .await?;
    match store.get(Profile::key_for(8)?) {
        Err(e) => println!("schema: {e}"),
        Ok(v) => println!("schema: unexpected {v:?}"),
    }
    Ok(())
}

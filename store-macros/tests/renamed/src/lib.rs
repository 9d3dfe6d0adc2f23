//! Uses `#[derive(StoreValue)]` and `#[on_ready]` through `renamed_core`, a
//! renamed `store-core` dependency. This crate has no `store_core` in scope,
//! so it compiles only if `crate = "..."` reaches every generated path.

use renamed_core::{Store, StoreValue, on_ready};
use serde::{Deserialize, Serialize};

/// The store the hook below runs on.
pub const STORE: &str = "renamed-crate";

/// A plain value.
#[derive(Debug, PartialEq, Serialize, Deserialize, StoreValue)]
#[store(crate = "renamed_core", key = "renamed/counter")]
pub struct Counter(pub u64);

/// A key family.
#[derive(Debug, PartialEq, Serialize, Deserialize, StoreValue)]
#[store(crate = "::renamed_core", key = "renamed/user/{id}")]
pub struct User {
    /// Display name.
    pub name: String,
}

/// Seeds the counter on the [`STORE`] store.
#[on_ready(crate = "renamed_core", store = "renamed-crate")]
pub async fn seed_counter(store: &Store) -> renamed_core::Result<()> {
    store.set_and_wait(Counter::key(), &Counter(41)).await?;
    Ok(())
}

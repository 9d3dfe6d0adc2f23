//! Generated code stays quiet under strict lints in the user's crate.
#![deny(missing_docs, unsafe_code, unreachable_pub, rust_2018_idioms, warnings)]

use serde::{Deserialize, Serialize};
use store_core::{Store, StoreValue, on_ready};

/// A documented public family type.
#[derive(Serialize, Deserialize, StoreValue)]
#[store(key = "user/{id}", schema)]
#[derive(schemars::JsonSchema)]
pub struct User {
    /// The name.
    pub name: String,
}

/// A private one.
#[derive(Serialize, Deserialize, StoreValue)]
#[store(key = "tenant/{tenant}")]
pub(crate) struct Tenant;

/// A hook.
#[on_ready(store = "strict")]
pub async fn hook(store: &Store) -> store_core::Result<()> {
    let _ = store;
    Ok(())
}

fn main() {
    let _ = Tenant::key_for("a");
}

use serde::{Deserialize, Serialize};
use store_core::StoreValue;

#[derive(Serialize, Deserialize, StoreValue)]
#[store(key = "user/{id", schema, krate = "store_core")]
struct User;

fn main() {}

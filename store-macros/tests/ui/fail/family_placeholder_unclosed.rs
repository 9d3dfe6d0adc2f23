use serde::{Deserialize, Serialize};
use store_core::StoreValue;

#[derive(Serialize, Deserialize, StoreValue)]
#[store(key = "user/{id")]
struct User;

fn main() {}

use serde::{Deserialize, Serialize};
use store_core::StoreValue;

#[derive(Serialize, Deserialize, StoreValue)]
#[store(key = "user/{1st}")]
struct User;

fn main() {}

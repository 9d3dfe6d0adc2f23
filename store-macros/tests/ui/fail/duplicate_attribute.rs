use serde::{Deserialize, Serialize};
use store_core::StoreValue;

#[derive(Serialize, Deserialize, StoreValue)]
#[store(key = "a")]
#[store(key = "b")]
struct Settings;

fn main() {}

use serde::{Deserialize, Serialize};
use store_core::StoreValue;

#[derive(Serialize, Deserialize, StoreValue)]
#[store(key = "{a}/{b}/{c}/{d}/{e}")]
struct Deep;

fn main() {}

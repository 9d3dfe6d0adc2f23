use serde::{Deserialize, Serialize};
use store_core::StoreValue;

#[derive(Serialize, Deserialize, schemars::JsonSchema, StoreValue)]
#[store(schema, key = "profile")]
struct Profile {
    age: u8,
}

fn main() {
    assert!(Profile::validate(&serde_json::json!({ "age": 3 })).is_ok());
}

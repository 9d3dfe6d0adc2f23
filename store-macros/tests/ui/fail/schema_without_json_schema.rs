use serde::{Deserialize, Serialize};
use store_core::StoreValue;

#[derive(Serialize, Deserialize, StoreValue)]
#[store(schema)]
struct Settings {
    verbose: bool,
}

fn main() {}

use serde::Deserialize;
use store_core::StoreValue;

#[derive(Deserialize, StoreValue)]
struct Settings {
    verbose: bool,
}

fn main() {}

use serde::{Deserialize, Serialize};
use store_core::StoreValue;

#[derive(Serialize, Deserialize, StoreValue)]
#[store(key = "https://onReady")]
struct Url;

#[derive(Serialize, Deserialize, StoreValue)]
struct HTTPConfig {
    port: u16,
}

#[derive(Serialize, Deserialize, StoreValue)]
#[store(key = "mode")]
enum Mode {
    On,
    Off,
}

#[derive(Serialize, Deserialize, StoreValue)]
#[store(key = "wrapped")]
struct Wrapped<T>
where
    T: Clone,
{
    inner: T,
}

fn main() {
    assert_eq!(Url::KEY, "https://onReady");
    assert_eq!(HTTPConfig::KEY, "http-config");
    assert_eq!(Mode::key().as_str(), "mode");
    assert_eq!(Wrapped::<String>::KEY, "wrapped");
}

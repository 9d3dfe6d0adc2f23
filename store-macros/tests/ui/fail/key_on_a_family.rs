use serde::{Deserialize, Serialize};
use store_core::StoreValue;

#[derive(Serialize, Deserialize, StoreValue)]
#[store(key = "ns/{namespace}/admissions")]
struct Admissions(u64);

fn main() {
    let _ = Admissions::key();
}

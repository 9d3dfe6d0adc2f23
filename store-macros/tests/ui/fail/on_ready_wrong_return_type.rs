use store_core::{Store, on_ready};

#[on_ready]
async fn seed(store: &Store) -> bool {
    let _ = store;
    true
}

fn main() {}

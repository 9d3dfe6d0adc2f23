use store_core::{Store, on_ready};

#[on_ready]
async fn seed(store: &Store) {
    let _ = store;
}

fn main() {}

use store_core::{Store, on_ready};

#[on_ready(order = 1, order = 2)]
async fn seed(store: &Store) -> store_core::Result<()> {
    let _ = store;
    Ok(())
}

fn main() {}

use store_core::{Store, on_ready};

#[on_ready]
async fn seed(store: &Store) -> Result<(), ()> {
    let _ = store;
    Ok(())
}

fn main() {}

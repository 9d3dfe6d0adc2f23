use store_core::{Store, on_ready};

#[on_ready(stor = "jobs")]
async fn seed(store: &Store) -> store_core::Result<()> {
    let _ = store;
    Ok(())
}

fn main() {}

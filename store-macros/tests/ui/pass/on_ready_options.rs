use store_core::{Store, on_ready};

#[on_ready]
async fn plain(store: &Store) -> store_core::Result<()> {
    let _ = store;
    Ok(())
}

#[on_ready(store = "jobs", order = -10)]
async fn with_options<'a>(store: &'a Store) -> Result<(), std::io::Error> {
    let _ = store;
    Ok(())
}

#[on_ready(order = 3, crate = "store_core")]
pub async fn boxed(_: &store_core::Store) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    Ok(())
}

#[on_ready]
async fn r#async(store: &Store) -> Result<(), String> {
    let _ = store;
    Ok(())
}

fn main() {
    // Still callable directly.
    let _ = plain;
    let _ = with_options;
    let _ = boxed;
    let _ = r#async;
}

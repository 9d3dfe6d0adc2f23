use store_core::on_ready;

#[on_ready]
async fn seed(store: &str) -> store_core::Result<()> {
    let _ = store;
    Ok(())
}

fn main() {}

use store_core::on_ready;

#[on_ready]
async fn seed() -> store_core::Result<()> {
    Ok(())
}

fn main() {}

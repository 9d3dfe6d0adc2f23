use store_core::{Store, on_ready};

struct Service;

impl Service {
    #[on_ready]
    async fn seed(&self, store: &Store) -> store_core::Result<()> {
        let _ = store;
        Ok(())
    }
}

fn main() {}

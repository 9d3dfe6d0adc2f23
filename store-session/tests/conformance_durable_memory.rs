//! The durable tier (session scopes on one shared memory backend) against
//! `store-core`'s conformance suite: scopes with a watch of their own, and
//! scopes fed by one shared watch as in a registry.

mod common;

use common::ScopedHarness;
use store_core::MemoryBackend;

async fn harness() -> ScopedHarness<MemoryBackend> {
    ScopedHarness::new(MemoryBackend::new())
}

store_conformance::conformance_tests!(harness);

mod shared_watch {
    use super::common::ScopedHarness;
    use store_core::MemoryBackend;

    async fn harness() -> ScopedHarness<MemoryBackend> {
        ScopedHarness::shared(MemoryBackend::new())
    }

    store_conformance::conformance_tests!(harness);
}

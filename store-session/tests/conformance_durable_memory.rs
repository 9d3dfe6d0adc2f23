//! The durable tier (session scopes on one shared memory backend) against
//! `store-core`'s conformance suite.

mod common;

use common::ScopedHarness;
use store_core::MemoryBackend;

async fn harness() -> ScopedHarness<MemoryBackend> {
    ScopedHarness::new(MemoryBackend::new())
}

store_core::conformance_tests!(harness);

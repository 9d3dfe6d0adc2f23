//! The memory backend against the conformance suite.

use store_conformance::MemoryHarness;

async fn harness() -> MemoryHarness {
    MemoryHarness::default()
}

store_conformance::conformance_tests!(harness);

//! The memory backend against the conformance suite.
#![cfg(feature = "conformance")]

use store_core::conformance::MemoryHarness;

async fn harness() -> MemoryHarness {
    MemoryHarness::default()
}

store_core::conformance_tests!(harness);

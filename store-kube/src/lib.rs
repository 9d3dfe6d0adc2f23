//! Kubernetes custom-resource backend for `store-core`.

// Test harness: fake API server, real control plane and the switch between
// them. Documented inside the module, where its intra-doc links resolve.
#[cfg(feature = "testing")]
pub mod testing;

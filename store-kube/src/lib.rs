//! Kubernetes custom-resource backend for `store-core`.

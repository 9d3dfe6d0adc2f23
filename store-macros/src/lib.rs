//! Procedural macros for `store-core`.

//! Typed key-value store.

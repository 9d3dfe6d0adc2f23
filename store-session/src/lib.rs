//! Session-scoped stores over any `store-core` backend.

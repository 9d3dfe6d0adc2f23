//! Runnable examples for the typed store workspace; see the `examples/` files.

//! Placeholder quick start.
fn main() {}

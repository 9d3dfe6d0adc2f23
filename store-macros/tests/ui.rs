//! Compile-time errors of the macros, one file per mistake.
//!
//! After an intended change to a message, bless the new output with
//! `TRYBUILD=overwrite cargo test -p store-macros --test ui` and review the
//! `.stderr` diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}

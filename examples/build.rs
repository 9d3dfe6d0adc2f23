//! Tells the tests whether a real control plane can be started (the
//! `real_control_plane` cfg), so a real-tier test that cannot run is reported
//! as ignored, never as passed; under `STORE_KUBE_REQUIRE_REAL=1` a missing
//! one fails the build instead.

#[path = "../store-kube-testing/src/assets.rs"]
mod assets;

fn main() {
    assets::emit_build_cfg();
}

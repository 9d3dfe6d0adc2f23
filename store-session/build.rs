//! Tells this crate's tests whether a real control plane can be started (the
//! `real_control_plane` cfg, see `store-kube-testing`), so the replica tests'
//! real tier is reported as ignored where it cannot run, never as passed;
//! under `STORE_KUBE_REQUIRE_REAL=1` a missing one fails the build instead.

#[path = "../store-kube-testing/src/assets.rs"]
mod assets;

fn main() {
    assets::emit_build_cfg();
}

//! Tells the tests which outside peers this machine has, so a test that needs
//! one it lacks is reported as ignored, never as passed: `real_control_plane`
//! (etcd and kube-apiserver binaries, see `store-kube-testing`) and
//! `pepr_peer` (Node.js and npm `pepr`, installed with `npm ci` in
//! `tests/pepr`). Under `STORE_KUBE_REQUIRE_REAL=1` a missing peer fails the
//! build instead.

#[path = "../store-kube-testing/src/assets.rs"]
mod assets;

fn main() {
    assets::emit_build_cfg();

    println!("cargo::rustc-check-cfg=cfg(pepr_peer)");
    let package = "tests/pepr/node_modules/pepr/package.json";
    let installed = std::path::Path::new(package).exists();
    // Cargo re-runs a script watching a path that does not exist (and rebuilds
    // the crate) on every build: until `npm ci` installs the package, watch
    // the directory it installs into, a few files then.
    let watched = if installed { package } else { "tests/pepr" };
    println!("cargo::rerun-if-changed={watched}");
    println!("cargo::rerun-if-env-changed=PATH");
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if installed && node {
        println!("cargo::rustc-cfg=pepr_peer");
    } else if std::env::var(assets::REQUIRE_REAL_ENV).as_deref() == Ok("1") {
        panic!(
            "the Pepr peer is required but not installed: run `npm ci` in store-kube/tests/pepr (Node.js 20 or later)"
        );
    } else {
        println!(
            "cargo::warning=tests against a real Pepr peer will be reported as ignored: run `npm ci` in store-kube/tests/pepr (Node.js 20 or later)"
        );
    }
}

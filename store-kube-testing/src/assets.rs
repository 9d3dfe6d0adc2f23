//! Where the control-plane binaries are, found as envtest finds them.
//!
//! Standard library only: the build scripts of crates with real-tier tests
//! include this file (`#[path]`) to tell their tests, at build time, whether
//! a control plane can be started, so a test that cannot run is reported as
//! ignored rather than passed.

use std::path::PathBuf;

/// Set to `1` (as CI does), a missing control plane fails the build of the
/// real-tier tests instead of marking them ignored.
#[allow(
    unreachable_pub,
    reason = "public in the crate, private in the build scripts that include this file"
)]
pub const REQUIRE_REAL_ENV: &str = "STORE_KUBE_REQUIRE_REAL";

/// The variables the search reads.
const VARIABLES: [&str; 6] = [
    "TEST_ASSET_ETCD",
    "TEST_ASSET_KUBE_APISERVER",
    "KUBEBUILDER_ASSETS",
    "STORE_KUBE_ENVTEST_CACHE",
    "XDG_CACHE_HOME",
    "HOME",
];

fn variable(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The directories searched, in order.
pub(crate) fn directories() -> Vec<PathBuf> {
    let mut directories = Vec::new();
    if let Some(dir) = variable("KUBEBUILDER_ASSETS") {
        directories.push(dir);
    }
    let cache = variable("STORE_KUBE_ENVTEST_CACHE")
        .or_else(|| variable("XDG_CACHE_HOME").map(|dir| dir.join("store-kube-envtest")))
        .or_else(|| variable("HOME").map(|dir| dir.join(".cache/store-kube-envtest")));
    if let Some(cache) = cache {
        directories.push(cache.join("bin"));
    }
    directories.push(PathBuf::from("/usr/local/kubebuilder/bin"));
    directories
}

/// The `etcd` and `kube-apiserver` binaries, or a hint saying how to get them.
pub(crate) fn find() -> Result<(PathBuf, PathBuf), String> {
    let directories = directories();
    let find = |binary: &str, explicit: &str| -> Option<PathBuf> {
        variable(explicit).or_else(|| {
            directories
                .iter()
                .map(|dir| dir.join(binary))
                .find(|path| path.is_file())
        })
    };
    match (
        find("etcd", "TEST_ASSET_ETCD"),
        find("kube-apiserver", "TEST_ASSET_KUBE_APISERVER"),
    ) {
        (Some(etcd), Some(apiserver)) if etcd.is_file() && apiserver.is_file() => {
            Ok((etcd, apiserver))
        }
        _ => Err(format!(
            "set KUBEBUILDER_ASSETS (or TEST_ASSET_ETCD and TEST_ASSET_KUBE_APISERVER) to etcd and kube-apiserver binaries, or run `cargo xtask envtest`; looked in {}",
            directories
                .iter()
                .map(|dir| dir.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// For a build script: sets the `real_control_plane` cfg when the binaries
/// are found (and asks Cargo to look again when the variables or the
/// directories change); without them, fails the build under
/// [`REQUIRE_REAL_ENV`]`=1` and otherwise warns that the real-tier tests
/// will be ignored.
#[allow(dead_code, reason = "called from build scripts only")]
pub(crate) fn emit_build_cfg() {
    println!("cargo::rustc-check-cfg=cfg(real_control_plane)");
    println!("cargo::rerun-if-env-changed={REQUIRE_REAL_ENV}");
    for name in VARIABLES {
        println!("cargo::rerun-if-env-changed={name}");
    }
    // Only directories that exist, which hold a few binaries: Cargo scans a
    // watched directory whole on every build, so watching where a missing one
    // would appear (its parent: the envtest cache with Go's build cache, or `/`
    // for a top-level `KUBEBUILDER_ASSETS`) would make every build walk it.
    // Binaries that appear later are found once `KUBEBUILDER_ASSETS` changes.
    for dir in directories() {
        if dir.is_dir() {
            println!("cargo::rerun-if-changed={}", dir.display());
        }
    }
    match find() {
        Ok(_) => println!("cargo::rustc-cfg=real_control_plane"),
        Err(hint) if std::env::var(REQUIRE_REAL_ENV).as_deref() == Ok("1") => {
            panic!("{REQUIRE_REAL_ENV}=1 but no control plane was found: {hint}")
        }
        Err(hint) => println!(
            "cargo::warning=real control-plane tests will be reported as ignored: {hint}; once they are there, export KUBEBUILDER_ASSETS to look again"
        ),
    }
}

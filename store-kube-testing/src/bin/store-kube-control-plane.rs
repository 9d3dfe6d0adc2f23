//! Starts a real etcd + kube-apiserver on 127.0.0.1, for trying things by
//! hand with `kubectl` or another program, and prints where it is:
//!
//! ```text
//! kubeconfig /dev/shm/store-kube-control-plane-…/kubeconfig
//! url https://127.0.0.1:…
//! pids <etcd> <kube-apiserver>
//! ```
//!
//! The binaries are found as the tests find them: `KUBEBUILDER_ASSETS`, or
//! what `cargo xtask envtest` installed. It runs until its standard input
//! closes (Ctrl-D); then, or when it is stopped any other way (Ctrl-C, a
//! signal), both servers stop and their directory is removed.

use std::process::ExitCode;

use store_kube_testing::{Component, ControlPlane};

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("store-kube-control-plane: cannot start a runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let plane = match runtime.block_on(ControlPlane::start()) {
        Ok(plane) => plane,
        Err(error) => {
            eprintln!("store-kube-control-plane: {error}");
            return ExitCode::FAILURE;
        }
    };
    let pid = |component| plane.pid(component).unwrap_or(0);
    println!("kubeconfig {}", plane.kubeconfig_path().display());
    println!("url {}", plane.url());
    println!(
        "pids {} {}",
        pid(Component::Etcd),
        pid(Component::KubeApiserver)
    );
    // Until stdin closes; a read error ends the wait too.
    let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
    drop(plane);
    ExitCode::SUCCESS
}

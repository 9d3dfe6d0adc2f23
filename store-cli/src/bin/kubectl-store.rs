//! `kubectl store ...`: the `store` command as a kubectl plugin.

fn main() -> std::process::ExitCode {
    // kubectl runs the plugin as `kubectl-store`; the usage names `store`.
    let args =
        std::iter::once(std::ffi::OsString::from("store")).chain(std::env::args_os().skip(1));
    store_cli::main_with(args)
}

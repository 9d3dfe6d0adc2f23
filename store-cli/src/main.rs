//! The `store` command; see the `store_cli` crate docs.

fn main() -> std::process::ExitCode {
    store_cli::main_with(std::env::args_os())
}

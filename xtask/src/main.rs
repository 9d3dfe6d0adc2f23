//! Project tasks, run as `cargo xtask <task>`.
//!
//! - `ci`: formatting, clippy with warnings denied, every test and the docs;
//!   what CI runs and what a person runs before pushing.
//!
//! Tasks shell out to `cargo` so they behave exactly like the commands a
//! person would type; xtask keeps no dependencies of its own.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("help" | "--help" | "-h") | None => {
            print_help();
            Ok(())
        }
        Some(other) => Err(format!("unknown task `{other}`; run `cargo xtask help`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn print_help() {
    println!(
        "cargo xtask <task>\n\n\
         tasks:\n  \
         ci    rustfmt check, clippy (warnings denied), all tests, docs (warnings denied)"
    );
}

/// The workspace root: xtask lives one level below it.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo(args: &[&str]) -> Command {
    let mut command = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    command.args(args).current_dir(root());
    command
}

fn run(step: &str, mut command: Command) -> Result<(), String> {
    eprintln!("xtask: == {step}");
    let status = command
        .status()
        .map_err(|e| format!("{step}: could not start: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{step} failed ({status})"))
    }
}

fn ci() -> Result<(), String> {
    run("rustfmt", cargo(&["fmt", "--all", "--check"]))?;
    run(
        "clippy",
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    run(
        "tests",
        cargo(&["test", "--workspace", "--all-targets", "--all-features"]),
    )?;
    run(
        "doc tests",
        cargo(&["test", "--workspace", "--all-features", "--doc"]),
    )?;
    let mut doc = cargo(&["doc", "--workspace", "--all-features", "--no-deps"]);
    doc.env("RUSTDOCFLAGS", "-D warnings");
    run("docs", doc)?;
    eprintln!("xtask: ci passed");
    Ok(())
}

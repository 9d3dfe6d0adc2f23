//! `store`: look into a typed store, and change it, from a terminal.
//!
//! ```text
//! $ store --store my-operator -n ops ls
//! KEY                VERSION  BYTES  SHARD
//! exempt-namespaces  4711     31     my-operator-2
//! $ store --store my-operator -n ops get exempt-namespaces --show-values
//! ["kube-system","team-b"]
//! $ store --pepr 7d3c... --capability hello ls -o jsonl
//! $ store --pepr 7d3c... --capability hello migrate-pepr --others hello-pepr
//! $ store --redis redis://127.0.0.1:6379 --store sessions ls
//! ```
//!
//! The binary is also installed as `kubectl-store`, so `kubectl store ...`
//! works as a kubectl plugin. It opens the store on the kube backend with the
//! current kubeconfig and context (or `--kubeconfig`, `--context`,
//! `--namespace`), in the native layout (`--store NAME`; the shard count is
//! read from the store) or Pepr's (`--pepr UUID --capability NAME`). With
//! `--redis URL --store NAME` (and `--prefix` when the application sets one)
//! it opens a store on the Redis backend instead; the URL may come from
//! `STORE_REDIS_URL` and is never printed with its credentials, and `stat`
//! then shows the store's keys, bytes, revision and the server's persistence
//! settings. A store that does not exist is reported, never created.
//!
//! Every write goes through `store_core::Store`, with `--if-version N` and
//! `--if-absent` as compare-and-set preconditions, so the tool cannot break a
//! layout. Values are shown as `<N bytes>` unless `--show-values` is given;
//! `dump` writes them, as a backup must.
//!
//! Exit codes: 0 success, 1 other failure, 2 bad input (command line, JSON,
//! file), 3 not found (store or key), 4 conflict (a precondition failed),
//! 5 refused by the store (invalid key, too large, refused by the server),
//! 6 unreachable (API server or Redis down or too slow).

mod args;
mod commands;
mod failure;
mod inspect;
mod open;
mod output;
mod redis;
mod transfer;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use store_core::Precondition;
use store_core::Version;

pub use args::{Cli, Command, Format, Target};
pub use failure::Failure;

/// Runs one parsed command, printing results to `out`.
pub async fn run(cli: Cli, out: &mut (dyn Write + Send)) -> Result<(), Failure> {
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "store", out);
        return Ok(());
    }
    if let Command::MigratePepr {
        others,
        apply,
        removal_delay,
    } = &cli.command
    {
        let mut printer = output::Printer {
            out,
            format: cli.output,
            show_values: cli.show_values,
        };
        return inspect::migrate_pepr(&cli.target, others, *apply, *removal_delay, &mut printer)
            .await;
    }
    let writes = matches!(
        cli.command,
        Command::Set { .. } | Command::Rm { .. } | Command::Restore { .. }
    );
    let opened = open::open(&cli.target, writes).await?;
    let result = dispatch(&cli, &opened, out).await;
    // Reads need nothing sent; writes were waited for. Close without a wait.
    drop(opened);
    result
}

async fn dispatch(
    cli: &Cli,
    opened: &open::Opened,
    out: &mut (dyn Write + Send),
) -> Result<(), Failure> {
    match &cli.command {
        Command::Watch { prefix, count } => {
            return commands::watch(opened, prefix, *count, cli.output, cli.show_values, out).await;
        }
        Command::Dump { file } => {
            let keys = transfer::dump(opened, file, out).await?;
            if file.as_os_str() != "-" {
                eprintln!("dumped {keys} keys to {}", file.display());
            }
            return Ok(());
        }
        _ => {}
    }
    let mut printer = output::Printer {
        out,
        format: cli.output,
        show_values: cli.show_values,
    };
    match &cli.command {
        Command::Ls { prefix } => commands::ls(opened, prefix, &mut printer),
        Command::Stat => inspect::stat(opened, &mut printer).await,
        Command::Get { key } => commands::get(opened, key, &mut printer),
        Command::Set {
            key,
            value,
            string,
            if_version,
            if_absent,
        } => {
            let value = commands::read_value(value, *string).await?;
            let precondition = match (if_version, if_absent) {
                (Some(version), _) => Some(Precondition::Version(Version(*version))),
                (None, true) => Some(Precondition::Absent),
                (None, false) => None,
            };
            commands::set(opened, key, &value, precondition, &mut printer).await
        }
        Command::Rm { key, if_version } => {
            commands::rm(opened, key, *if_version, &mut printer).await
        }
        Command::Restore {
            file,
            keep_existing,
        } => {
            let (written, kept) = transfer::restore(opened, file, *keep_existing).await?;
            printer.rows(
                &["WRITTEN", "KEPT"],
                &[serde_json::json!({"written": written, "kept": kept})],
            )
        }
        Command::Watch { .. }
        | Command::Dump { .. }
        | Command::Completions { .. }
        | Command::MigratePepr { .. } => Ok(()),
    }
}

/// The whole program: parses `args`, runs, prints a failure as one line on
/// standard error, and returns the exit code.
pub fn main_with<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { 2 } else { 0 });
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("store: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout();
    match runtime.block_on(run(cli, &mut stdout)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("store: {failure}");
            failure.exit_code()
        }
    }
}

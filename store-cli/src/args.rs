//! The command line: global options choosing the store, and one subcommand.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Look into a typed store, and change it, from a terminal.
///
/// Opens a store kept in Kubernetes custom resources (the current kubeconfig
/// and context unless told otherwise), in the native layout (`--store NAME`)
/// or Pepr's (`--pepr UUID --capability NAME`), or a store kept in Redis
/// (`--redis URL --store NAME`). Every write goes through the same `Store`
/// the applications use, so the tool never breaks a layout.
#[derive(Debug, Parser)]
#[command(name = "store", version, propagate_version = true)]
pub struct Cli {
    /// Which store, and how to reach it.
    #[command(flatten)]
    pub target: Target,

    /// Output format: a table on a terminal, or JSON for scripts.
    #[arg(short, long, value_enum, default_value_t = Format::Table, global = true)]
    pub output: Format,

    /// Print values; without it they are shown as `<N bytes>`.
    #[arg(long, global = true)]
    pub show_values: bool,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the store is.
#[derive(Debug, Args)]
pub struct Target {
    /// The kubeconfig file (default: `$KUBECONFIG`, then `~/.kube/config`,
    /// then the pod's service account).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context (default: the current one).
    #[arg(long, global = true)]
    pub context: Option<String>,

    /// The namespace (default: the context's; `pepr-system` for `--pepr`).
    #[arg(short, long, global = true)]
    pub namespace: Option<String>,

    /// The store's name (native layout).
    #[arg(long, global = true, conflicts_with = "pepr")]
    pub store: Option<String>,

    /// A Pepr module's UUID: use its `PeprStore` object (`pepr-<uuid>-store`).
    #[arg(long, global = true, requires = "capability")]
    pub pepr: Option<String>,

    /// The Pepr capability whose keys to see (with `--pepr`).
    #[arg(long, global = true)]
    pub capability: Option<String>,

    /// A Redis deployment holding the store (`--store NAME`) instead of
    /// Kubernetes: `redis://[user[:password]@]host[:port][/db]`,
    /// `rediss://...` for TLS, or `redis+cluster://host:port[,host:port...]`.
    /// Prefer `STORE_REDIS_URL` for a URL with a password: the URL is never
    /// printed with its credentials.
    #[arg(
        long,
        global = true,
        env = "STORE_REDIS_URL",
        hide_env_values = true,
        value_name = "URL",
        conflicts_with_all = ["pepr", "kubeconfig", "context", "namespace"]
    )]
    pub redis: Option<String>,

    /// The key prefix of the Redis store (with `--redis`; default: the
    /// backend's, `typed-store`).
    #[arg(
        long = "prefix",
        id = "redis_prefix",
        value_name = "PREFIX",
        global = true,
        requires = "redis"
    )]
    pub redis_prefix: Option<String>,

    /// How long a call may wait for the API server (or Redis).
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// One JSON document.
    Json,
    /// One JSON object per line.
    Jsonl,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Keys with their version, size and shard.
    Ls {
        /// Only keys starting with this.
        #[arg(default_value = "")]
        prefix: String,
    },
    /// One key's value, decoded.
    Get {
        /// The key.
        key: String,
    },
    /// Writes a value: JSON text, `@file` or `-` for standard input.
    Set {
        /// The key.
        key: String,
        /// The value as JSON, `@path` to read it from a file, `-` from stdin.
        value: String,
        /// Store the argument as a string instead of parsing it as JSON.
        #[arg(long)]
        string: bool,
        /// Write only if the key is at this version.
        #[arg(long, conflicts_with = "if_absent")]
        if_version: Option<u64>,
        /// Write only if the key does not exist.
        #[arg(long)]
        if_absent: bool,
    },
    /// Removes a key (removing a missing key is fine).
    Rm {
        /// The key.
        key: String,
        /// Remove only if the key is at this version.
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// Prints changes as they happen, one line each, until interrupted.
    Watch {
        /// Only keys starting with this.
        #[arg(default_value = "")]
        prefix: String,
        /// Stop after this many changes.
        #[arg(long)]
        count: Option<usize>,
    },
    /// The whole store to a JSON-lines file (values included).
    Dump {
        /// Where to write (`-`: standard output).
        #[arg(default_value = "-")]
        file: PathBuf,
    },
    /// Writes every line of a dump back; running it again changes nothing,
    /// so an interrupted restore is finished by running it again.
    Restore {
        /// The dump (`-`: standard input).
        #[arg(default_value = "-")]
        file: PathBuf,
        /// Leave keys that already exist as they are.
        #[arg(long)]
        keep_existing: bool,
    },
    /// Each object of the store: keys, JSON size, fill against the object
    /// budget, resource version; then totals. On Redis: keys, bytes,
    /// revision and the server's persistence settings.
    Stat,
    /// What Pepr's v1-to-v2 key migration of the capability would move (a dry
    /// run); with `--apply`, does it.
    MigratePepr {
        /// The other capabilities of the module (a v1 key belongs to the
        /// longest capability it starts with).
        #[arg(long, value_delimiter = ',')]
        others: Vec<String>,
        /// Migrate: copy now, remove the originals after `--removal-delay`,
        /// and wait until that is done.
        #[arg(long)]
        apply: bool,
        /// How long the v1 originals stay after their copies are made, so a
        /// Pepr pod starting meanwhile still completes its own migration.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        removal_delay: Duration,
    },
    /// Shell completions for `store` on standard output.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `250ms`, `10s`, `2m`, or a number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |at| text.split_at(at));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 10s or 250ms"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit `{unit}` (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("1h").is_err());
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

//! Project tasks, run as `cargo xtask <task>`.
//!
//! - `ci`: formatting, clippy with warnings denied, every test, the docs, and
//!   every example run to completion with its output checked; what CI runs and
//!   what a person runs before pushing.
//!
//! - `manifests [--check]`: the CRDs and least-privilege RBAC in `deploy/`.
//! - `bench [--quick]`: the benchmark suite, as ratios against baselines
//!   measured in the same run.
//! - `envtest`: etcd and kube-apiserver for the real control-plane tests,
//!   built from Debian's packages into a cache outside the repository.
//!
//! Tasks shell out to `cargo` so they behave exactly like the commands a
//! person would type; xtask keeps no dependencies of its own.

mod bench;
mod envtest;
mod soak;
mod tally;

use std::env;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("test") => test(),
        Some("manifests") => manifests(args.get(1).is_some_and(|a| a == "--check")),
        Some("envtest") => envtest::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("soak") => soak::run(&args[1..]),
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
         ci                   rustfmt check, clippy (warnings denied), all tests, docs (warnings denied),\n                       manifests --check, examples\n  \
         test                 every test and doc test, then how many ran per crate and tier\n  \
         manifests [--check]  write the CRDs and RBAC into deploy/ (or fail if they are stale)\n  \
         envtest              provision etcd + kube-apiserver (Debian packages); prints KUBEBUILDER_ASSETS\n  \
         bench [--quick] [--only B1,B7] [--no-save]\n                       \
         run the benchmark suite and print the table; a full run writes BENCHMARKS.md\n  \
         soak [--minutes N] [--backend memory|kube-fake|durable|real] [--cases N]\n                       \
         run the model-based tests with fresh seeds until the time is up; print the totals"
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
    manifests(true)?;
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
    let mut tally = tally::Tally::default();
    if let Err(failed) = run_tests(&mut tally) {
        tally.print();
        return Err(failed);
    }
    let mut doc = cargo(&["doc", "--workspace", "--all-features", "--no-deps"]);
    doc.env("RUSTDOCFLAGS", "-D warnings");
    run("docs", doc)?;
    // Smoke run: fails only if a benchmark crashes, not on a missed target.
    bench::run(&["--quick".to_owned(), "--no-save".to_owned()])?;
    examples()?;
    tally.print();
    eprintln!("xtask: ci passed");
    Ok(())
}

/// Runs every test and doc test of the workspace, then prints how many ran,
/// per crate and per tier (memory, fake, real, redis, doc).
fn test() -> Result<(), String> {
    let mut tally = tally::Tally::default();
    let result = run_tests(&mut tally);
    tally.print();
    result
}

fn run_tests(tally: &mut tally::Tally) -> Result<(), String> {
    tally::run_tests(
        "tests",
        &["test", "--workspace", "--all-targets", "--all-features"],
        tally,
    )?;
    tally::run_tests(
        "doc tests",
        &["test", "--workspace", "--all-features", "--doc"],
        tally,
    )
}

/// Writes the deploy manifests into `deploy/` (the store's CRDs and RBAC) and
/// `deploy/operator/` (the operator example's RBAC and Deployment), or with
/// `check` fails when the checked-in files differ from what the code generates.
fn manifests(check: bool) -> Result<(), String> {
    let deploy = root().join("deploy");
    let out = if check {
        std::env::temp_dir().join(format!("store-manifests-{}", std::process::id()))
    } else {
        deploy.clone()
    };
    let mut render = cargo(&[
        "run",
        "-q",
        "-p",
        "store-kube",
        "--example",
        "manifests",
        "--",
    ]);
    render.arg(&out);
    run("render manifests", render)?;
    let mut operator = cargo(&[
        "run",
        "-q",
        "-p",
        "store-examples",
        "--example",
        "operator",
        "--",
        "--manifests",
    ]);
    operator.arg(out.join("operator"));
    run("render operator manifests", operator)?;
    if !check {
        eprintln!("xtask: manifests written to {}", deploy.display());
        return Ok(());
    }
    let mut stale = Vec::new();
    let compared = compare_manifests(&out, &deploy, "", &mut stale);
    let _ = std::fs::remove_dir_all(&out);
    compared?;
    if stale.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "deploy/ is stale ({}); run `cargo xtask manifests` and commit the result",
            stale.join(", ")
        ))
    }
}

/// Compares every file under `generated` (subdirectories too) with the file at
/// the same place under `checked_in`; collects the relative paths that differ.
fn compare_manifests(
    generated: &Path,
    checked_in: &Path,
    prefix: &str,
    stale: &mut Vec<String>,
) -> Result<(), String> {
    let mut entries = std::fs::read_dir(generated)
        .map_err(|e| format!("{}: {e}", generated.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let name = entry.file_name();
        let relative = format!("{prefix}{}", name.to_string_lossy());
        let path = entry.path();
        if path.is_dir() {
            compare_manifests(
                &path,
                &checked_in.join(&name),
                &format!("{relative}/"),
                stale,
            )?;
            continue;
        }
        let generated = std::fs::read(&path).map_err(|e| e.to_string())?;
        let current = std::fs::read(checked_in.join(&name)).unwrap_or_default();
        if generated != current {
            stale.push(relative);
        }
    }
    Ok(())
}

/// The seed's messages, in the seed's order.
const HELLO_STORE_MESSAGES: &[&str] = &[
    r#""msg":"onReady""#,
    r#""msg":"onReady""#,
    r#""msg":"setItem""#,
    r#""msg":"getItem""#,
    r#""msg":"removeItem""#,
    r#""msg":"setItemAndWait""#,
    r#""msg":"getItem""#,
    r#""msg":"removeItemAndWait""#,
];

/// What the session workflow prints, in order, whatever its durable tier.
const SESSION_WORKFLOW_MESSAGES: &[&str] = &[
    "deploy-start: deployment deploy_session-42",
    "env-alpha sees deployment deploy_session-42 running with 3 steps in all, 2 of them its own",
    "env-bravo sees deployment deploy_session-42 running with 3 steps in all, 1 of them its own",
    "session-43 sees deployment id None",
    "cleanup: session-42 ended",
    "is outdated",
];

/// Each example, its arguments, and text its output must contain, in order.
const EXAMPLES: &[(&str, &[&str], &[&str])] = &[
    ("hello-store", &[], HELLO_STORE_MESSAGES),
    ("hello-store", &["--fake"], HELLO_STORE_MESSAGES),
    (
        "quickstart",
        &[],
        &["on-ready hook", "hits = Some(1000)", "closed"],
    ),
    ("session-workflow", &[], SESSION_WORKFLOW_MESSAGES),
    // The same workflow with the durable tier on a redis-server it starts.
    ("session-workflow", &["--redis"], SESSION_WORKFLOW_MESSAGES),
    (
        "typed-keys",
        &[],
        &[
            "derive: settings/exemptions",
            "family: profile/{id} formats to profile/7",
            "parses back to id Some(7)",
            "schema: value at key `profile/8`",
            "at `retries`",
        ],
    ),
    (
        "operator",
        &["--replicas", "3"],
        &[
            // Every question goes over HTTPS to the replica's webhook server.
            "replica 2 ready: store `operator` in namespace typed-store-operator, webhook on https://127.0.0.1:",
            "converged: 3 replicas agree on 2 exempt namespaces: team-a, team-c",
            "operator-0 admits pod web in team-a (exempt)",
            "operator-2 admits pod web in team-a (exempt)",
            "operator-0 denies pod web in team-b: container web: image nginx:latest has the denied tag latest",
            "operator-2 denies pod web in team-b",
            "converged: 3 replicas agree on 2 exempt namespaces: team-b, team-c",
            "operator-0 denies pod web in team-a",
            "operator-2 denies pod web in team-a",
            "operator-0 admits pod web in team-b (exempt)",
            "operator-2 admits pod web in team-b (exempt)",
            "converged: 3 replicas agree on 1 exempt namespace: team-b",
            "operator-2 admits pod api in team-a (no denied tag)",
            "operator-0 writes the policy: denied tags edge, latest",
            "operator-2 sees the policy written on operator-0: denied tags edge, latest",
            "operator-2 denies pod api in team-a: container api: image registry.example/api:edge has the denied tag edge",
            "stopped 3 replicas",
        ],
    ),
];

/// How long one example may run.
const EXAMPLE_DEADLINE: Duration = Duration::from_secs(180);

fn examples() -> Result<(), String> {
    run(
        "build examples",
        cargo(&["build", "-q", "-p", "store-examples", "--examples"]),
    )?;
    for (name, args, expected) in EXAMPLES {
        eprintln!("xtask: == example {name} {}", args.join(" "));
        let output = run_with_deadline(name, args)?;
        let mut rest = output.as_str();
        for needle in *expected {
            match rest.find(needle) {
                Some(at) => rest = &rest[at + needle.len()..],
                None => {
                    return Err(format!(
                        "example {name}: expected {needle:?} (in order) in its output:\n{output}"
                    ));
                }
            }
        }
    }
    Ok(())
}

fn run_with_deadline(name: &str, args: &[&str]) -> Result<String, String> {
    let mut command = cargo(&["run", "-q", "-p", "store-examples", "--example", name, "--"]);
    command.args(args).stdout(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| format!("example {name}: could not start: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > EXAMPLE_DEADLINE => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "example {name}: still running after {EXAMPLE_DEADLINE:?}"
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("example {name}: {e}")),
        }
    };
    let output = reader.join().unwrap_or_default();
    print!("{output}");
    if status.success() {
        Ok(output)
    } else {
        Err(format!("example {name} failed ({status})"))
    }
}

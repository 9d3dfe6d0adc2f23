//! `cargo xtask soak`: runs the model-based tests round after round, each
//! round one backend's test with many cases and a fresh seed, until the time
//! is up, and adds up the summary lines they print.
//!
//! A model test prints `model: backend=<name> seed=<seed> key=value ...`;
//! numbers are summed per backend and `kind:count,...` lists per kind, so a
//! figure the tests add later is counted without a change here. A failing
//! round is reported with its seed and its output is kept under
//! `<target>/soak/`, so `PROPTEST_RNG_SEED=<seed>` replays it.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{cargo, root};

const USAGE: &str = "cargo xtask soak [--minutes N] [--backend B[,B...]] [--cases N]\n\n  \
    --minutes  how long to keep starting rounds (default 10; decimals allowed)\n  \
    --backend  memory, kube-fake, durable (memory and kube-fake inner backends), real\n             \
               (a real control plane; fails without one) or redis (redis-server started by the\n             \
               test, standalone and cluster); repeatable; default memory,kube-fake,durable\n  \
    --cases    cases per round (default per backend: memory 400, kube-fake 30, durable 80, real 10,\n             \
               redis 10)";

/// One model test and how to run it.
struct Target {
    name: &'static str,
    cargo_args: &'static [&'static str],
    cases: u32,
    env: &'static [(&'static str, &'static str)],
}

const TARGETS: &[Target] = &[
    Target {
        name: "memory",
        cargo_args: &["-p", "store-core", "--test", "model_memory"],
        cases: 400,
        env: &[],
    },
    Target {
        name: "kube-fake",
        cargo_args: &["-p", "store-kube", "--test", "model_fake"],
        cases: 30,
        env: &[],
    },
    Target {
        name: "durable",
        cargo_args: &["-p", "store-session", "--test", "model_durable"],
        cases: 80,
        env: &[],
    },
    Target {
        name: "real",
        cargo_args: &["-p", "store-kube", "--test", "model_real"],
        cases: 10,
        env: &[("STORE_KUBE_REQUIRE_REAL", "1")],
    },
    Target {
        name: "redis",
        cargo_args: &["-p", "store-redis", "--test", "model"],
        cases: 10,
        env: &[],
    },
];

/// A round that outlives the deadline by this much is stopped and not counted.
const OVERRUN: Duration = Duration::from_secs(15 * 60);

/// Runs the soak; see [`USAGE`].
pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let mut minutes = 10.0_f64;
    let mut backends: Vec<&'static Target> = Vec::new();
    let mut cases: Option<u32> = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--minutes" => {
                let value = rest.next().ok_or("`--minutes` needs a number")?;
                minutes = value
                    .parse()
                    .ok()
                    .filter(|m: &f64| m.is_finite() && *m > 0.0)
                    .ok_or_else(|| format!("`--minutes {value}`: not a positive number"))?;
            }
            "--backend" => {
                let list = rest.next().ok_or("`--backend` needs a name")?;
                for name in list.split(',').map(str::trim) {
                    let target = TARGETS
                        .iter()
                        .find(|t| t.name == name)
                        .ok_or_else(|| format!("unknown backend `{name}`\n\n{USAGE}"))?;
                    if !backends.iter().any(|b| b.name == target.name) {
                        backends.push(target);
                    }
                }
            }
            "--cases" => {
                let value = rest.next().ok_or("`--cases` needs a number")?;
                cases = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|c| *c > 0)
                        .ok_or_else(|| format!("`--cases {value}`: not a positive number"))?,
                );
            }
            "-h" | "--help" | "help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument `{other}`\n\n{USAGE}")),
        }
    }
    if backends.is_empty() {
        backends = TARGETS.iter().filter(|t| t.name != "real").collect();
    }

    for target in &backends {
        let mut build = cargo(&["test"]);
        build.args(target.cargo_args).arg("--no-run");
        crate::run(&format!("build the {} model test", target.name), build)?;
    }

    let logs = target_dir().join("soak");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let budget = Duration::from_secs_f64(minutes * 60.0);
    let started = Instant::now();
    let deadline = started + budget;
    let mut totals = Totals::default();
    let mut round = 0usize;
    while Instant::now() < deadline {
        let target = backends[round % backends.len()];
        round += 1;
        let seed = random_seed();
        let cases = cases.unwrap_or(target.cases);
        let outcome = run_round(target, seed, cases, deadline + OVERRUN)?;
        let elapsed = outcome.elapsed.as_secs();
        let verdict = match &outcome.status {
            RoundStatus::Passed => "ok".to_owned(),
            RoundStatus::Failed(code) => {
                let log = logs.join(format!("{}-{seed}.log", target.name));
                std::fs::write(&log, &outcome.output)
                    .map_err(|e| format!("{}: {e}", log.display()))?;
                totals.failures.push(format!(
                    "{} seed {seed} ({code}): PROPTEST_RNG_SEED={seed} STORE_MODEL_CASES={cases} cargo test {} -- --nocapture; output in {}",
                    target.name,
                    target.cargo_args.join(" "),
                    log.display()
                ));
                eprintln!("{}", tail(&outcome.output, 40));
                format!("FAILED ({code}), output in {}", log.display())
            }
            RoundStatus::CutShort => "stopped past the deadline, not counted".to_owned(),
        };
        eprintln!(
            "xtask: soak round {round}: {} seed {seed} cases {cases}: {verdict} ({elapsed} s)",
            target.name
        );
        if !matches!(outcome.status, RoundStatus::CutShort) {
            totals.rounds += 1;
            let mut found = false;
            for line in outcome.output.lines() {
                // The test harness's progress marks may precede it on the line.
                if let Some(at) = line.find("model: backend=") {
                    totals.add(&line[at + "model:".len()..]);
                    found = true;
                }
            }
            if !found && matches!(outcome.status, RoundStatus::Passed) {
                totals.failures.push(format!(
                    "{} seed {seed}: the test passed but printed no `model:` line",
                    target.name
                ));
            }
        }
    }
    totals.print(started.elapsed());
    let broken = totals.figure("lost") + totals.figure("panics") + totals.figure("failed");
    if totals.failures.is_empty() && broken == 0 {
        Ok(())
    } else {
        Err(format!(
            "soak found {} failing round(s), {} lost write(s), {} panic(s)",
            totals.failures.len(),
            totals.figure("lost"),
            totals.figure("panics")
        ))
    }
}

enum RoundStatus {
    Passed,
    Failed(String),
    CutShort,
}

struct Round {
    status: RoundStatus,
    output: String,
    elapsed: Duration,
}

fn run_round(target: &Target, seed: u64, cases: u32, stop_at: Instant) -> Result<Round, String> {
    let mut command = cargo(&["test", "-q"]);
    command
        .args(target.cargo_args)
        .args(["--", "--nocapture"])
        .env("PROPTEST_RNG_SEED", seed.to_string())
        .env("STORE_MODEL_CASES", cases.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in target.env {
        command.env(name, value);
    }
    let started = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("{}: could not start cargo: {e}", target.name))?;
    let stdout = reader(&mut child, true);
    let stderr = reader(&mut child, false);
    let mut cut_short = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() > stop_at => {
                let _ = child.kill();
                cut_short = true;
                break child.wait().map_err(|e| format!("{}: {e}", target.name))?;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => return Err(format!("{}: {e}", target.name)),
        }
    };
    let mut output = stdout.join().unwrap_or_default();
    output.push_str(&stderr.join().unwrap_or_default());
    let status = if cut_short {
        RoundStatus::CutShort
    } else if status.success() {
        RoundStatus::Passed
    } else {
        RoundStatus::Failed(status.to_string())
    };
    Ok(Round {
        status,
        output,
        elapsed: started.elapsed(),
    })
}

/// Reads the child's stdout (or stderr) to the end on a thread of its own, so
/// neither pipe fills up while the other is read.
fn reader(child: &mut Child, stdout: bool) -> std::thread::JoinHandle<String> {
    let pipe: Option<Box<dyn Read + Send>> = if stdout {
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>)
    } else {
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>)
    };
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A seed from the standard library's per-process random keys and the clock.
fn random_seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    hasher.finish()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_relative() { root().join(p) } else { p })
        .unwrap_or_else(|| root().join("target"))
}

/// The figures of one backend, summed over its summary lines.
#[derive(Default)]
struct Figures {
    lines: u64,
    numbers: BTreeMap<String, u64>,
    kinds: BTreeMap<String, BTreeMap<String, u64>>,
}

#[derive(Default)]
struct Totals {
    rounds: usize,
    backends: BTreeMap<String, Figures>,
    failures: Vec<String>,
}

impl Totals {
    /// Adds one summary line (the text after `model:`).
    fn add(&mut self, summary: &str) {
        let fields: Vec<(&str, &str)> = summary
            .split_whitespace()
            .filter_map(|field| field.split_once('='))
            .collect();
        let backend = fields
            .iter()
            .find(|(key, _)| *key == "backend")
            .map_or("unknown", |(_, value)| value);
        let figures = self.backends.entry(backend.to_owned()).or_default();
        figures.lines += 1;
        for (key, value) in fields {
            if key == "backend" || key == "seed" {
                continue;
            }
            if let Ok(number) = value.parse::<u64>() {
                *figures.numbers.entry(key.to_owned()).or_default() += number;
                continue;
            }
            let kinds = figures.kinds.entry(key.to_owned()).or_default();
            for pair in value.split(',').filter(|p| !p.is_empty()) {
                if let Some((kind, count)) = pair.split_once(':')
                    && let Ok(count) = count.parse::<u64>()
                {
                    *kinds.entry(kind.to_owned()).or_default() += count;
                }
            }
        }
    }

    /// A number summed over every backend.
    fn figure(&self, name: &str) -> u64 {
        self.backends
            .values()
            .filter_map(|f| f.numbers.get(name))
            .sum()
    }

    fn print(&self, elapsed: Duration) {
        let secs = elapsed.as_secs();
        println!(
            "\nsoak: {} round(s) in {}m{:02}s, {} failed",
            self.rounds,
            secs / 60,
            secs % 60,
            self.failures.len()
        );
        const COLUMNS: [&str; 9] = [
            "cases",
            "steps",
            "checkpoints",
            "acknowledged_writes",
            "ambiguous",
            "lost",
            "panics",
            "failed",
            "runs",
        ];
        let width = |column: &str| column.len().max(7) + 2;
        println!(
            "{:<20}{}",
            "backend",
            COLUMNS
                .iter()
                .map(|c| format!("{c:>w$}", w = width(c)))
                .collect::<String>()
        );
        for (backend, figures) in &self.backends {
            let cells: String = COLUMNS
                .iter()
                .map(|column| {
                    let value = if *column == "runs" {
                        figures.lines
                    } else {
                        figures.numbers.get(*column).copied().unwrap_or(0)
                    };
                    format!("{value:>w$}", w = width(column))
                })
                .collect();
            println!("{backend:<20}{cells}");
        }
        for (backend, figures) in &self.backends {
            for (list, kinds) in &figures.kinds {
                let shown: Vec<String> = kinds.iter().map(|(k, n)| format!("{k}={n}")).collect();
                println!("{backend} {list}: {}", shown.join(" "));
            }
            let others: Vec<String> = figures
                .numbers
                .iter()
                .filter(|(name, _)| !COLUMNS.contains(&name.as_str()))
                .map(|(name, n)| format!("{name}={n}"))
                .collect();
            if !others.is_empty() {
                println!("{backend} other: {}", others.join(" "));
            }
        }
        for failure in &self.failures {
            println!("failed: {failure}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lines_add_up_per_backend_and_kind() {
        let mut totals = Totals::default();
        totals.add(" backend=kube-fake seed=9 cases=2 steps=10 faults=watch_drop:1,status_409:2 lost=0 panics=0");
        totals.add(" backend=kube-fake seed=7 cases=3 steps=5 faults=watch_drop:4, lost=1 panics=0 extra=6");
        totals.add(" backend=memory seed=1 cases=1 steps=1 faults= lost=0 panics=0");
        let kube = &totals.backends["kube-fake"];
        assert_eq!(kube.lines, 2);
        assert_eq!(kube.numbers["cases"], 5);
        assert_eq!(kube.numbers["steps"], 15);
        assert_eq!(kube.numbers["extra"], 6);
        assert_eq!(kube.kinds["faults"]["watch_drop"], 5);
        assert_eq!(kube.kinds["faults"]["status_409"], 2);
        assert!(!kube.numbers.contains_key("seed"));
        assert_eq!(totals.figure("lost"), 1);
        assert_eq!(totals.figure("cases"), 6);
    }
}

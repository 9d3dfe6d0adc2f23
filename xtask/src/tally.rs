//! Runs the workspace's tests and counts what ran, per crate and per tier, so
//! that a tier skipped without a word shows as a row of zeros or of ignored
//! tests, never as nothing.
//!
//! The test binaries are built first with `--message-format=json`, which names
//! the package of every binary; then `cargo test` runs them with its output and
//! theirs in one pipe (so each `Running` line comes before its binary's
//! results), echoed as it comes and read line by line.
//!
//! A test's tier comes from its name and crate: `real` for names holding
//! `real_control_plane`, `on_a_real` or `a_real_pepr` (the etcd +
//! kube-apiserver tier) and binaries named `*_real`; `redis` for store-redis
//! and names holding `redis` (a real `redis-server`); `fake` for other tests of
//! the kube crates and tests or binaries whose names hold `fake`, or `kube`
//! but not `memory` (the in-process fake API server); `memory` for the rest;
//! `doc` for doc tests.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

/// Crates whose tests all talk to a Kubernetes API, the fake one by default.
const KUBE_CRATES: [&str; 3] = ["store-kube", "store-kube-testing", "store-cli"];

#[derive(Default, Clone, Copy)]
struct Counts {
    passed: u64,
    ignored: u64,
    failed: u64,
}

/// Counts per (crate, tier).
#[derive(Default)]
pub(crate) struct Tally(BTreeMap<(String, &'static str), Counts>);

impl Tally {
    /// Counts one libtest result line's status; others (a harness's own
    /// lines, such as trybuild's) are not tests of this run.
    fn add(&mut self, krate: &str, tier: &'static str, status: &str) {
        let counts = self.0.entry((krate.to_owned(), tier)).or_default();
        match status {
            "ok" => counts.passed += 1,
            "FAILED" => counts.failed += 1,
            "ignored" => counts.ignored += 1,
            _ => {}
        }
    }

    /// The table `cargo xtask ci` ends with.
    pub(crate) fn print(&self) {
        eprintln!("xtask: tests run, per crate and tier");
        eprintln!(
            "xtask:   {:<20} {:<7} {:>7} {:>8} {:>7}",
            "crate", "tier", "passed", "ignored", "failed"
        );
        let mut total = Counts::default();
        for ((krate, tier), counts) in &self.0 {
            eprintln!(
                "xtask:   {krate:<20} {tier:<7} {:>7} {:>8} {:>7}",
                counts.passed, counts.ignored, counts.failed
            );
            total.passed += counts.passed;
            total.ignored += counts.ignored;
            total.failed += counts.failed;
        }
        eprintln!(
            "xtask:   {:<20} {:<7} {:>7} {:>8} {:>7}",
            "all", "", total.passed, total.ignored, total.failed
        );
    }
}

fn tier(krate: &str, binary: &str, test: &str) -> &'static str {
    if test.contains("real_control_plane")
        || test.contains("on_a_real")
        || test.contains("a_real_pepr")
        || binary.ends_with("_real")
    {
        "real"
    } else if krate == "store-redis" || [binary, test].iter().any(|name| name.contains("redis")) {
        "redis"
    } else if KUBE_CRATES.contains(&krate)
        || [binary, test].iter().any(|name| {
            name.contains("fake") || (name.contains("kube") && !name.contains("memory"))
        })
    {
        "fake"
    } else {
        "memory"
    }
}

/// Test binaries by file name: (crate, target name).
fn test_binaries(build: &[&str]) -> Result<HashMap<String, (String, String)>, String> {
    let mut command = super::cargo(build);
    command
        .args(["--no-run", "--message-format=json-render-diagnostics"])
        .stdout(Stdio::piped());
    let output = command
        .spawn()
        .and_then(|child| child.wait_with_output())
        .map_err(|e| format!("building the tests: {e}"))?;
    if !output.status.success() {
        return Err(format!("building the tests failed ({})", output.status));
    }
    let mut binaries = HashMap::new();
    for line in output.stdout.split(|b| *b == b'\n') {
        let Ok(message) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(executable), Some(package), Some(target)) = (
            message["executable"].as_str(),
            message["package_id"].as_str(),
            message["target"]["name"].as_str(),
        ) else {
            continue;
        };
        let file = executable.rsplit('/').next().unwrap_or(executable);
        binaries.insert(file.to_owned(), (package_name(package), target.to_owned()));
    }
    Ok(binaries)
}

/// `path+file:///work/store-kube#0.1.0` or `…#store-kube@0.1.0` → `store-kube`.
fn package_name(id: &str) -> String {
    let tail = id.rsplit('#').next().unwrap_or(id);
    match tail.split_once('@') {
        Some((name, _)) => name.to_owned(),
        None => id
            .split('#')
            .next()
            .and_then(|path| path.rsplit('/').next())
            .unwrap_or(id)
            .to_owned(),
    }
}

/// Runs `cargo <args>` (a `cargo test` whose binaries are built), echoing its
/// output and adding what ran to `tally`.
pub(crate) fn run_tests(step: &str, args: &[&str], tally: &mut Tally) -> Result<(), String> {
    eprintln!("xtask: == {step}");
    let doc = args.contains(&"--doc");
    let binaries = if doc {
        HashMap::new()
    } else {
        test_binaries(args)?
    };
    let (reader, writer) = std::io::pipe().map_err(|e| format!("{step}: {e}"))?;
    let mut command = super::cargo(args);
    command
        .stdout(writer.try_clone().map_err(|e| format!("{step}: {e}"))?)
        .stderr(writer);
    let mut child = command
        .spawn()
        .map_err(|e| format!("{step}: could not start: {e}"))?;
    // Our copies of the pipe's writing end must go, or reading never ends.
    drop(command);
    let mut current = (String::from("?"), String::from("?"));
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(reader).lines() {
        let line = line.map_err(|e| format!("{step}: reading its output: {e}"))?;
        let _ = writeln!(out, "{line}");
        let text = line.trim_start();
        if let Some(rest) = text.strip_prefix("Running ") {
            let file = rest
                .rsplit_once('(')
                .map(|(_, exe)| exe.trim_end_matches(')'))
                .and_then(|exe| exe.rsplit('/').next())
                .unwrap_or_default();
            current = binaries
                .get(file)
                .cloned()
                .unwrap_or_else(|| (String::from("?"), file.to_owned()));
        } else if let Some(krate) = text.strip_prefix("Doc-tests ") {
            current = (krate.replace('_', "-"), String::from("doc"));
        } else if let Some(rest) = text.strip_prefix("test ")
            && let Some((name, status)) = rest.rsplit_once(" ... ")
        {
            let status = status.split([',', ' ']).next().unwrap_or(status);
            let tier = if doc {
                "doc"
            } else {
                tier(&current.0, &current.1, name)
            };
            tally.add(&current.0, tier, status);
        }
    }
    let status = child.wait().map_err(|e| format!("{step}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{step} failed ({status})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_ids_of_both_formats_give_the_name() {
        assert_eq!(
            package_name("path+file:///w/store-kube#0.1.0"),
            "store-kube"
        );
        assert_eq!(
            package_name("path+file:///w/crates/x#store-kube-testing@0.1.0"),
            "store-kube-testing"
        );
    }

    #[test]
    fn tiers_follow_names_and_crates() {
        assert_eq!(
            tier("store-kube", "fake_api", "x::on_a_real_control_plane"),
            "real"
        );
        assert_eq!(
            tier("store-kube", "model_real", "kube_replicas_agree"),
            "real"
        );
        assert_eq!(tier("store-kube", "fake_api", "x::on_the_fake"), "fake");
        assert_eq!(tier("store-session", "replicas", "ending_on_kube"), "fake");
        assert_eq!(
            tier("store-session", "conformance_durable_kube", "clear"),
            "fake"
        );
        assert_eq!(
            tier("store-session", "sessions", "realm_scopes_are_shared"),
            "memory"
        );
        assert_eq!(
            tier("store-core", "store_core", "memory::tests::x"),
            "memory"
        );
    }
}

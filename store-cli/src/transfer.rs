//! `dump` and `restore`: a whole store to and from JSON lines, one
//! `{"key": .., "value": ..}` object a line, in key order.
//!
//! A restore checks every line before it writes anything, then writes each key
//! through the store; writing a key's current value again changes nothing, so
//! running a restore twice, or again after it was interrupted, ends in the same
//! store.

use std::io::Write;
use std::path::Path;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use store_core::{Error as StoreError, Precondition};

use crate::commands::decoded;
use crate::failure::Failure;
use crate::open::Opened;

/// One line of a dump.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    key: String,
    value: Value,
}

/// A progress bar on standard error when it is a terminal, else nothing.
fn progress(total: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(u64::try_from(total).unwrap_or(u64::MAX)),
        ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} keys") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

fn io(path: &Path, error: std::io::Error) -> Failure {
    Failure::BadInput(format!("{}: {error}", path.display()))
}

pub(crate) async fn dump(
    opened: &Opened,
    file: &Path,
    stdout: &mut (dyn Write + Send),
) -> Result<usize, Failure> {
    let snapshot = opened.store.snapshot();
    let bar = progress(snapshot.entries.len(), "dump");
    let mut text = String::new();
    for (key, payload) in &snapshot.entries {
        let value: Value = serde_json::from_str(payload.as_str())
            .map_err(|e| Failure::Other(format!("`{key}` holds no JSON: {e}")))?;
        let line = Line {
            key: key.clone(),
            value: decoded(opened, value),
        };
        text.push_str(&serde_json::to_string(&line).map_err(|e| Failure::Other(e.to_string()))?);
        text.push('\n');
        bar.inc(1);
    }
    bar.finish_and_clear();
    if file == Path::new("-") {
        stdout
            .write_all(text.as_bytes())
            .map_err(|e| Failure::Other(e.to_string()))?;
    } else {
        tokio::fs::write(file, text)
            .await
            .map_err(|e| io(file, e))?;
    }
    Ok(snapshot.entries.len())
}

/// Reads and checks every line of a dump.
async fn read_dump(file: &Path) -> Result<Vec<Line>, Failure> {
    let text = if file == Path::new("-") {
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut tokio::io::stdin(), &mut text)
            .await
            .map_err(|e| io(file, e))?;
        text
    } else {
        tokio::fs::read_to_string(file)
            .await
            .map_err(|e| io(file, e))?
    };
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(number, line)| {
            let parsed: Line = serde_json::from_str(line).map_err(|e| {
                Failure::BadInput(format!(
                    "{} line {}: not a dump line ({e}); nothing was written",
                    file.display(),
                    number + 1
                ))
            })?;
            store_core::key::validate(&parsed.key).map_err(|e| {
                Failure::BadInput(format!(
                    "{} line {}: {e}; nothing was written",
                    file.display(),
                    number + 1
                ))
            })?;
            Ok(parsed)
        })
        .collect()
}

/// Writes a dump back; returns how many keys were written and how many kept.
pub(crate) async fn restore(
    opened: &Opened,
    file: &Path,
    keep_existing: bool,
) -> Result<(usize, usize), Failure> {
    let lines = read_dump(file).await?;
    let bar = progress(lines.len(), "restore");
    let (mut written, mut kept) = (0, 0);
    for line in &lines {
        if keep_existing {
            match opened
                .store
                .compare_and_set(line.key.as_str(), Precondition::Absent, &line.value)
                .await
            {
                Ok(_) => written += 1,
                Err(StoreError::Conflict { .. }) => kept += 1,
                Err(e) => return Err(e.into()),
            }
        } else {
            opened.store.set(line.key.as_str(), &line.value)?;
            written += 1;
        }
        bar.inc(1);
    }
    opened.store.flush().await?;
    bar.finish_and_clear();
    Ok((written, kept))
}

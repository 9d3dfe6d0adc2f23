//! The commands that read and write keys: `ls`, `get`, `set`, `rm`, `watch`.

use std::io::Write;

use futures_util::StreamExt;
use serde_json::{Value, json};
use store_core::{Precondition, Version};

use crate::args::Format;
use crate::failure::Failure;
use crate::open::Opened;
use crate::output::{Printer, shown};

/// A stored value as JSON: in Pepr's layout every value is text, shown as the
/// JSON it holds when it holds JSON.
pub(crate) fn decoded(opened: &Opened, value: Value) -> Value {
    match value {
        Value::String(text) if opened.store.capabilities().text_values => {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        }
        other => other,
    }
}

pub(crate) fn ls(opened: &Opened, prefix: &str, printer: &mut Printer<'_>) -> Result<(), Failure> {
    let snapshot = opened.store.snapshot();
    let mut rows = Vec::new();
    for (key, payload) in snapshot.entries.range(prefix.to_owned()..) {
        if !key.starts_with(prefix) {
            break;
        }
        let version = opened
            .store
            .get_versioned::<Value>(key.as_str())
            .ok()
            .flatten()
            .map(|v| v.version.0);
        rows.push(json!({
            "key": key,
            "version": version,
            "bytes": payload.len(),
            "shard": opened.shard_of(key),
        }));
    }
    printer.rows(&["KEY", "VERSION", "BYTES", "SHARD"], &rows)
}

pub(crate) fn get(opened: &Opened, key: &str, printer: &mut Printer<'_>) -> Result<(), Failure> {
    let found = opened.store.get_versioned::<Value>(key)?.ok_or_else(|| {
        Failure::NotFound(format!(
            "no key `{key}` in the store ({})",
            opened.whereabouts()
        ))
    })?;
    let value = decoded(opened, (*found.value).clone());
    printer.value(key, found.version.0, &value)
}

/// The value argument of `set`: JSON text, `@file`, or `-` for standard input.
pub(crate) async fn read_value(argument: &str, string: bool) -> Result<Value, Failure> {
    let text = if argument == "-" {
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut tokio::io::stdin(), &mut text)
            .await
            .map_err(|e| Failure::BadInput(format!("cannot read standard input: {e}")))?;
        text
    } else if let Some(path) = argument.strip_prefix('@') {
        tokio::fs::read_to_string(path)
            .await
            .map_err(|e| Failure::BadInput(format!("cannot read {path}: {e}")))?
    } else {
        argument.to_owned()
    };
    if string {
        return Ok(Value::String(text));
    }
    serde_json::from_str(&text).map_err(|e| {
        Failure::BadInput(format!(
            "the value is not JSON ({e}); quote a string as '\"text\"' or pass --string"
        ))
    })
}

pub(crate) async fn set(
    opened: &Opened,
    key: &str,
    value: &Value,
    precondition: Option<Precondition>,
    printer: &mut Printer<'_>,
) -> Result<(), Failure> {
    let version = match precondition {
        Some(expected) => opened.store.compare_and_set(key, expected, value).await?,
        None => opened.store.set_and_wait(key, value).await?,
    };
    printer.done("set", key, Some(version.0))
}

pub(crate) async fn rm(
    opened: &Opened,
    key: &str,
    if_version: Option<u64>,
    printer: &mut Printer<'_>,
) -> Result<(), Failure> {
    match if_version {
        Some(version) => {
            opened
                .store
                .compare_and_remove(key, Version(version))
                .await?;
        }
        None => opened.store.remove_and_wait(key).await?,
    }
    printer.done("removed", key, None)
}

pub(crate) async fn watch(
    opened: &Opened,
    prefix: &str,
    count: Option<usize>,
    format: Format,
    show_values: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), Failure> {
    let mut changes = opened.store.subscribe().prefix(prefix);
    let mut seen = 0usize;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    while count.is_none_or(|n| seen < n) {
        let event = tokio::select! {
            event = changes.next() => event,
            _ = &mut interrupted => return Ok(()),
        };
        let Some(event) = event else {
            return Err(Failure::Unreachable(
                "the store closed its watch".to_owned(),
            ));
        };
        let event = event?;
        seen += 1;
        let value = event
            .value::<Value>()
            .ok()
            .flatten()
            .map(|v| decoded(opened, v));
        let size = event.payload().map(store_core::Payload::len);
        let op = if event.is_removal() { "removed" } else { "set" };
        let line = match format {
            Format::Table => {
                let what = match (&value, size) {
                    (Some(value), Some(bytes)) => shown(value, bytes, show_values),
                    _ => String::new(),
                };
                format!("{} {op} {} {what}", event.revision(), event.key())
                    .trim_end()
                    .to_owned()
            }
            Format::Json | Format::Jsonl => {
                let mut line = json!({
                    "revision": event.revision().0,
                    "op": op,
                    "key": event.key(),
                    "bytes": size,
                });
                if show_values {
                    line["value"] = value.unwrap_or(Value::Null);
                }
                line.to_string()
            }
        };
        writeln!(out, "{line}").map_err(|e| Failure::Other(e.to_string()))?;
        out.flush().map_err(|e| Failure::Other(e.to_string()))?;
    }
    Ok(())
}

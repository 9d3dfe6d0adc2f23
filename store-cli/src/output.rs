//! Printing results: aligned columns for people, JSON for scripts, and values
//! redacted unless asked for.

use std::io::Write;

use serde_json::{Value, json};

use crate::args::Format;
use crate::failure::Failure;

/// A value as shown: itself with `--show-values`, else its size only.
pub(crate) fn shown(value: &Value, bytes: usize, show_values: bool) -> String {
    if show_values {
        value.to_string()
    } else {
        format!("<{bytes} bytes>")
    }
}

/// Writes results in the chosen format.
pub(crate) struct Printer<'a> {
    pub(crate) out: &'a mut (dyn Write + Send),
    pub(crate) format: Format,
    pub(crate) show_values: bool,
}

fn io(error: std::io::Error) -> Failure {
    Failure::Other(format!("cannot write the output: {error}"))
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

impl Printer<'_> {
    /// Rows of objects with the given columns (lower-cased names are the keys).
    pub(crate) fn rows(&mut self, columns: &[&str], rows: &[Value]) -> Result<(), Failure> {
        match self.format {
            Format::Json => writeln!(self.out, "{}", Value::Array(rows.to_vec())).map_err(io),
            Format::Jsonl => {
                for row in rows {
                    writeln!(self.out, "{row}").map_err(io)?;
                }
                Ok(())
            }
            Format::Table => {
                let fields: Vec<String> = columns.iter().map(|c| c.to_lowercase()).collect();
                let cells: Vec<Vec<String>> = rows
                    .iter()
                    .map(|row| fields.iter().map(|f| cell(&row[f.as_str()])).collect())
                    .collect();
                let widths: Vec<usize> = (0..columns.len())
                    .map(|i| {
                        cells
                            .iter()
                            .map(|r| r[i].chars().count())
                            .chain([columns[i].len()])
                            .max()
                            .unwrap_or(0)
                    })
                    .collect();
                let line = |values: Vec<&str>| {
                    values
                        .iter()
                        .zip(&widths)
                        .map(|(v, w)| format!("{v:<w$}"))
                        .collect::<Vec<_>>()
                        .join("  ")
                        .trim_end()
                        .to_owned()
                };
                writeln!(self.out, "{}", line(columns.to_vec())).map_err(io)?;
                for row in &cells {
                    writeln!(
                        self.out,
                        "{}",
                        line(row.iter().map(String::as_str).collect())
                    )
                    .map_err(io)?;
                }
                Ok(())
            }
        }
    }

    /// One key's value.
    pub(crate) fn value(&mut self, key: &str, version: u64, value: &Value) -> Result<(), Failure> {
        let bytes = value.to_string().len();
        match self.format {
            Format::Table if self.show_values => {
                let pretty = serde_json::to_string_pretty(value)
                    .map_err(|e| Failure::Other(e.to_string()))?;
                writeln!(self.out, "{pretty}").map_err(io)
            }
            Format::Table => writeln!(
                self.out,
                "{key} (version {version}): <{bytes} bytes>; --show-values prints it"
            )
            .map_err(io),
            Format::Json | Format::Jsonl => {
                let mut line = json!({"key": key, "version": version, "bytes": bytes});
                if self.show_values {
                    line["value"] = value.clone();
                }
                writeln!(self.out, "{line}").map_err(io)
            }
        }
    }

    /// What a write did.
    pub(crate) fn done(
        &mut self,
        what: &str,
        key: &str,
        version: Option<u64>,
    ) -> Result<(), Failure> {
        match self.format {
            Format::Table => match version {
                Some(version) => writeln!(self.out, "{what} {key} (version {version})"),
                None => writeln!(self.out, "{what} {key}"),
            }
            .map_err(io),
            Format::Json | Format::Jsonl => writeln!(
                self.out,
                "{}",
                json!({"op": what, "key": key, "version": version})
            )
            .map_err(io),
        }
    }
}

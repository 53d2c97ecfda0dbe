//! The run record as JSON (`run.json`): the [`RunRecord`] itself, versioned by
//! `schema_version` and described by `docs/run-record.schema.json`.

use crate::record::RunRecord;

/// The JSON Schema the output of [`render`] follows (draft 2020-12).
pub const SCHEMA: &str = include_str!("../../../../docs/run-record.schema.json");

/// Pretty JSON with a final newline: people read it, and diffs stay line-based.
pub fn render(record: &RunRecord) -> Result<String, serde_json::Error> {
    let mut text = serde_json::to_string_pretty(record)?;
    text.push('\n');
    Ok(text)
}

/// Reads a record written by [`render`], e.g. to render reports again later.
pub fn parse(text: &str) -> Result<RunRecord, serde_json::Error> {
    serde_json::from_str(text)
}

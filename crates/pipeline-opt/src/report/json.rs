//! The run record as JSON (`run.json`): the [`RunRecord`] itself, versioned by
//! `schema_version` and described by `docs/run-record.schema.json`.

use camino::{Utf8Path, Utf8PathBuf};

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

#[derive(Debug, thiserror::Error)]
pub enum ReadRecordError {
    // The source is not repeated in the message: the CLI prints the error chain.
    #[error("cannot read the run record {path} (give the run.json a run wrote)")]
    Read {
        path: Utf8PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a run record (give the run.json a run of this version wrote)")]
    Parse {
        path: Utf8PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Reads the record a run saved at `path`, to render its reports again.
pub fn read(path: &Utf8Path) -> Result<RunRecord, ReadRecordError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ReadRecordError::Read { path: path.to_owned(), source })?;
    parse(&text).map_err(|source| ReadRecordError::Parse { path: path.to_owned(), source })
}

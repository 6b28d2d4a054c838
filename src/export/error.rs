//! Errors of a conversion and the record of a skipped row. Every error names the source
//! (cohort or file) so a message in a run report or on stderr says what to look at.

use std::fmt;

use super::limits::Limit;

/// Why a data row was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRowReason {
    /// The row has another number of fields than the header.
    FieldCount { expected: usize, found: usize },
    /// A field is not valid UTF-8.
    InvalidUtf8 { column: String },
    /// A field does not parse as the column's type.
    BadValue {
        column: String,
        expected: &'static str,
        value: String,
    },
    /// A required column (the first `amplitude_id`) is empty.
    Missing { column: String },
    /// Not CSV, e.g. text after a closing quote (`column` is the 0-based field index).
    Malformed { column: usize, message: String },
}

impl fmt::Display for BadRowReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadRowReason::FieldCount { expected, found } => {
                write!(f, "expected {expected} fields, found {found}")
            }
            BadRowReason::InvalidUtf8 { column } => {
                write!(f, "column {column:?} is not valid UTF-8")
            }
            BadRowReason::BadValue {
                column,
                expected,
                value,
            } => write!(f, "column {column:?}: {value:?} is not {expected}"),
            BadRowReason::Missing { column } => write!(f, "column {column:?} is empty"),
            BadRowReason::Malformed { column, message } => {
                write!(f, "field {}: {message}", column + 1)
            }
        }
    }
}

/// A row left out under `on_bad_row = skip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRow {
    /// 1-based data row number (the header is not counted).
    pub row: u64,
    /// 1-based line of the body where the row starts.
    pub line: u64,
    pub reason: String,
}

/// Why a conversion failed. Nothing was published at the destination key in any case.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The body stream returned an error (connection reset, timeout, expired link).
    #[error("{source_name}: download failed after {bytes} bytes: {message}")]
    Download {
        source_name: String,
        bytes: u64,
        message: String,
    },

    /// The body ended early: empty, inside a quoted field, or before the gzip stream's end.
    #[error("{source_name}: body is truncated ({what}) after {bytes} bytes")]
    Truncated {
        source_name: String,
        bytes: u64,
        what: String,
    },

    /// The body is not valid gzip although it is announced or looks like gzip.
    #[error("{source_name}: cannot decompress the gzip body: {message}")]
    Decompress {
        source_name: String,
        message: String,
    },

    /// The header row cannot be used (not UTF-8, no columns, a declared type for a
    /// column it lacks).
    #[error("{source_name}: bad header: {message}")]
    Header {
        source_name: String,
        message: String,
    },

    /// The body is not the cohort's CSV file: its header lacks the expected column (an
    /// error page served with 200, another file), or its row count is too far from the
    /// cohort's listed size (see [`BodyExpectation`](super::BodyExpectation)).
    #[error("{source_name}: the body is not the cohort's CSV file: {message}")]
    NotACohort {
        source_name: String,
        message: String,
    },

    /// A malformed data row under `on_bad_row = fail`.
    #[error("{source_name}: bad row {row} (line {line}): {reason}")]
    BadRow {
        source_name: String,
        row: u64,
        line: u64,
        reason: BadRowReason,
    },

    /// A limit of the CSV reader was passed (a field, a row or the header too long, too
    /// many columns, a gzip body expanding too much): the conversion stops there, before
    /// reading the rest of that record. Not retryable: the same file would be read again.
    #[error("{source_name}: {message}")]
    Limit {
        source_name: String,
        limit: Limit,
        message: String,
    },

    /// Encoding Parquet or writing to the store failed.
    #[error("{source_name}: cannot write {destination}: {message}")]
    Write {
        source_name: String,
        destination: String,
        message: String,
    },

    /// The run is stopping (SIGTERM/SIGINT): the upload was aborted, nothing published.
    #[error("{source_name}: stopped before the file was complete (the run is stopping)")]
    Stopped { source_name: String },

    /// A worker task of the conversion panicked or was cancelled.
    #[error("{source_name}: internal error: {message}")]
    Internal {
        source_name: String,
        message: String,
    },
}

impl ExportError {
    /// True when the body stream failed or ended early (including a gzip stream that is
    /// incomplete or corrupt), or was not the cohort's file (an error page served with 200):
    /// asking `/file` again with the same request id may succeed and spends no quota.
    /// False for bad rows, bad headers, passed limits and write errors.
    pub fn is_retryable_download(&self) -> bool {
        matches!(
            self,
            ExportError::Download { .. }
                | ExportError::Truncated { .. }
                | ExportError::Decompress { .. }
                | ExportError::NotACohort { .. }
        )
    }

    /// The limit a [`ExportError::Limit`] error passed.
    pub fn limit(&self) -> Option<Limit> {
        match self {
            ExportError::Limit { limit, .. } => Some(*limit),
            _ => None,
        }
    }

    /// The row number of a bad-row error.
    pub fn bad_row(&self) -> Option<u64> {
        match self {
            ExportError::BadRow { row, .. } => Some(*row),
            _ => None,
        }
    }
}

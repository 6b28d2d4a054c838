//! Reads the id column of a list — a CRM source, a downloaded cohort, an export snapshot —
//! into an [`IdCollector`]: CSV (plain or gzip) or Parquet, local or on S3. Values are
//! normalized (see `normalize`); blanks are counted, never collected; an `amplitude_id`
//! that is not an integer stops the read with the file, position and value.

use std::io::Read;

use serde::Serialize;

use super::bytes::{FileRef, maybe_gunzip};
use super::csv_scan::{CsvColumnScanner, CsvError};
use super::idset::{IdCollector, IdSetError};
use super::normalize::{Invalid, normalize};
use super::parquet_ids::{self, ColumnError};
use crate::amplitude::types::IdKind;
use crate::config::SourceFormat;

/// The two list formats (what `format = "auto"` resolves to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Csv,
    Parquet,
}

/// Which column to read and what it holds.
#[derive(Debug, Clone)]
pub struct ColumnSpec {
    pub column: String,
    pub kind: IdKind,
    /// When the header names the column twice, take the first (Amplitude's download can
    /// repeat `amplitude_id` among property columns) instead of refusing the file.
    pub first_of_repeated: bool,
}

impl ColumnSpec {
    pub fn new(column: &str, kind: IdKind) -> Self {
        ColumnSpec {
            column: column.to_string(),
            kind,
            first_of_repeated: false,
        }
    }
}

/// Rows read and how many of them had no id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReadStats {
    pub rows: u64,
    /// Empty (or whitespace-only, null, or missing) values.
    pub blank: u64,
}

/// A line of a CSV file or a row of a Parquet file (both counted from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Line(u64),
    Row(u64),
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Position::Line(n) => write!(f, "line {n}"),
            Position::Row(n) => write!(f, "row {n}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{file}: {message}")]
    Open { file: String, message: String },
    #[error("{file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {source}")]
    Csv { file: String, source: CsvError },
    #[error("{file}: {message}")]
    Parquet { file: String, message: String },
    #[error(
        "{file}: {at}: amplitude_id {value:?} is not an integer (is the column holding user ids? set id_kind = \"user_id\")"
    )]
    NotAnInteger {
        file: String,
        at: Position,
        value: String,
    },
    #[error("{file}: {at}: the id is not valid UTF-8")]
    NotUtf8 { file: String, at: Position },
    #[error("{file}: {source}")]
    IdSet { file: String, source: IdSetError },
}

/// A problem found while reading, before the file name is attached.
#[derive(Debug)]
enum Problem {
    Io(std::io::Error),
    Csv(CsvError),
    NotAnInteger(Position, String),
    NotUtf8(Position),
    IdSet(IdSetError),
}

impl From<CsvError> for Problem {
    fn from(e: CsvError) -> Self {
        Problem::Csv(e)
    }
}

impl From<std::io::Error> for Problem {
    fn from(e: std::io::Error) -> Self {
        Problem::Io(e)
    }
}

impl Problem {
    fn in_file(self, file: &str) -> ReadError {
        let file = file.to_string();
        match self {
            Problem::Io(source) => ReadError::Io { file, source },
            Problem::Csv(source) => ReadError::Csv { file, source },
            Problem::NotAnInteger(at, value) => ReadError::NotAnInteger { file, at, value },
            Problem::NotUtf8(at) => ReadError::NotUtf8 { file, at },
            Problem::IdSet(source) => ReadError::IdSet { file, source },
        }
    }
}

/// Collects ids, counting rows and blanks.
struct Collect<'a> {
    out: &'a mut IdCollector,
    kind: IdKind,
    stats: ReadStats,
}

impl Collect<'_> {
    #[inline]
    fn value(&mut self, at: Position, value: Option<&[u8]>) -> Result<(), Problem> {
        self.stats.rows += 1;
        let Some(raw) = value else {
            self.stats.blank += 1;
            return Ok(());
        };
        match normalize(raw, self.kind) {
            Ok(Some(id)) => self.out.push(id).map_err(Problem::IdSet),
            Ok(None) => {
                self.stats.blank += 1;
                Ok(())
            }
            Err(Invalid::NotAnInteger) => Err(Problem::NotAnInteger(at, shorten(raw))),
            Err(Invalid::NotUtf8) => Err(Problem::NotUtf8(at)),
        }
    }
}

fn shorten(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    match text.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.into_owned(),
    }
}

/// Reads CSV bytes (plain or gzip) from a blocking reader. Run it on a blocking thread.
pub fn collect_csv(
    reader: impl Read + Send + 'static,
    spec: &ColumnSpec,
    label: &str,
) -> Result<(IdCollector, ReadStats), ReadError> {
    let mut out = IdCollector::new();
    let stats = collect_csv_into(reader, spec, &mut out).map_err(|p| p.in_file(label))?;
    Ok((out, stats))
}

fn collect_csv_into(
    reader: impl Read + Send + 'static,
    spec: &ColumnSpec,
    out: &mut IdCollector,
) -> Result<ReadStats, Problem> {
    let reader = maybe_gunzip(reader)?;
    let mut scanner = CsvColumnScanner::new(&spec.column);
    if spec.first_of_repeated {
        scanner = scanner.first_of_repeated();
    }
    let mut c = Collect {
        out,
        kind: spec.kind,
        stats: ReadStats::default(),
    };
    scanner.read_all(reader, &mut |line, v| c.value(Position::Line(line), v))?;
    Ok(c.stats)
}

/// The format to read `file` as: `format` unless `auto`; else by extension (see
/// [`SourceFormat::from_name`]); else Parquet when the bytes start with `PAR1`, CSV otherwise.
pub async fn resolve_format(file: &FileRef, format: SourceFormat) -> Result<Format, ReadError> {
    match format {
        SourceFormat::Csv => return Ok(Format::Csv),
        SourceFormat::Parquet => return Ok(Format::Parquet),
        SourceFormat::Auto => {}
    }
    if let Some(f) = SourceFormat::from_name(&file.file_name()) {
        return Ok(f);
    }
    let head = file.head_bytes(4).await.map_err(|source| ReadError::Io {
        file: file.label(),
        source,
    })?;
    Ok(if head == b"PAR1" {
        Format::Parquet
    } else {
        Format::Csv
    })
}

/// Reads the ids of `file` (`format` `auto` is resolved first).
pub async fn read_ids(
    file: &FileRef,
    format: SourceFormat,
    spec: &ColumnSpec,
) -> Result<(IdCollector, ReadStats), ReadError> {
    let label = file.label();
    match resolve_format(file, format).await? {
        Format::Csv => {
            let reader = file.reader().await.map_err(|source| ReadError::Io {
                file: label.clone(),
                source,
            })?;
            let spec = spec.clone();
            tokio::task::spawn_blocking(move || collect_csv(reader, &spec, &label))
                .await
                .map_err(|e| ReadError::Open {
                    file: file.label(),
                    message: format!("reader task failed: {e}"),
                })?
        }
        Format::Parquet => {
            let mut out = IdCollector::new();
            let mut c = Collect {
                out: &mut out,
                kind: spec.kind,
                stats: ReadStats::default(),
            };
            parquet_ids::read_column(file, &spec.column, |row, v| c.value(Position::Row(row), v))
                .await
                .map_err(|e| match e {
                    ColumnError::File(message) => ReadError::Parquet {
                        file: label.clone(),
                        message,
                    },
                    ColumnError::Sink(p) => p.in_file(&label),
                })?;
            let stats = c.stats;
            Ok((out, stats))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(text: &str, spec: &ColumnSpec) -> Result<(IdCollector, ReadStats), ReadError> {
        collect_csv(
            std::io::Cursor::new(text.as_bytes().to_vec()),
            spec,
            "crm.csv",
        )
    }

    #[test]
    fn counts_rows_and_blanks() {
        let spec = ColumnSpec::new("user_id", IdKind::UserId);
        let (ids, stats) = csv("user_id,name\n a ,x\n,y\n  ,z\nb\nshort\n", &spec).expect("read");
        assert_eq!(stats, ReadStats { rows: 5, blank: 2 });
        assert_eq!(ids.total(), 3);
    }

    #[test]
    fn a_bad_amplitude_id_names_file_line_and_value() {
        let spec = ColumnSpec::new("amplitude_id", IdKind::AmplitudeId);
        let err = csv("amplitude_id\n1\n\n2\nabc\n", &spec).unwrap_err();
        assert_eq!(
            err.to_string(),
            "crm.csv: line 5: amplitude_id \"abc\" is not an integer (is the column holding user ids? set id_kind = \"user_id\")"
        );
    }

    #[test]
    fn repeated_columns_are_refused_unless_first_is_asked() {
        let text = "\"amplitude_id\",\"user_id\",\"amplitude_id\"\n\"1\",\"u\",\"9\"\n";
        let mut spec = ColumnSpec::new("amplitude_id", IdKind::AmplitudeId);
        assert!(matches!(csv(text, &spec), Err(ReadError::Csv { .. })));
        spec.first_of_repeated = true;
        let (ids, _) = csv(text, &spec).expect("read");
        assert_eq!(ids.total(), 1);
    }
}

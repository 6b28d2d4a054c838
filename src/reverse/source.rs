//! Reads the id column of a list — a CRM source, a downloaded cohort, an export snapshot —
//! into an [`IdCollector`]: CSV (plain or gzip) or Parquet, local or on S3. CSV goes
//! through the export's CSV reader (`crate::export::CsvReader`: same RFC 4180 rules,
//! limits and row/line numbers; a malformed row is an error). Values are normalized (see
//! `normalize`); blanks are counted, never collected; an `amplitude_id` that is not a
//! positive 64-bit integer stops the read with the file, position and value.

use bytes::Bytes;
use futures::Stream;
use serde::Serialize;

use super::bytes::FileRef;
use super::idset::{IdCollector, IdSetError};
use super::normalize::{Invalid, normalize};
use super::parquet_ids::{self, ColumnError};
use crate::amplitude::types::IdKind;
use crate::config::SourceFormat;
use crate::export::{
    BadRowPolicy, BadRowReason, CsvLimits, CsvReader, ExportError, FieldSink, Flow, GzipHint,
    Progress,
};

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
    /// Empty (or whitespace-only, or null) values.
    pub blank: u64,
}

/// A data row of a CSV file (with the line it starts on) or a row of a Parquet file, both
/// counted from 1 (a CSV's header is not a row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Csv { row: u64, line: u64 },
    Row(u64),
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Position::Csv { row, line } => write!(f, "row {row} (line {line})"),
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
    /// The CSV itself: a malformed row, a cut body, a passed limit (the message names the
    /// file, row and line).
    #[error("{0}")]
    Csv(ExportError),
    #[error("{file}: no column {column:?} in the header (columns: {})", shown_names(.header))]
    NoColumn {
        file: String,
        column: String,
        header: Vec<String>,
    },
    #[error("{file}: column name {column:?} appears {count} times in the header")]
    AmbiguousColumn {
        file: String,
        column: String,
        count: usize,
    },
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
    #[error(
        "{file}: {at}: amplitude_id {value} is out of range (Amplitude ids are 1..=9223372036854775807)"
    )]
    OutOfRange {
        file: String,
        at: Position,
        value: String,
    },
    #[error("{file}: {at}: the id is not valid UTF-8")]
    NotUtf8 { file: String, at: Position },
    #[error("{file}: {source}")]
    IdSet { file: String, source: IdSetError },
}

impl ReadError {
    /// True when reading the same file again may succeed (the body stream failed or was
    /// cut short).
    pub fn is_retryable(&self) -> bool {
        match self {
            ReadError::Io { .. } => true,
            ReadError::Csv(e) => e.is_retryable_download(),
            _ => false,
        }
    }
}

/// The first header names, for a message.
fn shown_names(header: &[String]) -> String {
    const SHOWN: usize = 20;
    let mut shown = header
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if header.len() > SHOWN {
        shown.push_str(&format!(", … ({} in all)", header.len()));
    }
    shown
}

/// A problem found while reading, before the file name is attached.
#[derive(Debug)]
enum Problem {
    Csv(ExportError),
    NotAnInteger(Position, String),
    OutOfRange(Position, String),
    NotUtf8(Position),
    IdSet(IdSetError),
}

impl From<ExportError> for Problem {
    fn from(e: ExportError) -> Self {
        Problem::Csv(e)
    }
}

impl Problem {
    fn in_file(self, file: &str) -> ReadError {
        let file = file.to_string();
        match self {
            Problem::Csv(e) => ReadError::Csv(e),
            Problem::NotAnInteger(at, value) => ReadError::NotAnInteger { file, at, value },
            Problem::OutOfRange(at, value) => ReadError::OutOfRange { file, at, value },
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
    /// One row's value (`None`: null or missing); `at` says where, for an error.
    #[inline]
    fn value(
        &mut self,
        value: Option<&[u8]>,
        at: impl FnOnce() -> Position,
    ) -> Result<(), Problem> {
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
            Err(Invalid::NotAnInteger) => Err(Problem::NotAnInteger(at(), shorten(raw))),
            Err(Invalid::OutOfRange) => Err(Problem::OutOfRange(at(), shorten(raw))),
            Err(Invalid::NotUtf8) => Err(Problem::NotUtf8(at())),
        }
    }
}

fn shorten(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw.trim_ascii());
    match text.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.into_owned(),
    }
}

/// The id column's field of the current row (the reader checks the field count, so every
/// good row has one).
struct IdField {
    width: usize,
    want: usize,
    value: Vec<u8>,
}

impl FieldSink for IdField {
    #[inline]
    fn width(&self) -> usize {
        self.width
    }

    #[inline]
    fn push_str(&mut self, col: usize, field: &str) -> Result<(), BadRowReason> {
        self.push_bytes(col, field.as_bytes())
    }

    #[inline]
    fn push_bytes(&mut self, col: usize, field: &[u8]) -> Result<(), BadRowReason> {
        if col == self.want {
            self.value.clear();
            self.value.extend_from_slice(field);
        }
        Ok(())
    }

    fn rollback_row(&mut self) {
        self.value.clear();
    }
}

/// Reads the ids of a CSV byte stream (plain or gzip). `label` names it in errors.
pub async fn collect_csv<S, E>(
    body: S,
    spec: &ColumnSpec,
    label: &str,
) -> Result<(IdCollector, ReadStats), ReadError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    collect_csv_with(body, GzipHint::Auto, spec, label).await
}

/// [`collect_csv`] with the transport's word on gzip (`Content-Encoding`).
pub async fn collect_csv_with<S, E>(
    body: S,
    gzip: GzipHint,
    spec: &ColumnSpec,
    label: &str,
) -> Result<(IdCollector, ReadStats), ReadError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let mut reader =
        CsvReader::from_stream(body, gzip, label, CsvLimits::default(), BadRowPolicy::Fail)
            .await
            .map_err(ReadError::Csv)?;
    let header = reader.read_header().await.map_err(ReadError::Csv)?;
    let names = header.lossy_names();
    let want = pick_column(&names, spec, label)?;
    let mut field = IdField {
        width: names.len(),
        want,
        value: Vec::new(),
    };
    let mut out = IdCollector::new();
    let mut c = Collect {
        out: &mut out,
        kind: spec.kind,
        stats: ReadStats::default(),
    };
    loop {
        let progress = reader
            .advance(&mut field, |f, at| {
                if at.good {
                    c.value(Some(&f.value), || Position::Csv {
                        row: at.row,
                        line: at.line(),
                    })?;
                }
                Ok::<_, Problem>(Flow::Continue)
            })
            .await
            .map_err(|p| p.in_file(label))?;
        if progress == Progress::End {
            break;
        }
    }
    let stats = c.stats;
    out.finish().map_err(|e| Problem::IdSet(e).in_file(label))?;
    Ok((out, stats))
}

/// The index of the wanted column (names compared trimmed).
fn pick_column(names: &[String], spec: &ColumnSpec, label: &str) -> Result<usize, ReadError> {
    let wanted = spec.column.trim();
    let mut matches = names
        .iter()
        .enumerate()
        .filter(|(_, n)| n.trim() == wanted)
        .map(|(i, _)| i);
    let Some(first) = matches.next() else {
        return Err(ReadError::NoColumn {
            file: label.to_string(),
            column: spec.column.clone(),
            header: names.to_vec(),
        });
    };
    let more = matches.count();
    if more > 0 && !spec.first_of_repeated {
        return Err(ReadError::AmbiguousColumn {
            file: label.to_string(),
            column: spec.column.clone(),
            count: more + 1,
        });
    }
    Ok(first)
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
            let body = file.byte_stream().await.map_err(|source| ReadError::Io {
                file: label.clone(),
                source,
            })?;
            collect_csv(body, spec, &label).await
        }
        Format::Parquet => {
            let mut out = IdCollector::new();
            let mut c = Collect {
                out: &mut out,
                kind: spec.kind,
                stats: ReadStats::default(),
            };
            parquet_ids::read_column(file, &spec.column, spec.kind, |row, v| {
                c.value(v, || Position::Row(row))
            })
            .await
            .map_err(|e| match e {
                ColumnError::File(message) => ReadError::Parquet {
                    file: label.clone(),
                    message,
                },
                ColumnError::Sink(p) => p.in_file(&label),
            })?;
            let stats = c.stats;
            out.finish()
                .map_err(|e| Problem::IdSet(e).in_file(&label))?;
            Ok((out, stats))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn csv(text: &str, spec: &ColumnSpec) -> Result<(IdCollector, ReadStats), ReadError> {
        let body =
            futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(text.to_string()))]);
        collect_csv(body, spec, "crm.csv").await
    }

    #[tokio::test]
    async fn counts_rows_and_blanks() {
        let spec = ColumnSpec::new("user_id", IdKind::UserId);
        let (ids, stats) = csv("user_id,name\n a ,x\n,y\n  ,z\nb,\n\"short\",w\n", &spec)
            .await
            .expect("read");
        assert_eq!(stats, ReadStats { rows: 5, blank: 2 });
        assert_eq!(ids.total(), 3);
    }

    #[tokio::test]
    async fn a_bad_amplitude_id_names_file_row_line_and_value() {
        let spec = ColumnSpec::new("amplitude_id", IdKind::AmplitudeId);
        let err = csv("amplitude_id\n1\n\n2\nabc\n", &spec).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "crm.csv: row 3 (line 5): amplitude_id \"abc\" is not an integer (is the column holding user ids? set id_kind = \"user_id\")"
        );
    }

    #[tokio::test]
    async fn an_amplitude_id_outside_int64_is_refused() {
        let spec = ColumnSpec::new("amplitude_id", IdKind::AmplitudeId);
        for (value, shown) in [
            ("9223372036854775808", "9223372036854775808"),
            ("-5", "-5"),
            ("0", "0"),
            (" 000 ", "000"),
            (
                "123456789012345678901234567890",
                "123456789012345678901234567890",
            ),
        ] {
            let err = csv(&format!("amplitude_id,x\n7,a\n{value},b\n"), &spec)
                .await
                .unwrap_err();
            assert!(
                matches!(err, ReadError::OutOfRange { .. }),
                "{value}: {err}"
            );
            assert_eq!(
                err.to_string(),
                format!(
                    "crm.csv: row 2 (line 3): amplitude_id {shown} is out of range (Amplitude ids are 1..=9223372036854775807)"
                )
            );
        }
        let (ids, _) = csv("amplitude_id\n9223372036854775807\n0001\n", &spec)
            .await
            .expect("in range");
        assert_eq!(ids.total(), 2);
    }

    #[tokio::test]
    async fn repeated_columns_are_refused_unless_first_is_asked() {
        let text = "\"amplitude_id\",\"user_id\",\"amplitude_id\"\n\"1\",\"u\",\"9\"\n";
        let mut spec = ColumnSpec::new("amplitude_id", IdKind::AmplitudeId);
        let err = csv(text, &spec).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "crm.csv: column name \"amplitude_id\" appears 2 times in the header"
        );
        spec.first_of_repeated = true;
        let (ids, _) = csv(text, &spec).await.expect("read");
        assert_eq!(ids.total(), 1);
    }

    /// The export's reader, so the export's strictness: a row with another number of
    /// fields, text after a closing quote, or a file ending inside a quote is an error
    /// naming the file, row and line (the old scanner took the first two silently).
    #[tokio::test]
    async fn malformed_csv_is_an_error_naming_file_row_and_line() {
        let spec = ColumnSpec::new("user_id", IdKind::UserId);
        let err = csv("user_id,name\na,x\nshort\n", &spec).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "crm.csv: bad row 2 (line 3): expected 2 fields, found 1"
        );
        let err = csv("user_id,name\na,\"x\"y\n", &spec).await.unwrap_err();
        assert!(err.to_string().contains("bad row 1 (line 2)"), "{err}");
        let err = csv("user_id,name\na,x\n\"b\",\"open\nquote\n", &spec)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "crm.csv: body is truncated (it ends inside a quoted field of row 2, which starts on line 3) after 33 bytes"
        );
        let err = csv("name,email\nx,y\n", &spec).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "crm.csv: no column \"user_id\" in the header (columns: name, email)"
        );
        let err = csv("", &spec).await.unwrap_err();
        assert!(err.to_string().contains("no header row"), "{err}");
    }

    /// Invalid UTF-8 in another column does not matter; in the id column it is an error.
    #[tokio::test]
    async fn only_the_id_column_must_be_utf8() {
        let spec = ColumnSpec::new("user_id", IdKind::UserId);
        let body = b"name,user_id\nM\xfcller,a\nb,\"\xff\"\n".to_vec();
        let err = collect_csv(
            futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(body))]),
            &spec,
            "crm.csv",
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "crm.csv: row 2 (line 3): the id is not valid UTF-8"
        );
    }
}

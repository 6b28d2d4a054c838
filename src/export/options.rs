//! What a conversion is asked to do: source name for messages, gzip handling, column
//! types, bad-row policy, batch size, Parquet settings and footer metadata.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use super::limits::CsvLimits;

/// Whether the body is gzip-encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GzipHint {
    /// Decompress when the body starts with the gzip magic bytes `1f 8b`.
    #[default]
    Auto,
    /// The transport said so (`Content-Encoding: gzip`): the body must be gzip.
    Encoded,
    /// Never decompress.
    Plain,
}

impl GzipHint {
    /// The hint a response's `Content-Encoding` header gives: `gzip`/`x-gzip` → `Encoded`,
    /// anything else (or none) → `Auto` (the magic bytes still decide).
    pub fn from_content_encoding(value: Option<&str>) -> Self {
        match value.map(|v| v.trim().to_ascii_lowercase()) {
            Some(v) if v == "gzip" || v == "x-gzip" => GzipHint::Encoded,
            _ => GzipHint::Auto,
        }
    }
}

/// The Arrow/Parquet type of a column. Without a declaration, `amplitude_id` columns are
/// `Int64` and every other column is `Utf8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Int64,
    Float64,
    Boolean,
    Utf8,
}

impl FromStr for ColumnType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "int64" => Ok(ColumnType::Int64),
            "float64" => Ok(ColumnType::Float64),
            "boolean" | "bool" => Ok(ColumnType::Boolean),
            "utf8" | "string" => Ok(ColumnType::Utf8),
            other => Err(format!(
                "unknown column type {other:?} (expected int64, float64, boolean or utf8)"
            )),
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ColumnType::Int64 => "int64",
            ColumnType::Float64 => "float64",
            ColumnType::Boolean => "boolean",
            ColumnType::Utf8 => "utf8",
        })
    }
}

/// What to do with a malformed row (wrong field count, unparsable value, invalid UTF-8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BadRowPolicy {
    /// Stop: the conversion fails naming the source, row and line; nothing is published.
    #[default]
    Fail,
    /// Leave the row out, count it and keep a sample (row number + reason) in the stats.
    Skip,
}

impl FromStr for BadRowPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fail" => Ok(BadRowPolicy::Fail),
            "skip" => Ok(BadRowPolicy::Skip),
            other => Err(format!(
                "unknown bad-row policy {other:?} (expected fail or skip)"
            )),
        }
    }
}

/// Parquet page compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zstd at the given level (1..=22).
    Zstd(i32),
    Snappy,
    Lz4,
    None,
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd(DEFAULT_ZSTD_LEVEL)
    }
}

/// zstd's own default level, also what polars and DuckDB use for `zstd`.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

impl FromStr for Compression {
    type Err = String;

    /// `zstd`, `zstd:LEVEL`, `snappy`, `lz4`, `none`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        let (name, level) = match s.split_once(':') {
            Some((n, l)) => (n, Some(l)),
            None => (s.as_str(), None),
        };
        match (name, level) {
            ("zstd", None) => Ok(Compression::Zstd(DEFAULT_ZSTD_LEVEL)),
            ("zstd", Some(l)) => match l.parse::<i32>() {
                Ok(l) if (1..=22).contains(&l) => Ok(Compression::Zstd(l)),
                _ => Err(format!("zstd level {l:?} is not in 1..=22")),
            },
            ("snappy", None) => Ok(Compression::Snappy),
            ("lz4", None) => Ok(Compression::Lz4),
            ("none" | "uncompressed", None) => Ok(Compression::None),
            _ => Err(format!(
                "unknown compression {s:?} (expected zstd, zstd:LEVEL, snappy, lz4 or none)"
            )),
        }
    }
}

/// Parquet writer settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParquetOptions {
    pub compression: Compression,
    /// Rows per row group (a row group is held, encoded, in memory until it is flushed).
    pub row_group_rows: usize,
}

/// Default rows per row group: bounded memory (a row group is buffered encoded; 128 Ki
/// rows of a cohort with five properties are about 5 MB of zstd pages) while still large
/// enough for readers to skip and parallelise well (DuckDB writes 122,880-row groups).
pub const DEFAULT_ROW_GROUP_ROWS: usize = 128 * 1024;

/// Default rows per Arrow record batch handed from the parser to the encoder.
pub const DEFAULT_BATCH_ROWS: usize = 16 * 1024;

impl Default for ParquetOptions {
    fn default() -> Self {
        ParquetOptions {
            compression: Compression::default(),
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
        }
    }
}

/// Everything [`convert_stream`](super::convert_stream) needs besides the body and the
/// destination.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// Names the source in errors and logs: a cohort id/name or a file path.
    pub source_name: String,
    pub gzip: GzipHint,
    /// Declared column types by (final, de-duplicated) column name.
    pub column_types: BTreeMap<String, ColumnType>,
    pub on_bad_row: BadRowPolicy,
    /// Rows per Arrow record batch (memory in flight is a few batches).
    pub batch_rows: usize,
    pub parquet: ParquetOptions,
    /// Key-value pairs written into the Parquet footer (`cohort_sync.rows` is added).
    pub metadata: Vec<(String, String)>,
    /// Cancelled when the run stops: the upload is aborted, nothing is published.
    pub cancel: Option<tokio_util::sync::CancellationToken>,
    /// What the body must look like to be published (a cohort file); `None` converts any
    /// CSV (the `convert` command).
    pub expect: Option<BodyExpectation>,
    /// How large a field, a row, the header and the gzip expansion may be (see
    /// [`CsvLimits`] for the defaults).
    pub limits: CsvLimits,
    /// Data rows parsed so far, added to per record batch (a progress display reads it).
    pub rows_read: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl ConvertOptions {
    /// Defaults: gzip sniffed, no declared types, fail on a bad row, 16 Ki-row batches,
    /// zstd level 3, 128 Ki-row row groups, no extra metadata, the default limits.
    pub fn new(source_name: impl Into<String>) -> Self {
        ConvertOptions {
            source_name: source_name.into(),
            gzip: GzipHint::Auto,
            column_types: BTreeMap::new(),
            on_bad_row: BadRowPolicy::Fail,
            batch_rows: DEFAULT_BATCH_ROWS,
            parquet: ParquetOptions::default(),
            metadata: Vec::new(),
            cancel: None,
            expect: None,
            limits: CsvLimits::default(),
            rows_read: None,
        }
    }
}

/// Amplitude's limit on a cohort's members.
pub const MAX_COHORT_MEMBERS: u64 = 2_000_000;

/// Rows a cohort file may differ from the listed size beyond 10% of it, either way (small
/// cohorts change by a few members at a time).
pub const COHORT_ROW_SLACK: u64 = 100;

/// What a body must be for its conversion to succeed: a header holding `column`, and a
/// number of data rows (good and bad) within `min_rows..=max_rows`. Checked while parsing,
/// before the file is completed, so a body that fails is never published; the error
/// ([`ExportError::NotACohort`](super::ExportError::NotACohort)) is retryable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyExpectation {
    /// A column the header must contain, by its name as written (before repeated names
    /// are renamed), case-sensitive.
    pub column: String,
    /// Fewest data rows accepted.
    pub min_rows: u64,
    /// Most data rows accepted; the parse stops as soon as a body has more.
    pub max_rows: Option<u64>,
    /// The size the row bounds come from (for messages).
    pub listed_size: Option<i64>,
}

impl BodyExpectation {
    /// A cohort file: the header has `amplitude_id`, and the rows are the cohort's
    /// `listed_size` (from the cohort list) give or take 10% and 100 rows:
    /// `floor(size × 0.9) − 100 ..= ceil(size × 1.1) + 100` (the minimum saturating at 0).
    ///
    /// Why a tolerance: the size comes from the list call, made before the download was
    /// requested; Amplitude may recompute the cohort in between, so the file can hold a
    /// somewhat different membership than the list said. An error page, a file of another
    /// request or a cut body is far outside that range. The size is taken as at most
    /// [`MAX_COHORT_MEMBERS`] (Amplitude's limit), so no body is read past 2,200,100 rows
    /// whatever the list says. An unknown (or negative) size sets no row bound.
    pub fn cohort(listed_size: Option<i64>) -> Self {
        let (min_rows, max_rows) = match listed_size.and_then(|s| u64::try_from(s).ok()) {
            Some(size) => {
                let (min, max) = cohort_row_bounds(size.min(MAX_COHORT_MEMBERS));
                (min, Some(max))
            }
            None => (0, None),
        };
        BodyExpectation {
            column: super::schema::AMPLITUDE_ID.to_string(),
            min_rows,
            max_rows,
            listed_size,
        }
    }

    /// How the row bounds were set, for messages.
    pub(crate) fn describe_rows(&self) -> String {
        let range = match self.max_rows {
            Some(max) => format!("{}..={max}", self.min_rows),
            None => format!("at least {}", self.min_rows),
        };
        match self.listed_size {
            Some(size) if size >= 0 => format!(
                "the cohort's listed size is {size}; accepted {range} rows (±10% and ±100: the list can lag the file)"
            ),
            _ => format!("accepted {range} rows"),
        }
    }
}

/// `floor(size × 0.9) − 100` (saturating) and `ceil(size × 1.1) + 100`, in integers:
/// `floor(0.9 s) = s − ceil(s / 10)` and `ceil(1.1 s) = s + ceil(s / 10)`.
fn cohort_row_bounds(size: u64) -> (u64, u64) {
    let tenth = size.div_ceil(10);
    let min = (size - tenth).saturating_sub(COHORT_ROW_SLACK);
    let max = size + tenth + COHORT_ROW_SLACK;
    (min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        assert_eq!("zstd".parse(), Ok(Compression::Zstd(3)));
        assert_eq!("ZSTD:9".parse(), Ok(Compression::Zstd(9)));
        assert!("zstd:0".parse::<Compression>().is_err());
        assert_eq!("none".parse(), Ok(Compression::None));
        assert_eq!("Int64".parse(), Ok(ColumnType::Int64));
        assert!("int".parse::<ColumnType>().is_err());
        assert_eq!("skip".parse(), Ok(BadRowPolicy::Skip));
        assert_eq!(
            GzipHint::from_content_encoding(Some("GZIP")),
            GzipHint::Encoded
        );
        assert_eq!(GzipHint::from_content_encoding(Some("br")), GzipHint::Auto);
    }

    fn bounds(size: Option<i64>) -> (u64, Option<u64>) {
        let e = BodyExpectation::cohort(size);
        assert_eq!(e.column, "amplitude_id");
        (e.min_rows, e.max_rows)
    }

    #[test]
    fn cohort_row_bounds_allow_ten_percent_and_a_hundred_rows() {
        assert_eq!(bounds(Some(0)), (0, Some(100)));
        assert_eq!(bounds(Some(15)), (0, Some(117)));
        assert_eq!(bounds(Some(1_000)), (800, Some(1_200)));
        assert_eq!(bounds(Some(1_005)), (804, Some(1_206)));
        assert_eq!(bounds(Some(100_000)), (89_900, Some(110_100)));
        assert_eq!(bounds(Some(2_000_000)), (1_799_900, Some(2_200_100)));
        // Amplitude caps cohorts at 2,000,000: a larger listed size reads no further.
        assert_eq!(bounds(Some(i64::MAX)), (1_799_900, Some(2_200_100)));
        assert_eq!(bounds(None), (0, None));
        assert_eq!(bounds(Some(-1)), (0, None));
    }
}

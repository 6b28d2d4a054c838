//! The CSV reader's limits: how large a field, a row, the header and the gzip expansion
//! may be. Memory stays bounded whatever the body: the reader holds at most one read
//! block plus one unfinished record, and fails as soon as that record passes a limit,
//! before reading any more of it.
//!
//! # The defaults, and why a real cohort never meets them
//! - **`max_field_bytes` = 64 KiB** (bytes as written in the file, quotes included).
//!   Amplitude's SDKs cut a string property at 4,096 characters (the server keeps at
//!   most 1,024): at most 16 KiB of UTF-8, 32 KiB once every `"` is doubled. 64 KiB is
//!   twice the longest value the SDKs can send.
//! - **`max_row_bytes` = 1 MiB.** Amplitude refuses event uploads over 1 MB, and a
//!   cohort row is one user's id and properties: a row of 1,000 properties of 1 KiB each
//!   still fits.
//! - **`max_header_bytes` = 1 MiB** and **`max_columns` = 1,000.** A header is
//!   `amplitude_id`, `user_id` and one column per user property; Amplitude's SDKs refuse
//!   more than 1,000 user properties in one call and its charts show at most 1,000.
//! - **`max_gzip_ratio` = 1,000:1**, checked once 8 MiB have been decompressed. Deflate
//!   cannot compress more than about 1,032:1, which only runs of one byte reach: a file
//!   of distinct ids compresses 3-20:1. A gzip bomb (a few MB growing to gigabytes)
//!   stops within its first megabytes.
//!
//! Passing a limit fails the conversion with [`ExportError::Limit`] naming the limit,
//! where it was passed (row, line, column) and how to raise it. It is not a bad row
//! (`on_bad_row = skip` does not skip it: the rest of that record is never read) and not
//! retryable: the file behind a request id is fixed, so asking for it again would read
//! the same bytes.

use super::error::ExportError;

/// Default [`CsvLimits::max_field_bytes`].
pub const DEFAULT_MAX_FIELD_BYTES: usize = 64 * 1024;
/// Default [`CsvLimits::max_row_bytes`].
pub const DEFAULT_MAX_ROW_BYTES: usize = 1024 * 1024;
/// Default [`CsvLimits::max_header_bytes`].
pub const DEFAULT_MAX_HEADER_BYTES: usize = 1024 * 1024;
/// Default [`CsvLimits::max_columns`].
pub const DEFAULT_MAX_COLUMNS: usize = 1000;
/// Default [`CsvLimits::max_gzip_ratio`].
pub const DEFAULT_MAX_GZIP_RATIO: u64 = 1000;
/// The gzip ratio is only checked once this many bytes were decompressed (a small, very
/// repetitive start says little).
pub const GZIP_RATIO_GRACE_BYTES: u64 = 8 * 1024 * 1024;

/// How a user raises a limit, for the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RaiseWith {
    /// Nothing to say (the limit cannot be changed where it applies).
    #[default]
    Nothing,
    /// `cohort-sync convert --max-field-bytes N` and the like.
    ConvertFlags,
    /// A pipeline's `[download.limits]` table.
    DownloadLimits,
}

/// The reader's limits (see the module doc for the defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvLimits {
    /// Longest field, in bytes as written (quotes and doubled quotes included).
    pub max_field_bytes: usize,
    /// Longest data row, in bytes as written (its line break included).
    pub max_row_bytes: usize,
    /// Longest header row, in bytes.
    pub max_header_bytes: usize,
    /// Most columns in the header.
    pub max_columns: usize,
    /// Most bytes a gzip body may expand to per compressed byte (checked after the first
    /// [`GZIP_RATIO_GRACE_BYTES`]).
    pub max_gzip_ratio: u64,
    /// How the error message says to raise a limit.
    pub raise_with: RaiseWith,
}

impl Default for CsvLimits {
    fn default() -> Self {
        CsvLimits {
            max_field_bytes: DEFAULT_MAX_FIELD_BYTES,
            max_row_bytes: DEFAULT_MAX_ROW_BYTES,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_columns: DEFAULT_MAX_COLUMNS,
            max_gzip_ratio: DEFAULT_MAX_GZIP_RATIO,
            raise_with: RaiseWith::Nothing,
        }
    }
}

/// Which limit was passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    FieldBytes,
    RowBytes,
    HeaderBytes,
    Columns,
    GzipRatio,
}

impl Limit {
    /// The limit's option name (`ConvertOptions::limits` field and `[download.limits]` key).
    pub fn name(self) -> &'static str {
        match self {
            Limit::FieldBytes => "max_field_bytes",
            Limit::RowBytes => "max_row_bytes",
            Limit::HeaderBytes => "max_header_bytes",
            Limit::Columns => "max_columns",
            Limit::GzipRatio => "max_gzip_ratio",
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl CsvLimits {
    /// The value of `limit`.
    pub fn value(&self, limit: Limit) -> u64 {
        let v = match limit {
            Limit::FieldBytes => self.max_field_bytes,
            Limit::RowBytes => self.max_row_bytes,
            Limit::HeaderBytes => self.max_header_bytes,
            Limit::Columns => self.max_columns,
            Limit::GzipRatio => return self.max_gzip_ratio,
        };
        u64::try_from(v).unwrap_or(u64::MAX)
    }

    /// The error for passing `limit`: `at` says where (`"row 3 (line 4), column \"x\": "`
    /// or empty), `what` what was seen.
    pub(crate) fn error(&self, source: &str, limit: Limit, at: &str, what: &str) -> ExportError {
        let how = match self.raise_with {
            RaiseWith::Nothing => String::new(),
            RaiseWith::ConvertFlags => {
                format!("; raise it with --{}", limit.name().replace('_', "-"))
            }
            RaiseWith::DownloadLimits => {
                format!("; raise it with {} in [download.limits]", limit.name())
            }
        };
        ExportError::Limit {
            source_name: source.to_string(),
            limit,
            message: format!("{at}{what} (limit {}{how})", limit.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_limit_and_how_to_raise_it() {
        let mut limits = CsvLimits::default();
        let e = limits.error(
            "x.csv",
            Limit::FieldBytes,
            "row 3 (line 4), column \"note\": ",
            "a field is longer than 65536 bytes",
        );
        assert_eq!(
            e.to_string(),
            "x.csv: row 3 (line 4), column \"note\": a field is longer than 65536 bytes (limit max_field_bytes)"
        );
        assert!(!e.is_retryable_download());
        limits.raise_with = RaiseWith::ConvertFlags;
        let e = limits.error("x.csv", Limit::Columns, "", "the header has 1001 columns");
        assert!(
            e.to_string()
                .ends_with("(limit max_columns; raise it with --max-columns)"),
            "{e}"
        );
        limits.raise_with = RaiseWith::DownloadLimits;
        let e = limits.error("cohort c", Limit::RowBytes, "", "x");
        assert!(
            e.to_string().ends_with(
                "(limit max_row_bytes; raise it with max_row_bytes in [download.limits])"
            ),
            "{e}"
        );
        assert_eq!(limits.value(Limit::GzipRatio), 1000);
    }
}

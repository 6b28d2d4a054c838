//! The export data path: a CSV byte stream (gzip or plain) parsed into Arrow batches and
//! written as Parquet through object_store, published atomically.
//!
//! ```text
//! body stream ─▶ decode (count bytes, gunzip within max_gzip_ratio)   ┐
//!             ─▶ csv + records (the one CSV reader, with its limits)  │ async task
//!             ─▶ reader + columns (rows → Arrow RecordBatch)          ┘
//!             ─▶ encode (Parquet; columns on several threads, sha256)   blocking thread
//!             ─▶ upload (multipart; complete on success, abort on error) caller's task
//! ```
//! Stages are joined by bounded channels (one batch queued, two byte pieces queued), so
//! memory stays flat whatever the body's size; encoded batches go back to the parser,
//! which reuses their buffers.
//!
//! # What the CSV becomes
//! - **Gzip**: decompressed when `GzipHint::Encoded` (a `Content-Encoding: gzip` response)
//!   or, with `Auto`, when the body starts with the magic bytes `1f 8b`; concatenated gzip
//!   members are one body. `Plain` never decompresses.
//! - **Quoting** (RFC 4180): quoted fields may hold commas, line breaks and `""` (one
//!   quote); LF, CRLF and lone CR end lines; blank lines are skipped. Field bytes are kept
//!   exactly, so any UTF-8 survives; a field that is not valid UTF-8 makes its row bad.
//! - **Schema** from the header: `amplitude_id` columns are Int64, every other column Utf8,
//!   unless `column_types` declares `int64`, `float64`, `boolean` (`true/false/1/0`, any
//!   case) or `utf8` for a column (by its final name; declaring a type for a column the
//!   header lacks is an error).
//! - **Empty fields are null** in every column except the first `amplitude_id`, which is
//!   required (empty → bad row). CSV cannot tell `""` from an empty unquoted field, and
//!   Amplitude writes a missing user id or unset property as empty.
//! - **Repeated column names** keep their data under a new name: the k-th `x` becomes
//!   `x_k` (the smallest k ≥ 2 that is not already a column). Amplitude repeats
//!   `amplitude_id` at the end when properties are included: it becomes `amplitude_id_2`
//!   (Int64, nullable). Nothing is dropped, so a disagreement between the two stays
//!   visible.
//! - **Bad rows** (wrong field count, a value not of its column's type, invalid UTF-8 in a
//!   text column, text after a closing quote): `BadRowPolicy::Fail` stops with an error naming the
//!   source, the 1-based data row (the header is not counted) and the line where the row
//!   starts; `Skip` leaves the row out, counts it and keeps the first
//!   20 (row, line, reason) in [`ConvertStats::skipped_sample`].
//! - **A truncated body** (empty, ends inside a quoted field, an incomplete gzip stream, or a
//!   malformed last row without a final line break) is an error that
//!   [`ExportError::is_retryable_download`] marks retryable — never a short file.
//! - **Limits** (`limits`, [`CsvLimits`]; defaults in parentheses, each raisable through
//!   [`ConvertOptions::limits`], `convert --max-…` and a pipeline's `[download.limits]`):
//!   a field (64 KiB as written), a row (1 MiB), the header (1 MiB, 1,000 columns), the
//!   gzip expansion (1,000:1 after 8 MiB). The reader holds one read block and one
//!   record, and fails as soon as the record it is reading passes a limit, so memory stays
//!   bounded whatever the body. Passing a limit is [`ExportError::Limit`], naming the
//!   limit, the row, line and column, and how to raise it; it is not a bad row (`skip`
//!   does not skip it) and not retryable (the file behind a request id is fixed: asking
//!   again reads the same bytes; a real cohort's rows are far below every default).
//! - **Not a cohort file**: with [`ConvertOptions::expect`] set (the runner sets
//!   [`BodyExpectation::cohort`]), a header without `amplitude_id` (an HTML error page, a
//!   `"foo","bar"` file) fails right after the header, and a row count outside the listed
//!   size's tolerance fails before the file is completed (too many rows: as soon as the
//!   bound is passed). Both are [`ExportError::NotACohort`], retryable, never published.
//!
//! # What the Parquet file holds
//! zstd (level 3 by default), snappy, lz4 or no compression; row groups of at most
//! `row_group_rows` rows; columns whose first batch is mostly distinct values (ids) are
//! written without a dictionary. Footer key-value metadata: the caller's pairs plus
//! `cohort_sync.rows` (the rows written). The file appears at its key only when complete
//! (see `upload`).

mod column_pool;
mod columns;
mod convert;
mod csv;
mod decode;
mod encode;
mod error;
mod input;
mod limits;
mod options;
mod props;
mod read_ahead;
mod reader;
mod records;
mod schema;
mod sink;
mod stages;
mod upload;

pub use columns::{BatchBuilder, parse_i64};
pub use convert::{ConvertStats, convert_stream};
pub use csv::{CsvReader, Flow, Header, Progress, RowAt, SKIPPED_SAMPLE};
pub use decode::GZIP_MAGIC;
pub use encode::ROWS_KEY;
pub use error::{BadRowReason, ExportError, SkippedRow};
pub use limits::{
    CsvLimits, DEFAULT_MAX_COLUMNS, DEFAULT_MAX_FIELD_BYTES, DEFAULT_MAX_GZIP_RATIO,
    DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_ROW_BYTES, GZIP_RATIO_GRACE_BYTES, Limit, RaiseWith,
};
pub use options::{
    BadRowPolicy, BodyExpectation, COHORT_ROW_SLACK, ColumnType, Compression, ConvertOptions,
    DEFAULT_BATCH_ROWS, DEFAULT_ROW_GROUP_ROWS, DEFAULT_ZSTD_LEVEL, GzipHint, MAX_COHORT_MEMBERS,
    ParquetOptions,
};
pub use props::writer_properties;
pub use read_ahead::read_ahead;
pub use records::FieldSink;
pub use schema::{AMPLITUDE_ID, ColumnSpec, Columns, columns_from_header};
pub use stages::{encode_to_parquet, parse_batches, parse_to_batches};

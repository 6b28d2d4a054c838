//! The export data path: a CSV byte stream (gzip or plain) parsed into Arrow batches and
//! written as Parquet through object_store, published atomically.
//!
//! ```text
//! body stream ─▶ decode (count, gunzip) ─▶ reader (CSV → RecordBatch)   [async task]
//!            ─▶ encode (Parquet, sha256)                                [blocking thread]
//!            ─▶ upload (multipart; complete on success, abort on error) [caller's task]
//! ```

mod columns;
mod convert;
mod decode;
mod encode;
mod error;
mod input;
mod options;
mod props;
mod reader;
mod records;
mod schema;
mod sink;
mod stages;
mod upload;

pub use columns::{BatchBuilder, parse_i64};
pub use convert::{ConvertStats, convert_stream};
pub use decode::GZIP_MAGIC;
pub use encode::ROWS_KEY;
pub use error::{BadRowReason, ExportError, SkippedRow};
pub use options::{
    BadRowPolicy, ColumnType, Compression, ConvertOptions, DEFAULT_BATCH_ROWS,
    DEFAULT_ROW_GROUP_ROWS, DEFAULT_ZSTD_LEVEL, GzipHint, ParquetOptions,
};
pub use schema::{AMPLITUDE_ID, ColumnSpec, Columns, columns_from_header};
pub use stages::{encode_to_parquet, parse_to_batches};

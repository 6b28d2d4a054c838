//! Parquet access for the reverse pipeline: one column read as ids, and the footer's
//! key-value metadata (`cohort_sync.*` of export snapshots), from a local file or an object
//! store, reading only the byte ranges needed.
//!
//! An id column must be of a type that can hold its kind of id: a string (`utf8`,
//! `large_utf8`, `utf8_view`) for either kind, or a signed or unsigned integer for
//! `amplitude_id` (written in decimal, then checked to be in 1..=i64::MAX like any other
//! value); a dictionary of such values counts as its values. Anything else (booleans,
//! floats, timestamps, lists, binary...) is refused naming the column and its Arrow type,
//! never turned into text such as `true`, `2.0` or `[a]`.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use super::bytes::FileRef;
use crate::amplitude::types::IdKind;

/// Random access to an object for the Parquet reader.
pub struct StoreFileReader {
    store: Arc<dyn ObjectStore>,
    key: Path,
    size: Option<u64>,
}

impl StoreFileReader {
    pub fn new(store: Arc<dyn ObjectStore>, key: Path) -> Self {
        StoreFileReader {
            store,
            key,
            size: None,
        }
    }
}

fn store_err(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for StoreFileReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.key, range)
                .await
                .map_err(store_err)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.key, &ranges)
                .await
                .map_err(store_err)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = match self.size {
                Some(s) => s,
                None => {
                    let s = self.store.head(&self.key).await.map_err(store_err)?.size;
                    self.size = Some(s);
                    s
                }
            };
            let meta = ParquetMetaDataReader::new()
                .with_prefetch_hint(Some(64 * 1024))
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(meta))
        }
        .boxed()
    }
}

/// Opens `file` for the Parquet reader.
pub async fn open(file: &FileRef) -> Result<Box<dyn AsyncFileReader>, String> {
    match file {
        FileRef::Local(p) => {
            let f = tokio::fs::File::open(p).await.map_err(|e| e.to_string())?;
            Ok(Box::new(f))
        }
        FileRef::Store { store, key, .. } => {
            Ok(Box::new(StoreFileReader::new(store.clone(), key.clone())))
        }
    }
}

/// The message of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let why = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    format!(
        "the Parquet reader failed on this file ({}); is it a valid Parquet file?",
        crate::text::escape(&why)
    )
}

/// The footer's key-value metadata (a panic of the reader on a crafted footer is an
/// error, as in [`read_column`]).
pub async fn footer_metadata(file: &FileRef) -> Result<HashMap<String, String>, String> {
    let read = std::panic::AssertUnwindSafe(footer_metadata_unguarded(file));
    match read.catch_unwind().await {
        Ok(result) => result,
        Err(panic) => Err(panic_message(panic.as_ref())),
    }
}

async fn footer_metadata_unguarded(file: &FileRef) -> Result<HashMap<String, String>, String> {
    let mut reader = open(file).await?;
    let meta = reader.get_metadata(None).await.map_err(|e| e.to_string())?;
    Ok(meta
        .file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .filter_map(|e| e.value.clone().map(|v| (e.key.clone(), v)))
                .collect()
        })
        .unwrap_or_default())
}

/// What went wrong reading a column.
#[derive(Debug)]
pub enum ColumnError<E> {
    /// The file cannot be read as Parquet, or the column is missing or of an unusable type.
    File(String),
    /// The sink refused a value (carries the sink's error).
    Sink(E),
}

/// Whether a column of type `t` can hold ids of `kind` (see the module doc).
pub fn can_hold(t: &DataType, kind: IdKind) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => kind == IdKind::AmplitudeId,
        DataType::Dictionary(_, values) => can_hold(values, kind),
        _ => false,
    }
}

fn kind_name(kind: IdKind) -> &'static str {
    match kind {
        IdKind::UserId => "user_id",
        IdKind::AmplitudeId => "amplitude_id",
    }
}

/// Why a column of type `t` is refused for `kind`.
fn refused(column: &str, t: &DataType, kind: IdKind) -> String {
    let takes = match kind {
        IdKind::UserId => "a string column (utf8, large_utf8 or utf8_view)",
        IdKind::AmplitudeId => "a string column (utf8, large_utf8 or utf8_view) or an integer one",
    };
    format!(
        "column {column:?} is of Arrow type {t}, which cannot hold {} ids: id_kind = {:?} takes {takes}",
        kind_name(kind),
        kind_name(kind)
    )
}

/// Refuses metadata the Parquet reader would trip over: a column chunk whose offset or
/// length is negative, or whose end does not fit in 64 bits (the reader asserts on the
/// first and overflows on the second — a crafted file must fail, not crash; found by
/// fuzzing, `fuzz/regressions/reverse_source/`).
pub(crate) fn check_chunks(meta: &ParquetMetaData) -> Result<(), String> {
    for (g, group) in meta.row_groups().iter().enumerate() {
        for (c, chunk) in group.columns().iter().enumerate() {
            let start = chunk
                .dictionary_page_offset()
                .unwrap_or_else(|| chunk.data_page_offset());
            let len = chunk.compressed_size();
            let offsets_ok = start >= 0
                && chunk.data_page_offset() >= 0
                && chunk.dictionary_page_offset().is_none_or(|d| d >= 0);
            if !offsets_ok || len < 0 || start.checked_add(len).is_none() {
                return Err(format!(
                    "corrupt Parquet metadata: row group {g}, column chunk {c} has offset {start} and length {len}"
                ));
            }
        }
    }
    Ok(())
}

/// Calls `sink(row, value)` for every row of `column` (rows counted from 1; `None` for
/// nulls): strings as they are, integers in decimal. Fails before reading any row when
/// the column's type cannot hold ids of `kind`. A file the Parquet reader cannot decode
/// fails with its error — and, should the reader panic on some crafted file, with that
/// panic's message instead of ending the run (the file is untrusted input).
pub async fn read_column<E>(
    file: &FileRef,
    column: &str,
    kind: IdKind,
    sink: impl FnMut(u64, Option<&[u8]>) -> Result<(), E>,
) -> Result<(), ColumnError<E>> {
    let read = std::panic::AssertUnwindSafe(read_column_unguarded(file, column, kind, sink));
    match read.catch_unwind().await {
        Ok(result) => result,
        Err(panic) => Err(ColumnError::File(panic_message(panic.as_ref()))),
    }
}

async fn read_column_unguarded<E>(
    file: &FileRef,
    column: &str,
    kind: IdKind,
    mut sink: impl FnMut(u64, Option<&[u8]>) -> Result<(), E>,
) -> Result<(), ColumnError<E>> {
    let reader = open(file).await.map_err(ColumnError::File)?;
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| ColumnError::File(e.to_string()))?;
    check_chunks(builder.metadata()).map_err(ColumnError::File)?;
    let fields = builder.schema().fields();
    let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
    let index = match names.iter().position(|n| n.trim() == column.trim()) {
        Some(i) => i,
        None => {
            return Err(ColumnError::File(format!(
                "no column {column:?} (columns: {})",
                names.join(", ")
            )));
        }
    };
    let declared = fields[index].data_type().clone();
    if !can_hold(&declared, kind) {
        return Err(ColumnError::File(refused(column, &declared, kind)));
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
    let mut stream = builder
        .with_projection(mask)
        .with_batch_size(16 * 1024)
        .build()
        .map_err(|e| ColumnError::File(e.to_string()))?;
    let mut row = 0u64;
    let mut text = String::new();
    while let Some(batch) = stream
        .try_next()
        .await
        .map_err(|e| ColumnError::File(e.to_string()))?
    {
        let mut col: ArrayRef = batch.column(0).clone();
        if let DataType::Dictionary(_, values) = col.data_type() {
            let values = values.as_ref().clone();
            col = arrow::compute::cast(&col, &values).map_err(|e| {
                ColumnError::File(format!("column {column:?}: reading its dictionary: {e}"))
            })?;
        }
        let mut each = |v: Option<&[u8]>| {
            row += 1;
            sink(row, v).map_err(ColumnError::Sink)
        };
        match col.data_type() {
            DataType::Utf8 => col
                .as_string::<i32>()
                .iter()
                .try_for_each(|v| each(v.map(str::as_bytes)))?,
            DataType::LargeUtf8 => col
                .as_string::<i64>()
                .iter()
                .try_for_each(|v| each(v.map(str::as_bytes)))?,
            DataType::Utf8View => col
                .as_string_view()
                .iter()
                .try_for_each(|v| each(v.map(str::as_bytes)))?,
            DataType::Int8 => integers::<Int8Type, _>(&col, &mut text, &mut each)?,
            DataType::Int16 => integers::<Int16Type, _>(&col, &mut text, &mut each)?,
            DataType::Int32 => integers::<Int32Type, _>(&col, &mut text, &mut each)?,
            DataType::Int64 => integers::<Int64Type, _>(&col, &mut text, &mut each)?,
            DataType::UInt8 => integers::<UInt8Type, _>(&col, &mut text, &mut each)?,
            DataType::UInt16 => integers::<UInt16Type, _>(&col, &mut text, &mut each)?,
            DataType::UInt32 => integers::<UInt32Type, _>(&col, &mut text, &mut each)?,
            DataType::UInt64 => integers::<UInt64Type, _>(&col, &mut text, &mut each)?,
            other => {
                return Err(ColumnError::File(refused(column, other, kind)));
            }
        }
    }
    Ok(())
}

/// Each value of an integer column, in decimal (nulls as `None`).
fn integers<T, E>(
    col: &ArrayRef,
    text: &mut String,
    each: &mut impl FnMut(Option<&[u8]>) -> Result<(), E>,
) -> Result<(), E>
where
    T: ArrowPrimitiveType,
    T::Native: std::fmt::Display,
{
    use std::fmt::Write;
    for v in col.as_primitive::<T>().iter() {
        match v {
            Some(n) => {
                text.clear();
                // Writing to a String cannot fail.
                let _ = write!(text, "{n}");
                each(Some(text.as_bytes()))?;
            }
            None => each(None)?,
        }
    }
    Ok(())
}

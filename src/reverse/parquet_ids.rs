//! Parquet access for the reverse pipeline: one column read as ids (any string or integer
//! type), and the footer's key-value metadata (`cohort_sync.*` of export snapshots), from a
//! local file or an object store, reading only the byte ranges needed.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
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

/// The footer's key-value metadata.
pub async fn footer_metadata(file: &FileRef) -> Result<HashMap<String, String>, String> {
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

/// Calls `sink(row, value)` for every row of `column` (rows counted from 1; `None` for
/// nulls). String columns are read as they are, other types are cast to text.
pub async fn read_column<E>(
    file: &FileRef,
    column: &str,
    mut sink: impl FnMut(u64, Option<&[u8]>) -> Result<(), E>,
) -> Result<(), ColumnError<E>> {
    let reader = open(file).await.map_err(ColumnError::File)?;
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| ColumnError::File(e.to_string()))?;
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
    let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
    let mut stream = builder
        .with_projection(mask)
        .with_batch_size(16 * 1024)
        .build()
        .map_err(|e| ColumnError::File(e.to_string()))?;
    let mut row = 0u64;
    while let Some(batch) = stream
        .try_next()
        .await
        .map_err(|e| ColumnError::File(e.to_string()))?
    {
        let col = batch.column(0);
        let text = match col.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => col.clone(),
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => col.clone(),
            other => arrow::compute::cast(col, &DataType::Utf8).map_err(|e| {
                ColumnError::File(format!(
                    "column {column:?} of type {other} cannot be read as ids: {e}"
                ))
            })?,
        };
        let mut each = |v: Option<&[u8]>| {
            row += 1;
            sink(row, v).map_err(ColumnError::Sink)
        };
        match text.data_type() {
            DataType::Utf8 => text
                .as_string::<i32>()
                .iter()
                .try_for_each(|v| each(v.map(str::as_bytes)))?,
            DataType::LargeUtf8 => text
                .as_string::<i64>()
                .iter()
                .try_for_each(|v| each(v.map(str::as_bytes)))?,
            DataType::Utf8View => text
                .as_string_view()
                .iter()
                .try_for_each(|v| each(v.map(str::as_bytes)))?,
            DataType::Binary => text.as_binary::<i32>().iter().try_for_each(&mut each)?,
            DataType::LargeBinary => text.as_binary::<i64>().iter().try_for_each(&mut each)?,
            DataType::BinaryView => text.as_binary_view().iter().try_for_each(&mut each)?,
            other => {
                return Err(ColumnError::File(format!(
                    "column {column:?} of type {other} cannot be read as ids"
                )));
            }
        }
    }
    Ok(())
}

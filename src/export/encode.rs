//! The Parquet encoder: runs on a blocking thread, turns record batches into Parquet bytes
//! (bounded row groups, chosen compression, footer key-value metadata with the real row
//! count) and hands them to the uploader through a [`PartSink`]. The columns are encoded
//! and compressed on threads that live as long as the file (see `column_pool`), so
//! encoding keeps up with parsing.

use std::sync::Arc;
use std::thread;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::ArrowRowGroupWriterFactory;
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::writer::SerializedFileWriter;
use tokio::sync::mpsc;

use super::column_pool::ColumnPool;
use super::options::ParquetOptions;
use super::props::writer_properties;
use super::reader::ParsedMsg;
use super::sink::{PartMsg, PartSink};

/// The footer key that carries the number of rows written.
pub const ROWS_KEY: &str = "cohort_sync.rows";

/// A row group is also closed once its column writers hold this many bytes: a row group
/// is buffered whole until closed, and rows up to `max_row_bytes` long would otherwise
/// let 128 Ki of them fill gigabytes. A cohort's row groups stay far below it (about
/// 5 MB for 128 Ki rows with five properties), so its files are unchanged.
pub const MAX_GROUP_BYTES: usize = 64 * 1024 * 1024;

/// At most this many threads encode the columns of one file.
pub const MAX_ENCODE_THREADS: usize = 4;

#[derive(Debug, Clone)]
pub struct EncodeSummary {
    pub rows: u64,
    pub bytes_written: u64,
    pub sha256: String,
}

/// Why the encoder stopped.
#[derive(Debug)]
pub enum EncodeError {
    /// The parser stopped without reaching the end of the body (its error explains why).
    ParserStopped,
    /// The uploader stopped (its error explains why).
    UploaderStopped,
    Parquet(String),
}

/// Threads used to encode columns: `requested`, or (0) the machine's parallelism, at most
/// [`MAX_ENCODE_THREADS`].
pub fn encode_threads(requested: usize) -> usize {
    let n = match requested {
        0 => thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    n.clamp(1, MAX_ENCODE_THREADS)
}

/// Encodes everything `rx` delivers. Blocking: call from `spawn_blocking`. Batches are
/// handed back through `recycle` once written (the parser reuses their buffers).
pub fn encode(
    mut rx: mpsc::Receiver<ParsedMsg>,
    tx: mpsc::Sender<PartMsg>,
    recycle: mpsc::Sender<RecordBatch>,
    opts: &ParquetOptions,
    metadata: Vec<(String, String)>,
) -> Result<EncodeSummary, EncodeError> {
    let schema: SchemaRef = match rx.blocking_recv() {
        Some(ParsedMsg::Schema(s)) => s,
        _ => return Err(EncodeError::ParserStopped),
    };
    // The first batch decides which columns get a dictionary.
    let mut pending = match rx.blocking_recv() {
        Some(ParsedMsg::Batch(b)) => Some(b),
        Some(ParsedMsg::End) => None,
        _ => return Err(EncodeError::ParserStopped),
    };
    let mut ended = pending.is_none();
    let props = writer_properties(opts, pending.as_ref()).map_err(EncodeError::Parquet)?;
    let writer = ArrowWriter::try_new(PartSink::new(tx), schema.clone(), Some(props))
        .map_err(|e| EncodeError::Parquet(e.to_string()))?;
    let (file, factory) = writer
        .into_serialized_writer()
        .map_err(|e| EncodeError::Parquet(e.to_string()))?;
    let mut enc = Encoder {
        file,
        factory,
        schema,
        pool: None,
        recycle,
        group_open: false,
        group_rows: 0,
        group_bytes: 0,
        group_index: 0,
        max_group_rows: opts.row_group_rows.max(1),
        threads: encode_threads(0),
        rows: 0,
    };
    loop {
        let batch = match pending.take() {
            Some(b) => b,
            None if ended => break,
            None => match rx.blocking_recv() {
                Some(ParsedMsg::Batch(b)) => b,
                Some(ParsedMsg::End) => {
                    ended = true;
                    continue;
                }
                _ => return Err(EncodeError::ParserStopped),
            },
        };
        enc.write(batch).map_err(|e| enc.error(e))?;
    }
    enc.finish_groups().map_err(|e| enc.error(e))?;
    for (key, value) in metadata {
        enc.file
            .append_key_value_metadata(KeyValue::new(key, value));
    }
    enc.file
        .append_key_value_metadata(KeyValue::new(ROWS_KEY.to_string(), enc.rows.to_string()));
    enc.file.finish().map_err(|e| enc.error(e))?;
    let sink = enc.file.inner_mut();
    let (bytes_written, sha256) = sink.finish().map_err(|_| EncodeError::UploaderStopped)?;
    Ok(EncodeSummary {
        rows: enc.rows,
        bytes_written,
        sha256,
    })
}

struct Encoder {
    file: SerializedFileWriter<PartSink>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    /// The column threads, started with the first batch.
    pool: Option<ColumnPool>,
    /// Where written batches go back to the parser.
    recycle: mpsc::Sender<RecordBatch>,
    /// Whether the threads hold the writers of row group `group_index`.
    group_open: bool,
    group_rows: usize,
    /// Bytes of Arrow values queued for the row group being built (the threads' own
    /// count of what their writers hold comes a few batches late).
    group_bytes: usize,
    group_index: usize,
    max_group_rows: usize,
    threads: usize,
    rows: u64,
}

impl Encoder {
    fn error(&self, e: ParquetError) -> EncodeError {
        if self.file.inner().uploader_gone {
            EncodeError::UploaderStopped
        } else {
            EncodeError::Parquet(e.to_string())
        }
    }

    /// Queues a batch, cutting row groups at `max_group_rows` rows or [`MAX_GROUP_BYTES`],
    /// and writes out the row groups the threads have finished.
    fn write(&mut self, batch: RecordBatch) -> Result<(), ParquetError> {
        let rows = batch.num_rows();
        let pool = match &mut self.pool {
            Some(p) => p,
            None => self.pool.insert(ColumnPool::start(
                &self.schema,
                &batch,
                self.threads,
                self.recycle.clone(),
            )?),
        };
        let batch = Arc::new(batch);
        let mut offset = 0;
        while offset < rows {
            let take = (self.max_group_rows - self.group_rows).min(rows - offset);
            if !self.group_open {
                pool.open(self.factory.create_column_writers(self.group_index)?)?;
                self.group_open = true;
            }
            pool.write(&batch, offset, take)?;
            self.group_bytes += slice_bytes(&batch, offset, take);
            self.group_rows += take;
            self.rows += take as u64;
            offset += take;
            let held = pool.held().max(self.group_bytes);
            if self.group_rows >= self.max_group_rows || held >= MAX_GROUP_BYTES {
                pool.close()?;
                self.group_open = false;
                self.group_rows = 0;
                self.group_bytes = 0;
                self.group_index += 1;
            }
        }
        self.append_closed(false)
    }

    /// Closes the last row group (if any), writes out every row group and stops the
    /// threads.
    fn finish_groups(&mut self) -> Result<(), ParquetError> {
        if self.group_open
            && let Some(pool) = &mut self.pool
        {
            pool.close()?;
            self.group_open = false;
        }
        self.append_closed(true)?;
        match self.pool.take() {
            Some(pool) => pool.finish(),
            None => Ok(()),
        }
    }

    /// Appends the row groups whose chunks have all come back (with `wait`, all of them).
    fn append_closed(&mut self, wait: bool) -> Result<(), ParquetError> {
        let Some(pool) = &mut self.pool else {
            return Ok(());
        };
        for chunks in pool.take_closed(wait)? {
            let mut group = self.file.next_row_group()?;
            for chunk in chunks {
                chunk.append_to_row_group(&mut group)?;
            }
            group.close()?;
            crate::crash::point("export.encode.row_group");
        }
        Ok(())
    }
}

/// Bytes of the values in rows `offset..offset + len` of `batch`.
fn slice_bytes(batch: &RecordBatch, offset: usize, len: usize) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.slice(offset, len)
                .to_data()
                .get_slice_memory_size()
                .unwrap_or(0)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::options::Compression;
    use crate::export::stages::encode_to_parquet;
    use arrow::array::StringArray;
    use arrow::datatypes::{DataType, Field, Schema};
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use std::sync::Arc;

    /// The rows of each row group of a Parquet file.
    fn group_rows(file: bytes::Bytes) -> Vec<i64> {
        let reader = SerializedFileReader::new(file).expect("parquet");
        reader
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect()
    }

    /// Rows of 1 MiB (within `max_row_bytes`): the row group is closed by its bytes long
    /// before its 128 Ki rows, so the encoder never holds more than about 64 MiB.
    #[test]
    fn long_rows_close_row_groups_by_bytes() {
        let schema = Arc::new(Schema::new(vec![Field::new("blob", DataType::Utf8, false)]));
        let filler = "x".repeat(1024 * 1024 - 8);
        let batches: Vec<RecordBatch> = (0..10)
            .map(|b| {
                let values: Vec<String> = (0..8).map(|r| format!("{b:03}{r:05}{filler}")).collect();
                RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(values))])
                    .expect("batch")
            })
            .collect();
        let opts = ParquetOptions {
            compression: Compression::None,
            ..ParquetOptions::default()
        };
        let file = encode_to_parquet(schema, batches, &opts, Vec::new()).expect("encode");
        let groups = group_rows(bytes::Bytes::from(file));
        assert_eq!(groups.iter().sum::<i64>(), 80);
        assert!(groups.len() >= 2, "{groups:?}");
        assert!(groups.iter().all(|&rows| rows <= 72), "{groups:?}");
    }

    /// Row groups much smaller than a batch (a batch spans several, a group several
    /// batches' slices): every value comes back in order, every group the configured size,
    /// however far the column threads run ahead of each other.
    #[test]
    fn tiny_row_groups_keep_every_value_in_order() {
        use arrow::array::Int64Array;
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("plan", DataType::Utf8, true),
        ]));
        let batches: Vec<RecordBatch> = (0..40)
            .map(|b| {
                let ids: Vec<i64> = (0..7).map(|r| b * 7 + r).collect();
                let names: Vec<Option<String>> = ids
                    .iter()
                    .map(|i| (i % 5 != 0).then(|| format!("user-{i}")))
                    .collect();
                let plans: Vec<&str> = ids
                    .iter()
                    .map(|i| ["free", "pro"][(i % 2) as usize])
                    .collect();
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(Int64Array::from(ids)),
                        Arc::new(StringArray::from(names)),
                        Arc::new(StringArray::from(plans)),
                    ],
                )
                .expect("batch")
            })
            .collect();
        let opts = ParquetOptions {
            row_group_rows: 3,
            ..ParquetOptions::default()
        };
        let file = encode_to_parquet(schema, batches, &opts, Vec::new()).expect("encode");
        let file = bytes::Bytes::from(file);
        let groups = group_rows(file.clone());
        assert_eq!(groups.len(), 94, "{groups:?}");
        assert!(groups[..93].iter().all(|&n| n == 3), "{groups:?}");
        assert_eq!(groups[93], 1);
        let mut ids = Vec::new();
        let mut names = Vec::new();
        for batch in ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("reader")
            .build()
            .expect("reader")
        {
            let batch = batch.expect("batch");
            let id = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("ids");
            let name = batch
                .column(1)
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("names");
            ids.extend(id.iter().flatten());
            names.extend(name.iter().map(|n| n.map(str::to_string)));
        }
        assert_eq!(ids, (0..280).collect::<Vec<i64>>());
        let expected: Vec<Option<String>> = (0..280)
            .map(|i| (i % 5 != 0).then(|| format!("user-{i}")))
            .collect();
        assert_eq!(names, expected);
    }
}

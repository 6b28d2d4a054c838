//! The Parquet encoder: runs on a blocking thread, turns record batches into Parquet bytes
//! (bounded row groups, chosen compression, footer key-value metadata with the real row
//! count) and hands them to the uploader through a [`PartSink`]. The columns of a batch
//! are encoded and compressed on several threads at once (each column writer still sees
//! its batches in order), so encoding keeps up with parsing.

use std::thread;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnWriter, ArrowLeafColumn, ArrowRowGroupWriterFactory, compute_leaves,
};
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::writer::SerializedFileWriter;
use tokio::sync::mpsc;

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
        writers: None,
        group_rows: 0,
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
        enc.write(&batch).map_err(|e| enc.error(e))?;
        let _ = recycle.try_send(batch);
    }
    enc.flush_group().map_err(|e| enc.error(e))?;
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
    /// Column writers of the row group being built.
    writers: Option<Vec<ArrowColumnWriter>>,
    group_rows: usize,
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

    /// Writes a batch, cutting row groups at `max_group_rows` rows or [`MAX_GROUP_BYTES`].
    fn write(&mut self, batch: &RecordBatch) -> Result<(), ParquetError> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let take = (self.max_group_rows - self.group_rows).min(batch.num_rows() - offset);
            let part = batch.slice(offset, take);
            let writers = match &mut self.writers {
                Some(w) => w,
                None => self
                    .writers
                    .insert(self.factory.create_column_writers(self.group_index)?),
            };
            write_columns(writers, &self.schema, &part, self.threads)?;
            let held: usize = writers.iter().map(ArrowColumnWriter::memory_size).sum();
            self.group_rows += take;
            self.rows += take as u64;
            offset += take;
            if self.group_rows >= self.max_group_rows || held >= MAX_GROUP_BYTES {
                self.flush_group()?;
            }
        }
        Ok(())
    }

    /// Closes the row group being built (if any) and writes it out.
    fn flush_group(&mut self) -> Result<(), ParquetError> {
        let Some(writers) = self.writers.take() else {
            return Ok(());
        };
        let mut group = self.file.next_row_group()?;
        for w in writers {
            w.close()?.append_to_row_group(&mut group)?;
        }
        group.close()?;
        self.group_rows = 0;
        self.group_index += 1;
        Ok(())
    }
}

/// Writes each column of `batch` to its writer, spreading the columns over `threads`
/// threads (largest first onto the least loaded thread).
fn write_columns(
    writers: &mut [ArrowColumnWriter],
    schema: &SchemaRef,
    batch: &RecordBatch,
    threads: usize,
) -> Result<(), ParquetError> {
    let mut leaves: Vec<ArrowLeafColumn> = Vec::with_capacity(writers.len());
    let mut costs: Vec<usize> = Vec::with_capacity(writers.len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let cost = column.get_array_memory_size() + 16 * column.len();
        for leaf in compute_leaves(field, column)? {
            leaves.push(leaf);
            costs.push(cost);
        }
    }
    if leaves.len() != writers.len() {
        return Err(ParquetError::General(format!(
            "{} column writers for {} leaf columns",
            writers.len(),
            leaves.len()
        )));
    }
    let threads = threads.min(writers.len());
    if threads <= 1 {
        for (w, leaf) in writers.iter_mut().zip(&leaves) {
            w.write(leaf)?;
        }
        return Ok(());
    }
    let mut order: Vec<usize> = (0..leaves.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(costs[i]));
    let mut load = vec![0usize; threads];
    let mut assign = vec![0usize; leaves.len()];
    for &i in &order {
        let t = (0..threads).min_by_key(|&t| load[t]).unwrap_or(0);
        load[t] += costs[i];
        assign[i] = t;
    }
    let mut groups: Vec<Vec<(&mut ArrowColumnWriter, &ArrowLeafColumn)>> =
        (0..threads).map(|_| Vec::new()).collect();
    for ((i, w), leaf) in writers.iter_mut().enumerate().zip(&leaves) {
        groups[assign[i]].push((w, leaf));
    }
    let mut groups = groups.into_iter();
    let own = groups.next().unwrap_or_default();
    thread::scope(|s| {
        let helpers: Vec<_> = groups
            .map(|g| s.spawn(move || g.into_iter().try_for_each(|(w, l)| w.write(l))))
            .collect();
        let mine = own.into_iter().try_for_each(|(w, l)| w.write(l));
        let mut result = mine;
        for h in helpers {
            let r = h.join().unwrap_or_else(|_| {
                Err(ParquetError::General("an encoder thread panicked".into()))
            });
            if result.is_ok() {
                result = r;
            }
        }
        result
    })
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
        let reader = SerializedFileReader::new(bytes::Bytes::from(file)).expect("parquet");
        let groups: Vec<i64> = reader
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect();
        assert_eq!(groups.iter().sum::<i64>(), 80);
        assert!(groups.len() >= 2, "{groups:?}");
        assert!(groups.iter().all(|&rows| rows <= 72), "{groups:?}");
    }
}

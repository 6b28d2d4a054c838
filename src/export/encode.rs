//! The Parquet encoder: runs on a blocking thread, turns record batches into Parquet
//! bytes (bounded row groups, chosen compression, footer key-value metadata with the real
//! row count) and hands them to the uploader in parts while hashing them.

use std::io::{self, Write};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::options::{Compression, ParquetOptions};
use super::reader::ParsedMsg;

/// What the encoder sends to the uploader.
pub enum PartMsg {
    Bytes(Bytes),
    /// The footer was written and every byte sent: the upload may be completed.
    Done,
}

/// Bytes are handed over in pieces of this size (the uploader groups them into parts).
pub const HANDOFF_BYTES: usize = 1024 * 1024;

/// The footer key that carries the number of rows written.
pub const ROWS_KEY: &str = "cohort_sync.rows";

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

/// Writer settings for the options.
pub fn writer_properties(opts: &ParquetOptions) -> Result<WriterProperties, String> {
    let compression = match opts.compression {
        Compression::Zstd(level) => PqCompression::ZSTD(
            ZstdLevel::try_new(level).map_err(|e| format!("zstd level {level}: {e}"))?,
        ),
        Compression::Snappy => PqCompression::SNAPPY,
        Compression::Lz4 => PqCompression::LZ4_RAW,
        Compression::None => PqCompression::UNCOMPRESSED,
    };
    Ok(WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(opts.row_group_rows.max(1)))
        .set_created_by(concat!("cohort-sync ", env!("CARGO_PKG_VERSION")).to_string())
        .build())
}

/// Encodes everything `rx` delivers. Blocking: call from `spawn_blocking`.
pub fn encode(
    mut rx: mpsc::Receiver<ParsedMsg>,
    tx: mpsc::Sender<PartMsg>,
    recycle: mpsc::Sender<RecordBatch>,
    props: WriterProperties,
    metadata: Vec<(String, String)>,
) -> Result<EncodeSummary, EncodeError> {
    let schema: SchemaRef = match rx.blocking_recv() {
        Some(ParsedMsg::Schema(s)) => s,
        _ => return Err(EncodeError::ParserStopped),
    };
    let sink = PartSink {
        buf: Vec::with_capacity(HANDOFF_BYTES),
        tx,
        hasher: Sha256::new(),
        written: 0,
    };
    let mut writer =
        ArrowWriter::try_new(sink, schema, Some(props)).map_err(|e| parquet_error(&e))?;
    let mut rows: u64 = 0;
    loop {
        match rx.blocking_recv() {
            Some(ParsedMsg::Batch(batch)) => {
                rows += batch.num_rows() as u64;
                writer.write(&batch).map_err(|e| parquet_error(&e))?;
                // The parser reuses the buffers; if it has enough, they are freed.
                let _ = recycle.try_send(batch);
            }
            Some(ParsedMsg::End) => break,
            Some(ParsedMsg::Schema(_)) | None => return Err(EncodeError::ParserStopped),
        }
    }
    for (key, value) in metadata {
        writer.append_key_value_metadata(KeyValue::new(key, value));
    }
    writer.append_key_value_metadata(KeyValue::new(ROWS_KEY.to_string(), rows.to_string()));
    writer.finish().map_err(|e| parquet_error(&e))?;
    let sink = writer.inner_mut();
    sink.ship().map_err(|_| EncodeError::UploaderStopped)?;
    let summary = EncodeSummary {
        rows,
        bytes_written: sink.written,
        sha256: hex(&std::mem::take(&mut sink.hasher).finalize()),
    };
    sink.tx
        .blocking_send(PartMsg::Done)
        .map_err(|_| EncodeError::UploaderStopped)?;
    Ok(summary)
}

fn parquet_error(e: &parquet::errors::ParquetError) -> EncodeError {
    // An I/O error from the sink means the uploader went away.
    if let parquet::errors::ParquetError::External(inner) = e
        && inner.to_string().contains(UPLOADER_GONE)
    {
        return EncodeError::UploaderStopped;
    }
    EncodeError::Parquet(e.to_string())
}

const UPLOADER_GONE: &str = "the uploader stopped";

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Collects encoded bytes and sends them on in pieces, hashing and counting them.
struct PartSink {
    buf: Vec<u8>,
    tx: mpsc::Sender<PartMsg>,
    hasher: Sha256,
    written: u64,
}

impl PartSink {
    fn ship(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(HANDOFF_BYTES),
        ));
        self.hasher.update(&chunk);
        self.written += chunk.len() as u64;
        self.tx
            .blocking_send(PartMsg::Bytes(chunk))
            .map_err(|_| io::Error::other(UPLOADER_GONE))
    }
}

impl Write for PartSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= HANDOFF_BYTES {
            self.ship()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

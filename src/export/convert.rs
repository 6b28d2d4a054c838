//! `convert_stream`: the three stages of an export wired together — parse (async task),
//! encode (blocking thread), upload (this task) — joined by bounded channels so parsing
//! and encoding overlap and memory stays flat; the upload completes only when all three
//! succeeded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::Stream;
use object_store::ObjectStore;
use object_store::path::Path;
use tokio::sync::mpsc;

use super::decode::decode;
use super::encode::{EncodeError, encode};
use super::error::{ExportError, SkippedRow};
use super::options::ConvertOptions;
use super::props::writer_properties;
use super::reader::parse_body;
use super::upload::{UploadError, upload};

/// What a successful conversion produced.
#[derive(Debug, Clone)]
pub struct ConvertStats {
    /// Rows written.
    pub rows: u64,
    /// Bad rows left out (`on_bad_row = skip`).
    pub skipped_rows: u64,
    /// The first skipped rows (row number, line, reason).
    pub skipped_sample: Vec<SkippedRow>,
    /// Bytes of the body as received (compressed, when gzip).
    pub body_bytes: u64,
    /// Size of the Parquet file.
    pub bytes_written: u64,
    /// Hex SHA-256 of the Parquet file.
    pub sha256: String,
    /// Output column names (after de-duplication).
    pub columns: Vec<String>,
    pub duration: Duration,
}

/// Batches in flight between the parser and the encoder.
const BATCH_QUEUE: usize = 1;
/// Byte pieces in flight between the encoder and the uploader.
const PART_QUEUE: usize = 2;
/// Encoded batches handed back to the parser for their buffers: as many as can be in
/// flight (queued for the encoder, queued at and being encoded by the column threads, one
/// being filled), so none is dropped and allocated again.
const RECYCLE_QUEUE: usize = BATCH_QUEUE + super::column_pool::QUEUED_BATCHES + 3;

/// Streams `body` (CSV, gzip or plain) into a Parquet file at `key` of `store`. The file
/// appears at `key` only when complete: any error aborts the upload.
pub async fn convert_stream<S, E>(
    body: S,
    opts: &ConvertOptions,
    store: Arc<dyn ObjectStore>,
    key: &Path,
) -> Result<ConvertStats, ExportError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let started = Instant::now();
    let source = opts.source_name.clone();
    // Settings are checked before anything starts (the encoder builds them again with
    // the first batch in hand).
    writer_properties(&opts.parquet, None).map_err(|message| ExportError::Write {
        source_name: source.clone(),
        destination: key.to_string(),
        message,
    })?;
    let parquet = opts.parquet.clone();
    let (batch_tx, batch_rx) = mpsc::channel(BATCH_QUEUE);
    let (part_tx, part_rx) = mpsc::channel(PART_QUEUE);
    let (recycle_tx, recycle_rx) = mpsc::channel(RECYCLE_QUEUE);

    let parse_opts = opts.clone();
    let parser = tokio::spawn(async move {
        let decoded = decode(
            body,
            parse_opts.gzip,
            &parse_opts.source_name,
            &parse_opts.limits,
        )
        .await?;
        parse_body(decoded, &parse_opts, batch_tx, recycle_rx).await
    });
    let metadata = opts.metadata.clone();
    let encoder = tokio::task::spawn_blocking(move || {
        encode(batch_rx, part_tx, recycle_tx, &parquet, metadata)
    });
    let uploaded = upload(store, key, part_rx, opts.cancel.clone()).await;

    let parsed = parser.await;
    let encoded = encoder.await;
    let internal = |message: String| ExportError::Internal {
        source_name: source.clone(),
        message,
    };
    let write_error = |message: String| ExportError::Write {
        source_name: source.clone(),
        destination: key.to_string(),
        message,
    };
    if matches!(uploaded, Err(UploadError::Stopped)) {
        return Err(ExportError::Stopped {
            source_name: source.clone(),
        });
    }
    // The first real cause wins: parser, then encoder, then uploader.
    let summary = match parsed {
        Ok(Ok(summary)) => summary,
        Ok(Err(e)) => return Err(e),
        Err(e) => return Err(internal(format!("parser task: {e}"))),
    };
    let encoded = match encoded {
        Ok(Ok(s)) => Some(s),
        Ok(Err(EncodeError::Parquet(m))) => return Err(write_error(m)),
        Ok(Err(EncodeError::ParserStopped)) => {
            return Err(internal("the parser stopped without an error".into()));
        }
        Ok(Err(EncodeError::UploaderStopped)) => None,
        Err(e) => return Err(internal(format!("encoder task: {e}"))),
    };
    match uploaded {
        Ok(()) => {}
        Err(UploadError::Stopped) => {
            return Err(ExportError::Stopped {
                source_name: source.clone(),
            });
        }
        Err(UploadError::Store(e)) => return Err(write_error(e.to_string())),
        Err(UploadError::EncoderStopped) => {
            return Err(internal("the encoder stopped without an error".into()));
        }
    }
    let Some(encoded) = encoded else {
        return Err(internal("the upload finished before the encoder".into()));
    };
    Ok(ConvertStats {
        rows: encoded.rows,
        skipped_rows: summary.skipped_rows,
        skipped_sample: summary.skipped_sample,
        body_bytes: summary.body_bytes,
        bytes_written: encoded.bytes_written,
        sha256: encoded.sha256,
        columns: summary.columns,
        duration: started.elapsed(),
    })
}

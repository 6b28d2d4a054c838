//! The stages of the export on their own, in memory: CSV body → Arrow batches, and Arrow
//! batches → Parquet bytes. The benchmarks measure each stage with these (so a regression
//! points at its stage); callers that want Arrow without Parquet can use the first.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;

use super::decode::decode;
use super::encode::{EncodeError, encode};
use super::error::ExportError;
use super::options::{ConvertOptions, ParquetOptions};
use super::reader::{ParsedMsg, parse_body};
use super::sink::PartMsg;

/// Parses a whole body, handing each record batch to `each` as soon as it is built;
/// returns the schema. Nothing is written anywhere.
pub async fn parse_batches<S, E, F>(
    body: S,
    opts: &ConvertOptions,
    mut each: F,
) -> Result<SchemaRef, ExportError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
    F: FnMut(RecordBatch),
{
    let (tx, mut rx) = mpsc::channel(2);
    let (_no_recycling, recycle) = mpsc::channel(1);
    let parse_opts = opts.clone();
    let parser = tokio::spawn(async move {
        let decoded = decode(
            body,
            parse_opts.gzip,
            &parse_opts.source_name,
            &parse_opts.limits,
        )
        .await?;
        parse_body(decoded, &parse_opts, tx, recycle).await
    });
    let mut schema = None;
    while let Some(msg) = rx.recv().await {
        match msg {
            ParsedMsg::Schema(s) => schema = Some(s),
            ParsedMsg::Batch(b) => each(b),
            ParsedMsg::End => {}
        }
    }
    let internal = |message: String| ExportError::Internal {
        source_name: opts.source_name.clone(),
        message,
    };
    match parser.await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e),
        Err(e) => return Err(internal(format!("parser task: {e}"))),
    }
    schema.ok_or_else(|| internal("no schema".into()))
}

/// Parses a whole body into record batches held in memory (for small bodies and
/// measurements; [`convert_stream`](super::convert_stream) streams).
pub async fn parse_to_batches<S, E>(
    body: S,
    opts: &ConvertOptions,
) -> Result<(SchemaRef, Vec<RecordBatch>), ExportError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let mut batches = Vec::new();
    let schema = parse_batches(body, opts, |b| batches.push(b)).await?;
    Ok((schema, batches))
}

/// Encodes batches into a Parquet file in memory (blocking; the footer carries
/// `metadata` and `cohort_sync.rows`).
pub fn encode_to_parquet(
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    parquet: &ParquetOptions,
    metadata: Vec<(String, String)>,
) -> Result<Vec<u8>, String> {
    let (batch_tx, batch_rx) = mpsc::channel(batches.len() + 2);
    let (part_tx, mut part_rx) = mpsc::channel(16);
    batch_tx
        .try_send(ParsedMsg::Schema(schema))
        .map_err(|e| e.to_string())?;
    for b in batches {
        batch_tx
            .try_send(ParsedMsg::Batch(b))
            .map_err(|e| e.to_string())?;
    }
    batch_tx
        .try_send(ParsedMsg::End)
        .map_err(|e| e.to_string())?;
    drop(batch_tx);
    let collector = std::thread::spawn(move || {
        let mut out = Vec::new();
        while let Some(msg) = part_rx.blocking_recv() {
            if let PartMsg::Bytes(b) = msg {
                out.extend_from_slice(&b);
            }
        }
        out
    });
    let (recycle, _dropped) = mpsc::channel(1);
    let result = encode(batch_rx, part_tx, recycle, parquet, metadata);
    let out = collector
        .join()
        .map_err(|_| "collector thread panicked".to_string())?;
    match result {
        Ok(_) => Ok(out),
        Err(EncodeError::Parquet(m)) => Err(m),
        Err(e) => Err(format!("{e:?}")),
    }
}

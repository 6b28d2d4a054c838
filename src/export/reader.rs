//! Drives the CSV parser (csv-async) over a decoded body: reads the header, builds the
//! schema, fills record batches of bounded size, applies the bad-row policy and notices
//! a body that ends inside a quoted field.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use csv_async::{AsyncReaderBuilder, ByteRecord};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

use super::columns::BatchBuilder;
use super::decode::{BodyInfo, DecodedBody};
use super::error::{BadRowReason, ExportError, SkippedRow};
use super::options::{BadRowPolicy, ConvertOptions};
use super::schema::columns_from_header;

/// How many skipped rows are kept as a sample in the stats.
pub const SKIPPED_SAMPLE: usize = 20;

/// What the parser sends to the encoder.
pub enum ParsedMsg {
    /// Always first: the schema taken from the header.
    Schema(SchemaRef),
    Batch(RecordBatch),
    /// The body ended cleanly and every batch was sent: the file may be completed.
    End,
}

/// What the parser saw, once the body ended cleanly.
#[derive(Debug, Clone, Default)]
pub struct ParseSummary {
    pub rows: u64,
    pub skipped_rows: u64,
    pub skipped_sample: Vec<SkippedRow>,
    pub body_bytes: u64,
    pub columns: Vec<String>,
}

/// Parses the whole body, sending the schema then batches to `tx`. Returns the summary,
/// or the first error. Returns early (with `Ok`) if the receiver went away: the
/// encoder's own error then explains the failure.
pub async fn parse_body(
    body: DecodedBody,
    opts: &ConvertOptions,
    tx: mpsc::Sender<ParsedMsg>,
) -> Result<ParseSummary, ExportError> {
    let source = opts.source_name.as_str();
    let state = Arc::new(TailState::default());
    let counted = Tail {
        inner: body.reader,
        state: state.clone(),
    };
    let info = body.info;
    let io_error = |e: csv_async::Error| -> ExportError {
        match e.into_kind() {
            csv_async::ErrorKind::Io(io) => info.classify(source, io),
            other => ExportError::Internal {
                source_name: source.to_string(),
                message: format!("CSV reader: {other:?}"),
            },
        }
    };
    let mut rdr = AsyncReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(256 * 1024)
        .create_reader(counted);

    let mut record = ByteRecord::new();
    if !rdr.read_byte_record(&mut record).await.map_err(io_error)? {
        check_tail(&state, &info, source)?;
        return Err(ExportError::Header {
            source_name: source.to_string(),
            message: "the body is empty (no header row)".into(),
        });
    }
    let header = header_names(&record).map_err(|message| ExportError::Header {
        source_name: source.to_string(),
        message,
    })?;
    let columns = columns_from_header(&header, &opts.column_types).map_err(|message| {
        ExportError::Header {
            source_name: source.to_string(),
            message,
        }
    })?;
    let mut summary = ParseSummary {
        columns: columns.specs.iter().map(|s| s.name.clone()).collect(),
        ..ParseSummary::default()
    };
    if tx
        .send(ParsedMsg::Schema(columns.schema.clone()))
        .await
        .is_err()
    {
        return Ok(summary);
    }
    let mut builder = BatchBuilder::new(&columns, opts.batch_rows);
    let width = builder.width();
    let mut row: u64 = 0;
    // A bad last row of a body that does not end with a line break is a truncation.
    let mut pending_bad: Option<(u64, u64, BadRowReason)> = None;
    while rdr.read_byte_record(&mut record).await.map_err(io_error)? {
        if let Some((row, line, reason)) = pending_bad.take() {
            handle_bad(opts, &mut summary, row, line, reason)?;
        }
        row += 1;
        let line = record.position().map_or(0, |p| p.line());
        let result = if record.len() != width {
            Err(BadRowReason::FieldCount {
                expected: width,
                found: record.len(),
            })
        } else {
            record
                .iter()
                .enumerate()
                .try_for_each(|(i, f)| builder.push_bytes(i, f))
        };
        match result {
            Ok(()) => builder.end_row(),
            Err(reason) => {
                builder.rollback_row();
                pending_bad = Some((row, line, reason));
                continue;
            }
        }
        if builder.is_full() {
            summary.rows += builder.rows() as u64;
            let batch = builder.finish().map_err(|e| internal(source, e))?;
            if tx.send(ParsedMsg::Batch(batch)).await.is_err() {
                return Ok(summary);
            }
        }
    }
    check_tail(&state, &info, source)?;
    if let Some((row, line, reason)) = pending_bad.take() {
        if !state.ended_with_newline() {
            return Err(ExportError::Truncated {
                source_name: source.to_string(),
                bytes: info.received(),
                what: format!("the last row ({row}, line {line}) is incomplete: {reason}"),
            });
        }
        handle_bad(opts, &mut summary, row, line, reason)?;
    }
    if builder.rows() > 0 {
        summary.rows += builder.rows() as u64;
        let batch = builder.finish().map_err(|e| internal(source, e))?;
        if tx.send(ParsedMsg::Batch(batch)).await.is_err() {
            return Ok(summary);
        }
    }
    summary.body_bytes = info.received();
    // If the encoder is gone, its error explains the failure.
    let _ = tx.send(ParsedMsg::End).await;
    Ok(summary)
}

fn handle_bad(
    opts: &ConvertOptions,
    summary: &mut ParseSummary,
    row: u64,
    line: u64,
    reason: BadRowReason,
) -> Result<(), ExportError> {
    match opts.on_bad_row {
        BadRowPolicy::Fail => Err(ExportError::BadRow {
            source_name: opts.source_name.clone(),
            row,
            line,
            reason,
        }),
        BadRowPolicy::Skip => {
            summary.skipped_rows += 1;
            if summary.skipped_sample.len() < SKIPPED_SAMPLE {
                summary.skipped_sample.push(SkippedRow {
                    row,
                    line,
                    reason: reason.to_string(),
                });
            }
            tracing::debug!(source = %opts.source_name, row, line, %reason, "skipped bad row");
            Ok(())
        }
    }
}

fn internal(source: &str, e: impl std::fmt::Display) -> ExportError {
    ExportError::Internal {
        source_name: source.to_string(),
        message: e.to_string(),
    }
}

/// Header names as UTF-8 strings (a leading byte-order mark is dropped).
fn header_names(record: &ByteRecord) -> Result<Vec<String>, String> {
    record
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let f = if i == 0 {
                f.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(f)
            } else {
                f
            };
            String::from_utf8(f.to_vec())
                .map_err(|_| format!("column {} of the header is not valid UTF-8", i + 1))
        })
        .collect()
}

fn check_tail(state: &TailState, body: &BodyInfo, source: &str) -> Result<(), ExportError> {
    if state.quotes.load(Ordering::Relaxed) % 2 == 1 {
        return Err(ExportError::Truncated {
            source_name: source.to_string(),
            bytes: body.received(),
            what: "it ends inside a quoted field".into(),
        });
    }
    Ok(())
}

/// What the reader needs to know about the decoded bytes' tail.
#[derive(Default)]
struct TailState {
    /// Number of `"` bytes seen: odd at the end means the body stopped inside quotes
    /// (quoted fields hold an even number: the delimiters and doubled quotes).
    quotes: AtomicU64,
    /// The last byte seen (0 before any).
    last: AtomicU64,
}

impl TailState {
    fn ended_with_newline(&self) -> bool {
        matches!(self.last.load(Ordering::Relaxed) as u8, b'\n' | b'\r')
    }
}

/// Passes bytes through while keeping [`TailState`] up to date.
struct Tail {
    inner: Pin<Box<dyn AsyncRead + Send>>,
    state: Arc<TailState>,
}

impl AsyncRead for Tail {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = self.inner.as_mut().poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &res {
            let new = &buf.filled()[before..];
            if let Some(&last) = new.last() {
                let n = memchr::memchr_iter(b'"', new).count() as u64;
                self.state.quotes.fetch_add(n, Ordering::Relaxed);
                self.state.last.store(u64::from(last), Ordering::Relaxed);
            }
        }
        res
    }
}

//! Drives the parse: reads the header, builds the schema, splits the body into records
//! (see `records`), fills record batches of bounded size, applies the bad-row policy and
//! tells a body cut short from a malformed one.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use tokio::sync::mpsc;

use super::columns::BatchBuilder;
use super::decode::DecodedBody;
use super::error::{BadRowReason, ExportError, SkippedRow};
use super::input::{Input, READ_BLOCK};
use super::options::{BadRowPolicy, ConvertOptions};
use super::records::{Record, Splitter, raw_fields};
use super::schema::{Columns, columns_from_header};

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

/// Parses the whole body, sending the schema, the batches and `End` to `tx`. Returns the
/// summary or the first error. Returns early (with `Ok`) if the receiver went away: the
/// encoder's own error then explains the failure.
pub async fn parse_body(
    body: DecodedBody,
    opts: &ConvertOptions,
    tx: mpsc::Sender<ParsedMsg>,
    recycle: mpsc::Receiver<RecordBatch>,
) -> Result<ParseSummary, ExportError> {
    parse_body_in_blocks(body, opts, tx, recycle, READ_BLOCK).await
}

/// [`parse_body`] reading `block` bytes ahead at a time (tests use tiny blocks to cut
/// records everywhere).
async fn parse_body_in_blocks(
    body: DecodedBody,
    opts: &ConvertOptions,
    tx: mpsc::Sender<ParsedMsg>,
    recycle: mpsc::Receiver<RecordBatch>,
    block: usize,
) -> Result<ParseSummary, ExportError> {
    let source = opts.source_name.as_str();
    let mut input = Input::new(body, block);
    let columns = read_header(&mut input, opts).await?;
    let mut p = Parse {
        opts,
        summary: ParseSummary {
            columns: columns.specs.iter().map(|s| s.name.clone()).collect(),
            ..ParseSummary::default()
        },
        row: 0,
        recycle,
    };
    if tx
        .send(ParsedMsg::Schema(columns.schema.clone()))
        .await
        .is_err()
    {
        return Ok(p.summary);
    }
    let mut builder = BatchBuilder::new(&columns, opts.batch_rows);
    let mut splitter = Splitter::default();
    while !input.done() {
        let Some(limit) = input.region_end() else {
            input.fill(source).await?;
            continue;
        };
        let at_eof = input.eof && limit == input.buf.len();
        let start = input.start;
        let ends_with_line_break = input.ends_with_line_break();
        // Records of the valid text; stops at the first one the text does not hold whole.
        let mut pos = 0;
        let mut invalid_at = None;
        {
            let region = &input.buf[start..limit];
            let text = match simdutf8::basic::from_utf8(region) {
                Ok(t) => t,
                Err(_) => {
                    // Rare: find where the invalid bytes start (std says where).
                    let valid = match std::str::from_utf8(region) {
                        Ok(_) => region.len(),
                        Err(e) => e.valid_up_to(),
                    };
                    invalid_at = Some(start + valid);
                    std::str::from_utf8(&region[..valid]).map_err(|e| internal(source, e))?
                }
            };
            let eof = at_eof && invalid_at.is_none();
            while pos < text.len() {
                let (record, next) = splitter.record(text, pos, eof, &mut builder);
                match record {
                    Record::Row => {
                        builder.end_row();
                        p.row += 1;
                        if builder.is_full() && !p.send(&mut builder, &tx).await? {
                            return Ok(p.summary);
                        }
                    }
                    Record::Blank => {}
                    Record::Bad(reason) => {
                        p.row += 1;
                        let line = input.lines.line_at(&input.buf, start + pos);
                        if eof && next >= text.len() && !ends_with_line_break {
                            return Err(ExportError::Truncated {
                                source_name: source.to_string(),
                                bytes: input.info.received(),
                                what: format!(
                                    "the last row ({}, line {line}) is incomplete: {reason}",
                                    p.row
                                ),
                            });
                        }
                        p.bad(line, reason)?;
                    }
                    Record::Incomplete => break,
                    Record::Unterminated => {
                        return Err(ExportError::Truncated {
                            source_name: source.to_string(),
                            bytes: input.info.received(),
                            what: "it ends inside a quoted field".into(),
                        });
                    }
                }
                pos = next;
            }
        }
        let mut consumed = start + pos;
        if let Some(bad_at) = invalid_at
            && consumed <= bad_at
        {
            // The record holding the invalid byte (slow path, byte by byte).
            match raw_fields(&input.buf[..limit], consumed, at_eof) {
                Some((fields, next)) if next > bad_at => {
                    p.row += 1;
                    let line = input.lines.line_at(&input.buf, consumed);
                    let column = fields
                        .iter()
                        .position(|&(a, b)| (a..b).contains(&bad_at))
                        .unwrap_or(fields.len());
                    let reason = if fields.len() != builder.width() {
                        BadRowReason::FieldCount {
                            expected: builder.width(),
                            found: fields.len(),
                        }
                    } else {
                        BadRowReason::InvalidUtf8 {
                            column: p.summary.columns.get(column).cloned().unwrap_or_default(),
                        }
                    };
                    p.bad(line, reason)?;
                    consumed = next;
                }
                Some(_) => {}
                None if at_eof => {
                    return Err(ExportError::Truncated {
                        source_name: source.to_string(),
                        bytes: input.info.received(),
                        what: "it ends inside a quoted field".into(),
                    });
                }
                None => {}
            }
        }
        input.start = consumed;
        if !input.eof {
            input.fill(source).await?;
        } else if consumed == start && !input.done() {
            // Nothing could be parsed although the whole body is here.
            return Err(internal(source, "the parser made no progress"));
        }
    }
    if builder.rows() > 0 && !p.send(&mut builder, &tx).await? {
        return Ok(p.summary);
    }
    p.summary.body_bytes = input.info.received();
    // If the encoder is gone, its error explains the failure.
    let _ = tx.send(ParsedMsg::End).await;
    Ok(p.summary)
}

/// Parse state shared by the loop's steps.
struct Parse<'a> {
    opts: &'a ConvertOptions,
    summary: ParseSummary,
    /// 1-based number of the last data row seen (good or bad).
    row: u64,
    /// Batches the encoder is done with.
    recycle: mpsc::Receiver<RecordBatch>,
}

impl Parse<'_> {
    /// Sends the batch built so far; false when the encoder is gone.
    async fn send(
        &mut self,
        builder: &mut BatchBuilder,
        tx: &mpsc::Sender<ParsedMsg>,
    ) -> Result<bool, ExportError> {
        self.summary.rows += builder.rows() as u64;
        while let Ok(done) = self.recycle.try_recv() {
            builder.recycle(done);
        }
        let batch = builder
            .finish()
            .map_err(|e| internal(&self.opts.source_name, e))?;
        Ok(tx.send(ParsedMsg::Batch(batch)).await.is_ok())
    }

    fn bad(&mut self, line: u64, reason: BadRowReason) -> Result<(), ExportError> {
        let row = self.row;
        match self.opts.on_bad_row {
            BadRowPolicy::Fail => Err(ExportError::BadRow {
                source_name: self.opts.source_name.clone(),
                row,
                line,
                reason,
            }),
            BadRowPolicy::Skip => {
                self.summary.skipped_rows += 1;
                if self.summary.skipped_sample.len() < SKIPPED_SAMPLE {
                    self.summary.skipped_sample.push(SkippedRow {
                        row,
                        line,
                        reason: reason.to_string(),
                    });
                }
                tracing::debug!(source = %self.opts.source_name, row, line, %reason, "skipped bad row");
                Ok(())
            }
        }
    }
}

/// Reads the header record and turns it into the columns.
async fn read_header(input: &mut Input, opts: &ConvertOptions) -> Result<Columns, ExportError> {
    let source = opts.source_name.as_str();
    let header_error = |message: String| ExportError::Header {
        source_name: source.to_string(),
        message,
    };
    loop {
        // Blank lines before the header are skipped.
        while matches!(input.buf.get(input.start), Some(b'\n' | b'\r')) {
            input.start += 1;
        }
        if input.done() {
            // A cohort file always has a header: an empty body ended early.
            return Err(ExportError::Truncated {
                source_name: source.to_string(),
                bytes: input.info.received(),
                what: "it is empty: no header row".into(),
            });
        }
        if let Some((fields, next)) = raw_fields(&input.buf, input.start, input.eof) {
            let names = fields
                .iter()
                .enumerate()
                .map(|(i, &(a, b))| header_name(&input.buf[a..b], i))
                .collect::<Result<Vec<String>, String>>()
                .map_err(header_error)?;
            input.start = next;
            return columns_from_header(&names, &opts.column_types).map_err(header_error);
        }
        if input.eof {
            return Err(ExportError::Truncated {
                source_name: source.to_string(),
                bytes: input.info.received(),
                what: "it ends inside the quoted header".into(),
            });
        }
        input.fill(source).await?;
    }
}

/// One header name: unquoted, `""` unescaped, a leading byte-order mark dropped.
fn header_name(raw: &[u8], index: usize) -> Result<String, String> {
    let raw = if index == 0 {
        raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw)
    } else {
        raw
    };
    let text = std::str::from_utf8(raw)
        .map_err(|_| format!("column {} of the header is not valid UTF-8", index + 1))?;
    match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) => Ok(inner.replace("\"\"", "\"")),
        None => Ok(text.to_string()),
    }
}

fn internal(source: &str, e: impl std::fmt::Display) -> ExportError {
    ExportError::Internal {
        source_name: source.to_string(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::decode::decode;
    use crate::export::options::GzipHint;
    use arrow::array::{Array, StringArray};
    use bytes::Bytes;

    /// Writes one field the way a CSV writer may: quoted when needed (or at random).
    fn field(rng: &mut fastrand::Rng, value: &str, must_quote: bool) -> String {
        let special = value.contains([',', '"', '\n', '\r']);
        if special || must_quote || rng.bool() {
            format!("\"{}\"", value.replace('"', "\"\""))
        } else {
            value.to_string()
        }
    }

    fn random_value(rng: &mut fastrand::Rng) -> String {
        const ALPHABET: [&str; 10] = ["a", "b", ",", "\"", "\n", "\r", "é", "日", " ", "\r\n"];
        (0..rng.usize(0..8))
            .map(|_| ALPHABET[rng.usize(..ALPHABET.len())])
            .collect()
    }

    async fn parse_all(
        body: Vec<u8>,
        chunks: Vec<usize>,
        block: usize,
        width: usize,
    ) -> Vec<Vec<Option<String>>> {
        let mut pieces = Vec::new();
        let mut at = 0;
        for c in chunks {
            if at >= body.len() {
                break;
            }
            let end = (at + c).min(body.len());
            pieces.push(Ok::<_, std::io::Error>(Bytes::copy_from_slice(
                &body[at..end],
            )));
            at = end;
        }
        if at < body.len() {
            pieces.push(Ok(Bytes::copy_from_slice(&body[at..])));
        }
        let decoded = decode(futures::stream::iter(pieces), GzipHint::Auto, "t")
            .await
            .expect("decode");
        let mut opts = ConvertOptions::new("t");
        opts.batch_rows = 7;
        let (tx, mut rx) = mpsc::channel(1_000_000);
        let (_keep, recycle) = mpsc::channel(1);
        let summary = parse_body_in_blocks(decoded, &opts, tx, recycle, block)
            .await
            .expect("parse");
        let mut rows = Vec::new();
        while let Ok(msg) = rx.try_recv() {
            if let ParsedMsg::Batch(b) = msg {
                assert_eq!(b.num_columns(), width);
                for r in 0..b.num_rows() {
                    rows.push(
                        (0..width)
                            .map(|c| {
                                let a = b
                                    .column(c)
                                    .as_any()
                                    .downcast_ref::<StringArray>()
                                    .expect("utf8");
                                (!a.is_null(r)).then(|| a.value(r).to_string())
                            })
                            .collect(),
                    );
                }
            }
        }
        assert_eq!(summary.rows as usize, rows.len());
        rows
    }

    #[tokio::test]
    async fn random_csv_round_trips_whatever_the_chunking() {
        for seed in 0..200 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let width = rng.usize(1..5);
            let names: Vec<String> = (0..width).map(|i| format!("c{i}")).collect();
            let mut body = names.join(",");
            body.push_str(if rng.bool() { "\r\n" } else { "\n" });
            let n = rng.usize(0..60);
            let mut expected = Vec::new();
            for i in 0..n {
                let values: Vec<String> = (0..width).map(|_| random_value(&mut rng)).collect();
                let last_row = i + 1 == n;
                let omit_terminator = last_row && rng.bool();
                let line: Vec<String> = values
                    .iter()
                    .enumerate()
                    .map(|(c, v)| {
                        // A lone empty unquoted field would read as a blank line, and an
                        // unterminated last field must not end in a bare CR.
                        let must =
                            (width == 1 && v.is_empty()) || (omit_terminator && c + 1 == width);
                        field(&mut rng, v, must)
                    })
                    .collect();
                body.push_str(&line.join(","));
                if !omit_terminator {
                    body.push_str(if rng.bool() { "\r\n" } else { "\n" });
                }
                expected.push(
                    values
                        .into_iter()
                        .map(|v| (!v.is_empty()).then_some(v))
                        .collect::<Vec<_>>(),
                );
            }
            let body = body.into_bytes();
            let chunks: Vec<usize> = (0..body.len()).map(|_| rng.usize(1..40)).collect();
            let block = rng.usize(1..64);
            let got = parse_all(body.clone(), chunks, block, width).await;
            assert_eq!(
                got,
                expected,
                "seed {seed}: {:?}",
                String::from_utf8_lossy(&body)
            );
        }
    }
}

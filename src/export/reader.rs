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
use super::options::{BadRowPolicy, BodyExpectation, ConvertOptions};
use super::records::{Record, Splitter, raw_fields};
use super::schema::{Columns, columns_from_header};

/// How many skipped rows are kept as a sample in the stats.
pub const SKIPPED_SAMPLE: usize = 20;

/// With an expectation, a header row longer than this is not a cohort file's (an endless
/// body without a line break must not fill memory).
const MAX_EXPECTED_HEADER_BYTES: usize = 1024 * 1024;

/// Header columns quoted in a "not a cohort file" message, and characters kept of each.
const SHOWN_COLUMNS: usize = 5;
const SHOWN_CHARS: usize = 40;

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
        max_rows: opts
            .expect
            .as_ref()
            .and_then(|e| e.max_rows)
            .unwrap_or(u64::MAX),
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
                        p.count_row()?;
                        if builder.is_full() && !p.send(&mut builder, &tx).await? {
                            return Ok(p.summary);
                        }
                    }
                    Record::Blank => {}
                    Record::Bad(reason) => {
                        p.count_row()?;
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
                    p.count_row()?;
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
    // Before the last batch and `End`: a body with too few rows is never completed.
    p.check_min_rows()?;
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
    /// The expectation's most rows (`u64::MAX` without one).
    max_rows: u64,
    /// Batches the encoder is done with.
    recycle: mpsc::Receiver<RecordBatch>,
}

impl Parse<'_> {
    /// Counts a data row (good or bad); fails as soon as there are more than expected.
    #[inline]
    fn count_row(&mut self) -> Result<(), ExportError> {
        self.row += 1;
        if self.row > self.max_rows {
            return Err(self.not_a_cohort(|e| {
                format!(
                    "it has more than {} rows (stopped reading at row {}); {}",
                    self.max_rows,
                    self.row,
                    e.describe_rows()
                )
            }));
        }
        Ok(())
    }

    /// At the end of the body: fails when it has fewer rows than expected.
    fn check_min_rows(&self) -> Result<(), ExportError> {
        match &self.opts.expect {
            Some(e) if self.row < e.min_rows => {
                Err(self
                    .not_a_cohort(|e| format!("it has {} rows; {}", self.row, e.describe_rows())))
            }
            _ => Ok(()),
        }
    }

    fn not_a_cohort(&self, message: impl FnOnce(&BodyExpectation) -> String) -> ExportError {
        let message = match &self.opts.expect {
            Some(e) => message(e),
            None => "unexpected body".to_string(),
        };
        ExportError::NotACohort {
            source_name: self.opts.source_name.clone(),
            message,
        }
    }

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
            if let Some(expect) = &opts.expect {
                check_header(&input.buf, &fields, expect, source)?;
            }
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
        if opts.expect.is_some() && input.buf.len() - input.start > MAX_EXPECTED_HEADER_BYTES {
            let start = &input.buf[input.start..];
            let shown = show(&String::from_utf8_lossy(
                &start[..start.len().min(4 * SHOWN_CHARS)],
            ));
            return Err(ExportError::NotACohort {
                source_name: source.to_string(),
                message: format!(
                    "no complete header row in its first {} KiB (it starts with {shown})",
                    MAX_EXPECTED_HEADER_BYTES / 1024
                ),
            });
        }
        input.fill(source).await?;
    }
}

/// Fails unless the header (names as written, before repeated ones are renamed) has the
/// expected column; the message quotes the header's first columns.
fn check_header(
    buf: &[u8],
    fields: &[(usize, usize)],
    expect: &BodyExpectation,
    source: &str,
) -> Result<(), ExportError> {
    let names: Vec<String> = fields
        .iter()
        .enumerate()
        .map(|(i, &(a, b))| header_name_lossy(&buf[a..b], i))
        .collect();
    if names.contains(&expect.column) {
        return Ok(());
    }
    let mut shown: Vec<String> = names.iter().take(SHOWN_COLUMNS).map(|n| show(n)).collect();
    if names.len() > SHOWN_COLUMNS {
        shown.push("…".into());
    }
    let columns = if names.len() == 1 {
        "column"
    } else {
        "columns"
    };
    Err(ExportError::NotACohort {
        source_name: source.to_string(),
        message: format!(
            "expected a CSV header with column {:?}, got a header of {} {columns}: {}",
            expect.column,
            names.len(),
            shown.join(", ")
        ),
    })
}

/// A piece of the body for a message: quoted, control characters escaped, at most
/// `SHOWN_CHARS` characters (`…` marks a cut).
fn show(text: &str) -> String {
    let mut chars = text.chars();
    let kept: String = chars.by_ref().take(SHOWN_CHARS).collect();
    if chars.next().is_some() {
        format!("{kept:?}…")
    } else {
        format!("{kept:?}")
    }
}

/// One header name: unquoted, `""` unescaped, a leading byte-order mark dropped.
fn header_name(raw: &[u8], index: usize) -> Result<String, String> {
    let text = std::str::from_utf8(without_bom(raw, index))
        .map_err(|_| format!("column {} of the header is not valid UTF-8", index + 1))?;
    Ok(unquote(text))
}

/// [`header_name`] with invalid UTF-8 replaced (for checks and messages).
fn header_name_lossy(raw: &[u8], index: usize) -> String {
    unquote(&String::from_utf8_lossy(without_bom(raw, index)))
}

fn without_bom(raw: &[u8], index: usize) -> &[u8] {
    if index == 0 {
        raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw)
    } else {
        raw
    }
}

fn unquote(text: &str) -> String {
    match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => text.to_string(),
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
    use futures::StreamExt;

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

    /// What a parse under an expectation produced: its result, the data rows sent and
    /// whether `End` (what lets the file be completed) was sent.
    struct Expected {
        result: Result<ParseSummary, ExportError>,
        rows_sent: usize,
        ended: bool,
    }

    async fn parse_expecting<S>(body: S, expect: Option<BodyExpectation>) -> Expected
    where
        S: futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        parse_expecting_in_blocks(body, expect, 64).await
    }

    async fn parse_expecting_in_blocks<S>(
        body: S,
        expect: Option<BodyExpectation>,
        block: usize,
    ) -> Expected
    where
        S: futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        let decoded = decode(body, GzipHint::Auto, "cohort c1")
            .await
            .expect("decode");
        let mut opts = ConvertOptions::new("cohort c1");
        opts.batch_rows = 16;
        opts.expect = expect;
        let (tx, mut rx) = mpsc::channel(1_000_000);
        let (_keep, recycle) = mpsc::channel(1);
        let result = parse_body_in_blocks(decoded, &opts, tx, recycle, block).await;
        let (mut rows_sent, mut ended) = (0, false);
        while let Ok(msg) = rx.try_recv() {
            match msg {
                ParsedMsg::Batch(b) => rows_sent += b.num_rows(),
                ParsedMsg::End => ended = true,
                ParsedMsg::Schema(_) => {}
            }
        }
        Expected {
            result,
            rows_sent,
            ended,
        }
    }

    fn body(text: &str) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + use<> {
        futures::stream::iter(vec![Ok(Bytes::from(text.to_string()))])
    }

    fn cohort_csv(rows: usize) -> String {
        let mut text = String::from("\"amplitude_id\",\"user_id\"\n");
        for i in 0..rows {
            text.push_str(&format!("\"{}\",\"u{i}\"\n", 1000 + i));
        }
        text
    }

    /// The `NotACohort` message, or a panic naming what came instead.
    fn not_a_cohort(got: Expected) -> String {
        assert!(!got.ended, "End was sent: the file would be published");
        match got.result {
            Err(e @ ExportError::NotACohort { .. }) => {
                assert!(e.is_retryable_download(), "{e}");
                e.to_string()
            }
            other => panic!("expected NotACohort, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_html_page_is_not_a_cohort_file() {
        let got = parse_expecting(
            body("<html><body>Error</body></html>\n"),
            Some(BodyExpectation::cohort(Some(3))),
        )
        .await;
        assert_eq!(
            not_a_cohort(got),
            "cohort c1: the body is not the cohort's CSV file: expected a CSV header with column \"amplitude_id\", got a header of 1 column: \"<html><body>Error</body></html>\""
        );
        // Without an expectation (the `convert` command) it is a 0-row CSV.
        let got = parse_expecting(body("<html><body>Error</body></html>"), None).await;
        assert!(got.ended && got.result.is_ok());
    }

    #[tokio::test]
    async fn a_header_without_amplitude_id_is_named_escaped_and_cut() {
        let got = parse_expecting(
            body("\"foo\",\"bar\"\n\"1\",\"2\"\n"),
            Some(BodyExpectation::cohort(Some(1))),
        )
        .await;
        assert!(not_a_cohort(got).ends_with("got a header of 2 columns: \"foo\", \"bar\""),);
        // Case-sensitive, control characters escaped, long names cut, first 5 columns.
        let long = "x".repeat(100);
        let header = format!("Amplitude_ID,\"a\tb\x1b\",{long},d,e,f,g\n");
        let message =
            not_a_cohort(parse_expecting(body(&header), Some(BodyExpectation::cohort(None))).await);
        let shown = "x".repeat(40);
        assert!(
            message.ends_with(&format!(
                "got a header of 7 columns: \"Amplitude_ID\", \"a\\tb\\u{{1b}}\", \"{shown}\"…, \"d\", \"e\", …"
            )),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_repeated_amplitude_id_column_is_still_a_cohort_file() {
        let text = "\u{feff}\"amplitude_id\",\"user_id\",\"gp:x\",\"amplitude_id\"\n\"1\",\"u\",\"v\",\"1\"\n";
        let got = parse_expecting(body(text), Some(BodyExpectation::cohort(Some(1)))).await;
        let summary = got.result.expect("parse");
        assert!(got.ended);
        assert_eq!(
            summary.columns,
            ["amplitude_id", "user_id", "gp:x", "amplitude_id_2"]
        );
    }

    #[tokio::test]
    async fn too_few_rows_fail_before_end() {
        // Listed 1,000: at least 800 rows are expected.
        let got = parse_expecting(
            body(&cohort_csv(799)),
            Some(BodyExpectation::cohort(Some(1_000))),
        )
        .await;
        assert_eq!(
            not_a_cohort(got),
            "cohort c1: the body is not the cohort's CSV file: it has 799 rows; the cohort's listed size is 1000; accepted 800..=1200 rows (±10% and ±100: the list can lag the file)"
        );
        let got = parse_expecting(
            body(&cohort_csv(800)),
            Some(BodyExpectation::cohort(Some(1_000))),
        )
        .await;
        assert_eq!(got.result.expect("800 rows are enough").rows, 800);
        assert!(got.ended);
    }

    #[tokio::test]
    async fn too_many_rows_stop_the_parse_early() {
        // An endless body: the parse stops at the first row past the bound (listed 15:
        // at most 117 rows).
        let header = Bytes::from_static(b"\"amplitude_id\",\"user_id\"\n");
        let endless = futures::stream::once(async move { Ok(header) }).chain(
            futures::stream::repeat_with(|| Ok(Bytes::from_static(b"\"1\",\"u\"\n"))),
        );
        let got = parse_expecting(endless, Some(BodyExpectation::cohort(Some(15)))).await;
        let rows_sent = got.rows_sent;
        let message = not_a_cohort(got);
        assert!(
            message.contains("it has more than 117 rows (stopped reading at row 118)"),
            "{message}"
        );
        assert!(rows_sent <= 117, "{rows_sent}");
        // At the bound exactly, the file is complete.
        let got = parse_expecting(
            body(&cohort_csv(117)),
            Some(BodyExpectation::cohort(Some(15))),
        )
        .await;
        assert!(got.ended && got.result.is_ok());
    }

    #[tokio::test]
    async fn an_unknown_size_sets_no_row_bound() {
        for rows in [0, 1, 5_000] {
            let got =
                parse_expecting(body(&cohort_csv(rows)), Some(BodyExpectation::cohort(None))).await;
            assert_eq!(got.result.expect("parse").rows, rows as u64);
            assert!(got.ended);
        }
        let got = parse_expecting(
            body(&cohort_csv(3)),
            Some(BodyExpectation::cohort(Some(-1))),
        )
        .await;
        assert!(got.ended && got.result.is_ok());
    }

    #[tokio::test]
    async fn an_empty_cohort_is_its_header_alone() {
        let got = parse_expecting(
            body("\"amplitude_id\",\"user_id\"\n"),
            Some(BodyExpectation::cohort(Some(0))),
        )
        .await;
        assert_eq!(got.result.expect("parse").rows, 0);
        assert!(got.ended);
    }

    #[tokio::test]
    async fn an_endless_header_is_not_a_cohort_file() {
        let endless =
            futures::stream::repeat_with(|| Ok(Bytes::from_static(b"<html><body>Error ")));
        let got =
            parse_expecting_in_blocks(endless, Some(BodyExpectation::cohort(Some(5))), READ_BLOCK)
                .await;
        let message = not_a_cohort(got);
        assert!(
            message.ends_with("no complete header row in its first 1024 KiB (it starts with \"<html><body>Error <html><body>Error <htm\"…)"),
            "{message}"
        );
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

//! The export's side of the CSV reader: the header becomes the schema (checked against
//! the body expectation), the rows fill record batches of bounded size, and the batches
//! go to the encoder. Splitting, limits, positions and the bad-row policy are the shared
//! reader's (see `csv`).

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use tokio::sync::mpsc;

use super::columns::BatchBuilder;
use super::csv::{CsvReader, Flow, Header, Progress};
use super::decode::DecodedBody;
use super::error::{ExportError, SkippedRow};
use super::input::READ_BLOCK;
use super::limits::Limit;
use super::options::{BodyExpectation, ConvertOptions};
use super::schema::{Columns, columns_from_header};

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
    let mut reader =
        CsvReader::with_block(body, &opts.source_name, opts.limits, opts.on_bad_row, block);
    let columns = read_header(&mut reader, opts).await?;
    let mut p = Parse {
        opts,
        summary: ParseSummary {
            columns: columns.specs.iter().map(|s| s.name.clone()).collect(),
            ..ParseSummary::default()
        },
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
    loop {
        let progress = reader
            .advance(&mut builder, |b, row| {
                p.count_row(row.row)?;
                if row.good {
                    b.end_row_of(row.len);
                    if b.is_full() {
                        return Ok::<_, ExportError>(Flow::Pause);
                    }
                }
                Ok(Flow::Continue)
            })
            .await?;
        match progress {
            Progress::Paused => {
                if !p.send(&mut builder, &tx).await? {
                    return Ok(p.summary);
                }
            }
            Progress::End => break,
        }
    }
    // Before the last batch and `End`: a body with too few rows is never completed.
    p.check_min_rows(reader.rows())?;
    if builder.rows() > 0 && !p.send(&mut builder, &tx).await? {
        return Ok(p.summary);
    }
    let (skipped, sample) = reader.skipped();
    p.summary.skipped_rows = skipped;
    p.summary.skipped_sample = sample.to_vec();
    p.summary.body_bytes = reader.body_bytes();
    // If the encoder is gone, its error explains the failure.
    let _ = tx.send(ParsedMsg::End).await;
    Ok(p.summary)
}

/// Parse state shared by the loop's steps.
struct Parse<'a> {
    opts: &'a ConvertOptions,
    summary: ParseSummary,
    /// The expectation's most rows (`u64::MAX` without one).
    max_rows: u64,
    /// Batches the encoder is done with.
    recycle: mpsc::Receiver<RecordBatch>,
}

impl Parse<'_> {
    /// Checks data row `row` (good or bad): fails as soon as there are more than expected.
    #[inline]
    fn count_row(&self, row: u64) -> Result<(), ExportError> {
        if row > self.max_rows {
            return Err(self.not_a_cohort(|e| {
                format!(
                    "it has more than {} rows (stopped reading at row {row}); {}",
                    self.max_rows,
                    e.describe_rows()
                )
            }));
        }
        Ok(())
    }

    /// At the end of the body: fails when it has fewer rows than expected.
    fn check_min_rows(&self, rows: u64) -> Result<(), ExportError> {
        match &self.opts.expect {
            Some(e) if rows < e.min_rows => {
                Err(self.not_a_cohort(|e| format!("it has {rows} rows; {}", e.describe_rows())))
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
        if let Some(counter) = &self.opts.rows_read {
            counter.fetch_add(builder.rows() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        while let Ok(done) = self.recycle.try_recv() {
            builder.recycle(done);
        }
        let batch = builder
            .finish()
            .map_err(|e| internal(&self.opts.source_name, e))?;
        Ok(tx.send(ParsedMsg::Batch(batch)).await.is_ok())
    }
}

/// Reads the header and turns it into the columns. With an expectation, a header without
/// the expected column, or one that does not end within `max_header_bytes` (an endless
/// error page), is not the cohort's file.
async fn read_header(
    reader: &mut CsvReader,
    opts: &ConvertOptions,
) -> Result<Columns, ExportError> {
    let source = opts.source_name.as_str();
    let header = match reader.read_header().await {
        Ok(h) => h,
        Err(e) if e.limit() == Some(Limit::HeaderBytes) && opts.expect.is_some() => {
            let shown = show(&String::from_utf8_lossy(
                reader.unread_start(4 * SHOWN_CHARS),
            ));
            return Err(ExportError::NotACohort {
                source_name: source.to_string(),
                message: format!(
                    "no complete header row in its first {} KiB (it starts with {shown})",
                    opts.limits.max_header_bytes / 1024
                ),
            });
        }
        Err(e) => return Err(e),
    };
    let header_error = |message: String| ExportError::Header {
        source_name: source.to_string(),
        message,
    };
    if let Some(expect) = &opts.expect {
        check_header(&header, expect, source)?;
    }
    let names = header.names().map_err(header_error)?;
    columns_from_header(&names, &opts.column_types).map_err(header_error)
}

/// Fails unless the header (names as written, before repeated ones are renamed) has the
/// expected column; the message quotes the header's first columns.
fn check_header(
    header: &Header,
    expect: &BodyExpectation,
    source: &str,
) -> Result<(), ExportError> {
    let names = header.lossy_names();
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
    use crate::export::limits::CsvLimits;
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
        let decoded = decode(
            futures::stream::iter(pieces),
            GzipHint::Auto,
            "t",
            &CsvLimits::default(),
        )
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
        let decoded = decode(body, GzipHint::Auto, "cohort c1", &CsvLimits::default())
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

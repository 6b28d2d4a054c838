//! The one CSV reader, shared by the export (a cohort body into Arrow batches) and the
//! reverse (the id column of a source list or a downloaded cohort): RFC 4180 records
//! (see `records`) read from a decoded byte stream, with the reader's limits (see
//! `limits`), 1-based data rows and body lines for every message, and the bad-row policy.
//!
//! The caller reads the header with [`CsvReader::read_header`], then calls
//! [`CsvReader::advance`] with a [`FieldSink`] that receives the fields and a callback
//! called once per data row; the callback may pause the reader (the export does, to hand
//! a full batch on) and the next `advance` goes on where it stopped.
//!
//! Memory: the reader holds one read block plus the record being read. A record that is
//! not finished when it passes `max_field_bytes` or `max_row_bytes` fails right there,
//! before more of it is read; the header likewise with `max_header_bytes` and
//! `max_columns`.

use bytes::Bytes;
use futures::Stream;

use super::decode::{DecodedBody, decode};
use super::error::{BadRowReason, ExportError, SkippedRow};
use super::input::{Input, Lines, READ_BLOCK};
use super::limits::{CsvLimits, Limit};
use super::options::{BadRowPolicy, GzipHint};
use super::records::{FieldSink, Record, Scan, Splitter, scan_record, unquote_raw};

/// How many skipped rows are kept as a sample.
pub const SKIPPED_SAMPLE: usize = 20;

/// What the caller's row callback answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Return from [`CsvReader::advance`] now; the next call goes on with the next row.
    Pause,
}

/// How [`CsvReader::advance`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The row callback paused.
    Paused,
    /// The body ended cleanly (every record was read).
    End,
}

/// The header row: each name's bytes, unquoted (`""` unescaped), a leading byte-order
/// mark dropped.
#[derive(Debug, Clone, Default)]
pub struct Header {
    fields: Vec<Vec<u8>>,
}

impl Header {
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The names; fails naming the first column that is not valid UTF-8.
    pub fn names(&self) -> Result<Vec<String>, String> {
        self.fields
            .iter()
            .enumerate()
            .map(|(i, f)| {
                String::from_utf8(f.clone())
                    .map_err(|_| format!("column {} of the header is not valid UTF-8", i + 1))
            })
            .collect()
    }

    /// The names with invalid UTF-8 replaced (for checks and messages).
    pub fn lossy_names(&self) -> Vec<String> {
        self.fields
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect()
    }
}

/// A data row, as the row callback sees it.
pub struct RowAt<'a> {
    /// 1-based data row number (the header is not counted; bad rows are).
    pub row: u64,
    /// False for a malformed row (the sink holds none of its fields); the reader applies
    /// the bad-row policy once the callback returns.
    pub good: bool,
    /// The row's length in bytes as written.
    pub len: usize,
    start: usize,
    buf: &'a [u8],
    lines: &'a mut Lines,
}

impl RowAt<'_> {
    /// The 1-based line of the body where the row starts.
    pub fn line(&mut self) -> u64 {
        self.lines.line_at(self.buf, self.start)
    }
}

/// See the module doc.
pub struct CsvReader {
    input: Input,
    splitter: Splitter,
    source: String,
    limits: CsvLimits,
    /// Header names (lossy), for messages.
    names: Vec<String>,
    /// The last data row seen (good or bad).
    row: u64,
    bad_rows: BadRows,
}

/// The bad-row policy and what it skipped.
struct BadRows {
    policy: BadRowPolicy,
    source: String,
    skipped: u64,
    sample: Vec<SkippedRow>,
}

impl BadRows {
    fn bad(&mut self, row: u64, line: u64, reason: BadRowReason) -> Result<(), ExportError> {
        match self.policy {
            BadRowPolicy::Fail => Err(ExportError::BadRow {
                source_name: self.source.clone(),
                row,
                line,
                reason,
            }),
            BadRowPolicy::Skip => {
                self.skipped += 1;
                if self.sample.len() < SKIPPED_SAMPLE {
                    self.sample.push(SkippedRow {
                        row,
                        line,
                        reason: reason.to_string(),
                    });
                }
                tracing::debug!(source = %self.source, row, line, %reason, "skipped bad row");
                Ok(())
            }
        }
    }
}

impl CsvReader {
    /// A reader of `body`; `source` names it in every error.
    pub fn new(
        body: DecodedBody,
        source: &str,
        limits: CsvLimits,
        on_bad_row: BadRowPolicy,
    ) -> Self {
        Self::with_block(body, source, limits, on_bad_row, READ_BLOCK)
    }

    /// [`CsvReader::new`] reading `block` bytes ahead at a time (tests use tiny blocks to
    /// cut records everywhere).
    pub fn with_block(
        body: DecodedBody,
        source: &str,
        limits: CsvLimits,
        on_bad_row: BadRowPolicy,
        block: usize,
    ) -> Self {
        CsvReader {
            input: Input::new(body, block),
            splitter: Splitter::new(limits.max_field_bytes),
            source: source.to_string(),
            limits,
            names: Vec::new(),
            row: 0,
            bad_rows: BadRows {
                policy: on_bad_row,
                source: source.to_string(),
                skipped: 0,
                sample: Vec::new(),
            },
        }
    }

    /// A reader of a byte stream (gunzipped per `gzip`, within `limits.max_gzip_ratio`).
    pub async fn from_stream<S, E>(
        body: S,
        gzip: GzipHint,
        source: &str,
        limits: CsvLimits,
        on_bad_row: BadRowPolicy,
    ) -> Result<Self, ExportError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        let decoded = decode(body, gzip, source, &limits).await?;
        Ok(Self::new(decoded, source, limits, on_bad_row))
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Data rows seen so far (good and bad).
    pub fn rows(&self) -> u64 {
        self.row
    }

    /// Bad rows skipped (`on_bad_row = skip`) and the first [`SKIPPED_SAMPLE`] of them.
    pub fn skipped(&self) -> (u64, &[SkippedRow]) {
        (self.bad_rows.skipped, &self.bad_rows.sample)
    }

    /// Bytes received from the body so far (compressed, when gzip).
    pub fn body_bytes(&self) -> u64 {
        self.input.info.received()
    }

    /// The first bytes not read yet (for messages about a body that is not CSV).
    pub fn unread_start(&self, n: usize) -> &[u8] {
        let rest = &self.input.buf[self.input.start..];
        &rest[..rest.len().min(n)]
    }

    /// Reads the header row (blank lines before it are skipped). Fails on an empty body,
    /// a body ending inside the quoted header, and a header past `max_header_bytes` or
    /// `max_columns`.
    pub async fn read_header(&mut self) -> Result<Header, ExportError> {
        let mut ranges = Vec::new();
        loop {
            while matches!(self.input.buf.get(self.input.start), Some(b'\n' | b'\r')) {
                self.input.start += 1;
            }
            if self.input.done() {
                // A CSV file always has a header: an empty body ended early.
                return Err(self.truncated("it is empty: no header row".into()));
            }
            let start = self.input.start;
            ranges.clear();
            let scan = scan_record(
                &self.input.buf,
                start,
                self.input.eof,
                self.limits.max_columns,
                Some(&mut ranges),
            );
            match scan {
                Scan::TooManyFields => return Err(self.too_many_columns()),
                Scan::Complete { next } => {
                    if next - start > self.limits.max_header_bytes {
                        return Err(self.header_too_long());
                    }
                    let header = self.header_from(&ranges);
                    self.names = header.lossy_names();
                    self.input.start = next;
                    return Ok(header);
                }
                Scan::Incomplete { .. } if self.input.eof => {
                    return Err(self.truncated("it ends inside the quoted header".into()));
                }
                Scan::Incomplete { .. } => {
                    if self.input.buf.len() - start > self.limits.max_header_bytes {
                        return Err(self.header_too_long());
                    }
                }
            }
            self.input.fill(&self.source).await?;
        }
    }

    fn header_from(&self, ranges: &[(usize, usize)]) -> Header {
        let fields = ranges
            .iter()
            .enumerate()
            .map(|(i, &(a, b))| {
                let mut raw = &self.input.buf[a..b];
                if i == 0 {
                    raw = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw);
                }
                // A name with text after its closing quote is kept as written.
                unquote_raw(raw).map_or_else(|| raw.to_vec(), |v| v.into_owned())
            })
            .collect();
        Header { fields }
    }

    /// Reads data rows into `sink`, calling `on_row` once per row (good or bad), until the
    /// body ends or `on_row` pauses. A good row's fields are all in the sink when `on_row`
    /// is called (ending the row there is the sink's business); a bad row's are not, and
    /// the bad-row policy is applied after `on_row` returns.
    pub async fn advance<S, E, F>(&mut self, sink: &mut S, mut on_row: F) -> Result<Progress, E>
    where
        S: FieldSink,
        E: From<ExportError>,
        F: FnMut(&mut S, &mut RowAt<'_>) -> Result<Flow, E>,
    {
        loop {
            if self.input.done() {
                return Ok(Progress::End);
            }
            let Some(limit) = self.input.region_end() else {
                self.check_unfinished()?;
                self.input.fill(&self.source).await?;
                continue;
            };
            let at_eof = self.input.eof && limit == self.input.buf.len();
            let start = self.input.start;
            let ends_with_line_break = self.input.ends_with_line_break();
            // Records of the valid text; stops at the first one the text does not hold whole.
            let mut pos = 0;
            let mut invalid_at = None;
            let mut paused = false;
            {
                let region = &self.input.buf[start..limit];
                let text = match simdutf8::basic::from_utf8(region) {
                    Ok(t) => t,
                    Err(_) => {
                        // Rare: find where the invalid bytes start (std says where).
                        let valid = match std::str::from_utf8(region) {
                            Ok(_) => region.len(),
                            Err(e) => e.valid_up_to(),
                        };
                        invalid_at = Some(start + valid);
                        std::str::from_utf8(&region[..valid])
                            .map_err(|e| internal(&self.source, e))?
                    }
                };
                let eof = at_eof && invalid_at.is_none();
                while pos < text.len() {
                    let (record, next) = self.splitter.record(text, pos, eof, sink);
                    let good = match record {
                        Record::Row => true,
                        Record::Blank => {
                            pos = next;
                            continue;
                        }
                        Record::Bad(_) => false,
                        Record::Incomplete => break,
                        Record::Unterminated => {
                            let line = self.input.lines.line_at(&self.input.buf, start + pos);
                            return Err(self.unterminated(line).into());
                        }
                        Record::FieldTooLong { column } => {
                            let line = self.input.lines.line_at(&self.input.buf, start + pos);
                            return Err(self.field_too_long(line, column).into());
                        }
                    };
                    if next - pos > self.limits.max_row_bytes {
                        if good {
                            sink.rollback_row();
                        }
                        let line = self.input.lines.line_at(&self.input.buf, start + pos);
                        return Err(self.row_too_long(line).into());
                    }
                    self.row += 1;
                    let mut at = RowAt {
                        row: self.row,
                        good,
                        len: next - pos,
                        start: start + pos,
                        buf: &self.input.buf,
                        lines: &mut self.input.lines,
                    };
                    let flow = on_row(sink, &mut at)?;
                    if let Record::Bad(reason) = record {
                        let line = at.line();
                        if eof && next >= text.len() && !ends_with_line_break {
                            return Err(self
                                .truncated(format!(
                                    "the last row ({}, line {line}) is incomplete: {reason}",
                                    self.row
                                ))
                                .into());
                        }
                        self.bad_rows.bad(self.row, line, reason)?;
                    }
                    pos = next;
                    if flow == Flow::Pause {
                        paused = true;
                        break;
                    }
                }
            }
            let mut consumed = start + pos;
            if paused {
                self.input.start = consumed;
                return Ok(Progress::Paused);
            }
            if let Some(bad_at) = invalid_at
                && consumed <= bad_at
            {
                // The record holding the invalid byte (slow path, on raw bytes).
                match self.raw_record(sink, limit, consumed, at_eof, bad_at, &mut on_row)? {
                    RawOutcome::Read { next, flow } => {
                        consumed = next;
                        if flow == Flow::Pause {
                            self.input.start = consumed;
                            return Ok(Progress::Paused);
                        }
                    }
                    RawOutcome::NotHere => {}
                }
            }
            self.input.start = consumed;
            if !self.input.eof {
                self.check_unfinished()?;
                self.input.fill(&self.source).await?;
            } else if consumed == start && !self.input.done() {
                // Nothing could be parsed although the whole body is here.
                return Err(internal(&self.source, "the parser made no progress").into());
            }
        }
    }

    /// Reads the record at `at` from raw bytes when it holds the invalid byte at `bad_at`:
    /// each field goes to the sink as bytes (the sink decides what must be UTF-8).
    fn raw_record<S, E, F>(
        &mut self,
        sink: &mut S,
        limit: usize,
        at: usize,
        at_eof: bool,
        bad_at: usize,
        on_row: &mut F,
    ) -> Result<RawOutcome, E>
    where
        S: FieldSink,
        E: From<ExportError>,
        F: FnMut(&mut S, &mut RowAt<'_>) -> Result<Flow, E>,
    {
        let mut ranges = Vec::new();
        let width = sink.width();
        let bytes = &self.input.buf[..limit];
        let next = match scan_record(bytes, at, at_eof, usize::MAX, Some(&mut ranges)) {
            Scan::Complete { next } if next > bad_at => next,
            Scan::Complete { .. } | Scan::TooManyFields => return Ok(RawOutcome::NotHere),
            Scan::Incomplete { .. } if at_eof => {
                let line = self.input.lines.line_at(&self.input.buf, at);
                return Err(self.unterminated(line).into());
            }
            Scan::Incomplete { .. } => return Ok(RawOutcome::NotHere),
        };
        let line = self.input.lines.line_at(&self.input.buf, at);
        if let Some(column) = ranges
            .iter()
            .position(|&(a, b)| b - a > self.limits.max_field_bytes)
        {
            return Err(self.field_too_long(line, column).into());
        }
        if next - at > self.limits.max_row_bytes {
            return Err(self.row_too_long(line).into());
        }
        let mut reason = None;
        if ranges.len() != width {
            reason = Some(BadRowReason::FieldCount {
                expected: width,
                found: ranges.len(),
            });
        } else {
            for (col, &(a, b)) in ranges.iter().enumerate() {
                let pushed = match unquote_raw(&self.input.buf[a..b]) {
                    Some(value) => sink.push_bytes(col, &value),
                    None => Err(BadRowReason::Malformed {
                        column: col,
                        message: "text after a closing quote".into(),
                    }),
                };
                if let Err(e) = pushed {
                    sink.rollback_row();
                    reason = Some(e);
                    break;
                }
            }
        }
        self.row += 1;
        let mut row_at = RowAt {
            row: self.row,
            good: reason.is_none(),
            len: next - at,
            start: at,
            buf: &self.input.buf,
            lines: &mut self.input.lines,
        };
        let flow = on_row(sink, &mut row_at)?;
        if let Some(reason) = reason {
            self.bad_rows.bad(self.row, line, reason)?;
        }
        Ok(RawOutcome::Read { next, flow })
    }

    /// Before reading more: fails when the record not finished yet already passes a limit
    /// (so an endless field or line is never held whole).
    fn check_unfinished(&mut self) -> Result<(), ExportError> {
        let buf = &self.input.buf;
        let mut start = self.input.start;
        while matches!(buf.get(start), Some(b'\n' | b'\r')) {
            start += 1;
        }
        let pending = buf.len().saturating_sub(start);
        let limits = self.limits;
        if pending <= limits.max_field_bytes.min(limits.max_row_bytes) {
            return Ok(());
        }
        if pending > limits.max_field_bytes
            && let Scan::Incomplete {
                longest: (column, len),
                ..
            } = scan_record(buf, start, false, usize::MAX, None)
            && len > limits.max_field_bytes
        {
            let line = self.input.lines.line_at(&self.input.buf, start);
            return Err(self.field_too_long(line, column));
        }
        if pending > limits.max_row_bytes {
            let line = self.input.lines.line_at(&self.input.buf, start);
            return Err(self.row_too_long(line));
        }
        Ok(())
    }

    fn truncated(&self, what: String) -> ExportError {
        ExportError::Truncated {
            source_name: self.source.clone(),
            bytes: self.input.info.received(),
            what,
        }
    }

    /// The body ended inside a quoted field of the next row, which starts on `line`.
    fn unterminated(&self, line: u64) -> ExportError {
        self.truncated(format!(
            "it ends inside a quoted field of row {}, which starts on line {line}",
            self.row + 1
        ))
    }

    /// Where the next row is, for a limit message.
    fn next_row_at(&self, line: u64) -> String {
        format!("row {} (line {line})", self.row + 1)
    }

    fn column_name(&self, column: usize) -> String {
        match self.names.get(column) {
            Some(name) => format!("column {name:?}"),
            None => format!("column {}", column + 1),
        }
    }

    fn field_too_long(&self, line: u64, column: usize) -> ExportError {
        let at = format!("{}, {}: ", self.next_row_at(line), self.column_name(column));
        self.limits.error(
            &self.source,
            Limit::FieldBytes,
            &at,
            &format!(
                "a field is longer than {} bytes",
                self.limits.max_field_bytes
            ),
        )
    }

    fn row_too_long(&self, line: u64) -> ExportError {
        let at = format!("{}: ", self.next_row_at(line));
        self.limits.error(
            &self.source,
            Limit::RowBytes,
            &at,
            &format!("a row is longer than {} bytes", self.limits.max_row_bytes),
        )
    }

    fn header_too_long(&self) -> ExportError {
        self.limits.error(
            &self.source,
            Limit::HeaderBytes,
            "",
            &format!(
                "the header row is longer than {} bytes",
                self.limits.max_header_bytes
            ),
        )
    }

    fn too_many_columns(&self) -> ExportError {
        self.limits.error(
            &self.source,
            Limit::Columns,
            "",
            &format!(
                "the header has more than {} columns",
                self.limits.max_columns
            ),
        )
    }
}

enum RawOutcome {
    /// The record was read (good or bad); the next one starts at `next`.
    Read { next: usize, flow: Flow },
    /// The invalid byte is not in this record (or the record is not complete yet).
    NotHere,
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
    use crate::export::limits::{
        DEFAULT_MAX_FIELD_BYTES, DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_ROW_BYTES, RaiseWith,
    };
    use futures::StreamExt;
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Every field of every good row, as text.
    struct Rows {
        width: usize,
        row: Vec<String>,
        rows: Vec<Vec<String>>,
    }

    impl FieldSink for Rows {
        fn width(&self) -> usize {
            self.width
        }
        fn push_str(&mut self, _col: usize, field: &str) -> Result<(), BadRowReason> {
            self.row.push(field.to_string());
            Ok(())
        }
        fn push_bytes(&mut self, _col: usize, field: &[u8]) -> Result<(), BadRowReason> {
            self.row.push(String::from_utf8_lossy(field).into_owned());
            Ok(())
        }
        fn rollback_row(&mut self) {
            self.row.clear();
        }
    }

    type Body = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

    /// `body` with a counter of the bytes the reader pulled from it.
    fn counted(body: Body) -> (Body, Arc<AtomicU64>) {
        let pulled = Arc::new(AtomicU64::new(0));
        let counter = pulled.clone();
        let body = body.map(move |b| {
            if let Ok(b) = &b {
                counter.fetch_add(b.len() as u64, Ordering::Relaxed);
            }
            b
        });
        (Box::pin(body), pulled)
    }

    fn once(text: &[u8]) -> Body {
        Box::pin(futures::stream::iter(vec![Ok(Bytes::copy_from_slice(
            text,
        ))]))
    }

    /// `head`, then `piece` forever.
    fn endless(head: &'static [u8], piece: &'static [u8]) -> Body {
        Box::pin(
            futures::stream::once(async move { Ok(Bytes::from_static(head)) }).chain(
                futures::stream::repeat_with(move || Ok(Bytes::from_static(piece))),
            ),
        )
    }

    async fn read(
        body: Body,
        limits: CsvLimits,
        block: usize,
    ) -> Result<Vec<Vec<String>>, ExportError> {
        let decoded = decode(body, GzipHint::Auto, "t.csv", &limits).await?;
        let mut reader = CsvReader::with_block(decoded, "t.csv", limits, BadRowPolicy::Fail, block);
        let header = reader.read_header().await?;
        let mut rows = Rows {
            width: header.len(),
            row: Vec::new(),
            rows: Vec::new(),
        };
        loop {
            let progress = reader
                .advance(&mut rows, |sink, at| {
                    if at.good {
                        let row = std::mem::take(&mut sink.row);
                        sink.rows.push(row);
                    }
                    Ok::<_, ExportError>(Flow::Continue)
                })
                .await?;
            if progress == Progress::End {
                return Ok(rows.rows);
            }
        }
    }

    /// The limit error of `result` and its message.
    fn limit_error(result: Result<Vec<Vec<String>>, ExportError>, limit: Limit) -> String {
        match result {
            Err(e) if e.limit() == Some(limit) => {
                assert!(!e.is_retryable_download(), "{e}");
                e.to_string()
            }
            other => panic!("expected the {limit} limit, got {other:?}"),
        }
    }

    /// At most what one unfinished record at the limit takes, read again as much (the
    /// reader doubles its reads for long records), plus two read blocks.
    fn assert_bounded(pulled: &AtomicU64, limit: usize) {
        let pulled = pulled.load(Ordering::Relaxed);
        assert!(
            pulled <= (2 * limit + 2 * READ_BLOCK) as u64,
            "read {pulled} bytes for a limit of {limit}"
        );
    }

    #[tokio::test]
    async fn an_endless_line_fails_at_max_row_bytes() {
        let (body, pulled) = counted(endless(b"a,b\n", b"1,2,3,4,5,6,7,8,"));
        let message = limit_error(
            read(body, CsvLimits::default(), READ_BLOCK).await,
            Limit::RowBytes,
        );
        assert_eq!(
            message,
            "t.csv: row 1 (line 2): a row is longer than 1048576 bytes (limit max_row_bytes)"
        );
        assert_bounded(&pulled, DEFAULT_MAX_ROW_BYTES);
    }

    #[tokio::test]
    async fn an_endless_field_fails_at_max_field_bytes() {
        // Quoted, with line breaks inside (each block holds line breaks, none ends it).
        let (body, pulled) = counted(endless(b"a,b\n\"1\",\"", b"more text\n"));
        let message = limit_error(
            read(body, CsvLimits::default(), READ_BLOCK).await,
            Limit::FieldBytes,
        );
        assert_eq!(
            message,
            "t.csv: row 1 (line 2), column \"b\": a field is longer than 65536 bytes (limit max_field_bytes)"
        );
        assert_bounded(&pulled, DEFAULT_MAX_FIELD_BYTES);
        // Unquoted and without any line break.
        let (body, pulled) = counted(endless(b"a,b\n1,", b"xxxxxxxxxxxxxxxx"));
        let message = limit_error(
            read(body, CsvLimits::default(), READ_BLOCK).await,
            Limit::FieldBytes,
        );
        assert!(
            message.starts_with("t.csv: row 1 (line 2), column \"b\": "),
            "{message}"
        );
        assert_bounded(&pulled, DEFAULT_MAX_FIELD_BYTES);
    }

    #[tokio::test]
    async fn an_endless_header_fails_at_max_header_bytes() {
        let (body, pulled) = counted(endless(b"", b"a,b,c,d,e,f,g,h,"));
        let limits = CsvLimits {
            max_columns: usize::MAX,
            raise_with: RaiseWith::ConvertFlags,
            ..CsvLimits::default()
        };
        let message = limit_error(read(body, limits, READ_BLOCK).await, Limit::HeaderBytes);
        assert_eq!(
            message,
            "t.csv: the header row is longer than 1048576 bytes (limit max_header_bytes; raise it with --max-header-bytes)"
        );
        assert_bounded(&pulled, DEFAULT_MAX_HEADER_BYTES);
    }

    #[tokio::test]
    async fn a_header_may_have_max_columns() {
        let header = |n: usize| {
            let mut h = (0..n)
                .map(|i| format!("c{i}"))
                .collect::<Vec<_>>()
                .join(",");
            h.push('\n');
            h
        };
        let rows = read(once(header(1000).as_bytes()), CsvLimits::default(), 64).await;
        assert_eq!(rows.expect("1000 columns").len(), 0);
        let message = limit_error(
            read(once(header(1001).as_bytes()), CsvLimits::default(), 64).await,
            Limit::Columns,
        );
        assert_eq!(
            message,
            "t.csv: the header has more than 1000 columns (limit max_columns)"
        );
        // 100,000 distinct names stop at the 1,001st.
        let (body, pulled) = counted(endless(b"", b"n,"));
        limit_error(
            read(body, CsvLimits::default(), READ_BLOCK).await,
            Limit::Columns,
        );
        assert_bounded(&pulled, DEFAULT_MAX_HEADER_BYTES);
    }

    #[tokio::test]
    async fn complete_records_over_a_limit_name_row_line_and_column() {
        let limits = CsvLimits {
            max_field_bytes: 8,
            max_row_bytes: 24,
            ..CsvLimits::default()
        };
        let text = b"a,b\n1,\"ok\"\n2,\"mul\nti\"\n3,\"0123456789\"\n";
        for block in [1, 3, 64] {
            let message = limit_error(read(once(text), limits, block).await, Limit::FieldBytes);
            assert_eq!(
                message,
                "t.csv: row 3 (line 5), column \"b\": a field is longer than 8 bytes (limit max_field_bytes)",
                "block {block}"
            );
        }
        let text = b"a,b,c,d,e,f\n1,2,3,4,5,6\n1,22,333,4444,55555,666666\n";
        let message = limit_error(read(once(text), limits, 64).await, Limit::RowBytes);
        assert_eq!(
            message,
            "t.csv: row 2 (line 3): a row is longer than 24 bytes (limit max_row_bytes)"
        );
        // The same in a row holding invalid UTF-8 (read from raw bytes).
        let text = b"a,b\n1,\"\xff\"\n2,\"\xff123456789\"\n";
        let message = limit_error(read(once(text), limits, 64).await, Limit::FieldBytes);
        assert!(
            message.starts_with("t.csv: row 2 (line 3), column \"b\": "),
            "{message}"
        );
        // At the limits exactly (fields of 8 bytes with their quotes), rows are read.
        let text = b"a,b\n\"123456\",\"a\"\"cd\"\n12345678,x\n";
        let rows = read(once(text), limits, 5)
            .await
            .expect("within the limits");
        assert_eq!(rows, [["123456", "a\"cd"], ["12345678", "x"]]);
    }

    /// Raised limits let long records through, whatever the read block (the reader reads
    /// more at a time while a record is long, so each is parsed a few times, not once per
    /// block).
    #[tokio::test]
    async fn raised_limits_read_long_records() {
        let limits = CsvLimits {
            max_field_bytes: 8 << 20,
            max_row_bytes: 8 << 20,
            ..CsvLimits::default()
        };
        let long = "x".repeat(4 << 20);
        let text = format!("a,b\n1,\"{long}\"\n2,{long}\n3,y\n");
        let rows = read(once(text.as_bytes()), limits, 4096)
            .await
            .expect("within the raised limits");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0][1].len(), 4 << 20);
        assert_eq!(rows[1][1].len(), 4 << 20);
        assert_eq!(rows[2], ["3", "y"]);
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(bytes).expect("gzip");
        e.finish().expect("gzip")
    }

    #[tokio::test]
    async fn a_gzip_bomb_fails_at_max_gzip_ratio() {
        // Valid CSV rows, 4 MiB of them per gzip member (about 1,020:1), repeated forever:
        // no field or row limit would stop it.
        let head: &'static [u8] = Box::leak(gzip(b"a,b\n").into_boxed_slice());
        let member = gzip(&b"1,a\n".repeat(1 << 20));
        let member: &'static [u8] = Box::leak(member.into_boxed_slice());
        let pieces = futures::stream::repeat_with(move || member.chunks(4096))
            .flat_map(futures::stream::iter)
            .map(|c| Ok(Bytes::from_static(c)));
        let body: Body = Box::pin(
            futures::stream::once(async move { Ok(Bytes::from_static(head)) }).chain(pieces),
        );
        let (body, pulled) = counted(body);
        let message = limit_error(
            read(body, CsvLimits::default(), READ_BLOCK).await,
            Limit::GzipRatio,
        );
        assert!(
            message.starts_with("t.csv: the gzip body expands more than 1000 times ("),
            "{message}"
        );
        assert!(message.ends_with("(limit max_gzip_ratio)"), "{message}");
        // It stopped within the first megabytes of output: a few members of input.
        let pulled = pulled.load(Ordering::Relaxed);
        assert!(
            pulled < 4 * member.len() as u64,
            "read {pulled} compressed bytes"
        );
        // The same rows at a lower ratio are read.
        let body = gzip(&[&b"a,b\n"[..], &b"1,a\n2,b\n".repeat(1000)].concat());
        let rows = read(once(&body), CsvLimits::default(), 64)
            .await
            .expect("gzip");
        assert_eq!(rows.len(), 2000);
    }

    #[tokio::test]
    async fn a_body_ending_inside_a_quote_names_the_row_and_line() {
        let text = b"a,b\n1,x\n2,\"open\nstill open";
        for block in [1, 7, 64] {
            let result = read(once(text), CsvLimits::default(), block).await;
            match result {
                Err(e @ ExportError::Truncated { .. }) => assert_eq!(
                    e.to_string(),
                    "t.csv: body is truncated (it ends inside a quoted field of row 2, which starts on line 3) after 26 bytes",
                    "block {block}"
                ),
                other => panic!("expected Truncated, got {other:?}"),
            }
        }
    }
}

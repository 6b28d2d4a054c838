//! Pulls one named column out of a CSV byte stream, fast: records without quotes are split
//! with `memchr`; quoted records (RFC 4180: `""` escapes, delimiters and newlines inside
//! quotes) take a quote-aware path. Bytes arrive in chunks of any size; a record cut by a
//! chunk boundary is completed by the next chunk. Blank lines are skipped.

use memchr::{memchr, memchr2};

/// A structural problem of the CSV itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    #[error("the file is empty: no header row")]
    NoHeader,
    #[error("no column {column:?} in the header (columns: {})", .header.join(", "))]
    NoColumn { column: String, header: Vec<String> },
    #[error("column name {column:?} appears {count} times in the header")]
    AmbiguousColumn { column: String, count: usize },
}

/// Where a field's bytes are: in the input buffer, or unescaped in the scratch buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Missing,
    Range(usize, usize),
    Scratch,
}

/// One parsed record: where the next one starts, the wanted field, the newlines it spans.
#[derive(Debug, Clone, Copy)]
struct Record {
    next: usize,
    field: Field,
    blank: bool,
    newlines: u64,
}

/// Streams the values of one column. Feed bytes with [`CsvColumnScanner::feed`], then call
/// [`CsvColumnScanner::finish`]; the sink gets `(line, value)` for every data record, with
/// `value` `None` when the record is too short to have the column.
#[derive(Debug)]
pub struct CsvColumnScanner {
    column: String,
    first_of_repeated: bool,
    index: Option<usize>,
    buf: Vec<u8>,
    /// Retry parsing a cut record only once the buffer has grown to this many bytes (keeps
    /// a huge record fed in small chunks from being parsed again and again).
    retry_at: usize,
    scratch: Vec<u8>,
    line: u64,
    records: u64,
    started: bool,
}

impl CsvColumnScanner {
    pub fn new(column: &str) -> Self {
        CsvColumnScanner {
            column: column.to_string(),
            first_of_repeated: false,
            index: None,
            buf: Vec::new(),
            retry_at: 0,
            scratch: Vec::new(),
            line: 1,
            records: 0,
            started: false,
        }
    }

    /// When the header names the column more than once, use the first one (instead of
    /// refusing the file as ambiguous).
    pub fn first_of_repeated(mut self) -> Self {
        self.first_of_repeated = true;
        self
    }

    /// Data records seen so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Position of the column in the header, once the header was read.
    pub fn column_index(&self) -> Option<usize> {
        self.index
    }

    pub fn feed<E: From<CsvError>>(
        &mut self,
        data: &[u8],
        sink: &mut impl FnMut(u64, Option<&[u8]>) -> Result<(), E>,
    ) -> Result<(), E> {
        let data = self.strip_bom(data);
        if self.buf.is_empty() {
            let used = self.parse(data, false, sink)?;
            self.buf.extend_from_slice(&data[used..]);
            self.retry_at = 2 * self.buf.len();
            return Ok(());
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() < self.retry_at {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        let used = self.parse(&buf, false, sink);
        self.buf = buf;
        let used = used?;
        self.buf.drain(..used);
        self.retry_at = if used == 0 { 2 * self.buf.len() } else { 0 };
        Ok(())
    }

    /// Reads everything from `reader` (blocking) in large blocks.
    pub fn read_all<E: From<CsvError> + From<std::io::Error>>(
        &mut self,
        mut reader: impl std::io::Read,
        sink: &mut impl FnMut(u64, Option<&[u8]>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut block = vec![0u8; 1 << 20];
        loop {
            let n = match reader.read(&mut block) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            self.feed(&block[..n], sink)?;
        }
        self.finish(sink)
    }

    /// Parses what is left (a last record without a final newline).
    pub fn finish<E: From<CsvError>>(
        &mut self,
        sink: &mut impl FnMut(u64, Option<&[u8]>) -> Result<(), E>,
    ) -> Result<(), E> {
        let buf = std::mem::take(&mut self.buf);
        self.parse(&buf, true, sink)?;
        if self.index.is_none() {
            return Err(CsvError::NoHeader.into());
        }
        Ok(())
    }

    fn strip_bom<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        if self.started || data.is_empty() {
            return data;
        }
        self.started = true;
        data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data)
    }

    /// Parses the complete records of `buf`; returns how many bytes they took.
    fn parse<E: From<CsvError>>(
        &mut self,
        buf: &[u8],
        eof: bool,
        sink: &mut impl FnMut(u64, Option<&[u8]>) -> Result<(), E>,
    ) -> Result<usize, E> {
        let mut pos = 0;
        if self.index.is_none() {
            match self.header(buf, eof)? {
                Some(next) => pos = next,
                None => return Ok(0),
            }
        }
        let want = self.index.unwrap_or(0);
        while pos < buf.len() {
            let Some(rec) = record(buf, pos, eof, want, &mut self.scratch) else {
                break;
            };
            let line = self.line;
            self.line += rec.newlines;
            pos = rec.next;
            if rec.blank {
                continue;
            }
            self.records += 1;
            let value = match rec.field {
                Field::Missing => None,
                Field::Range(a, b) => Some(&buf[a..b]),
                Field::Scratch => Some(&self.scratch[..]),
            };
            sink(line, value)?;
        }
        Ok(pos)
    }

    /// Reads the header record; `None` when it is not complete yet.
    fn header(&mut self, buf: &[u8], eof: bool) -> Result<Option<usize>, CsvError> {
        let mut pos = 0;
        loop {
            if pos >= buf.len() {
                return if eof {
                    Err(CsvError::NoHeader)
                } else {
                    Ok(None)
                };
            }
            let Some(first) = record(buf, pos, eof, 0, &mut self.scratch) else {
                return Ok(None);
            };
            if first.blank {
                self.line += first.newlines;
                pos = first.next;
                continue;
            }
            let mut names = Vec::new();
            let mut field = first.field;
            while field != Field::Missing {
                names.push(field_text(buf, field, &self.scratch));
                let Some(r) = record(buf, pos, eof, names.len(), &mut self.scratch) else {
                    return Ok(None);
                };
                field = r.field;
            }
            let wanted = self.column.trim();
            let matches: Vec<usize> = names
                .iter()
                .enumerate()
                .filter(|(_, n)| n.trim() == wanted)
                .map(|(i, _)| i)
                .collect();
            return match matches.as_slice() {
                [i, ..] if matches.len() == 1 || self.first_of_repeated => {
                    self.index = Some(*i);
                    self.line += first.newlines;
                    Ok(Some(first.next))
                }
                [] => Err(CsvError::NoColumn {
                    column: self.column.clone(),
                    header: names,
                }),
                many => Err(CsvError::AmbiguousColumn {
                    column: self.column.clone(),
                    count: many.len(),
                }),
            };
        }
    }
}

fn field_text(buf: &[u8], field: Field, scratch: &[u8]) -> String {
    let bytes = match field {
        Field::Missing => &[][..],
        Field::Range(a, b) => &buf[a..b],
        Field::Scratch => scratch,
    };
    String::from_utf8_lossy(bytes).into_owned()
}

fn strip_cr(buf: &[u8], start: usize, end: usize) -> usize {
    if end > start && buf[end - 1] == b'\r' {
        end - 1
    } else {
        end
    }
}

/// Parses the record starting at `start`, returning field `want`. `None` when the record
/// is not complete in `buf` (and more bytes may come).
fn record(
    buf: &[u8],
    start: usize,
    eof: bool,
    want: usize,
    scratch: &mut Vec<u8>,
) -> Option<Record> {
    let rest = &buf[start..];
    let (line_end, next, newlines) = match memchr(b'\n', rest) {
        Some(i) => (start + i, start + i + 1, 1),
        None if eof => (buf.len(), buf.len(), 0),
        None => return None,
    };
    let line = &buf[start..strip_cr(buf, start, line_end)];
    if memchr(b'"', line).is_none() {
        // Fast path: no quotes, the record is this line.
        if line.is_empty() {
            return Some(Record {
                next,
                field: Field::Missing,
                blank: true,
                newlines,
            });
        }
        let mut from = 0;
        for _ in 0..want {
            match memchr(b',', &line[from..]) {
                Some(i) => from += i + 1,
                None => {
                    return Some(Record {
                        next,
                        field: Field::Missing,
                        blank: false,
                        newlines,
                    });
                }
            }
        }
        let to = memchr(b',', &line[from..]).map_or(line.len(), |i| from + i);
        return Some(Record {
            next,
            field: Field::Range(start + from, start + to),
            blank: false,
            newlines,
        });
    }
    quoted_record(buf, start, eof, want, scratch)
}

/// The quote-aware path: fields may be quoted, with `""` inside standing for `"`, and may
/// hold delimiters and newlines.
fn quoted_record(
    buf: &[u8],
    start: usize,
    eof: bool,
    want: usize,
    scratch: &mut Vec<u8>,
) -> Option<Record> {
    let mut p = start;
    let mut index = 0;
    let mut field = Field::Missing;
    loop {
        if p < buf.len() && buf[p] == b'"' {
            let content = p + 1;
            let mut q = content;
            let mut escaped = false;
            let end = loop {
                match memchr(b'"', &buf[q..]) {
                    None if eof => break buf.len(),
                    None => return None,
                    Some(i) => {
                        let at = q + i;
                        if at + 1 < buf.len() && buf[at + 1] == b'"' {
                            escaped = true;
                            q = at + 2;
                        } else if at + 1 == buf.len() && !eof {
                            // Cannot tell `"` from `""` yet.
                            return None;
                        } else {
                            break at;
                        }
                    }
                }
            };
            if index == want {
                field = if escaped {
                    unescape(&buf[content..end], scratch);
                    Field::Scratch
                } else {
                    Field::Range(content, end)
                };
            }
            // Anything between the closing quote and the delimiter is ignored.
            let after = (end + 1).min(buf.len());
            match memchr2(b',', b'\n', &buf[after..]) {
                Some(i) if buf[after + i] == b',' => {
                    p = after + i + 1;
                    index += 1;
                }
                Some(i) => return Some(finish(buf, start, after + i + 1, field)),
                None if eof => return Some(finish(buf, start, buf.len(), field)),
                None => return None,
            }
        } else {
            match memchr2(b',', b'\n', &buf[p..]) {
                Some(i) => {
                    let at = p + i;
                    let is_comma = buf[at] == b',';
                    if index == want {
                        let to = if is_comma { at } else { strip_cr(buf, p, at) };
                        field = Field::Range(p, to);
                    }
                    if is_comma {
                        p = at + 1;
                        index += 1;
                    } else {
                        return Some(finish(buf, start, at + 1, field));
                    }
                }
                None if eof => {
                    if index == want {
                        field = Field::Range(p, strip_cr(buf, p, buf.len()));
                    }
                    return Some(finish(buf, start, buf.len(), field));
                }
                None => return None,
            }
        }
    }
}

fn finish(buf: &[u8], start: usize, next: usize, field: Field) -> Record {
    Record {
        next,
        field,
        blank: false,
        newlines: memchr::memchr_iter(b'\n', &buf[start..next]).count() as u64,
    }
}

fn unescape(raw: &[u8], scratch: &mut Vec<u8>) {
    scratch.clear();
    let mut i = 0;
    while i < raw.len() {
        scratch.push(raw[i]);
        if raw[i] == b'"' && i + 1 < raw.len() && raw[i + 1] == b'"' {
            i += 2;
        } else {
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum E {
        Csv(CsvError),
    }
    impl From<CsvError> for E {
        fn from(e: CsvError) -> Self {
            E::Csv(e)
        }
    }

    /// Feeds `input` in chunks of `chunk` bytes; returns (line, value) pairs.
    fn scan(input: &[u8], column: &str, chunk: usize) -> Result<Vec<(u64, Option<String>)>, E> {
        let mut out = Vec::new();
        let mut s = CsvColumnScanner::new(column);
        let mut sink = |line: u64, v: Option<&[u8]>| {
            out.push((line, v.map(|b| String::from_utf8_lossy(b).into_owned())));
            Ok::<(), E>(())
        };
        for c in input.chunks(chunk.max(1)) {
            s.feed(c, &mut sink)?;
        }
        s.finish(&mut sink)?;
        Ok(out)
    }

    fn values(input: &str, column: &str) -> Vec<Option<String>> {
        let whole = scan(input.as_bytes(), column, usize::MAX).expect("scan");
        for chunk in [1, 2, 3, 7] {
            assert_eq!(
                scan(input.as_bytes(), column, chunk).expect("scan"),
                whole,
                "chunk size {chunk} changes the result"
            );
        }
        whole.into_iter().map(|(_, v)| v).collect()
    }

    fn some(v: &[&str]) -> Vec<Option<String>> {
        v.iter().map(|s| Some(s.to_string())).collect()
    }

    #[test]
    fn plain_and_crlf() {
        assert_eq!(
            values("name,id,x\na,1,p\nb,2,q\r\nc,3\n", "id"),
            some(&["1", "2", "3"])
        );
        assert_eq!(
            values("id\r\n1\r\n2\r\n", "id"),
            some(&["1", "2"]),
            "CR is not part of the value"
        );
        assert_eq!(values("a,id\n1,2", "id"), some(&["2"]), "no final newline");
    }

    #[test]
    fn quoted_fields_escapes_and_newlines() {
        let input = "\"amplitude_id\",\"user_id\"\n\"1\",\"a,b\"\n\"2\",\"say \"\"hi\"\"\"\n\"3\",\"multi\nline\"\n4,plain\n";
        assert_eq!(
            values(input, "user_id"),
            some(&["a,b", "say \"hi\"", "multi\nline", "plain"])
        );
        assert_eq!(values(input, "amplitude_id"), some(&["1", "2", "3", "4"]));
        let lines: Vec<u64> = scan(input.as_bytes(), "user_id", 4)
            .expect("scan")
            .into_iter()
            .map(|(l, _)| l)
            .collect();
        assert_eq!(lines, vec![2, 3, 4, 6]);
    }

    #[test]
    fn short_rows_blank_lines_bom_and_quotes_after_the_column() {
        let input = "\u{feff}id,note\n\n1,\"x\ny\"\n\n,empty\n2\n";
        let got = scan(input.as_bytes(), "id", 3).expect("scan");
        assert_eq!(
            got,
            vec![
                (3, Some("1".to_string())),
                (6, Some(String::new())),
                (7, Some("2".to_string()))
            ]
        );
        assert_eq!(values("a,id\nx\n", "id"), vec![None]);
    }

    #[test]
    fn header_problems_are_named() {
        assert_eq!(scan(b"", "id", 4), Err(E::Csv(CsvError::NoHeader)));
        assert_eq!(
            scan(b"a,b\n1,2\n", "id", 4),
            Err(E::Csv(CsvError::NoColumn {
                column: "id".into(),
                header: vec!["a".into(), "b".into()]
            }))
        );
        assert!(matches!(
            scan(
                b"\"amplitude_id\",\"user_id\",\"amplitude_id\"\n",
                "amplitude_id",
                4
            ),
            Err(E::Csv(CsvError::AmbiguousColumn { count: 2, .. }))
        ));
        assert_eq!(
            values(" id \n7\n", "id"),
            some(&["7"]),
            "header names trimmed"
        );
    }

    #[test]
    fn agrees_with_csv_core_on_random_input() {
        let mut rng = fastrand::Rng::with_seed(42);
        let alphabet = [b'a', b'b', b',', b'"', b'\n', b' ', b'1'];
        for _ in 0..300 {
            let mut input = b"h0,h1,h2\n".to_vec();
            for _ in 0..rng.usize(0..8) {
                for f in 0..3 {
                    if rng.bool() {
                        input.push(b'"');
                        for _ in 0..rng.usize(0..5) {
                            let c = alphabet[rng.usize(..alphabet.len())];
                            input.push(c);
                            if c == b'"' {
                                input.push(b'"');
                            }
                        }
                        input.push(b'"');
                    } else {
                        for _ in 0..rng.usize(1..4) {
                            input.push([b'a', b'x', b'9'][rng.usize(..3)]);
                        }
                    }
                    input.push(if f == 2 { b'\n' } else { b',' });
                }
            }
            let want = csv_core_column(&input, 1);
            let got: Vec<String> = scan(&input, "h1", 1 + rng.usize(0..6))
                .expect("scan")
                .into_iter()
                .map(|(_, v)| v.unwrap_or_default())
                .collect();
            assert_eq!(got, want, "input {:?}", String::from_utf8_lossy(&input));
        }
    }

    /// Reference: column `col` of every data record, parsed by csv-core.
    fn csv_core_column(input: &[u8], col: usize) -> Vec<String> {
        let mut rdr = csv_core::Reader::new();
        let mut out = [0u8; 4096];
        let mut ends = [0usize; 64];
        let mut rows = Vec::new();
        let mut data = input;
        loop {
            let (res, nin, _, nend) = rdr.read_record(data, &mut out, &mut ends);
            data = &data[nin..];
            match res {
                csv_core::ReadRecordResult::Record => {
                    let start = if col == 0 { 0 } else { ends[col - 1] };
                    if col < nend {
                        rows.push(String::from_utf8_lossy(&out[start..ends[col]]).into_owned());
                    }
                }
                csv_core::ReadRecordResult::End => break,
                csv_core::ReadRecordResult::InputEmpty if data.is_empty() => {}
                _ => {}
            }
        }
        rows.remove(0);
        rows
    }
}

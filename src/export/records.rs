//! The record splitter: RFC 4180 CSV (quoted or not, `""` escapes, LF / CRLF / CR line
//! ends, line breaks inside quotes) split into fields that go straight into a
//! [`FieldSink`] (the export's [`BatchBuilder`], the reverse's id column). It works on
//! text already validated as UTF-8 (a whole buffer at once), jumps between delimiters
//! with `memchr`, and only copies a field when it holds a doubled quote. A record cut off
//! by the end of the buffer is reported as incomplete so the caller can read more and try
//! again. [`scan_record`] finds the same records' boundaries in raw bytes (the header,
//! rows holding invalid UTF-8, and records too long to finish).
//!
//! A quote opens a quoted field only as the field's first byte; elsewhere it is data.
//! Text between a closing quote and the next delimiter makes the row malformed.

use memchr::{memchr, memchr3};

use super::columns::BatchBuilder;
use super::error::BadRowReason;

/// Where the fields of a record go, one at a time, in column order.
pub trait FieldSink {
    /// How many fields a row must have.
    fn width(&self) -> usize;
    /// Field `col` of the current row, known to be UTF-8 (quotes removed, `""` unescaped).
    fn push_str(&mut self, col: usize, field: &str) -> Result<(), BadRowReason>;
    /// Field `col` of the current row as raw bytes (from a row holding invalid UTF-8
    /// somewhere; the sink checks what it needs).
    fn push_bytes(&mut self, col: usize, field: &[u8]) -> Result<(), BadRowReason>;
    /// Forgets the fields pushed for the current row.
    fn rollback_row(&mut self);
}

impl FieldSink for BatchBuilder {
    #[inline]
    fn width(&self) -> usize {
        BatchBuilder::width(self)
    }

    #[inline]
    fn push_str(&mut self, col: usize, field: &str) -> Result<(), BadRowReason> {
        BatchBuilder::push_str(self, col, field)
    }

    fn push_bytes(&mut self, col: usize, field: &[u8]) -> Result<(), BadRowReason> {
        BatchBuilder::push_bytes(self, col, field)
    }

    fn rollback_row(&mut self) {
        BatchBuilder::rollback_row(self)
    }
}

/// How parsing one record ended.
#[derive(Debug, PartialEq)]
pub enum Record {
    /// A full row was pushed (the caller ends it).
    Row,
    /// A blank line: nothing pushed.
    Blank,
    /// A malformed row: nothing left pushed; parsing resumes after it.
    Bad(BadRowReason),
    /// The text ended before the record did (more data is needed); nothing left pushed.
    Incomplete,
    /// The body ended inside a quoted field.
    Unterminated,
    /// Field `column` (0-based) is longer than the splitter's `max_field` bytes; nothing
    /// left pushed.
    FieldTooLong { column: usize },
}

/// Splits records; keeps the buffer used to unescape `""`.
pub struct Splitter {
    scratch: String,
    /// Longest field accepted, in bytes as written (quotes included).
    max_field: usize,
}

impl Splitter {
    /// A splitter refusing fields longer than `max_field` bytes as written.
    pub fn new(max_field: usize) -> Self {
        Splitter {
            scratch: String::new(),
            max_field,
        }
    }

    /// Parses the record starting at byte `pos` of `text` and returns how it ended and
    /// where the next record starts. `eof` says that `text` ends the body.
    pub fn record<S: FieldSink>(
        &mut self,
        text: &str,
        pos: usize,
        eof: bool,
        builder: &mut S,
    ) -> (Record, usize) {
        let bytes = text.as_bytes();
        match bytes.get(pos) {
            None => return (Record::Incomplete, pos),
            Some(b'\n') => return (Record::Blank, pos + 1),
            Some(b'\r') => {
                let next = if bytes.get(pos + 1) == Some(&b'\n') {
                    pos + 2
                } else {
                    pos + 1
                };
                return (Record::Blank, next);
            }
            Some(_) => {}
        }
        let width = builder.width();
        let mut col = 0usize;
        let mut p = pos;
        let mut error: Option<BadRowReason> = None;
        loop {
            // One field starting at p.
            let (field_end, after) = if bytes.get(p) == Some(&b'"') {
                match self.quoted(text, p, eof) {
                    Quoted::Field { end } => {
                        if end - p > self.max_field {
                            builder.rollback_row();
                            return (Record::FieldTooLong { column: col }, end);
                        }
                        let value = match self.scratch.is_empty() {
                            true => text.get(p + 1..end - 1),
                            false => Some(self.scratch.as_str()),
                        };
                        if col < width && error.is_none() {
                            let r = match value {
                                Some(v) => builder.push_str(col, v),
                                None => Err(internal_split()),
                            };
                            if let Err(e) = r {
                                error = Some(e);
                            }
                        }
                        (end, bytes.get(end).copied())
                    }
                    Quoted::Incomplete => {
                        builder.rollback_row();
                        return (Record::Incomplete, pos);
                    }
                    Quoted::Unterminated => {
                        builder.rollback_row();
                        return (Record::Unterminated, bytes.len());
                    }
                }
            } else {
                let end = match memchr3(b',', b'\n', b'\r', &bytes[p..]) {
                    Some(k) => p + k,
                    None if eof => bytes.len(),
                    None => {
                        builder.rollback_row();
                        return (Record::Incomplete, pos);
                    }
                };
                if end - p > self.max_field {
                    builder.rollback_row();
                    return (Record::FieldTooLong { column: col }, end);
                }
                if col < width && error.is_none() {
                    let r = match text.get(p..end) {
                        Some(v) => builder.push_str(col, v),
                        None => Err(internal_split()),
                    };
                    if let Err(e) = r {
                        error = Some(e);
                    }
                }
                (end, bytes.get(end).copied())
            };
            col += 1;
            match after {
                Some(b',') => p = field_end + 1,
                Some(b'\n') => return self.finish(builder, col, error, field_end + 1),
                Some(b'\r') => {
                    let next = match bytes.get(field_end + 1) {
                        Some(b'\n') => field_end + 2,
                        // A CR that ends the text may be followed by an LF: that LF then
                        // reads as a blank line, which is skipped.
                        _ => field_end + 1,
                    };
                    return self.finish(builder, col, error, next);
                }
                None if eof => return self.finish(builder, col, error, field_end),
                None => {
                    builder.rollback_row();
                    return (Record::Incomplete, pos);
                }
                Some(_) => {
                    // Text right after a closing quote (`"ab"c`): not CSV. Skip to the
                    // next delimiter and report the row.
                    error.get_or_insert(BadRowReason::Malformed {
                        column: col,
                        message: "text after a closing quote".into(),
                    });
                    match memchr3(b',', b'\n', b'\r', &bytes[field_end..]) {
                        Some(k) => {
                            let d = field_end + k;
                            match bytes[d] {
                                b',' => p = d + 1,
                                b'\r' if bytes.get(d + 1) == Some(&b'\n') => {
                                    return self.finish(builder, col, error, d + 2);
                                }
                                _ => return self.finish(builder, col, error, d + 1),
                            }
                        }
                        None if eof => return self.finish(builder, col, error, bytes.len()),
                        None => {
                            builder.rollback_row();
                            return (Record::Incomplete, pos);
                        }
                    }
                }
            }
        }
    }

    fn finish<S: FieldSink>(
        &mut self,
        builder: &mut S,
        fields: usize,
        error: Option<BadRowReason>,
        next: usize,
    ) -> (Record, usize) {
        let width = builder.width();
        if fields != width {
            builder.rollback_row();
            return (
                Record::Bad(BadRowReason::FieldCount {
                    expected: width,
                    found: fields,
                }),
                next,
            );
        }
        match error {
            Some(e) => {
                builder.rollback_row();
                (Record::Bad(e), next)
            }
            None => (Record::Row, next),
        }
    }

    /// Finds the end of the quoted field opening at `open`. On `Field`, `end` is just past
    /// the closing quote and `scratch` holds the unescaped value if it had `""` (else it
    /// is empty and the value is `text[open + 1..end - 1]`).
    fn quoted(&mut self, text: &str, open: usize, eof: bool) -> Quoted {
        let bytes = text.as_bytes();
        self.scratch.clear();
        let mut seg = open + 1;
        let mut p = open + 1;
        loop {
            let Some(k) = find_quote(&bytes[p..]) else {
                return if eof {
                    Quoted::Unterminated
                } else {
                    Quoted::Incomplete
                };
            };
            let q = p + k;
            match bytes.get(q + 1) {
                Some(b'"') => {
                    // A doubled quote: keep one.
                    self.scratch
                        .push_str(text.get(seg..q + 1).unwrap_or_default());
                    p = q + 2;
                    seg = p;
                }
                None if !eof => return Quoted::Incomplete,
                _ => {
                    // The closing quote. `scratch` is non-empty exactly when the field
                    // had a doubled quote (each one pushed at least a `"`).
                    if !self.scratch.is_empty() {
                        self.scratch.push_str(text.get(seg..q).unwrap_or_default());
                    }
                    return Quoted::Field { end: q + 1 };
                }
            }
        }
    }
}

/// Repeated in every byte of a word.
const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The first `"` in `hay`. Fields are short, so the first 32 bytes are scanned a word at a
/// time inline (a `memchr` call costs more than that); longer fields go to `memchr`.
#[inline]
fn find_quote(hay: &[u8]) -> Option<usize> {
    let mut words = hay.chunks_exact(8);
    for (i, word) in words.by_ref().take(4).enumerate() {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        // Bytes equal to `"` become zero; the lowest flagged zero byte is exact.
        let x = u64::from_le_bytes(w) ^ (ONES * u64::from(b'"'));
        let found = x.wrapping_sub(ONES) & !x & HIGHS;
        if found != 0 {
            return Some(i * 8 + (found.trailing_zeros() / 8) as usize);
        }
    }
    let scanned = (hay.len() / 8).min(4) * 8;
    memchr(b'"', &hay[scanned..]).map(|k| scanned + k)
}

enum Quoted {
    Field { end: usize },
    Incomplete,
    Unterminated,
}

/// Field boundaries always sit next to ASCII delimiters, hence on char boundaries; this
/// reports the impossible case instead of panicking.
fn internal_split() -> BadRowReason {
    BadRowReason::Malformed {
        column: 0,
        message: "field boundary inside a character".into(),
    }
}

/// How [`scan_record`] found a record.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// The record ends at `next` (where the next record starts).
    Complete { next: usize },
    /// The bytes end before the record does (or, at the end of the body, inside a quoted
    /// field). `fields` were started so far; `longest` is `(column, bytes)` of the longest
    /// field so far, the unfinished one included.
    Incomplete {
        fields: usize,
        longest: (usize, usize),
    },
    /// The record has more than the `max_fields` asked for.
    TooManyFields,
}

/// Finds the record starting at `pos` of raw `bytes` (same rules as the [`Splitter`]),
/// pushing each field's byte range (quotes included) onto `fields` when given. `eof` says
/// that `bytes` end the body.
pub fn scan_record(
    bytes: &[u8],
    pos: usize,
    eof: bool,
    max_fields: usize,
    mut fields: Option<&mut Vec<(usize, usize)>>,
) -> Scan {
    let mut count = 0usize;
    let mut longest = (0usize, 0usize);
    let mut p = pos;
    loop {
        // One field starting at p.
        let start = p;
        if count == max_fields {
            return Scan::TooManyFields;
        }
        count += 1;
        if bytes.get(p) == Some(&b'"') {
            // The closing quote: a quote not followed by another one.
            let mut q = p + 1;
            loop {
                match memchr(b'"', &bytes[q.min(bytes.len())..]) {
                    Some(k) if bytes.get(q + k + 1) == Some(&b'"') => q += k + 2,
                    Some(k) if q + k + 1 < bytes.len() || eof => {
                        p = q + k + 1;
                        break;
                    }
                    // A quote at the very end may be the first half of a `""`.
                    _ => {
                        longest = longer(longest, count - 1, bytes.len() - start);
                        return Scan::Incomplete {
                            fields: count,
                            longest,
                        };
                    }
                }
            }
        }
        let end = match memchr3(b',', b'\n', b'\r', &bytes[p..]) {
            Some(k) => p + k,
            None if eof => bytes.len(),
            None => {
                longest = longer(longest, count - 1, bytes.len() - start);
                return Scan::Incomplete {
                    fields: count,
                    longest,
                };
            }
        };
        longest = longer(longest, count - 1, end - start);
        if let Some(f) = fields.as_deref_mut() {
            f.push((start, end));
        }
        match bytes.get(end) {
            Some(b',') => p = end + 1,
            Some(b'\r') if bytes.get(end + 1) == Some(&b'\n') => {
                return Scan::Complete { next: end + 2 };
            }
            Some(b'\r') if end + 1 == bytes.len() && !eof => {
                // A CR at the very end may be the first half of a CRLF.
                return Scan::Incomplete {
                    fields: count,
                    longest,
                };
            }
            Some(_) => return Scan::Complete { next: end + 1 },
            None => return Scan::Complete { next: end },
        }
    }
}

fn longer(a: (usize, usize), column: usize, len: usize) -> (usize, usize) {
    if len > a.1 { (column, len) } else { a }
}

/// A raw field's value: quotes removed and `""` unescaped. `None` when text follows the
/// closing quote.
pub fn unquote_raw(raw: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    let Some(inner) = raw.strip_prefix(b"\"") else {
        return Some(std::borrow::Cow::Borrowed(raw));
    };
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < inner.len() {
        if inner[i] == b'"' {
            if inner.get(i + 1) == Some(&b'"') {
                let v = out.get_or_insert_with(|| inner[..i].to_vec());
                v.push(b'"');
                i += 2;
                continue;
            }
            // The closing quote: it must end the field.
            if i + 1 != inner.len() {
                return None;
            }
            return Some(match out {
                Some(v) => std::borrow::Cow::Owned(v),
                None => std::borrow::Cow::Borrowed(&inner[..i]),
            });
        }
        if let Some(v) = out.as_mut() {
            v.push(inner[i]);
        }
        i += 1;
    }
    // No closing quote (only at the end of a cut body): the bytes as they are.
    Some(match out {
        Some(v) => std::borrow::Cow::Owned(v),
        None => std::borrow::Cow::Borrowed(inner),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_quote_agrees_with_memchr() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let len = rng.usize(0..80);
            let hay: Vec<u8> = (0..len)
                .map(|_| match rng.u8(0..6) {
                    0 => b'"',
                    1 => 0x22 ^ 0x80,
                    2 => 0x21,
                    3 => 0x23,
                    4 => 0,
                    _ => rng.u8(..),
                })
                .collect();
            assert_eq!(find_quote(&hay), memchr(b'"', &hay), "{hay:?}");
        }
    }
}

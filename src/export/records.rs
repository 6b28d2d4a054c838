//! The record splitter: RFC 4180 CSV (quoted or not, `""` escapes, LF / CRLF / CR line
//! ends, line breaks inside quotes) split into fields that go straight into a
//! [`BatchBuilder`]. It works on text already validated as UTF-8 (a whole buffer at once),
//! jumps between delimiters with `memchr`, and only copies a field when it holds a
//! doubled quote. A record cut off by the end of the buffer is reported as incomplete so
//! the caller can read more and try again.

use memchr::{memchr, memchr3};

use super::columns::BatchBuilder;
use super::error::BadRowReason;

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
}

/// Splits records; keeps the buffer used to unescape `""`.
#[derive(Default)]
pub struct Splitter {
    scratch: String,
}

impl Splitter {
    /// Parses the record starting at byte `pos` of `text` and returns how it ended and
    /// where the next record starts. `eof` says that `text` ends the body.
    pub fn record(
        &mut self,
        text: &str,
        pos: usize,
        eof: bool,
        builder: &mut BatchBuilder,
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

    fn finish(
        &mut self,
        builder: &mut BatchBuilder,
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

/// The fields of one record as raw byte ranges, for rows whose text is not valid UTF-8
/// (the slow path): returns the field ranges (quotes included) and where the next record
/// starts, or `None` when the bytes end before the record does.
pub fn raw_fields(bytes: &[u8], pos: usize, eof: bool) -> Option<(Vec<(usize, usize)>, usize)> {
    let mut fields = Vec::new();
    let mut p = pos;
    let mut start = pos;
    let mut in_quotes = false;
    while p < bytes.len() {
        let b = bytes[p];
        if in_quotes {
            if b == b'"' {
                if bytes.get(p + 1) == Some(&b'"') {
                    p += 2;
                    continue;
                }
                in_quotes = false;
            }
            p += 1;
            continue;
        }
        match b {
            b'"' => in_quotes = true,
            b',' => {
                fields.push((start, p));
                start = p + 1;
            }
            b'\n' | b'\r' => {
                fields.push((start, p));
                let next = if b == b'\r' && bytes.get(p + 1) == Some(&b'\n') {
                    p + 2
                } else {
                    p + 1
                };
                return Some((fields, next));
            }
            _ => {}
        }
        p += 1;
    }
    if eof && !in_quotes {
        fields.push((start, p));
        return Some((fields, p));
    }
    None
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

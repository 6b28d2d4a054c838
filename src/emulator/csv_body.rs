//! Cohort files as Amplitude writes them: quoted CSV, header `"amplitude_id","user_id"`,
//! property columns after it and `amplitude_id` once more at the end when properties were
//! asked for. Rows are generated on the fly into fixed-size chunks, so a 2-million-member
//! body streams without ever being held in memory.

use std::sync::Arc;

use bytes::Bytes;

use super::universe::{amplitude_id, prop_hash, write_property, write_u64, write_user_id};

/// Size of the chunks a body is produced in.
const CHUNK_BYTES: usize = 64 * 1024;

/// Who is in a cohort at one moment.
#[derive(Debug, Clone)]
pub enum Members {
    /// `universe::member_numbers(seed, cohort_id, size)`.
    Generated {
        seed: u64,
        cohort_id: String,
        size: u64,
    },
    /// An explicit set (after a membership change or upload), sorted ascending.
    Explicit(Arc<Vec<u64>>),
}

impl Members {
    pub fn len(&self) -> u64 {
        match self {
            Members::Generated { size, .. } => *size,
            Members::Explicit(v) => v.len() as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Member numbers in CSV order.
    pub fn numbers(&self) -> Box<dyn Iterator<Item = u64> + Send> {
        match self {
            Members::Generated {
                seed,
                cohort_id,
                size,
            } => Box::new(super::universe::member_numbers(*seed, cohort_id, *size)),
            Members::Explicit(v) => {
                let v = Arc::clone(v);
                Box::new((0..v.len()).map(move |i| v[i]))
            }
        }
    }
}

/// The property columns of one download (`None`: no `props=1`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PropColumns(pub Option<Vec<String>>);

impl PropColumns {
    /// Each column with its precomputed hash.
    fn hashed(&self) -> Option<Vec<(String, u64)>> {
        self.0
            .as_ref()
            .map(|keys| keys.iter().map(|k| (k.clone(), prop_hash(k))).collect())
    }
}

/// The header row of a file with these property columns.
pub fn header(props: &PropColumns) -> Vec<u8> {
    let mut out = Vec::new();
    quoted(b"amplitude_id", &mut out);
    out.push(b',');
    quoted(b"user_id", &mut out);
    if let Some(keys) = &props.0 {
        for k in keys {
            out.push(b',');
            quoted(k.as_bytes(), &mut out);
        }
        out.push(b',');
        quoted(b"amplitude_id", &mut out);
    }
    out.push(b'\n');
    out
}

/// Appends member `n`'s row; `props` as made by `PropColumns::hashed`.
fn write_row(n: u64, props: Option<&[(String, u64)]>, out: &mut Vec<u8>) {
    let amp = amplitude_id(n) as u64;
    out.push(b'"');
    write_u64(amp, out);
    out.extend_from_slice(b"\",\"");
    // User ids never contain quotes, so they need no escaping.
    write_user_id(n, out);
    out.push(b'"');
    if let Some(keys) = props {
        for (k, h) in keys {
            out.extend_from_slice(b",\"");
            write_property(n, k, *h, true, out);
            out.push(b'"');
        }
        out.extend_from_slice(b",\"");
        write_u64(amp, out);
        out.push(b'"');
    }
    out.push(b'\n');
}

fn quoted(text: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in text {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// The whole file as chunks of about [`CHUNK_BYTES`], header first.
pub struct CsvChunks {
    header: Option<Vec<u8>>,
    numbers: Box<dyn Iterator<Item = u64> + Send>,
    props: Option<Vec<(String, u64)>>,
}

impl CsvChunks {
    pub fn new(members: &Members, props: PropColumns) -> Self {
        CsvChunks {
            header: Some(header(&props)),
            numbers: members.numbers(),
            props: props.hashed(),
        }
    }
}

impl Iterator for CsvChunks {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        let mut buf = self
            .header
            .take()
            .unwrap_or_else(|| Vec::with_capacity(CHUNK_BYTES + 512));
        while buf.len() < CHUNK_BYTES {
            match self.numbers.next() {
                Some(n) => write_row(n, self.props.as_deref(), &mut buf),
                None => break,
            }
        }
        (!buf.is_empty()).then(|| Bytes::from(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::universe::{member_numbers, property_value, user_id};

    /// A small RFC 4180 reader for the test: quoted fields, doubled quotes, embedded
    /// newlines.
    fn parse_csv(text: &str) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        let mut row = Vec::new();
        let mut field = String::new();
        let mut chars = text.chars().peekable();
        let mut in_quotes = false;
        while let Some(c) = chars.next() {
            match (in_quotes, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                (true, '"') => in_quotes = false,
                (true, c) => field.push(c),
                (false, '"') => in_quotes = true,
                (false, ',') => row.push(std::mem::take(&mut field)),
                (false, '\n') => {
                    row.push(std::mem::take(&mut field));
                    rows.push(std::mem::take(&mut row));
                }
                (false, c) => field.push(c),
            }
        }
        assert!(
            !in_quotes && field.is_empty() && row.is_empty(),
            "unterminated"
        );
        rows
    }

    fn body(members: &Members, props: PropColumns) -> String {
        let bytes: Vec<u8> = CsvChunks::new(members, props).flatten().collect();
        String::from_utf8(bytes).expect("utf-8 body")
    }

    #[test]
    fn body_equals_the_universe_functions() {
        let members = Members::Generated {
            seed: 42,
            cohort_id: "abc".into(),
            size: 5_000,
        };
        let keys = vec!["plan".to_string(), "note".to_string()];
        let rows = parse_csv(&body(&members, PropColumns(Some(keys.clone()))));
        assert_eq!(
            rows[0],
            ["amplitude_id", "user_id", "plan", "note", "amplitude_id"]
        );
        let expected: Vec<u64> = member_numbers(42, "abc", 5_000).collect();
        assert_eq!(rows.len() - 1, expected.len());
        for (row, &n) in rows[1..].iter().zip(&expected) {
            let amp = amplitude_id(n).to_string();
            assert_eq!(row[0], amp);
            assert_eq!(row[1], user_id(n).unwrap_or_default());
            for (i, k) in keys.iter().enumerate() {
                assert_eq!(row[2 + i], property_value(n, k).unwrap_or_default(), "{k}");
            }
            assert_eq!(row[4], amp);
        }
    }

    #[test]
    fn plain_body_has_two_columns_and_explicit_members_keep_their_order() {
        let members = Members::Explicit(Arc::new(vec![3, 9, 27]));
        let rows = parse_csv(&body(&members, PropColumns(None)));
        assert_eq!(rows[0], ["amplitude_id", "user_id"]);
        let ids: Vec<String> = rows[1..].iter().map(|r| r[0].clone()).collect();
        assert_eq!(
            ids,
            [3, 9, 27].map(|n| amplitude_id(n).to_string()).to_vec()
        );
        assert_eq!(
            parse_csv(&body(&Members::Explicit(Arc::default()), PropColumns(None))).len(),
            1
        );
    }
}

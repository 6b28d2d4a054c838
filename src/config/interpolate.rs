//! `${VAR}` interpolation inside string values, done on the parsed (spanned) document so
//! that every position still points into the original file. `$${` writes a literal `${`;
//! a `$` not followed by `{` is kept as is. Keys are never interpolated.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// An interpolation problem at a byte range of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InterpolationError {
    pub span: Range<usize>,
    pub message: String,
}

/// Replaces `${VAR}` in every string value of `table` (nested tables and arrays too) with
/// `lookup(VAR)`. `text` is the file the table was parsed from. Returns the error that comes
/// first in the file, if any.
pub(crate) fn interpolate_table(
    table: &mut DeTable<'_>,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), InterpolationError> {
    let mut errors = Vec::new();
    for (_, value) in table.iter_mut() {
        walk(value, text, lookup, &mut errors);
    }
    match errors.into_iter().min_by_key(|e| e.span.start) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn walk(
    value: &mut serde_spanned::Spanned<DeValue<'_>>,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<InterpolationError>,
) {
    let span = value.span();
    match value.get_mut() {
        DeValue::String(s) => match expand(s, lookup) {
            Ok(Some(new)) => *s = new.into(),
            Ok(None) => {}
            Err((offset, message)) => {
                let start = source_offset(text, &span, s, offset);
                errors.push(InterpolationError {
                    span: start..start + 1,
                    message,
                });
            }
        },
        DeValue::Array(items) => {
            for item in items.iter_mut() {
                walk(item, text, lookup, errors);
            }
        }
        DeValue::Table(t) => {
            for (_, v) in t.iter_mut() {
                walk(v, text, lookup, errors);
            }
        }
        _ => {}
    }
}

/// Expands one string. `Ok(None)` when it holds nothing to expand; the error carries the
/// byte offset (in `s`) of the offending `${`.
pub(crate) fn expand(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, (usize, String)> {
    if !s.contains('$') {
        return Ok(None);
    }
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(rel) = s[i..].find('$') {
        let at = i + rel;
        out.push_str(&s[i..at]);
        let rest = &s[at..];
        if rest.starts_with("$${") {
            out.push_str("${");
            i = at + 3;
        } else if let Some(body) = rest.strip_prefix("${") {
            let Some(end) = body.find('}') else {
                return Err((
                    at,
                    "unclosed `${`: write `${NAME}`, or `$${` for a literal `${`".into(),
                ));
            };
            let name = &body[..end];
            if !valid_name(name) {
                return Err((
                    at,
                    format!(
                        "invalid variable name {name:?} in `${{...}}`: use letters, digits and `_`, not starting with a digit (write `$${{` for a literal `${{`)"
                    ),
                ));
            }
            match lookup(name) {
                Some(v) => out.push_str(&v),
                None => {
                    return Err((
                        at,
                        format!("environment variable {name} is not set (used as `${{{name}}}`)"),
                    ));
                }
            }
            i = at + 2 + end + 1;
        } else {
            out.push('$');
            i = at + 1;
        }
    }
    out.push_str(&s[i..]);
    Ok(Some(out))
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Maps byte `offset` of the decoded string `decoded` to a byte offset of the file: exact
/// when the string is written without escapes; otherwise the same occurrence of the
/// offending token is looked up in the raw text; the string's start as a last resort.
fn source_offset(text: &str, span: &Range<usize>, decoded: &str, offset: usize) -> usize {
    let Some(raw) = text.get(span.clone()) else {
        return span.start;
    };
    let quote = ["\"\"\"", "'''", "\"", "'"]
        .into_iter()
        .find(|q| raw.starts_with(q) && raw.ends_with(q) && raw.len() >= 2 * q.len())
        .map_or(0, str::len);
    let body = &raw[quote..raw.len() - quote];
    if body == decoded {
        return span.start + quote + offset;
    }
    let rest = &decoded[offset..];
    let token_len = rest.find('}').map_or(2.min(rest.len()), |e| e + 1);
    let token = &rest[..token_len];
    let nth = decoded[..offset].matches(token).count();
    match body.match_indices(token).nth(nth) {
        Some((pos, _)) => span.start + quote + pos,
        None => span.start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME_DIR" => Some("/home/x".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_escapes_and_keeps_lone_dollars() {
        let got = expand("a${HOME_DIR}b $x $${HOME_DIR} ${EMPTY}$", &env);
        assert_eq!(got, Ok(Some("a/home/xb $x ${HOME_DIR} $".into())));
        assert_eq!(expand("plain", &env), Ok(None));
    }

    #[test]
    fn unset_unclosed_and_bad_names_are_errors_at_their_offset() {
        let (at, msg) = expand("ab${NOPE}", &env).unwrap_err();
        assert_eq!(at, 2);
        assert!(msg.contains("NOPE is not set"), "{msg}");
        assert_eq!(expand("x ${HOME_DIR", &env).unwrap_err().0, 2);
        assert!(
            expand("${1A}", &env)
                .unwrap_err()
                .1
                .contains("invalid variable name")
        );
        assert!(expand("${}", &env).is_err());
    }

    #[test]
    fn positions_survive_escapes_in_the_string() {
        let text = "k = \"\\t${NOPE}\"";
        let mut doc = DeTable::parse(text).expect("parse").into_inner();
        let err = interpolate_table(&mut doc, text, &env).unwrap_err();
        // `${` starts at byte 7 of the file even though the decoded string has a tab first.
        assert_eq!(err.span.start, 7);
    }
}

//! The alphabet of Amplitude's cohort ids and request ids, checked before an id goes into
//! a URL path or a state key — whether it came from a pipeline file, the state or
//! Amplitude's own answer.
//!
//! Amplitude's ids are short words of letters and digits (`1a2bc3d`, `id_12345`, request
//! ids alike). An id here is **1 to [`MAX_ID_LEN`] characters of ASCII letters, digits,
//! `-`, `_` and `.`, starting with a letter or a digit**. So no id is empty, `.` or `..`
//! (which URL normalisation would collapse: `GET /api/5/cohorts/request/..` is
//! `GET /api/5/cohorts/`), none holds `/`, `%`, `?`, `#`, a space or a control character,
//! and none can step out of a folder as a key.

use std::fmt;

use crate::text::escape;

/// Longest id accepted (Amplitude's are under 20 characters).
pub const MAX_ID_LEN: usize = 128;

/// What the id names, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdRole {
    Cohort,
    Request,
}

impl fmt::Display for IdRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdRole::Cohort => "cohort id",
            IdRole::Request => "request id",
        })
    }
}

/// The rule in words, for messages and docs.
pub const ID_RULE: &str =
    "1 to 128 ASCII letters, digits, '-', '_' or '.', starting with a letter or digit";

/// Why `id` is not an id ([`ID_RULE`]); `None` when it is one.
pub fn id_problem(id: &str) -> Option<&'static str> {
    let Some(first) = id.chars().next() else {
        return Some("it is empty");
    };
    if id.len() > MAX_ID_LEN {
        return Some("it is longer than 128 characters");
    }
    if !first.is_ascii_alphanumeric() {
        return Some("it does not start with a letter or digit");
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Some("it holds a character other than letters, digits, '-', '_' and '.'");
    }
    None
}

/// Checks `id`; the error names the kind of id and the id, escaped and cut to 200 characters.
pub fn check_id(kind: IdRole, id: &str) -> Result<(), String> {
    match id_problem(id) {
        None => Ok(()),
        Some(why) => Err(format!(
            "{kind} \"{}\" is not a valid Amplitude id: {why} ({ID_RULE})",
            shown(id)
        )),
    }
}

/// An id for a message: escaped, at most 200 characters.
pub fn shown(id: &str) -> String {
    let cut: String = id.chars().take(200).collect();
    let mut out = escape(&cut).into_owned();
    if cut.len() < id.len() {
        out.push_str(&format!("… ({} bytes)", id.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amplitude_ids_pass() {
        for ok in ["1a2bc3d", "id_12345", "abc-123", "a.b", "X", "0"] {
            assert_eq!(id_problem(ok), None, "{ok}");
        }
        assert!(check_id(IdRole::Cohort, &"a".repeat(128)).is_ok());
    }

    #[test]
    fn traps_are_refused_with_the_id_escaped() {
        for bad in [
            "", ".", "..", ".x", "a/b", "a b", "a%2F", "a?b", "a#b", "-x", "_x", "a\x1b", "é",
        ] {
            assert!(id_problem(bad).is_some(), "{bad:?}");
        }
        assert!(id_problem(&"a".repeat(129)).is_some());
        let e = check_id(IdRole::Request, "..\x1b[2J").expect_err("bad");
        assert!(
            e.starts_with("request id \"..\\x1b[2J\" is not a valid"),
            "{e}"
        );
        let long = check_id(IdRole::Cohort, &"\u{7}".repeat(500)).expect_err("bad");
        assert!(
            long.contains("(500 bytes)") && !long.contains('\u{7}'),
            "{long}"
        );
    }
}

//! Terminal-safe text: the one helper every server- or file-provided string goes through
//! before it is printed (the run summary, error messages, `cohorts`' table).
//!
//! A cohort name, an id, a CRM value or Amplitude's error message may hold control
//! characters: ESC starts terminal escape sequences (colours, cursor moves, window titles,
//! even clipboard writes), CR overwrites the line shown, BEL rings, NUL and backspace hide
//! text. [`escape`] writes each such character as a visible escape instead (`\x1b`, `\r`,
//! `\u{202e}`), so what is printed is what was sent, one line per line. Escaped: C0
//! controls (tab and line breaks included), DEL, C1 controls (U+0080–U+009F), the
//! bidirectional overrides and isolates (U+202A–U+202E, U+2066–U+2069, which reorder what
//! follows), line and paragraph separators (U+2028, U+2029) and the BOM (U+FEFF). Every other
//! character, any script included, is kept as is. The JSON report needs none of this: JSON
//! escapes control characters itself.

use std::borrow::Cow;
use std::fmt;

/// Whether `c` is escaped by [`escape`].
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}' | '\u{feff}'
        )
}

/// `text` with every character [`needs_escape`] marks written as an escape; borrowed when
/// nothing needed escaping.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

fn push_escaped(out: &mut String, c: char) {
    use std::fmt::Write;
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\0' => out.push_str("\\0"),
        c if (c as u32) < 0x80 && needs_escape(c) => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if needs_escape(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// Displays a string through [`escape`]: `format!("{}", Safe(name))`.
#[derive(Debug, Clone, Copy)]
pub struct Safe<'a>(pub &'a str);

impl fmt::Display for Safe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(self.0))
    }
}

/// [`escape`] applied to each line of `text` on its own: the line breaks a message was
/// written with stay, whatever is inside a line is escaped.
pub fn escape_lines(text: &str) -> String {
    text.split('\n')
        .map(|line| escape(line).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_become_visible_escapes() {
        assert_eq!(escape("plain – ünïcode 名前"), "plain – ünïcode 名前");
        assert!(matches!(escape("ok"), Cow::Borrowed(_)));
        assert_eq!(escape("a\x1b[31mred"), "a\\x1b[31mred");
        assert_eq!(
            escape("bel\x07 nul\0 cr\r lf\n tab\t"),
            "bel\\x07 nul\\0 cr\\r lf\\n tab\\t"
        );
        assert_eq!(escape("del\x7f"), "del\\x7f");
        assert_eq!(escape("csi\u{9b}2J"), "csi\\u{9b}2J");
        assert_eq!(escape("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(Safe("x\x08y").to_string(), "x\\x08y");
    }

    #[test]
    fn nothing_escaped_holds_a_control() {
        for c in (0u32..0x3000).filter_map(char::from_u32) {
            let s = c.to_string();
            let e = escape(&s);
            assert!(!e.chars().any(needs_escape), "{c:?} -> {e:?}");
        }
    }

    #[test]
    fn lines_keep_their_breaks() {
        assert_eq!(escape_lines("a\x1b\nb\rc"), "a\\x1b\nb\\rc");
    }
}

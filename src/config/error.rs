//! The one error type of pipeline files: `file:line:col: message`, or `file: message` when
//! no position applies (unreadable file, missing credentials at run time).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A problem with a pipeline file. `Display` is `file:line:col: message` (line and column
/// 1-based, the column counted in characters) or `file: message` without a position.
/// Messages never contain a secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    file: PathBuf,
    position: Option<(usize, usize)>,
    message: String,
}

impl ConfigError {
    /// An error about the whole file.
    pub fn new(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            position: None,
            message: message.into(),
        }
    }

    /// An error at byte offset `span.start` of `text` (the file's contents).
    pub fn at(
        file: &Path,
        text: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            position: span.map(|s| line_col(text, s.start)),
            message: message.into(),
        }
    }

    /// An error at a 1-based (line, column) already known.
    pub(crate) fn at_position(
        file: &Path,
        position: Option<(usize, usize)>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            position,
            message: message.into(),
        }
    }

    /// The pipeline file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// 1-based line, if the error has a position.
    pub fn line(&self) -> Option<usize> {
        self.position.map(|(l, _)| l)
    }

    /// 1-based column in characters, if the error has a position.
    pub fn column(&self) -> Option<usize> {
        self.position.map(|(_, c)| c)
    }

    /// The message without the location prefix.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => {
                write!(f, "{}:{line}:{col}: {}", self.file.display(), self.message)
            }
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line and character column of byte `offset` in `text` (clamped to the text).
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_in_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        // "bé = " is 6 bytes but 5 characters.
        assert_eq!(line_col(text, 12), (2, 6));
        assert_eq!(line_col(text, 999), (3, 1));
    }

    #[test]
    fn display_with_and_without_position() {
        let f = Path::new("p.toml");
        let e = ConfigError::at(f, "x\ny", Some(2..3), "bad");
        assert_eq!(e.to_string(), "p.toml:2:1: bad");
        assert_eq!(ConfigError::new(f, "gone").to_string(), "p.toml: gone");
    }
}

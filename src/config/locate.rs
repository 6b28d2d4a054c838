//! Finds where a key or value sits in the parsed file, so that checks made after
//! deserialization still report `file:line:col`.

use std::ops::Range;
use std::path::Path;

use toml::de::{DeTable, DeValue};

use super::error::{ConfigError, line_col};

/// The parsed file (after interpolation) with its text, for positions.
pub(crate) struct Locator<'a> {
    pub file: &'a Path,
    pub text: &'a str,
    pub root: &'a DeTable<'a>,
}

impl Locator<'_> {
    /// Key and value spans of a dotted path such as `["reconcile", "chunk_size"]`.
    pub fn find(&self, path: &[&str]) -> Option<(Range<usize>, Range<usize>)> {
        let mut table = self.root;
        let mut found = None;
        for (i, segment) in path.iter().enumerate() {
            let (key, value) = table.get_key_value(*segment)?;
            found = Some((key.span(), value.span()));
            if i + 1 < path.len() {
                match value.get_ref() {
                    DeValue::Table(t) => table = t,
                    _ => return None,
                }
            }
        }
        found
    }

    /// The span of the value at `path`; else of the nearest enclosing key written in the
    /// file; else none.
    fn value_span(&self, path: &[&str]) -> Option<Range<usize>> {
        if let Some((_, v)) = self.find(path) {
            return Some(v);
        }
        self.key_span(&path[..path.len().saturating_sub(1)])
    }

    /// The span of the key at `path`; else of the nearest enclosing key; else none.
    fn key_span(&self, path: &[&str]) -> Option<Range<usize>> {
        (1..=path.len())
            .rev()
            .find_map(|n| self.find(&path[..n]).map(|(k, _)| k))
    }

    /// 1-based line and column of the value at `path`, when the file has it.
    pub fn position(&self, path: &[&str]) -> Option<(usize, usize)> {
        self.find(path).map(|(_, v)| line_col(self.text, v.start))
    }

    /// An error pointing at the value of `path`.
    pub fn at_value(&self, path: &[&str], message: impl Into<String>) -> ConfigError {
        ConfigError::at(self.file, self.text, self.value_span(path), message)
    }

    /// An error pointing at element `index` of the array at `path` (at the array, or its
    /// key, when the element cannot be found).
    pub fn at_element(
        &self,
        path: &[&str],
        index: usize,
        message: impl Into<String>,
    ) -> ConfigError {
        let element = self.find(path).and_then(|_| {
            let mut table = self.root;
            let (last, parents) = path.split_last()?;
            for segment in parents {
                match table.get(*segment)?.get_ref() {
                    DeValue::Table(t) => table = t,
                    _ => return None,
                }
            }
            match table.get(*last)?.get_ref() {
                DeValue::Array(items) => items.get(index).map(|v| v.span()),
                _ => None,
            }
        });
        match element {
            Some(span) => ConfigError::at(self.file, self.text, Some(span), message),
            None => self.at_value(path, message),
        }
    }

    /// An error pointing at the key of `path`.
    pub fn at_key(&self, path: &[&str], message: impl Into<String>) -> ConfigError {
        ConfigError::at(self.file, self.text, self.key_span(path), message)
    }
}

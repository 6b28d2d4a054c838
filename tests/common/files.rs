//! Input files the tests write, and lists the tool writes read back.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

/// `bytes` gzip-compressed (one member).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

/// Writes one id per line under a header.
pub fn write_ids(path: &Path, header: &str, ids: impl IntoIterator<Item = String>) {
    let mut text = format!("{header}\n");
    for id in ids {
        text.push_str(&id);
        text.push('\n');
    }
    std::fs::write(path, text).expect("write source");
}

/// The lines of a list (one id per line), as a set; fails on a repeated line.
pub fn id_set(bytes: &[u8]) -> BTreeSet<String> {
    let text = std::str::from_utf8(bytes).expect("UTF-8 list");
    let lines: Vec<&str> = text.lines().collect();
    let set: BTreeSet<String> = lines.iter().map(|l| l.to_string()).collect();
    assert_eq!(set.len(), lines.len(), "a list repeats an id");
    set
}

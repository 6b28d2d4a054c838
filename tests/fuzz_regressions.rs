//! Replays every input kept in `fuzz/regressions/<target>/` — the crashes `make fuzz` found
//! (fixed since) and a few seeds — through the fuzz targets' own entry points
//! (`fuzz/entries.rs`), on stable Rust: no panic may escape, and none may happen in our
//! code even when caught (a panic hook counts them, as libFuzzer's aborts on them). The
//! one exception is a panic of the parquet crate's decoder on a malformed page, which
//! `reverse::parquet_ids` catches and reports as an error (`cohort_sync::panics`). Add a
//! file to add a case.

#[path = "../fuzz/entries.rs"]
mod entries;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Mutex;

/// Messages of every panic since the hook was set, caught or not.
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A fuzz target's entry point.
type Entry = fn(&[u8]);

const TARGETS: &[(&str, Entry)] = &[
    ("csv_to_arrow", entries::csv_to_arrow),
    ("reverse_source", entries::reverse_source),
    ("pipeline", entries::pipeline),
    ("api_answers", entries::api_answers),
];

#[test]
fn every_kept_fuzz_input_runs_without_panic() {
    std::panic::set_hook(Box::new(|info| {
        if let Ok(mut p) = PANICS.lock() {
            p.push(info.to_string());
        }
    }));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut failed = Vec::new();
    for (target, entry) in TARGETS {
        let dir = root.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{}: no inputs kept", dir.display());
        for file in files {
            let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let unwound = catch_unwind(AssertUnwindSafe(|| entry(&data))).is_err();
            let panics: Vec<String> = PANICS
                .lock()
                .map(|mut p| p.drain(..).collect())
                .unwrap_or_default();
            if unwound || !panics.is_empty() {
                failed.push(format!("{target}: {}: {panics:?}", file.display()));
            }
        }
    }
    assert!(failed.is_empty(), "panicked on:\n{}", failed.join("\n"));
}

//! The diff on two local files, without any pipeline around it: what the benchmark runs
//! (`examples/diff_bench.rs`) and a quick way to inspect a CRM list against a cohort file.
//! Both files are read at the same time, one thread each, then diffed on `threads` threads.

use std::path::Path;

use super::bytes::FileRef;
use super::diff::{Diff, diff};
use super::source::{ColumnSpec, ReadError, ReadStats, read_ids};
use crate::config::SourceFormat;
use crate::reverse::idset::IdCollector;

/// The diff of two local lists and what reading each one found.
#[derive(Debug)]
pub struct LocalDiff {
    pub diff: Diff,
    pub source: ReadStats,
    pub baseline: ReadStats,
}

fn read_local(path: &Path, spec: &ColumnSpec) -> Result<(IdCollector, ReadStats), ReadError> {
    let label = path.display().to_string();
    let file = FileRef::Local(path.to_path_buf());
    let name = file.file_name();
    let format = if name.ends_with(".parquet") || name.ends_with(".pq") {
        SourceFormat::Parquet
    } else {
        SourceFormat::Csv
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ReadError::Io {
            file: label.clone(),
            source,
        })?;
    rt.block_on(read_ids(&file, format, spec))
}

/// Reads `source` and `baseline` (CSV, gzip CSV or Parquet by extension) and diffs them.
pub fn diff_local_files(
    source: &Path,
    source_spec: &ColumnSpec,
    baseline: &Path,
    baseline_spec: &ColumnSpec,
    threads: usize,
) -> Result<LocalDiff, ReadError> {
    let (s, b) = std::thread::scope(|scope| {
        let b = scope.spawn(|| read_local(baseline, baseline_spec));
        let s = read_local(source, source_spec);
        let b = match b.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        (s, b)
    });
    let (s_ids, s_stats) = s?;
    let (b_ids, b_stats) = b?;
    let d = diff(&s_ids, &b_ids, threads).map_err(|e| ReadError::IdSet {
        file: source.display().to_string(),
        source: e,
    })?;
    Ok(LocalDiff {
        diff: d,
        source: s_stats,
        baseline: b_stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amplitude::types::IdKind;

    #[test]
    fn diffs_two_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = dir.path().join("crm.csv");
        let b = dir.path().join("cohort.csv");
        std::fs::write(&s, "email,user_id\nx,a\ny,b\nz,b\nw,\n").expect("write");
        std::fs::write(
            &b,
            "\"amplitude_id\",\"user_id\"\n\"1\",\"b\"\n\"2\",\"c\"\n",
        )
        .expect("write");
        let d = diff_local_files(
            &s,
            &ColumnSpec::new("user_id", IdKind::UserId),
            &b,
            &ColumnSpec::new("user_id", IdKind::UserId),
            2,
        )
        .expect("diff");
        assert_eq!(d.diff.add.sample(10), vec!["a".to_string()]);
        assert_eq!(d.diff.remove.sample(10), vec!["c".to_string()]);
        assert_eq!(d.source, ReadStats { rows: 4, blank: 1 });
        assert_eq!(d.diff.counts.source_duplicates, 1);
    }
}

//! Sync history as data: every applied run adds, per pipeline, one Parquet file with one
//! row per cohort (for a reverse pipeline: one row for its target cohort) to a Hive-style
//! dataset a warehouse can query next to the snapshots:
//!
//! ```text
//! {output}/_history/pipeline={name}/date={YYYY-MM-DD}/run-{run_id}.parquet
//! ```
//!
//! The rows are read off the run report (the same record the summary, the JSON report and
//! the metrics come from), so the four never disagree. `pipeline` and `date` are partition
//! columns (in the path, as Hive readers expect, and in the footer metadata). The file
//! appears whole or not at all: on S3 it is one PUT; on a local output it is written to a
//! dot-file beside it (ignored by Hive-style readers and `*.parquet` globs), synced and
//! renamed. A run killed before the write leaves no row; its rerun adds its own file.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use super::layout::sanitize;
use super::report::{PipelineReport, RunReport};
use crate::storage::Location;

/// The dataset's folder under an output.
pub const HISTORY_DIR: &str = "_history";

/// One row of the history: one cohort of one pipeline in one run.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    pub run_id: String,
    /// `export` or `reverse`.
    pub kind: String,
    pub cohort_id: Option<String>,
    pub cohort_name: Option<String>,
    /// The cohort's outcome (`exported`, `skipped_unchanged`, `deferred_quota`, `failed`,
    /// ...; a reverse pipeline's `applied`, `in_sync`, `refused`, `failed`, ...).
    pub outcome: String,
    /// Why, in words (skipped, deferred, failed), when the report says.
    pub reason: Option<String>,
    /// Why a download was requested (`first_export`, `cohort_changed`, ...), when one was.
    pub request_reason: Option<String>,
    pub request_id: Option<String>,
    pub rows: i64,
    pub bytes: i64,
    pub requests_spent: i64,
    pub requests_possibly_spent: i64,
    /// Downloads left this month after the pipeline's run (when usage was read).
    pub quota_left: Option<i64>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub ids_added: Option<i64>,
    pub ids_removed: Option<i64>,
    pub ids_skipped: Option<i64>,
    pub output: Option<String>,
    /// The pipeline's exit code.
    pub exit_code: i64,
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The rows of one pipeline of `run`.
pub fn rows(run: &RunReport, p: &PipelineReport) -> Vec<HistoryRow> {
    let started = p.started_at.unwrap_or(run.started_at);
    let finished = p.finished_at.unwrap_or(run.finished_at);
    let quota_left = p.quota_after().map(|(_, _, left)| i64::from(left));
    let base = |outcome: String| HistoryRow {
        run_id: run.run_id.clone(),
        kind: p.kind.clone(),
        cohort_id: None,
        cohort_name: None,
        outcome,
        reason: None,
        request_reason: None,
        request_id: None,
        rows: 0,
        bytes: 0,
        requests_spent: 0,
        requests_possibly_spent: 0,
        quota_left,
        started_at: started,
        finished_at: finished,
        ids_added: None,
        ids_removed: None,
        ids_skipped: None,
        output: None,
        exit_code: i64::from(p.exit_code),
    };
    if let Some(t) = &p.reverse_totals {
        let mut row = base(t.outcome.clone());
        row.cohort_id = t.cohort_id.clone();
        row.cohort_name = t.cohort_name.clone();
        row.reason = p.error.clone();
        row.requests_spent = i64::from(p.quota_spent);
        row.requests_possibly_spent = i64::from(p.quota_possibly_spent);
        row.request_reason = p.requests.first().map(|r| snake(&r.reason));
        row.request_id = p.requests.iter().find_map(|r| r.request_id.clone());
        row.ids_added = Some(int(t.added));
        row.ids_removed = Some(int(t.removed));
        row.ids_skipped = Some(int(t.skipped));
        return vec![row];
    }
    if p.cohorts.is_empty() {
        // The pipeline failed before it had cohorts (a refused key, an unreadable state).
        let mut row = base("failed".into());
        row.reason = p.error.clone();
        return vec![row];
    }
    p.cohorts
        .iter()
        .map(|c| {
            let mine = p.requests.iter().filter(|r| r.cohort_id == c.cohort_id);
            let (unknown, spent): (Vec<_>, Vec<_>) = mine.partition(|r| r.outcome_unknown);
            let mut row = base(snake(&c.outcome));
            row.cohort_id = Some(c.cohort_id.clone());
            row.cohort_name = Some(c.name.clone());
            row.reason = c.detail.clone();
            row.request_reason = spent.first().or(unknown.first()).map(|r| snake(&r.reason));
            row.request_id = c.request_id.clone();
            row.rows = int(c.rows);
            row.bytes = int(c.bytes);
            row.requests_spent = spent.len() as i64;
            row.requests_possibly_spent = unknown.len() as i64;
            row.started_at = c.started_at.unwrap_or(started);
            row.finished_at = c.finished_at.unwrap_or(finished);
            row.output = c.output.clone();
            row
        })
        .collect()
}

/// A value's serde name (`deferred_quota`, `first_export`).
fn snake(v: &impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The file's key relative to the output: `_history/pipeline=…/date=…/run-….parquet`.
pub fn relative_key(pipeline: &str, run: &RunReport) -> String {
    format!(
        "{HISTORY_DIR}/pipeline={}/date={}/run-{}.parquet",
        sanitize(pipeline),
        run.started_at.format("%Y-%m-%d"),
        sanitize(&run.run_id)
    )
}

/// The columns of a history file (`cohort-sync ddl` declares its tables from them).
pub fn schema() -> Schema {
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    let int = |name: &str, nullable| Field::new(name, DataType::Int64, nullable);
    let time = |name: &str| {
        Field::new(
            name,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        )
    };
    Schema::new(vec![
        text("run_id", false),
        text("kind", false),
        text("cohort_id", true),
        text("cohort_name", true),
        text("outcome", false),
        text("reason", true),
        text("request_reason", true),
        text("request_id", true),
        int("rows", false),
        int("bytes", false),
        int("requests_spent", false),
        int("requests_possibly_spent", false),
        int("quota_left", true),
        time("started_at"),
        time("finished_at"),
        int("ids_added", true),
        int("ids_removed", true),
        int("ids_skipped", true),
        text("output", true),
        int("exit_code", false),
    ])
}

/// The rows as one Parquet file (zstd), with `cohort_sync.pipeline`, `cohort_sync.date`
/// and `cohort_sync.tool_version` in its footer.
pub fn encode(pipeline: &str, run: &RunReport, rows: &[HistoryRow]) -> Result<Vec<u8>, String> {
    let strs = |f: fn(&HistoryRow) -> Option<&str>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let ints = |f: fn(&HistoryRow) -> Option<i64>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<Int64Array>())
    };
    let times = |f: fn(&HistoryRow) -> DateTime<Utc>| -> ArrayRef {
        Arc::new(
            TimestampMicrosecondArray::from(
                rows.iter()
                    .map(|r| f(r).timestamp_micros())
                    .collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        )
    };
    let columns: Vec<ArrayRef> = vec![
        strs(|r| Some(&r.run_id)),
        strs(|r| Some(&r.kind)),
        strs(|r| r.cohort_id.as_deref()),
        strs(|r| r.cohort_name.as_deref()),
        strs(|r| Some(&r.outcome)),
        strs(|r| r.reason.as_deref()),
        strs(|r| r.request_reason.as_deref()),
        strs(|r| r.request_id.as_deref()),
        ints(|r| Some(r.rows)),
        ints(|r| Some(r.bytes)),
        ints(|r| Some(r.requests_spent)),
        ints(|r| Some(r.requests_possibly_spent)),
        ints(|r| r.quota_left),
        times(|r| r.started_at),
        times(|r| r.finished_at),
        ints(|r| r.ids_added),
        ints(|r| r.ids_removed),
        ints(|r| r.ids_skipped),
        strs(|r| r.output.as_deref()),
        ints(|r| Some(r.exit_code)),
    ];
    let schema = Arc::new(schema());
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns).map_err(|e| e.to_string())?;
    let meta = |k: &str, v: String| KeyValue::new(format!("cohort_sync.{k}"), v);
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_key_value_metadata(Some(vec![
            meta("pipeline", pipeline.to_string()),
            meta("date", run.started_at.format("%Y-%m-%d").to_string()),
            meta("tool_version", run.tool_version.clone()),
        ]))
        .build();
    let mut buf = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut buf, schema, Some(props)).map_err(|e| e.to_string())?;
    writer.write(&batch).map_err(|e| e.to_string())?;
    writer.close().map_err(|e| e.to_string())?;
    Ok(buf)
}

/// Adds `pipeline`'s rows of `run` to the history under `location`; returns where the file
/// went. Whole or nothing (see the module notes).
pub async fn append(
    location: &Location,
    run: &RunReport,
    p: &PipelineReport,
) -> Result<String, String> {
    use object_store::ObjectStoreExt;
    let body = encode(&p.name, run, &rows(run, p))?;
    let relative = relative_key(&p.name, run);
    let key = location.key(&relative);
    let described = location.describe(&key);
    crate::crash::point("history.before");
    match &location.local_dir {
        Some(dir) => write_local(&dir.join(&relative), &body)
            .map_err(|e| format!("writing {described}: {e}"))?,
        None => {
            location
                .store
                .put(&key, body.into())
                .await
                .map_err(|e| format!("writing {described}: {e}"))?;
        }
    }
    crate::crash::point("history.written");
    Ok(described)
}

/// A temporary file older than this was left by a killed run (a live one renames its own
/// within milliseconds).
const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes the `.run-….parquet.tmp` files killed runs left in `pipeline_dir`'s date
/// folders (hidden from every reader, but not to be kept). Best effort.
fn remove_stale_temps(pipeline_dir: &std::path::Path, now: std::time::SystemTime) {
    let Ok(dates) = std::fs::read_dir(pipeline_dir) else {
        return;
    };
    for date in dates.flatten() {
        let Ok(files) = std::fs::read_dir(date.path()) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name();
            let name = name.to_string_lossy();
            let stale = f
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > STALE_TEMP);
            if name.starts_with(".run-") && name.ends_with(".parquet.tmp") && stale {
                match std::fs::remove_file(f.path()) {
                    Ok(()) => {
                        tracing::info!("removed {}, left by a killed run", f.path().display())
                    }
                    Err(e) => tracing::warn!("cannot remove {}: {e}", f.path().display()),
                }
            }
        }
    }
}

/// Writes `.NAME.tmp` beside `path`, syncs it and renames it to `path`.
fn write_local(path: &std::path::Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("no parent folder"))?;
    std::fs::create_dir_all(dir)?;
    if let Some(pipeline_dir) = dir.parent() {
        remove_stale_temps(pipeline_dir, std::time::SystemTime::now());
    }
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(body)?;
    f.sync_all()?;
    drop(f);
    crate::crash::point("history.temp_written");
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::report::{CohortReport, Outcome, ReverseTotals};

    fn run() -> RunReport {
        RunReport {
            tool_version: "0".into(),
            run_id: "20260101T000000Z-abcd".into(),
            mode: "run".into(),
            started_at: Utc::now(),
            finished_at: Utc::now(),
            pipelines: vec![],
            rate_limited_responses: 0,
            exit_code: 0,
        }
    }

    #[test]
    fn one_row_per_cohort_and_one_per_reverse_target() {
        let mut p = PipelineReport::new("f.toml", "nightly", "export");
        p.cohorts
            .push(CohortReport::new("a", "A", Outcome::Exported));
        p.cohorts
            .push(CohortReport::new("b", "B", Outcome::DeferredQuota).with_detail("no budget"));
        let r = rows(&run(), &p);
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].outcome, "deferred_quota");
        assert_eq!(r[1].reason.as_deref(), Some("no budget"));

        let mut rev = PipelineReport::new("r.toml", "crm", "reverse");
        rev.reverse_totals = Some(ReverseTotals {
            cohort_id: Some("c".into()),
            outcome: "applied".into(),
            added: 3,
            removed: 2,
            skipped: 1,
            ..ReverseTotals::default()
        });
        let r = rows(&run(), &rev);
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].ids_added, r[0].ids_removed, r[0].ids_skipped),
            (Some(3), Some(2), Some(1))
        );
        let bytes = encode("crm", &run(), &r).unwrap_or_default();
        assert!(bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"));
    }

    #[test]
    fn temps_of_killed_runs_are_removed_and_fresh_ones_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let date = dir.path().join("date=2026-01-01");
        std::fs::create_dir_all(&date).expect("mkdir");
        let old = date.join(".run-a.parquet.tmp");
        let fresh = date.join(".run-b.parquet.tmp");
        let data = date.join("run-c.parquet");
        for p in [&old, &fresh, &data] {
            std::fs::write(p, b"x").expect("write");
        }
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        for p in [&old, &data] {
            std::fs::File::options()
                .write(true)
                .open(p)
                .and_then(|f| f.set_modified(two_hours_ago))
                .expect("set mtime");
        }
        remove_stale_temps(dir.path(), std::time::SystemTime::now());
        assert!(!old.exists());
        assert!(fresh.exists() && data.exists());
    }

    #[test]
    fn the_key_is_hive_partitioned() {
        let k = relative_key("nightly", &run());
        assert!(k.starts_with("_history/pipeline=nightly/date="), "{k}");
        assert!(k.ends_with("/run-20260101T000000Z-abcd.parquet"), "{k}");
    }
}

//! Membership change files (`output.changes = true`): a cohort exported twice, its members
//! changed in between through the emulator's admin API (some removed, some added, as a
//! behavioral recompute would). The change file is read by DuckDB and must equal
//! `new EXCEPT old` (entered) and `old EXCEPT new` (exited) on `(amplitude_id, user_id)`,
//! with the two snapshot dates and `lastComputed` values on every row; the first export
//! writes none; the change costs no request (the emulator's log shows one request per
//! export); a kill at each step of writing it, then a rerun, leaves the same file and spends
//! nothing more; the same on S3 (moto); `cohort-sync ddl` exposes them as a DuckDB view.

mod common;

use std::path::{Path, PathBuf};

use common::changes::{check_change_file, churn};
use common::emulator::cohort;
use common::harness::{self, Harness, report_cohort};
use common::log::{file_calls, spent_requests};
use serde_json::Value;

const COHORT: &str = "churn";
const SIZE: u64 = 4_000;

/// An export pipeline writing change files to `output` (state in `state`).
fn pipeline(h: &Harness, output: &str, state: &str) -> PathBuf {
    h.write(
        "changes",
        &format!(
            "kind = \"export\"\nname = \"changes\"\n\n{}\n[select]\nids = [\"{COHORT}\"]\n\n[output]\nurl = \"{output}\"\nchanges = true\n\n[state]\nurl = \"{state}\"\n",
            h.connection()
        ),
    )
}

fn today() -> String {
    chrono::Utc::now().date_naive().to_string()
}

fn snapshot_rel() -> String {
    format!(
        "cohort_id={COHORT}/snapshot_date={}/part-0.parquet",
        today()
    )
}

fn changes_rel() -> String {
    format!(
        "_changes/cohort_id={COHORT}/snapshot_date={}/part-0.parquet",
        today()
    )
}

/// Export, keep a copy of the first snapshot, churn, export again (optionally killed at
/// `crash` first, then rerun); returns (first report, last report, requests of the second
/// export, added, removed).
async fn two_exports(
    h: &Harness,
    file: &Path,
    read: impl Fn(&str) -> Option<Vec<u8>>,
    crash: Option<&str>,
) -> (
    Value,
    Value,
    Vec<cohort_sync::emulator::LoggedRequest>,
    Vec<i64>,
    Vec<i64>,
) {
    let (code, first, err) = h.run(file, &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        read(&changes_rel()).is_none(),
        "the first export writes no change file"
    );
    let old = read(&snapshot_rel()).expect("the first snapshot");
    std::fs::write(h.path("old.parquet"), old).expect("keep old");
    let (added, removed) = churn(h, COHORT, 20, 150).await;
    let since = h.last_seq().await;
    if let Some(point) = crash {
        let (code, _, err) = h
            .run_env(&[file], &[], &[("COHORT_SYNC_CRASH_AT", point)])
            .await;
        assert_eq!(code, -9, "killed at {point}: {err}");
    }
    let (code, second, err) = h.run(file, &[]).await;
    assert_eq!(code, 0, "{err}");
    let log = h.requests_since(since).await;
    (first, second, log, added, removed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_file_equals_except_both_ways_and_costs_nothing() {
    let h = harness::start(vec![cohort(COHORT, SIZE)], |_| {}).await;
    let file = pipeline(&h, "out", "state");
    let out = h.path("out");
    let (first, second, log, added, removed) =
        two_exports(&h, &file, |rel| std::fs::read(out.join(rel)).ok(), None).await;

    // The first export has nothing to compare with: no change file.
    let c = report_cohort(&first, COHORT);
    assert_eq!(c["outcome"], "exported");
    assert!(c.get("changes").is_none(), "{c:#}");

    // The second: one request, one /file, and the change computed from the two files.
    assert_eq!(spent_requests(&log).len(), 1, "{log:#?}");
    assert_eq!(file_calls(&log, None).len(), 1, "{log:#?}");
    let c = report_cohort(&second, COHORT);
    assert_eq!(c["changes"]["entered"], added.len() as u64, "{c:#}");
    assert_eq!(c["changes"]["exited"], removed.len() as u64, "{c:#}");
    assert_eq!(c["changes"]["previous_snapshot_date"], today());
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(
            second["pipelines"][0]["manifest"]
                .as_str()
                .expect("manifest"),
        )
        .expect("read manifest"),
    )
    .expect("manifest JSON");
    assert_eq!(
        manifest["files"][0]["changes"]["entered"],
        added.len() as u64
    );
    check_change_file(
        &h.path(""),
        &h.path("old.parquet"),
        &out.join(snapshot_rel()),
        &out.join(changes_rel()),
        &added,
        &removed,
    );
    assert!(
        !out.join("_staging").exists(),
        "nothing staged is left behind"
    );

    // `cohort-sync ddl` exposes them as a table beside the snapshots; DuckDB reads both.
    let (code, sql, err) = h
        .cli(&["ddl", &file.to_string_lossy(), "--dialect", "duckdb"])
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        sql.contains("changes_snapshots") && sql.contains("changes_changes"),
        "{sql}"
    );
    let rows = common::changes::duckdb(
        &h.path(""),
        &sql,
        "SELECT change, count(*), min(cohort_id), min(snapshot_date)::VARCHAR, \
         (SELECT count(*) FROM changes_snapshots) FROM changes_changes GROUP BY ALL ORDER BY 1",
    );
    let snapshot_rows = (SIZE + added.len() as u64 - removed.len() as u64).to_string();
    assert_eq!(
        rows,
        vec![
            vec![
                Value::from("entered"),
                Value::from(added.len().to_string()),
                Value::from(COHORT),
                Value::from(today()),
                Value::from(snapshot_rows.clone()),
            ],
            vec![
                Value::from("exited"),
                Value::from(removed.len().to_string()),
                Value::from(COHORT),
                Value::from(today()),
                Value::from(snapshot_rows),
            ],
        ]
    );

    // Unchanged since: skipped, no new change file, no request.
    let since = h.last_seq().await;
    let (code, third, err) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        report_cohort(&third, COHORT)["outcome"],
        "skipped_unchanged"
    );
    assert!(spent_requests(&h.requests_since(since).await).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_while_writing_changes_is_completed_by_the_rerun_for_free() {
    for point in [
        "export.changes.written",
        "export.changes.published",
        "export.published",
    ] {
        let h = harness::start(vec![cohort(COHORT, SIZE)], |_| {}).await;
        let file = pipeline(&h, "out", "state");
        let out = h.path("out");
        let (_, second, log, added, removed) = two_exports(
            &h,
            &file,
            |rel| std::fs::read(out.join(rel)).ok(),
            Some(point),
        )
        .await;
        // One request across the killed run and its rerun: the rerun downloads the file
        // of the request the killed run saved.
        assert_eq!(spent_requests(&log).len(), 1, "{point}: {log:#?}");
        assert_eq!(
            report_cohort(&second, COHORT)["outcome"],
            "exported",
            "{point}"
        );
        check_change_file(
            &h.path(""),
            &h.path("old.parquet"),
            &out.join(snapshot_rel()),
            &out.join(changes_rel()),
            &added,
            &removed,
        );
        assert!(!out.join("_staging").exists(), "{point}: staging left");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_files_on_s3() {
    for crash in [
        None,
        Some("export.changes.previous_copied"),
        Some("export.changes.written"),
    ] {
        let h = harness::start(vec![cohort(COHORT, SIZE)], |_| {}).await;
        let bucket = common::s3::create_bucket("changes");
        let file = pipeline(
            &h,
            &format!("s3://{bucket}/out"),
            &format!("s3://{bucket}/state"),
        );
        let b = bucket.clone();
        let (first, second, log, added, removed) = two_exports(
            &h,
            &file,
            move |rel| {
                let key = format!("out/{rel}");
                common::s3::keys(&b, &key)
                    .contains(&key)
                    .then(|| common::s3::get(&b, &key))
            },
            crash,
        )
        .await;
        assert!(report_cohort(&first, COHORT).get("changes").is_none());
        assert_eq!(spent_requests(&log).len(), 1, "{crash:?}: {log:#?}");
        let c = report_cohort(&second, COHORT);
        assert_eq!(c["outcome"], "exported", "{crash:?}: {c:#}");
        let new = h.path("new.parquet");
        let changes = h.path("changes.parquet");
        std::fs::write(
            &new,
            common::s3::get(&bucket, &format!("out/{}", snapshot_rel())),
        )
        .expect("write");
        std::fs::write(
            &changes,
            common::s3::get(&bucket, &format!("out/{}", changes_rel())),
        )
        .expect("write");
        check_change_file(
            &h.path(""),
            &h.path("old.parquet"),
            &new,
            &changes,
            &added,
            &removed,
        );
        // The previous snapshot's copy (it sat at the key the new one took) is gone.
        let staged = common::s3::keys(&bucket, "out/_staging/");
        assert!(staged.is_empty(), "{crash:?}: left behind {staged:?}");
    }
}

/// A copy of the previous snapshot left under `_staging/` by a run that was stopped and
/// whose request was never resumed is removed by the cohort's next export; copies that may
/// be another cohort's (`churn.x` with request `r`) or another pipeline's are left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranded_copy_of_a_previous_snapshot_is_removed_on_s3() {
    let h = harness::start(vec![cohort(COHORT, SIZE)], |_| {}).await;
    let bucket = common::s3::create_bucket("stranded");
    let file = pipeline(
        &h,
        &format!("s3://{bucket}/out"),
        &format!("s3://{bucket}/state"),
    );
    let junk = h.path("junk.parquet");
    std::fs::write(&junk, b"PAR1 a copy of a snapshot PAR1").expect("write");
    let stranded = format!("out/_staging/changes/_previous/{COHORT}.gone1.parquet");
    let kept = [
        format!("out/_staging/changes/_previous/{COHORT}.x.r1.parquet"),
        format!("out/_staging/other/_previous/{COHORT}.gone2.parquet"),
    ];
    for key in std::iter::once(&stranded).chain(&kept) {
        common::s3::put(&bucket, key, &junk);
    }
    let (code, report, err) = h.run_env(&[file.as_path()], &[], &[]).await;
    assert_eq!(code, 0, "{err}\n{report:#?}");
    let mut left = common::s3::keys(&bucket, "out/_staging/");
    left.sort();
    let mut want = kept.to_vec();
    want.sort();
    assert_eq!(left, want);
}

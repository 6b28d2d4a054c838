//! Membership change files (`output.changes = true`): a cohort exported twice, its members
//! changed in between through the emulator's admin API (some removed, some added, as a
//! behavioral recompute would). The change file is read by DuckDB and must equal
//! `new EXCEPT old` (entered) and `old EXCEPT new` (exited) on `(amplitude_id, user_id)`,
//! with the two snapshot dates and `lastComputed` values on every row; the first export
//! writes none; the change costs no request (the emulator's log shows one request per
//! export); a kill at each step of writing it, then a rerun, leaves the same file and spends
//! nothing more; the same on S3 (moto).

mod common;

use std::path::{Path, PathBuf};

use cohort_sync::emulator::universe::{amplitude_id, member_numbers};
use common::emulator::cohort;
use common::harness::{self, Harness, report_cohort};
use common::log::{file_calls, spent_requests};
use serde_json::{Value, json};

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

/// Takes 200 members out and puts 150 others in (a change "by someone else", which moves
/// `lastComputed`); returns (added, removed) amplitude ids.
async fn churn(h: &Harness) -> (Vec<i64>, Vec<i64>) {
    let members = h.members(COHORT).await;
    let removed: Vec<i64> = members.iter().step_by(20).map(|(id, _)| *id).collect();
    let known: std::collections::BTreeSet<i64> = members.iter().map(|(id, _)| *id).collect();
    let added: Vec<i64> = member_numbers(99, "newcomers", 1_000)
        .map(amplitude_id)
        .filter(|id| !known.contains(id))
        .take(150)
        .collect();
    h.patch_cohort(
        COHORT,
        json!({ "add_members": added, "remove_members": removed }),
    )
    .await;
    (added, removed)
}

/// Runs `sql` (after `setup`) in DuckDB; the rows as text.
fn duckdb(dir: &Path, setup: &str, sql: &str) -> Vec<Vec<Value>> {
    let script = dir.join(format!("setup-{}.sql", fastrand::u32(..)));
    std::fs::write(&script, setup).expect("write sql");
    let out = common::peers::run_python("duckdb_sql.py", &[&script.to_string_lossy(), sql]);
    let v: Value = serde_json::from_str(out.trim()).expect("JSON");
    v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r.as_array().expect("row").clone())
        .collect()
}

/// Checks the change file against DuckDB's EXCEPT of the two snapshots, both ways.
fn check_change_file(dir: &Path, old: &Path, new: &Path, changes: &Path, added: &[i64], removed: &[i64]) {
    let setup = format!(
        "CREATE VIEW old AS SELECT amplitude_id, user_id FROM read_parquet('{}');\n\
         CREATE VIEW new AS SELECT amplitude_id, user_id FROM read_parquet('{}');\n\
         CREATE VIEW ch AS SELECT * FROM read_parquet('{}');\n",
        old.display(),
        new.display(),
        changes.display()
    );
    let entered = "(SELECT amplitude_id, user_id FROM ch WHERE change = 'entered')";
    let exited = "(SELECT amplitude_id, user_id FROM ch WHERE change = 'exited')";
    let want_entered = "(SELECT * FROM new EXCEPT SELECT * FROM old)";
    let want_exited = "(SELECT * FROM old EXCEPT SELECT * FROM new)";
    let diff = |a: &str, b: &str| format!("(SELECT count(*) FROM ({a} EXCEPT {b}))");
    let sql = format!(
        "SELECT {}, {}, {}, {}, \
         (SELECT count(*) FROM {entered}), (SELECT count(*) FROM {exited}), \
         (SELECT count(*) FROM {want_entered}), (SELECT count(*) FROM {want_exited}), \
         (SELECT count(*) FROM ch), (SELECT count(DISTINCT amplitude_id) FROM ch), \
         (SELECT count(*) FROM ch WHERE change NOT IN ('entered', 'exited'))",
        diff(entered, want_entered),
        diff(want_entered, entered),
        diff(exited, want_exited),
        diff(want_exited, exited),
    );
    let rows = duckdb(dir, &setup, &sql);
    let n: Vec<u64> = rows[0]
        .iter()
        .map(|v| v.as_str().and_then(|s| s.parse().ok()).expect("count"))
        .collect();
    assert_eq!(&n[..4], &[0, 0, 0, 0], "change file differs from EXCEPT: {n:?}");
    assert_eq!(n[4], added.len() as u64, "entered: {n:?}");
    assert_eq!(n[5], removed.len() as u64, "exited: {n:?}");
    assert_eq!((n[6], n[7]), (n[4], n[5]), "EXCEPT counts: {n:?}");
    assert_eq!(n[8], n[9], "one row per member: {n:?}");
    assert_eq!(n[10], 0, "change values: {n:?}");
    // The two snapshots' dates and lastComputed values: one each, on every row, and the
    // new lastComputed after the previous one.
    let rows = duckdb(
        dir,
        &setup,
        "SELECT count(DISTINCT previous_snapshot_date), count(DISTINCT snapshot_date), \
         count(DISTINCT previous_last_computed), count(DISTINCT last_computed), \
         count(*) FILTER (WHERE previous_last_computed IS NULL OR last_computed IS NULL \
                          OR snapshot_date IS NULL OR previous_snapshot_date IS NULL), \
         bool_and(last_computed > previous_last_computed), \
         bool_and(snapshot_date = current_date) FROM ch",
    );
    assert_eq!(
        rows[0],
        vec![
            json!("1"),
            json!("1"),
            json!("1"),
            json!("1"),
            json!("0"),
            json!("True"),
            json!("True")
        ],
        "{rows:?}"
    );
}

fn today() -> String {
    chrono::Utc::now().date_naive().to_string()
}

fn snapshot_rel() -> String {
    format!("cohort_id={COHORT}/snapshot_date={}/part-0.parquet", today())
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
    read: impl Fn(&str) -> Vec<u8>,
    crash: Option<&str>,
) -> (Value, Value, Vec<cohort_sync::emulator::LoggedRequest>, Vec<i64>, Vec<i64>) {
    let (code, first, err) = h.run(file, &[]).await;
    assert_eq!(code, 0, "{err}");
    std::fs::write(h.path("old.parquet"), read(&snapshot_rel())).expect("keep old");
    let (added, removed) = churn(h).await;
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
        two_exports(&h, &file, |rel| std::fs::read(out.join(rel)).expect("read"), None).await;

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
        &std::fs::read(second["pipelines"][0]["manifest"].as_str().expect("manifest"))
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

    // Unchanged since: skipped, no new change file, no request.
    let since = h.last_seq().await;
    let (code, third, err) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(report_cohort(&third, COHORT)["outcome"], "skipped_unchanged");
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
            |rel| std::fs::read(out.join(rel)).expect("read"),
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
    for crash in [None, Some("export.changes.previous_copied"), Some("export.changes.written")] {
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
            move |rel| common::s3::get(&b, &format!("out/{rel}")),
            crash,
        )
        .await;
        assert!(report_cohort(&first, COHORT).get("changes").is_none());
        assert_eq!(spent_requests(&log).len(), 1, "{crash:?}: {log:#?}");
        let c = report_cohort(&second, COHORT);
        assert_eq!(c["outcome"], "exported", "{crash:?}: {c:#}");
        let new = h.path("new.parquet");
        let changes = h.path("changes.parquet");
        std::fs::write(&new, common::s3::get(&bucket, &format!("out/{}", snapshot_rel())))
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

//! Membership change files: changing a cohort's members between two exports, and reading
//! a change file with DuckDB against `EXCEPT` of the two snapshots both ways.

use std::path::Path;

use cohort_sync::emulator::universe::{amplitude_id, member_numbers};
use serde_json::{Value, json};

use super::harness::Harness;

/// Takes every `nth` member out and puts `add` others in (a change "by someone else",
/// which moves `lastComputed`); returns (added, removed) amplitude ids.
pub async fn churn(h: &Harness, cohort_id: &str, nth: usize, add: usize) -> (Vec<i64>, Vec<i64>) {
    let members = h.members(cohort_id).await;
    let removed: Vec<i64> = members.iter().step_by(nth).map(|(id, _)| *id).collect();
    let known: std::collections::BTreeSet<i64> = members.iter().map(|(id, _)| *id).collect();
    let added: Vec<i64> =
        member_numbers(99, &format!("newcomers-{cohort_id}"), add as u64 * 2 + 100)
            .map(amplitude_id)
            .filter(|id| !known.contains(id))
            .take(add)
            .collect();
    h.patch_cohort(
        cohort_id,
        json!({ "add_members": added, "remove_members": removed }),
    )
    .await;
    (added, removed)
}

/// Runs `sql` (after `setup`) in DuckDB; the rows as text.
pub fn duckdb(dir: &Path, setup: &str, sql: &str) -> Vec<Vec<Value>> {
    let script = dir.join(format!("setup-{}.sql", fastrand::u32(..)));
    std::fs::write(&script, setup).expect("write sql");
    let out = super::peers::run_python("duckdb_sql.py", &[&script.to_string_lossy(), sql]);
    let v: Value = serde_json::from_str(out.trim()).expect("JSON");
    v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r.as_array().expect("row").clone())
        .collect()
}

/// Checks the change file against DuckDB's EXCEPT of the two snapshots, both ways.
pub fn check_change_file(
    dir: &Path,
    old: &Path,
    new: &Path,
    changes: &Path,
    added: &[i64],
    removed: &[i64],
) {
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
    assert_eq!(
        &n[..4],
        &[0, 0, 0, 0],
        "change file differs from EXCEPT: {n:?}"
    );
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

//! `cohort-sync ddl`: the DuckDB statements are executed by DuckDB against a real export's
//! output (rows per cohort and snapshot, partition column types); the other warehouses'
//! statements, which only their services can run, are compared with reviewed files in
//! tests/ddl/ (update one only after reading the difference); warehouses that cannot
//! read an output are refused with the reason.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::emulator::cohort;
use common::harness;
use serde_json::Value;

fn ddl(dir: &Path, file: &Path, dialect: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cohort-sync"))
        .args(["ddl", &file.to_string_lossy(), "--dialect", dialect])
        .current_dir(dir)
        .env("EXPORT_BUCKET", "my-bucket")
        .output()
        .expect("run ddl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_reads_an_export_through_the_printed_view() {
    let cohorts = vec![cohort("c-small", 300), cohort("c-large", 1_200)];
    let h = harness::start(cohorts, |_| {}).await;
    let file = h.export_pipeline("Nightly-EU", &["c-small", "c-large"], "out", "state", "");
    let (code, _, err) = h.run_env(&[&file], &[], &[]).await;
    assert_eq!(code, 0, "{err}");
    let (code, sql, err) = ddl(&h.path(""), &file, "duckdb");
    assert_eq!(code, 0, "{err}");
    assert!(sql.contains("nightly_eu_snapshots"), "{sql}");
    let script = h.path("view.sql");
    std::fs::write(&script, &sql).expect("write sql");
    let out = common::peers::run_python(
        "duckdb_sql.py",
        &[
            &script.to_string_lossy(),
            "SELECT cohort_id, snapshot_date, count(*) AS n, count(DISTINCT amplitude_id) AS ids \
             FROM nightly_eu_snapshots GROUP BY ALL ORDER BY cohort_id",
        ],
    );
    let v: Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(v["types"][0], "VARCHAR", "{v}");
    assert_eq!(v["types"][1], "DATE", "{v}");
    let today = chrono::Utc::now().date_naive().to_string();
    let rows = text_rows(&v, usize::MAX);
    assert_eq!(
        rows,
        vec![
            vec![
                "c-large".to_string(),
                today.clone(),
                "1200".into(),
                "1200".into()
            ],
            vec![
                "c-small".to_string(),
                today.clone(),
                "300".into(),
                "300".into()
            ],
        ]
    );
    // The sync history through its view: one row per cohort of the run, typed as declared.
    let out = common::peers::run_python(
        "duckdb_sql.py",
        &[
            &script.to_string_lossy(),
            "SELECT pipeline, \"date\", cohort_id, outcome, \"rows\", requests_spent, started_at \
             FROM nightly_eu_history ORDER BY cohort_id",
        ],
    );
    let v: Value = serde_json::from_str(out.trim()).expect("JSON");
    let types: Vec<&str> = v["types"]
        .as_array()
        .expect("types")
        .iter()
        .map(|t| t.as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        types,
        [
            "VARCHAR",
            "DATE",
            "VARCHAR",
            "VARCHAR",
            "BIGINT",
            "BIGINT",
            "TIMESTAMP WITH TIME ZONE"
        ],
        "{v}"
    );
    let rows = text_rows(&v, 6);
    let row = |id: &str, n: &str| -> Vec<String> {
        ["Nightly-EU", &today, id, "exported", n, "1"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    assert_eq!(rows, vec![row("c-large", "1200"), row("c-small", "300")]);
}

/// The rows of a `duckdb_sql.py` answer as text, each cut to its first `columns` values.
fn text_rows(v: &Value, columns: usize) -> Vec<Vec<String>> {
    v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .take(columns)
                .map(|x| x.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .collect()
}

fn reviewed(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/ddl")
        .join(name)
}

#[test]
fn each_warehouse_gets_the_reviewed_statements() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = reviewed("nightly-eu.toml");
    for dialect in ["duckdb", "snowflake", "bigquery", "athena", "databricks"] {
        let (code, sql, err) = ddl(dir.path(), &file, dialect);
        assert_eq!(code, 0, "{dialect}: {err}");
        let expected_file = reviewed(&format!("nightly-eu.{dialect}.sql"));
        let expected = std::fs::read_to_string(&expected_file).unwrap_or_default();
        assert!(
            sql == expected,
            "{dialect}: the statements differ from {} — review the difference, then update \
             the file:\n{sql}",
            expected_file.display()
        );
    }
}

#[test]
fn a_warehouse_that_cannot_read_the_output_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let local = dir.path().join("local.toml");
    std::fs::write(
        &local,
        "kind = \"export\"\n[select]\nids = [\"a\"]\n[output]\nurl = \"out\"\n",
    )
    .expect("write");
    for dialect in ["snowflake", "bigquery", "athena", "databricks"] {
        let (code, sql, err) = ddl(dir.path(), &local, dialect);
        assert_eq!(code, 2, "{dialect}: {sql}");
        assert!(sql.is_empty(), "{sql}");
        assert!(err.contains("local.toml") && err.contains("local"), "{err}");
    }
    let flat = dir.path().join("flat.toml");
    std::fs::write(
        &flat,
        "kind = \"export\"\n[select]\nids = [\"a\"]\n[output]\nurl = \"s3://bkt/p\"\nlayout = \"{cohort_id}/{date}.parquet\"\n",
    )
    .expect("write");
    let (code, _, err) = ddl(dir.path(), &flat, "athena");
    assert_eq!(code, 2);
    assert!(
        err.contains("`{cohort_id}`") && err.contains("name=value"),
        "{err}"
    );
    let (code, sql, _) = ddl(dir.path(), &flat, "duckdb");
    assert_eq!(code, 0);
    assert!(sql.contains("'s3://bkt/p/*/*.parquet'") && sql.contains("hive_partitioning = false"));
    let reverse = reviewed("../../pipelines/examples/reverse-existing.toml");
    let (code, _, err) = ddl(dir.path(), &reverse, "duckdb");
    assert_eq!(code, 2);
    assert!(err.contains("reverse pipeline"), "{err}");
}

//! The independent peers under `tests/py`, run with the test virtualenv's Python: pyarrow
//! and DuckDB read what the tool wrote, pyarrow writes what the tool reads. A failing
//! script fails the test with its stderr, so nothing can pass silently.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The Python interpreter of the test virtualenv (pyarrow, DuckDB, moto, boto3).
pub fn python() -> PathBuf {
    match std::env::var_os("COHORT_SYNC_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    }
}

/// Runs `tests/py/<script>` with arguments; returns stdout. Called from an async test on
/// a multi-threaded runtime, the wait is announced to tokio (`block_in_place`), so the
/// in-process emulator's tasks move to another worker instead of stalling behind it.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let out = run_python_output(script, args);
    assert!(
        out.status.success(),
        "{script} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("python output is UTF-8")
}

/// Runs `tests/py/<script>` with arguments, whatever its exit status (see `run_python`).
fn run_python_output(script: &str, args: &[&str]) -> std::process::Output {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| run_python_blocking(script, args))
        }
        _ => run_python_blocking(script, args),
    }
}

fn run_python_blocking(script: &str, args: &[&str]) -> std::process::Output {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(script);
    Command::new(python())
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (run `make venv` first): {e}",
                python().display()
            )
        })
}

fn json(script: &str, args: &[&str]) -> Value {
    let out = run_python(script, args);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{script}: {e}: {out}"))
}

/// One Parquet file read by pyarrow: rows, columns, types, metadata, row groups and the
/// digest of `columns` (see tests/py/parquet_digest.py).
pub fn parquet_digest(target: &str, columns: &[String]) -> Value {
    json("parquet_digest.py", &[target, &columns.join(",")])
}

/// A whole output tree read as a warehouse user would (tests/py/check_tree.py): every
/// object, each Parquet file of the Hive tree (rows, columns, digest), and the rows
/// pyarrow.dataset and DuckDB read from the whole tree.
pub fn check_tree(root: &str, columns: &[String]) -> Value {
    json("check_tree.py", &[root, &columns.join(",")])
}

/// Schema, rows and metadata of a Parquet file as pyarrow reads them.
pub fn dump(target: &str) -> Value {
    json("parquet_dump.py", &["dump", target])
}

/// The same, rows read by DuckDB.
pub fn dump_duckdb(target: &str) -> Value {
    json("parquet_dump.py", &["dump", target, "--duckdb"])
}

/// The file's physical layout, parsed from its bytes: rows per row group, codec per
/// column chunk, and the zstd levels that reproduce its pages byte for byte (of the
/// first `max_row_groups`); see tests/py/parquet_dump.py.
pub fn layout(target: &str, max_row_groups: usize) -> Value {
    json(
        "parquet_dump.py",
        &[
            "layout",
            target,
            "--max-row-groups",
            &max_row_groups.to_string(),
        ],
    )
}

/// Writes a Parquet file with pyarrow (see tests/py/write_parquet.py for `spec`).
pub fn write_parquet(path: &Path, spec: &Value) {
    let out = run_python(
        "write_parquet.py",
        &[path.to_str().expect("utf-8 path"), &spec.to_string()],
    );
    assert!(out.contains("wrote"), "{out}");
}

/// The sync-history dataset under an output (`ROOT/_history/`), read by DuckDB (local) or
/// pyarrow.dataset (s3://): rows with their partition columns, the reader, every object
/// (see tests/py/read_history.py).
pub fn read_history(root: &str) -> Value {
    json("read_history.py", &[root])
}

/// A `--metrics-file` parsed by prometheus_client's text parser: families by name, each
/// with type, help and samples (see tests/py/parse_metrics.py).
pub fn parse_metrics(file: &Path) -> Value {
    json("parse_metrics.py", &[file.to_str().expect("utf-8 path")])
}

/// OpenLineage events (an NDJSON file: events, or the receiver's records) validated with
/// OpenLineage's Python client (each event built into its generated classes and
/// serialised back unchanged) and cohort-sync's facets by jsonschema against
/// schemas/openlineage-facets.json, with the row count pyarrow reads from every local
/// Parquet output (see tests/py/check_lineage.py).
pub fn check_lineage(file: &Path) -> Value {
    json("check_lineage.py", &[file.to_str().expect("utf-8 path")])
}

/// The message with which tests/py/check_lineage.py rejects `file`; panics if it accepts it.
pub fn check_lineage_rejects(file: &Path) -> String {
    let path = file.to_str().expect("utf-8 path");
    let out = run_python_output("check_lineage.py", &[path]);
    assert!(
        !out.status.success(),
        "check_lineage.py accepted {path}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

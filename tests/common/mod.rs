//! Shared fixtures of the integration tests: the independent Python peers and the
//! S3-compatible server that `make test` (scripts/test.sh) starts on loopback.
#![allow(dead_code)]

pub mod emulator;

use std::path::PathBuf;
use std::process::Command;

/// The Python interpreter of the test virtualenv (pyarrow, DuckDB, moto).
pub fn python() -> PathBuf {
    match std::env::var_os("COHORT_SYNC_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    }
}

/// Runs `tests/py/<script>` with arguments under the test virtualenv; returns stdout.
/// Panics with the script's stderr when it fails, so a test cannot pass silently.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(script);
    let out = Command::new(python())
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (run `make venv` first): {e}",
                python().display()
            )
        });
    assert!(
        out.status.success(),
        "{script} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("python output is UTF-8")
}

/// Endpoint of the S3-compatible server (moto) started by scripts/test.sh.
/// Tests that need S3 fail loudly without it rather than being skipped.
pub fn s3_endpoint() -> String {
    std::env::var("COHORT_SYNC_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
        panic!("COHORT_SYNC_TEST_S3_ENDPOINT is not set: run the tests with `make test`")
    })
}

/// Creates a bucket with a unique name on the test S3 server and returns its name.
pub fn create_bucket(prefix: &str) -> String {
    let name =
        format!("{}-{}-{}", prefix, std::process::id(), fastrand::u32(..)).to_ascii_lowercase();
    let out = run_python("s3_admin.py", &["create-bucket", &s3_endpoint(), &name]);
    assert!(out.contains("created"), "{out}");
    name
}
pub mod runner;

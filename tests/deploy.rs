//! The deployment files (Dockerfile, deploy/) are read by their own tools' parsers
//! (tests/py/check_deploy.py: PyYAML, Python's compiler, INI for systemd), and every
//! pipeline file they carry passes `cohort-sync validate`. The checker itself is shown to
//! catch a broken copy of each file.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn check(root: &Path) -> Value {
    let out = common::peers::run_python("check_deploy.py", &[&root.to_string_lossy()]);
    serde_json::from_str(out.trim()).expect("checker JSON")
}

fn problems(report: &Value) -> Vec<String> {
    report["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// `cohort-sync validate FILE` with the variables the schedulers set.
fn validate(file: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cohort-sync"))
        .arg("validate")
        .arg(file)
        .env("AMPLITUDE_API_KEY", "key")
        .env("AMPLITUDE_SECRET_KEY", "secret")
        .env("EXPORT_BUCKET", "my-bucket")
        .output()
        .expect("run validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn deployment_files_parse_and_their_pipelines_validate() {
    let report = check(&root());
    assert_eq!(problems(&report), Vec::<String>::new());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files: Vec<PathBuf> = Vec::new();
    for (name, text) in report["pipelines"].as_object().expect("pipelines") {
        let file = dir.path().join(name.replace('/', "-"));
        std::fs::write(&file, text.as_str().expect("text")).expect("write");
        files.push(file);
    }
    assert_eq!(
        files.len(),
        1,
        "the CronJob's ConfigMap carries one pipeline"
    );
    for entry in std::fs::read_dir(root().join("deploy/airflow/pipelines")).expect("list") {
        files.push(entry.expect("entry").path());
    }
    assert_eq!(files.len(), 3);
    for file in files {
        let (code, text) = validate(&file);
        assert_eq!(code, 0, "{}: {text}", file.display());
    }
}

/// A copy of the deployment files with one edit.
fn broken_copy(edit_file: &str, from: &str, to: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = |rel: &str| {
        let (src, dst) = (root().join(rel), dir.path().join(rel));
        std::fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
        let text = std::fs::read_to_string(&src).expect("read");
        let text = if rel == edit_file {
            assert!(text.contains(from), "{rel} has no {from:?}");
            text.replacen(from, to, 1)
        } else {
            text
        };
        std::fs::write(&dst, text).expect("write");
    };
    for rel in [
        "Dockerfile",
        "deploy/kubernetes/cronjob.yaml",
        "deploy/airflow/cohort_sync_dag.py",
        "deploy/airflow/pipelines/export.toml",
        "deploy/airflow/pipelines/crm-reverse.toml",
        "deploy/systemd/cohort-sync.service",
        "deploy/systemd/cohort-sync.timer",
    ] {
        copy(rel);
    }
    // What the Dockerfile copies from the project.
    for rel in [
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "src",
        "examples",
        "benches",
    ] {
        let dst = dir.path().join(rel);
        if root().join(rel).is_dir() {
            std::fs::create_dir_all(&dst).expect("mkdir");
        } else {
            std::fs::write(&dst, "").expect("write");
        }
    }
    dir
}

#[test]
fn the_checker_catches_each_broken_file() {
    let cases = [
        (
            "deploy/kubernetes/cronjob.yaml",
            "concurrencyPolicy: Forbid",
            "concurrencyPolicy: Allow",
            "concurrencyPolicy",
        ),
        (
            "deploy/kubernetes/cronjob.yaml",
            "values: [3]",
            "values: [4]",
            "exit 3",
        ),
        (
            "deploy/airflow/cohort_sync_dag.py",
            "EXIT_DEFERRED_BY_QUOTA = 3",
            "EXIT_DEFERRED_BY_QUOTA = 99",
            "skip_on_exit_code",
        ),
        (
            "deploy/systemd/cohort-sync.service",
            "SuccessExitStatus=3",
            "SuccessExitStatus=0",
            "exit 3",
        ),
        (
            "deploy/systemd/cohort-sync.timer",
            "Unit=cohort-sync.service",
            "Unit=other.service",
            "starts",
        ),
        (
            "Dockerfile",
            "COPY benches",
            "COPY no-such-dir",
            "no such path",
        ),
        ("Dockerfile", "USER 10001", "USER root", "root"),
    ];
    for (file, from, to, expected) in cases {
        let dir = broken_copy(file, from, to);
        let found = problems(&check(dir.path()));
        assert!(
            found.iter().any(|p| p.contains(expected)),
            "{file}: {from} -> {to}: {found:?}"
        );
    }
    // A DAG that does not compile fails the checker outright.
    let dir = broken_copy(
        "deploy/airflow/cohort_sync_dag.py",
        "with DAG(",
        "with DAG((",
    );
    let out = Command::new(common::peers::python())
        .arg(root().join("tests/py/check_deploy.py"))
        .arg(dir.path())
        .output()
        .expect("run checker");
    assert!(!out.status.success(), "a syntax error passed");
}

//! Harness of the end-to-end runner tests: an in-process emulator on loopback, pipeline
//! files in a temporary directory, the real `cohort-sync` binary run as a user runs it, and
//! the emulator's admin endpoints (request log, usage, members) to assert on.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;

use cohort_sync::emulator::{
    self, AppSpec, CohortSpec, EmulatorConfig, FaultKind, FaultRule, RunningEmulator,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const APP_ID: u64 = 4242;
pub const API_KEY: &str = "test-key";
pub const SECRET_KEY: &str = "test-secret";
/// Quota windows and job times of the emulator and the runner run 100x faster.
pub const TIME_SCALE: f64 = 0.01;

pub struct Harness {
    pub emu: RunningEmulator,
    pub dir: tempfile::TempDir,
    pub cohorts: Vec<CohortSpec>,
}

/// A published cohort of `size` generated members with the given property columns.
pub fn cohort(id: &str, size: u64, props: &[&str]) -> CohortSpec {
    CohortSpec {
        id: id.to_string(),
        name: format!("Cohort {id}"),
        size,
        published: true,
        archived: false,
        last_computed_ms: 1_764_000_000_000,
        owners: vec!["owner@example.com".into()],
        props: props.iter().map(|p| p.to_string()).collect(),
        seed: 7,
    }
}

pub async fn start(cohorts: Vec<CohortSpec>, tweak: impl FnOnce(&mut EmulatorConfig)) -> Harness {
    let mut config = EmulatorConfig {
        time_scale: TIME_SCALE,
        apps: vec![AppSpec {
            app_id: APP_ID,
            api_key: API_KEY.into(),
            secret_key: SECRET_KEY.into(),
            usage_used: 0,
            cohorts: cohorts.clone(),
        }],
        ..EmulatorConfig::default()
    };
    tweak(&mut config);
    let emu = emulator::start(config).await.expect("emulator starts");
    Harness {
        emu,
        dir: tempfile::tempdir().expect("tempdir"),
        cohorts,
    }
}

impl Harness {
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The `[connection]` section pointing at this emulator.
    pub fn connection(&self) -> String {
        format!(
            "[connection]\nbase_url = \"{}\"\napi_key = \"{API_KEY}\"\nsecret_key = \"{SECRET_KEY}\"\napp_id = {APP_ID}\n",
            self.emu.base_url
        )
    }

    /// Writes a pipeline file `name.toml` with `text` and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let file = self.path(&format!("{name}.toml"));
        std::fs::write(&file, text).expect("write pipeline");
        file
    }

    /// Writes an export pipeline selecting `ids` (all published when empty); `extra` is
    /// appended verbatim (more sections or keys of `[download]`, `[quota]`).
    pub fn export_pipeline(
        &self,
        name: &str,
        ids: &[&str],
        output: &str,
        state: &str,
        extra: &str,
    ) -> PathBuf {
        let select = if ids.is_empty() {
            "all_published = true".to_string()
        } else {
            format!(
                "ids = [{}]",
                ids.iter()
                    .map(|i| format!("\"{i}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let text = format!(
            r#"kind = "export"
name = "{name}"

[connection]
base_url = "{base}"
api_key = "{API_KEY}"
secret_key = "{SECRET_KEY}"
app_id = {APP_ID}

[select]
{select}

[output]
url = "{output}"

[state]
url = "{state}"
{extra}
"#,
            base = self.emu.base_url,
        );
        let file = self.path(&format!("{name}.toml"));
        std::fs::write(&file, text).expect("write pipeline");
        file
    }

    /// Runs the binary with `args` in the harness directory; returns (exit code, stdout, stderr).
    pub async fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.command(args).output().await.expect("run cohort-sync");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cohort-sync"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("COHORT_SYNC_TIME_SCALE", TIME_SCALE.to_string())
            .env_remove("AMPLITUDE_API_KEY")
            .env_remove("AMPLITUDE_SECRET_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// `cohort-sync run FILE --report R`; returns (exit code, report JSON, stderr).
    pub async fn run(&self, file: &Path, extra_args: &[&str]) -> (i32, Value, String) {
        let report = self.path(&format!("report-{}.json", fastrand::u32(..)));
        let file_s = file.to_string_lossy().into_owned();
        let report_s = report.to_string_lossy().into_owned();
        let mut args = vec!["run", file_s.as_str(), "--report", report_s.as_str()];
        args.extend_from_slice(extra_args);
        let (code, stdout, stderr) = self.cli(&args).await;
        let text = std::fs::read_to_string(&report).unwrap_or_else(|e| {
            panic!("no report ({e}); exit {code}\nstdout:\n{stdout}\nstderr:\n{stderr}")
        });
        (
            code,
            serde_json::from_str(&text).expect("report is JSON"),
            stderr,
        )
    }

    /// `cohort-sync run FILES... --report R` with extra environment variables (e.g. a crash
    /// point): returns (exit code, or -N when killed by signal N; the report if one was
    /// written; stderr).
    pub async fn run_env(
        &self,
        files: &[&Path],
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> (i32, Option<Value>, String) {
        use std::os::unix::process::ExitStatusExt;
        let report = self.path(&format!("report-{}.json", fastrand::u32(..)));
        let mut args: Vec<String> = vec!["run".into()];
        args.extend(files.iter().map(|f| f.to_string_lossy().into_owned()));
        args.push("--report".into());
        args.push(report.to_string_lossy().into_owned());
        args.extend(extra_args.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = self.command(&args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().await.expect("run cohort-sync");
        let code = match (out.status.code(), out.status.signal()) {
            (Some(c), _) => c,
            (None, Some(sig)) => -sig,
            (None, None) => -1,
        };
        let parsed = std::fs::read_to_string(&report)
            .ok()
            .map(|t| serde_json::from_str(&t).expect("report is JSON"));
        (
            code,
            parsed,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        reqwest::get(format!("{}{}", self.emu.base_url, path))
            .await
            .expect("admin request")
    }

    /// Every request the emulator received, in order.
    pub async fn requests(&self) -> Vec<Value> {
        let v: Value = self
            .admin_get("/_emulator/requests")
            .await
            .json()
            .await
            .expect("request log JSON");
        v.as_array().cloned().expect("request log is an array")
    }

    pub async fn clear_requests(&self) {
        super::emulator::clear_requests(&self.emu.base_url).await;
    }

    pub async fn set_usage(&self, used: u32) {
        super::emulator::set_usage(&self.emu.base_url, APP_ID, used).await;
    }

    pub async fn fault(&self, kind: FaultKind, path: &str, count: u32) {
        super::emulator::fault(&self.emu.base_url, kind, path, count).await;
    }

    /// Arms a rule with its optional fields (`status`, `body`, `delay_secs`, ...).
    pub async fn add_fault(&self, rule: &FaultRule) {
        super::emulator::add_fault(&self.emu.base_url, rule).await;
    }

    pub async fn clear_faults(&self) {
        super::emulator::clear_faults(&self.emu.base_url).await;
    }

    pub async fn patch_cohort(&self, id: &str, change: Value) {
        super::emulator::patch_cohort(&self.emu.base_url, APP_ID, id, change).await;
    }
}

/// Requests whose path contains `needle` (on the API listener unless it says otherwise).
pub fn matching<'a>(log: &'a [Value], needle: &str) -> Vec<&'a Value> {
    log.iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.contains(needle)))
        .collect()
}

/// Single-cohort requests (the quota-spending call) the emulator accepted.
pub fn spent_requests(log: &[Value]) -> Vec<&Value> {
    log.iter()
        .filter(|r| {
            r["listener"] == "api"
                && r["path"].as_str().is_some_and(|p| {
                    p.starts_with("/api/5/cohorts/request/") && !p.ends_with("/file")
                })
                && r["status"].as_u64().is_some_and(|s| s < 300)
        })
        .collect()
}

pub fn status_count(log: &[Value], status: u64) -> usize {
    log.iter()
        .filter(|r| r["status"].as_u64() == Some(status))
        .count()
}

/// The digest tests/py/parquet_digest.py computes, from the emulator's universe: what a
/// download of `spec` contains, in its order, for `amplitude_id`, `user_id` and `props`.
pub fn expected_digest(spec: &CohortSpec, props: &[String]) -> String {
    use emulator::universe;
    let mut h = Sha256::new();
    let mut line = String::new();
    for n in universe::member_numbers(spec.seed, &spec.id, spec.size) {
        line.clear();
        line.push_str(&universe::amplitude_id(n).to_string());
        line.push('\u{1f}');
        push_opt(&mut line, universe::user_id(n));
        for p in props {
            line.push('\u{1f}');
            push_opt(&mut line, universe::property_value(n, p));
        }
        line.push('\u{1e}');
        h.update(line.as_bytes());
    }
    format!("{:x}", h.finalize())
}

fn push_opt(line: &mut String, v: Option<String>) {
    match v {
        Some(s) => line.push_str(&s),
        None => line.push_str("\u{0}N"),
    }
}

/// Reads a Parquet file with pyarrow: rows, columns, metadata and the digest of `columns`.
pub fn parquet_digest(target: &str, columns: &[String]) -> Value {
    let endpoint = std::env::var("COHORT_SYNC_TEST_S3_ENDPOINT").unwrap_or_default();
    let out = super::run_python(
        "parquet_digest.py",
        &[target, &columns.join(","), &endpoint],
    );
    serde_json::from_str(out.trim()).expect("digest JSON")
}

/// Reads a whole output tree as a warehouse user would (tests/py/check_tree.py): every
/// object, each Parquet file of the Hive tree (rows, columns, digest), and the rows
/// pyarrow.dataset and DuckDB read from the whole tree.
pub fn check_tree(root: &str, columns: &[String]) -> Value {
    let endpoint = std::env::var("COHORT_SYNC_TEST_S3_ENDPOINT").unwrap_or_default();
    let out = super::run_python("check_tree.py", &[root, &columns.join(","), &endpoint]);
    serde_json::from_str(out.trim()).expect("check_tree JSON")
}

/// The columns of an export of `spec` with its properties: amplitude_id, user_id, props.
pub fn export_columns(spec: &CohortSpec) -> Vec<String> {
    let mut columns = vec!["amplitude_id".to_string(), "user_id".to_string()];
    columns.extend(spec.props.iter().cloned());
    columns
}

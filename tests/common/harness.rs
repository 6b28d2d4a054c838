//! An emulator on loopback, pipeline files in a temporary directory, and the real
//! `cohort-sync` binary run there as a user runs it — with only the environment a test
//! gives it (no `AMPLITUDE_*`, log filter or crash point leaks in from the caller).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use cohort_sync::emulator::{
    CohortSpec, EmulatorConfig, FaultKind, FaultRule, LoggedRequest, RunningEmulator,
};
use serde_json::Value;

use super::emulator::{self as emu, APP_ID, TIME_SCALE, api_key, secret_key};

pub struct Harness {
    pub emu: RunningEmulator,
    pub dir: tempfile::TempDir,
    pub cohorts: Vec<CohortSpec>,
}

/// What a finished `cohort-sync` process left: exit code (`-N` when signal N ended it),
/// output, and the `--report` file when one was written.
#[derive(Debug)]
pub struct Finished {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub report: Option<Value>,
    /// Where `--report` pointed (when given).
    pub report_path: Option<PathBuf>,
}

impl Finished {
    /// The report, which must exist.
    pub fn report(&self) -> &Value {
        self.report.as_ref().unwrap_or_else(|| {
            panic!(
                "no report; exit {}\nstdout:\n{}\nstderr:\n{}",
                self.code, self.stdout, self.stderr
            )
        })
    }
}

/// Starts an emulator holding `cohorts` in app [`APP_ID`] (`tweak` changes its config).
pub async fn start(cohorts: Vec<CohortSpec>, tweak: impl FnOnce(&mut EmulatorConfig)) -> Harness {
    let mut config = emu::config(cohorts.clone());
    tweak(&mut config);
    Harness {
        emu: emu::start(config).await,
        dir: tempfile::tempdir().expect("tempdir"),
        cohorts,
    }
}

/// Environment the binary never inherits from the test process.
const SCRUBBED: &[&str] = &[
    "AMPLITUDE_API_KEY",
    "AMPLITUDE_SECRET_KEY",
    "AMPLITUDE_BASE_URL",
    "COHORT_SYNC_LOG",
    "RUST_LOG",
    cohort_sync::crash::ENV,
];

impl Harness {
    pub fn base_url(&self) -> &str {
        &self.emu.base_url
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The cohort spec the harness was started with.
    pub fn spec(&self, id: &str) -> &CohortSpec {
        self.cohorts
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("no cohort {id}"))
    }

    /// The `[connection]` section pointing at this emulator.
    pub fn connection(&self) -> String {
        format!(
            "[connection]\nbase_url = \"{}\"\napi_key = \"{}\"\nsecret_key = \"{}\"\napp_id = {APP_ID}\n",
            self.emu.base_url,
            api_key(APP_ID),
            secret_key(APP_ID),
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
            format!("ids = [{}]", quoted(ids))
        };
        self.write(
            name,
            &format!(
                "kind = \"export\"\nname = \"{name}\"\n\n{}\n[select]\n{select}\n\n[output]\nurl = \"{output}\"\n\n[state]\nurl = \"{state}\"\n{extra}\n",
                self.connection()
            ),
        )
    }

    /// Writes a reverse pipeline: `source` read by its column named like `id_kind`,
    /// `target` the `[target]` body, `reconcile` more keys of `[reconcile]` (state in
    /// `state/`, lists in `lists/`).
    /// Writes `crm.csv` (column `amplitude_id`): the members of cohort `id` at positions
    /// `kept` plus `added` ids that are not members; returns the ids written.
    pub fn write_crm_source(
        &self,
        id: &str,
        kept: std::ops::Range<usize>,
        added: usize,
    ) -> BTreeSet<String> {
        use cohort_sync::emulator::universe::{amplitude_id, member_numbers};
        let spec = self.spec(id);
        let members: Vec<u64> = member_numbers(spec.seed, id, spec.size).collect();
        let known: BTreeSet<u64> = members.iter().copied().collect();
        // member_numbers is prefix-stable: any pool large enough gives the same newcomers.
        let newcomers = member_numbers(spec.seed + 1, "others", (added as u64) * 4 + 1_000)
            .filter(|n| !known.contains(n))
            .take(added);
        let source: BTreeSet<String> = members[kept]
            .iter()
            .copied()
            .chain(newcomers)
            .map(|n| amplitude_id(n).to_string())
            .collect();
        super::files::write_ids(
            &self.path("crm.csv"),
            "amplitude_id",
            source.iter().cloned(),
        );
        source
    }

    pub fn reverse_pipeline(
        &self,
        name: &str,
        source: &str,
        id_kind: &str,
        target: &str,
        reconcile: &str,
    ) -> PathBuf {
        self.write(
            name,
            &format!(
                r#"kind = "reverse"
name = "{name}"

{}
[download]
poll_initial_secs = 1

[state]
url = "state"

[source]
url = "{source}"
id_column = "{id_kind}"
id_kind = "{id_kind}"

[target]
{target}

[reconcile]
lists_dir = "lists"
{reconcile}
"#,
                self.connection()
            ),
        )
    }

    /// The binary with `args`, in the harness directory, at [`TIME_SCALE`], with none of
    /// the caller's [`SCRUBBED`] environment.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cohort-sync"));
        cmd.args(args);
        self.prepare(cmd)
    }

    /// [`Harness::command`] with stderr on a pseudo-terminal (`tests/py/pty_run.py`):
    /// what the binary drew there goes to `raw` as written and to `text` without escape
    /// sequences; stdout stays a pipe.
    pub fn command_on_terminal(
        &self,
        raw: &Path,
        text: &Path,
        args: &[&str],
    ) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(super::peers::python());
        cmd.arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/pty_run.py"))
            .arg(raw)
            .arg(text)
            .arg(env!("CARGO_BIN_EXE_cohort-sync"))
            .args(args);
        self.prepare(cmd)
    }

    fn prepare(&self, mut cmd: tokio::process::Command) -> tokio::process::Command {
        cmd.current_dir(self.dir.path())
            .env("COHORT_SYNC_TIME_SCALE", TIME_SCALE.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for var in SCRUBBED {
            cmd.env_remove(var);
        }
        cmd
    }

    /// Runs the binary with `args` and `env` to its end (awaited, never blocking a worker).
    pub async fn exec(&self, args: &[&str], env: &[(&str, &str)]) -> Finished {
        let mut cmd = self.command(args);
        cmd.envs(env.iter().copied());
        let out = cmd.output().await.expect("run cohort-sync");
        Finished {
            code: exit_code(&out.status),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            report: None,
            report_path: None,
        }
    }

    /// Runs the binary with `args`; returns (exit code, stdout, stderr).
    pub async fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let f = self.exec(args, &[]).await;
        (f.code, f.stdout, f.stderr)
    }

    /// `cohort-sync COMMAND FILES... --report R ARGS...` with `env`.
    pub async fn invoke(
        &self,
        command: &str,
        files: &[&Path],
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Finished {
        let report = self.path(&format!("report-{}.json", fastrand::u64(..)));
        let mut all: Vec<String> = vec![command.into()];
        all.extend(files.iter().map(|f| f.to_string_lossy().into_owned()));
        all.push("--report".into());
        all.push(report.to_string_lossy().into_owned());
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let mut f = self.exec(&all, env).await;
        f.report = std::fs::read_to_string(&report)
            .ok()
            .map(|t| serde_json::from_str(&t).expect("report is JSON"));
        f.report_path = Some(report);
        f
    }

    /// `cohort-sync run FILE --report R ARGS...`; returns (exit code, report, stderr) and
    /// fails when no report was written.
    pub async fn run(&self, file: &Path, args: &[&str]) -> (i32, Value, String) {
        let f = self.invoke("run", &[file], args, &[]).await;
        let report = f.report().clone();
        (f.code, report, f.stderr)
    }

    /// `cohort-sync run FILES... --report R ARGS...` with `env` (e.g. a crash point):
    /// (exit code or -N when killed by signal N, the report if one was written, stderr).
    pub async fn run_env(
        &self,
        files: &[&Path],
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (i32, Option<Value>, String) {
        let f = self.invoke("run", files, args, env).await;
        (f.code, f.report, f.stderr)
    }

    /// `cohort-sync plan FILES... --report R`: the whole finished process.
    pub async fn plan(&self, files: &[&Path], args: &[&str]) -> Finished {
        self.invoke("plan", files, args, &[]).await
    }

    // ---- the emulator's admin API ----

    /// Every request the emulator received, in order.
    pub async fn requests(&self) -> Vec<LoggedRequest> {
        emu::requests(&self.emu.base_url).await
    }

    /// Requests after `seq` (see [`Harness::last_seq`]).
    pub async fn requests_since(&self, seq: u64) -> Vec<LoggedRequest> {
        emu::requests_since(&self.emu.base_url, seq).await
    }

    /// The `seq` of the last logged request: later calls are `requests_since` it.
    pub async fn last_seq(&self) -> u64 {
        emu::last_seq(&self.emu.base_url).await
    }

    pub async fn clear_requests(&self) {
        emu::clear_requests(&self.emu.base_url).await;
    }

    /// Waits for a logged request matching `pred` (see [`emu::wait_for_request`]).
    pub async fn wait_for_request(
        &self,
        what: &str,
        pred: impl Fn(&LoggedRequest) -> bool,
    ) -> LoggedRequest {
        emu::wait_for_request(&self.emu.base_url, what, pred).await
    }

    /// `(used, limit)` of the app's month, as the emulator counts it.
    pub async fn usage(&self) -> (u32, u32) {
        emu::usage(&self.emu.base_url, APP_ID).await
    }

    pub async fn set_usage(&self, used: u32) {
        emu::set_usage(&self.emu.base_url, APP_ID, used).await;
    }

    pub async fn fault(&self, kind: FaultKind, path: &str, count: u32) {
        emu::fault(&self.emu.base_url, kind, path, count).await;
    }

    /// Arms a rule with its optional fields (`status`, `body`, `delay_secs`, ...).
    pub async fn add_fault(&self, rule: &FaultRule) {
        emu::add_fault(&self.emu.base_url, rule).await;
    }

    pub async fn clear_faults(&self) {
        emu::clear_faults(&self.emu.base_url).await;
    }

    pub async fn patch_cohort(&self, id: &str, change: Value) -> Value {
        emu::patch_cohort(&self.emu.base_url, APP_ID, id, change).await
    }

    /// Current members of a cohort (amplitude id, user id), sorted.
    pub async fn members(&self, cohort_id: &str) -> Vec<(i64, Option<String>)> {
        emu::members(&self.emu.base_url, APP_ID, cohort_id).await
    }

    /// The amplitude ids of a cohort's current members, as text.
    pub async fn member_ids(&self, cohort_id: &str) -> BTreeSet<String> {
        self.members(cohort_id)
            .await
            .into_iter()
            .map(|(a, _)| a.to_string())
            .collect()
    }
}

fn quoted(ids: &[&str]) -> String {
    ids.iter()
        .map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The exit code, or `-N` when signal N ended the process.
pub fn exit_code(status: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => -sig,
        (None, None) => -1,
    }
}

/// The report entry of cohort `id`, in whichever pipeline of the run it is.
pub fn report_cohort<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["pipelines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["cohorts"].as_array())
        .flatten()
        .find(|c| c["cohort_id"] == id)
        .unwrap_or_else(|| panic!("cohort {id} not in report: {report:#}"))
}

/// `(cohort id, outcome)` of the first pipeline's cohorts, in report order.
pub fn outcomes(report: &Value) -> Vec<(String, String)> {
    report["pipelines"][0]["cohorts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["cohort_id"].as_str().unwrap_or_default().to_string(),
                c["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The cohort ids of the first pipeline whose outcome is `outcome`, sorted.
pub fn with_outcome(report: &Value, outcome: &str) -> Vec<String> {
    let mut ids: Vec<String> = outcomes(report)
        .into_iter()
        .filter(|(_, o)| o == outcome)
        .map(|(c, _)| c)
        .collect();
    ids.sort();
    ids
}

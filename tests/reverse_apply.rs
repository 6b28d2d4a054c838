//! Reverse pipelines end to end against the in-process Amplitude emulator (and the
//! `cohort-sync` binary for the crash test): assertions are on what the emulator saw and
//! holds — its request log and the cohort's members — not on our own counters.

mod common;

use std::path::Path;

use std::collections::BTreeSet;
use std::time::Duration;

use cohort_sync::config;
use cohort_sync::emulator::universe::{amplitude_id, member_numbers, user_id};
use cohort_sync::emulator::{CohortSpec, EmulatorConfig, FaultKind, LoggedRequest};
use cohort_sync::reverse;
use cohort_sync::runner::context::{RunContext, RunMode};
use cohort_sync::runner::report::PipelineReport;
use common::emulator as emu;

const APP: u64 = 100_001;
const MEMBERSHIP: &str = "/api/3/cohorts/membership";
const UPLOAD: &str = "/api/3/cohorts/upload";

fn emulator_config(cohorts: Vec<CohortSpec>) -> EmulatorConfig {
    emu::fast_config(vec![emu::app(APP, cohorts)])
}

/// A reverse pipeline file for the emulator; `reconcile` is extra TOML for `[reconcile]`,
/// `target` the `[target]` body.
fn pipeline_file(
    dir: &Path,
    name: &str,
    base_url: &str,
    source: &str,
    kind: &str,
    target: &str,
    reconcile: &str,
) -> std::path::PathBuf {
    let column = kind;
    let text = format!(
        r#"kind = "reverse"
name = "{name}"

[connection]
base_url = "{base_url}"
api_key = "key-{APP}"
secret_key = "secret-{APP}"
app_id = {APP}

[download]
poll_initial_secs = 1

[state]
url = "state"

[source]
url = "{source}"
id_column = "{column}"
id_kind = "{kind}"

[target]
{target}

[reconcile]
lists_dir = "lists"
{reconcile}
"#
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write pipeline");
    path
}

async fn execute(path: &Path, mode: RunMode, force: bool) -> PipelineReport {
    let pipeline = config::load(path).unwrap_or_else(|e| panic!("{e}"));
    let base = path.parent().expect("dir").to_path_buf();
    let ctx = RunContext::new(mode, force, 0.01, base);
    reverse::execute(&pipeline, &ctx).await
}

/// Writes one id per line under a header.
fn write_ids(path: &Path, header: &str, ids: impl IntoIterator<Item = String>) {
    let mut text = format!("{header}\n");
    for id in ids {
        text.push_str(&id);
        text.push('\n');
    }
    std::fs::write(path, text).expect("write source");
}

/// `(operation, id_count)` of every answered membership / upload call in `log` that
/// changed something (a `skip_save` upload, logged `VALIDATE`, only checks ids).
fn changes(log: &[LoggedRequest]) -> Vec<(String, u64)> {
    log.iter()
        .filter(|r| (r.path == MEMBERSHIP || r.path == UPLOAD) && r.status == 200)
        .filter(|r| r.operation.as_deref() != Some("VALIDATE"))
        .map(|r| {
            (
                r.operation.clone().unwrap_or_default(),
                r.id_count.unwrap_or_default(),
            )
        })
        .collect()
}

fn cohort_requests(log: &[LoggedRequest]) -> usize {
    log.iter()
        .filter(|r| r.path.starts_with("/api/5/cohorts/request/") && !r.path.ends_with("/file"))
        .count()
}

async fn member_amplitude_ids(base: &str, cohort: &str) -> BTreeSet<String> {
    emu::members(base, APP, cohort)
        .await
        .into_iter()
        .map(|(a, _)| a.to_string())
        .collect()
}

fn reverse_json(r: &PipelineReport) -> &serde_json::Value {
    r.reverse.as_ref().expect("reverse report")
}

/// A 240,000-member cohort and a 250,000-id source that drops 10,000 members and adds
/// 20,000 others: 30,000 differences.
fn big_case(seed: u64) -> (CohortSpec, Vec<String>) {
    let spec = CohortSpec {
        id: "big".into(),
        name: "Big cohort".into(),
        size: 240_000,
        seed,
        ..CohortSpec::default()
    };
    let members: Vec<u64> = member_numbers(seed, "big", 240_000).collect();
    let set: BTreeSet<u64> = members.iter().copied().collect();
    let newcomers: Vec<u64> = member_numbers(seed + 1, "others", 60_000)
        .filter(|n| !set.contains(n))
        .take(20_000)
        .collect();
    assert_eq!(newcomers.len(), 20_000);
    let source: Vec<String> = members[10_000..]
        .iter()
        .chain(&newcomers)
        .map(|n| amplitude_id(*n).to_string())
        .collect();
    assert_eq!(source.len(), 250_000);
    (spec, source)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_applies_exactly_the_chunked_diff_and_a_rerun_sends_nothing() {
    let (spec, source) = big_case(11);
    let e = emu::start_emulator(emulator_config(vec![spec])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_ids(
        &dir.path().join("crm.csv"),
        "amplitude_id",
        source.iter().cloned(),
    );
    let file = pipeline_file(
        dir.path(),
        "big-sync",
        &e.base_url,
        "crm.csv",
        "amplitude_id",
        r#"cohort_id = "big""#,
        "mode = \"mirror\"\nchunk_size = 8000\nmax_removals = 50000",
    );

    let r = execute(&file, RunMode::Apply, false).await;
    assert_eq!(
        r.exit_code,
        0,
        "{:?}\n{}",
        r.error,
        reverse_json(&r)["summary"]
    );
    let log = emu::requests(&e.base_url).await;
    assert_eq!(cohort_requests(&log), 1, "one download for the baseline");
    let want: Vec<(String, u64)> = [
        ("ADD", 8000),
        ("ADD", 8000),
        ("ADD", 4000),
        ("REMOVE", 8000),
        ("REMOVE", 2000),
    ]
    .iter()
    .map(|(o, n)| (o.to_string(), *n))
    .collect();
    assert_eq!(changes(&log), want);
    let expected: BTreeSet<String> = source.iter().cloned().collect();
    assert_eq!(member_amplitude_ids(&e.base_url, "big").await, expected);
    let lists = &reverse_json(&r)["lists"];
    let add = std::fs::read_to_string(lists["add"].as_str().expect("add list")).expect("read");
    assert_eq!(add.lines().count(), 20_000);

    // Nothing changed since: the rerun downloads the (recomputed) cohort and sends nothing.
    let since = log.last().map_or(0, |l| l.seq);
    let r = execute(&file, RunMode::Apply, false).await;
    assert_eq!(r.exit_code, 0, "{:?}", r.error);
    let log = emu::requests_since(&e.base_url, since).await;
    assert!(changes(&log).is_empty(), "{:?}", changes(&log));
    assert_eq!(member_amplitude_ids(&e.base_url, "big").await, expected);
}

/// Members with a user id, and how many have none.
fn user_members(seed: u64, id: &str, size: u64) -> (Vec<String>, usize) {
    let mut with = Vec::new();
    let mut without = 0;
    for n in member_numbers(seed, id, size) {
        match user_id(n) {
            Some(u) => with.push(u),
            None => without += 1,
        }
    }
    (with, without)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_stops_a_mirror_that_lost_60_percent_until_forced() {
    let spec = emu::cohort("crm", 1000, 21);
    let (users, without) = user_members(21, "crm", 1000);
    assert!(without > 0, "the universe has members without user ids");
    let e = emu::start_emulator(emulator_config(vec![spec])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let keep: Vec<String> = users.iter().take(users.len() * 4 / 10).cloned().collect();
    write_ids(&dir.path().join("crm.csv"), "user_id", keep.iter().cloned());
    let file = pipeline_file(
        dir.path(),
        "guarded",
        &e.base_url,
        "crm.csv",
        "user_id",
        r#"cohort_id = "crm""#,
        "mode = \"mirror\"",
    );
    let before = emu::members(&e.base_url, APP, "crm").await;

    let r = execute(&file, RunMode::Apply, false).await;
    assert_eq!(r.exit_code, 1);
    let err = r.error.clone().unwrap_or_default();
    assert!(
        err.contains("removal guard") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(reverse_json(&r)["guard"]["decision"], "refused");
    let log = emu::requests(&e.base_url).await;
    assert!(
        changes(&log).is_empty(),
        "nothing may be sent: {:?}",
        changes(&log)
    );
    assert_eq!(emu::members(&e.base_url, APP, "crm").await, before);

    let since = log.last().map_or(0, |l| l.seq);
    let r = execute(&file, RunMode::Apply, true).await;
    assert_eq!(r.exit_code, 0, "{:?}", r.error);
    assert_eq!(reverse_json(&r)["guard"]["decision"], "forced");
    let log = emu::requests_since(&e.base_url, since).await;
    let ops = changes(&log);
    assert!(
        !ops.is_empty() && ops.iter().all(|(op, _)| op == "REMOVE"),
        "{ops:?}"
    );
    let after = emu::members(&e.base_url, APP, "crm").await;
    let named: BTreeSet<String> = after.iter().filter_map(|(_, u)| u.clone()).collect();
    assert_eq!(named, keep.iter().cloned().collect::<BTreeSet<_>>());
    // Members without a user id cannot be named, so they stay.
    assert_eq!(after.iter().filter(|(_, u)| u.is_none()).count(), without);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_amplitude_skips_are_in_the_report() {
    let spec = emu::cohort("vip", 200, 31);
    let (users, _) = user_members(31, "vip", 200);
    let e = emu::start_emulator(emulator_config(vec![spec])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ghosts = ["ghost-1@nowhere.test", "not a user"];
    let source = users
        .iter()
        .cloned()
        .chain(ghosts.iter().map(|s| s.to_string()));
    write_ids(&dir.path().join("crm.csv"), "user_id", source);
    let file = pipeline_file(
        dir.path(),
        "skips",
        &e.base_url,
        "crm.csv",
        "user_id",
        r#"cohort_id = "vip""#,
        "mode = \"add_only\"",
    );
    let r = execute(&file, RunMode::Apply, false).await;
    assert_eq!(r.exit_code, 0, "{:?}", r.error);
    let log = emu::requests(&e.base_url).await;
    assert_eq!(changes(&log), vec![("ADD".to_string(), 2)]);
    let rev = reverse_json(&r);
    assert_eq!(rev["skipped_ids"]["count"], 2);
    let sample: BTreeSet<String> = rev["skipped_ids"]["sample"]
        .as_array()
        .expect("sample")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    assert_eq!(sample, ghosts.iter().map(|s| s.to_string()).collect());
    let skipped = std::fs::read_to_string(rev["lists"]["skipped"].as_str().expect("skipped list"))
        .expect("read");
    assert_eq!(skipped.lines().count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_a_cohort_by_upload_then_add_and_reports_invalid_ids() {
    let e = emu::start_emulator(emulator_config(vec![])).await;
    let (users, _) = user_members(41, "fresh", 2600);
    let dir = tempfile::tempdir().expect("tempdir");
    let invalid = "bad id";
    let source: Vec<String> = users.iter().cloned().chain([invalid.to_string()]).collect();
    write_ids(
        &dir.path().join("crm.csv"),
        "user_id",
        source.iter().cloned(),
    );
    let file = pipeline_file(
        dir.path(),
        "create",
        &e.base_url,
        "crm.csv",
        "user_id",
        r#"create = { name = "CRM beta", owner = "ops@example.com", published = true }"#,
        "chunk_size = 1000",
    );
    let r = execute(&file, RunMode::Apply, false).await;
    assert_eq!(r.exit_code, 0, "{:?}", r.error);
    let log = emu::requests(&e.base_url).await;
    let ops = changes(&log);
    assert_eq!(ops[0], ("UPLOAD".to_string(), 1000));
    assert!(ops[1..].iter().all(|(op, _)| op == "ADD"), "{ops:?}");
    assert_eq!(ops.iter().map(|(_, n)| n).sum::<u64>(), source.len() as u64);
    let rev = reverse_json(&r);
    let created = rev["target"]["cohort_id"]
        .as_str()
        .expect("created id")
        .to_string();
    assert_eq!(rev["target"]["created"], true);
    assert!(
        log.iter()
            .filter(|l| l.path == MEMBERSHIP)
            .all(|l| l.cohort_id.as_deref() == Some(&created))
    );
    let named: BTreeSet<String> = emu::members(&e.base_url, APP, &created)
        .await
        .into_iter()
        .filter_map(|(_, u)| u)
        .collect();
    assert_eq!(named, users.iter().cloned().collect::<BTreeSet<_>>());
    let reported: Vec<&str> = rev["invalid_ids_sample"]
        .as_array()
        .into_iter()
        .chain(rev["skipped_ids"]["sample"].as_array())
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(reported.contains(&invalid), "{rev}");

    // The next run reconciles the cohort it created instead of creating another.
    let since = log.last().map_or(0, |l| l.seq);
    let r = execute(&file, RunMode::Apply, false).await;
    assert_eq!(r.exit_code, 0, "{:?}", r.error);
    let log = emu::requests_since(&e.base_url, since).await;
    assert!(!log.iter().any(|l| l.path == UPLOAD), "no second cohort");
    assert!(
        changes(&log).iter().all(|(op, n)| op == "ADD" && *n == 1),
        "only the invalid id is retried: {:?}",
        changes(&log)
    );
}

fn write_parquet(path: &Path, spec: serde_json::Value) {
    let out = common::run_python(
        "reverse_files.py",
        &[
            "parquet",
            path.to_str().expect("utf-8 path"),
            &spec.to_string(),
        ],
    );
    assert!(out.contains("wrote"), "{out}");
}

/// A Parquet snapshot of `members` as the export writes it (footer metadata included).
fn write_snapshot(root: &Path, cohort: &str, last_computed: i64, members: &[u64]) {
    let dir = root.join(format!("cohort_id={cohort}/snapshot_date=2024-01-01"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let amp: Vec<i64> = members.iter().map(|n| amplitude_id(*n)).collect();
    let users: Vec<Option<String>> = members.iter().map(|n| user_id(*n)).collect();
    write_parquet(
        &dir.join("part-0.parquet"),
        serde_json::json!({
            "columns": {
                "amplitude_id": {"type": "int64", "values": amp},
                "user_id": {"type": "string", "values": users},
            },
            "metadata": {
                "cohort_sync.cohort_id": cohort,
                "cohort_sync.last_computed": last_computed.to_string(),
            }
        }),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_snapshot_spends_no_quota_and_a_stale_one_downloads() {
    let spec = emu::cohort("snap", 500, 51);
    let last_computed = spec.last_computed_ms / 1000;
    let members: Vec<u64> = member_numbers(51, "snap", 500).collect();
    let e = emu::start_emulator(emulator_config(vec![spec])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_snapshot(&dir.path().join("exports"), "snap", last_computed, &members);
    let source: Vec<String> = members[10..]
        .iter()
        .map(|n| amplitude_id(*n).to_string())
        .collect();
    write_ids(
        &dir.path().join("crm.csv"),
        "amplitude_id",
        source.iter().cloned(),
    );
    let file = pipeline_file(
        dir.path(),
        "snapshots",
        &e.base_url,
        "crm.csv",
        "amplitude_id",
        r#"cohort_id = "snap""#,
        "mode = \"mirror\"\nbaseline = \"auto\"\nsnapshots = \"exports\"",
    );
    let (used_before, _) = emu::usage(&e.base_url, APP).await;

    let r = execute(&file, RunMode::Apply, false).await;
    assert_eq!(r.exit_code, 0, "{:?}", r.error);
    assert_eq!(reverse_json(&r)["baseline"]["used"], "snapshot");
    let log = emu::requests(&e.base_url).await;
    assert_eq!(cohort_requests(&log), 0);
    assert_eq!(emu::usage(&e.base_url, APP).await.0, used_before);
    assert_eq!(changes(&log), vec![("REMOVE".to_string(), 10)]);
    assert_eq!(
        member_amplitude_ids(&e.base_url, "snap").await,
        source.iter().cloned().collect()
    );

    // The apply recomputed the cohort: the snapshot is now older than lastComputed. A plan
    // does not spend quota for it; a run downloads.
    let since = log.last().map_or(0, |l| l.seq);
    let r = execute(&file, RunMode::Plan, false).await;
    assert_eq!(r.exit_code, 0, "{:?}", r.error);
    assert_eq!(reverse_json(&r)["baseline"]["exact"], false);
    let r = execute(&file, RunMode::Apply, false).await;
    assert_eq!(r.exit_code, 0, "{:?}", r.error);
    assert_eq!(reverse_json(&r)["baseline"]["used"], "download");
    let log = emu::requests_since(&e.base_url, since).await;
    assert_eq!(cohort_requests(&log), 1);
    assert_eq!(emu::usage(&e.base_url, APP).await.0, used_before + 1);
    assert!(changes(&log).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_dry_run_write_the_lists_and_send_nothing() {
    let spec = emu::cohort("p", 300, 61);
    let members: Vec<u64> = member_numbers(61, "p", 300).collect();
    let e = emu::start_emulator(emulator_config(vec![spec])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let source: Vec<String> = members[5..]
        .iter()
        .map(|n| amplitude_id(*n).to_string())
        .collect();
    write_ids(
        &dir.path().join("crm.csv"),
        "amplitude_id",
        source.iter().cloned(),
    );
    let file = pipeline_file(
        dir.path(),
        "planned",
        &e.base_url,
        "crm.csv",
        "amplitude_id",
        r#"cohort_id = "p""#,
        "baseline = \"download\"",
    );
    // Plan: the baseline needs a download, which a plan never spends.
    let r = execute(&file, RunMode::Plan, false).await;
    assert_eq!(r.exit_code, 0, "{:?}", r.error);
    let log = emu::requests(&e.base_url).await;
    assert_eq!(cohort_requests(&log), 0);
    assert!(reverse_json(&r)["counts"].is_null());
    // A run that fails after spending leaves the request id for the next one: here, a
    // dry run after a run reuses nothing (dry runs spend nothing either).
    let r = execute(&file, RunMode::DryRun, false).await;
    assert_eq!(r.exit_code, 0, "{:?}", r.error);
    assert_eq!(cohort_requests(&emu::requests(&e.base_url).await), 0);
    assert!(changes(&emu::requests(&e.base_url).await).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_cohort_is_retried_and_a_failed_chunk_resumes_without_repeats() {
    let spec = emu::cohort("busy", 3000, 71);
    let members: Vec<u64> = member_numbers(71, "busy", 3000).collect();
    let extra: Vec<u64> = member_numbers(72, "x", 5000)
        .filter(|n| !members.contains(n))
        .take(2500)
        .collect();
    let e = emu::start_emulator(emulator_config(vec![spec])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let source: Vec<String> = members
        .iter()
        .chain(&extra)
        .map(|n| amplitude_id(*n).to_string())
        .collect();
    write_ids(
        &dir.path().join("crm.csv"),
        "amplitude_id",
        source.iter().cloned(),
    );
    let file = pipeline_file(
        dir.path(),
        "busy",
        &e.base_url,
        "crm.csv",
        "amplitude_id",
        r#"cohort_id = "busy""#,
        "mode = \"add_only\"\nchunk_size = 500",
    );
    // Two 429s (cohort busy) are waited out; then the third chunk fails with a 500.
    emu::fault(&e.base_url, FaultKind::RateLimit, MEMBERSHIP, 2).await;
    let r = execute(&file, RunMode::Apply, false).await;
    assert_eq!(r.exit_code, 0, "{:?}", r.error);
    let log = emu::requests(&e.base_url).await;
    let limited = log
        .iter()
        .filter(|l| l.path == MEMBERSHIP && l.status == 429)
        .count();
    assert_eq!(limited, 2);
    assert_eq!(changes(&log).len(), 5, "{:?}", changes(&log));
    assert_eq!(
        member_amplitude_ids(&e.base_url, "busy").await,
        source.iter().cloned().collect()
    );

    // A 5xx is not retried by the client: the run stops, the journal keeps the rest.
    let more: Vec<String> = member_numbers(73, "y", 5000)
        .filter(|n| !members.contains(n) && !extra.contains(n))
        .take(1500)
        .map(|n| amplitude_id(n).to_string())
        .collect();
    let all: Vec<String> = source.iter().chain(&more).cloned().collect();
    write_ids(
        &dir.path().join("crm.csv"),
        "amplitude_id",
        all.iter().cloned(),
    );
    let since = log.last().map_or(0, |l| l.seq);
    let mut rule = cohort_sync::emulator::FaultRule::new(FaultKind::ServerError, MEMBERSHIP, 1);
    rule.status = Some(503);
    emu::add_fault(&e.base_url, &rule).await;
    let r = execute(&file, RunMode::Apply, false).await;
    assert_eq!(r.exit_code, 1, "{:?}", r.error);
    let log = emu::requests_since(&e.base_url, since).await;
    let sent: Vec<u16> = log
        .iter()
        .filter(|l| l.path == MEMBERSHIP)
        .map(|l| l.status)
        .collect();
    assert_eq!(sent, vec![503], "a 5xx is not retried and stops the run");
    let since = log.last().map_or(0, |l| l.seq);
    let r = execute(&file, RunMode::Apply, false).await;
    assert_eq!(r.exit_code, 0, "{:?}", r.error);
    let log = emu::requests_since(&e.base_url, since).await;
    assert_eq!(
        cohort_requests(&log),
        0,
        "the journal is resumed, not re-planned"
    );
    assert_eq!(
        changes(&log),
        vec![("ADD".to_string(), 500); 3],
        "the 1500 new ids in 3 chunks"
    );
    assert_eq!(
        member_amplitude_ids(&e.base_url, "busy").await,
        all.iter().cloned().collect()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_after_its_second_chunk_is_resumed_with_only_the_rest() {
    let spec = emu::cohort("kill", 40_000, 81);
    let members: Vec<u64> = member_numbers(81, "kill", 40_000).collect();
    let set: BTreeSet<u64> = members.iter().copied().collect();
    let newcomers: Vec<u64> = member_numbers(82, "new", 40_000)
        .filter(|n| !set.contains(n))
        .take(20_000)
        .collect();
    // Each membership call is held 4 s by the emulator: the kill lands while the third one
    // is in flight, a second after the second was answered (and journaled).
    let mut cfg = emulator_config(vec![spec]);
    cfg.membership_processing = Duration::from_secs(400);
    let e = emu::start_emulator(cfg).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let source: Vec<String> = members[10_000..]
        .iter()
        .chain(&newcomers)
        .map(|n| amplitude_id(*n).to_string())
        .collect();
    write_ids(
        &dir.path().join("crm.csv"),
        "amplitude_id",
        source.iter().cloned(),
    );
    let file = pipeline_file(
        dir.path(),
        "killed",
        &e.base_url,
        "crm.csv",
        "amplitude_id",
        r#"cohort_id = "kill""#,
        "mode = \"mirror\"\nchunk_size = 5000\nmax_removals = 20000\nmax_removal_pct = 30",
    );
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_cohort-sync"))
            .args([
                "run",
                file.to_str().expect("path"),
                "--report",
                "report.json",
            ])
            .current_dir(dir.path())
            .env("COHORT_SYNC_TIME_SCALE", "0.01")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start cohort-sync")
    };
    let answered = |log: &[LoggedRequest]| {
        log.iter()
            .filter(|l| l.path == MEMBERSHIP && l.status == 200)
            .count()
    };

    let mut child = run();
    loop {
        if answered(&emu::requests(&e.base_url).await) >= 2 {
            break;
        }
        if let Some(status) = child.try_wait().expect("poll child") {
            panic!("cohort-sync ended before its second chunk: {status}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    // Past the end of the hold: a call the emulator did not drop would show up as applied.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let log = emu::requests(&e.base_url).await;
    let first: Vec<(String, u64)> = changes(&log);
    assert_eq!(
        first,
        vec![("ADD".to_string(), 5000), ("ADD".to_string(), 5000)],
        "the killed run got two chunks applied"
    );
    let since = log.last().map_or(0, |l| l.seq);

    // A plan meanwhile reports the unfinished plan and sends nothing.
    let plan = std::process::Command::new(env!("CARGO_BIN_EXE_cohort-sync"))
        .args([
            "plan",
            file.to_str().expect("path"),
            "--report",
            "plan.json",
        ])
        .current_dir(dir.path())
        .env("COHORT_SYNC_TIME_SCALE", "0.01")
        .output()
        .expect("plan");
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let planned: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("plan.json")).expect("plan report"),
    )
    .expect("plan JSON");
    assert_eq!(
        planned["pipelines"][0]["reverse"]["outcome"],
        "resume_pending"
    );
    // The report lists ids: readable by its owner only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("plan.json"))
            .expect("plan report")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let log = emu::requests_since(&e.base_url, since).await;
    assert!(changes(&log).is_empty() && cohort_requests(&log) == 0);
    let since = log.last().map_or(since, |l| l.seq);

    let out = run().wait_with_output().expect("rerun");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = emu::requests_since(&e.base_url, since).await;
    assert_eq!(
        cohort_requests(&log),
        0,
        "the plan is resumed, not made again"
    );
    assert_eq!(
        changes(&log),
        vec![
            ("ADD".to_string(), 5000),
            ("ADD".to_string(), 5000),
            ("REMOVE".to_string(), 5000),
            ("REMOVE".to_string(), 5000),
        ],
        "only the four chunks the first run did not finish"
    );
    assert_eq!(
        member_amplitude_ids(&e.base_url, "kill").await,
        source.iter().cloned().collect()
    );
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("report.json")).expect("report"),
    )
    .expect("report JSON");
    assert_eq!(
        report["pipelines"][0]["reverse"]["journal"]["resumed"],
        true
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_uploads_over_the_cohort_then_adds_the_rest() {
    let spec = emu::cohort("rep", 800, 91);
    let members: Vec<u64> = member_numbers(91, "rep", 800).collect();
    let others: Vec<u64> = member_numbers(92, "z", 4000)
        .filter(|n| !members.contains(n))
        .take(2000)
        .collect();
    let e = emu::start_emulator(emulator_config(vec![spec])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Keeps 500 members, drops 300, brings 2,000 others: 2,500 ids in all.
    let source: Vec<String> = members[..500]
        .iter()
        .chain(&others)
        .map(|n| amplitude_id(*n).to_string())
        .collect();
    write_ids(
        &dir.path().join("crm.csv"),
        "amplitude_id",
        source.iter().cloned(),
    );
    let file = pipeline_file(
        dir.path(),
        "replace",
        &e.base_url,
        "crm.csv",
        "amplitude_id",
        r#"cohort_id = "rep""#,
        "mode = \"replace\"\nchunk_size = 1000\nmax_removal_pct = 50",
    );
    let r = execute(&file, RunMode::Apply, false).await;
    assert_eq!(r.exit_code, 0, "{:?}", r.error);
    let log = emu::requests(&e.base_url).await;
    assert_eq!(
        cohort_requests(&log),
        0,
        "replace needs no baseline download"
    );
    assert_eq!(
        changes(&log),
        vec![
            ("UPLOAD".to_string(), 1000),
            ("ADD".to_string(), 1000),
            ("ADD".to_string(), 500)
        ]
    );
    let upload = log.iter().find(|l| l.path == UPLOAD).expect("upload");
    assert_eq!(
        upload.cohort_id.as_deref(),
        Some("rep"),
        "existing_cohort_id"
    );
    assert_eq!(
        member_amplitude_ids(&e.base_url, "rep").await,
        source.iter().cloned().collect()
    );
    // The guard estimated the removals from the cohort's size: 800 - 2,500 → none.
    assert_eq!(reverse_json(&r)["guard"]["removals_estimated"], true);

    // An empty list cannot be uploaded, even with --force: nothing is sent.
    write_ids(&dir.path().join("crm.csv"), "amplitude_id", []);
    let since = emu::requests(&e.base_url).await.last().map_or(0, |l| l.seq);
    let r = execute(&file, RunMode::Apply, true).await;
    assert_eq!(r.exit_code, 1);
    assert!(
        r.error
            .as_deref()
            .unwrap_or("")
            .contains("mode = \"mirror\""),
        "{:?}",
        r.error
    );
    assert!(changes(&emu::requests_since(&e.base_url, since).await).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_baseline_download_that_does_not_fit_the_month_stops_with_exit_3() {
    let spec = emu::cohort("q", 100, 95);
    let e = emu::start_emulator(emulator_config(vec![spec])).await;
    emu::set_usage(&e.base_url, APP, 500).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_ids(
        &dir.path().join("crm.csv"),
        "user_id",
        ["someone".to_string()],
    );
    let file = pipeline_file(
        dir.path(),
        "quota",
        &e.base_url,
        "crm.csv",
        "user_id",
        r#"cohort_id = "q""#,
        "mode = \"add_only\"",
    );
    let r = execute(&file, RunMode::Apply, false).await;
    assert_eq!(r.exit_code, 3, "{:?}", r.error);
    assert!(
        r.error
            .as_deref()
            .unwrap_or("")
            .contains("downloads are all used"),
        "{:?}",
        r.error
    );
    let log = emu::requests(&e.base_url).await;
    assert_eq!(cohort_requests(&log), 0);
    assert!(changes(&log).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_journal_and_lists_on_s3() {
    let endpoint = common::s3_endpoint();
    let bucket = common::create_bucket("revstate");
    let spec = emu::cohort("s3c", 400, 97);
    let members: Vec<u64> = member_numbers(97, "s3c", 400).collect();
    let others: Vec<u64> = member_numbers(98, "w", 1000)
        .filter(|n| !members.contains(n))
        .take(300)
        .collect();
    let e = emu::start_emulator(emulator_config(vec![spec])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let source: Vec<String> = members[20..]
        .iter()
        .chain(&others)
        .map(|n| amplitude_id(*n).to_string())
        .collect();
    let local = dir.path().join("crm.csv");
    write_ids(&local, "amplitude_id", source.iter().cloned());
    common::run_python(
        "reverse_files.py",
        &[
            "put",
            &endpoint,
            &bucket,
            "in/crm.csv",
            local.to_str().expect("path"),
        ],
    );
    let file = pipeline_file(
        dir.path(),
        "on-s3",
        &e.base_url,
        &format!("s3://{bucket}/in/crm.csv"),
        "amplitude_id",
        r#"cohort_id = "s3c""#,
        "chunk_size = 100",
    );
    let text = std::fs::read_to_string(&file)
        .expect("read")
        .replace("url = \"state\"", &format!("url = \"s3://{bucket}/state\""))
        .replace(
            "lists_dir = \"lists\"",
            &format!("lists_dir = \"s3://{bucket}/lists\""),
        );
    std::fs::write(&file, text).expect("write");

    let r = execute(&file, RunMode::Apply, false).await;
    assert_eq!(r.exit_code, 0, "{:?}", r.error);
    let log = emu::requests(&e.base_url).await;
    assert_eq!(
        changes(&log),
        vec![
            ("ADD".to_string(), 100),
            ("ADD".to_string(), 100),
            ("ADD".to_string(), 100),
            ("REMOVE".to_string(), 20)
        ]
    );
    assert_eq!(
        member_amplitude_ids(&e.base_url, "s3c").await,
        source.iter().cloned().collect()
    );
    let listed = common::run_python("s3_admin.py", &["list", &endpoint, &bucket]);
    assert!(listed.contains("state/on-s3/journals/s3c.json"), "{listed}");
    assert!(
        !listed.contains("journal-chunks"),
        "a closed journal leaves no chunk documents: {listed}"
    );
    assert!(
        listed.contains("lists/on-s3-") && listed.contains("-add.txt"),
        "{listed}"
    );
}

/// `cohort-sync run FILE --report report.json` in `dir`, with extra environment; returns
/// the exit code (`None` when a signal ended it), the report (`Null` when none was
/// written) and stderr.
fn cli_run(
    dir: &Path,
    file: &Path,
    env: &[(&str, &str)],
) -> (Option<i32>, serde_json::Value, String) {
    let report = dir.join("report.json");
    let _ = std::fs::remove_file(&report);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cohort-sync"))
        .args([
            "run",
            file.to_str().expect("path"),
            "--report",
            "report.json",
        ])
        .current_dir(dir)
        .env("COHORT_SYNC_TIME_SCALE", "0.01")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run cohort-sync");
    let json = std::fs::read_to_string(&report)
        .map(|t| serde_json::from_str(&t).expect("report JSON"))
        .unwrap_or(serde_json::Value::Null);
    (
        out.status.code(),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A cohort of `size` members and a mirror source that keeps all but the first `drop` and
/// brings `new` others: (spec, source ids).
fn mirror_case(
    id: &str,
    size: u64,
    seed: u64,
    drop: usize,
    new: usize,
) -> (CohortSpec, Vec<String>) {
    let spec = emu::cohort(id, size, seed);
    let members: Vec<u64> = member_numbers(seed, id, size).collect();
    let set: BTreeSet<u64> = members.iter().copied().collect();
    let newcomers: Vec<u64> = member_numbers(seed + 1, "newcomers", (new * 3) as u64)
        .filter(|n| !set.contains(n))
        .take(new)
        .collect();
    assert_eq!(newcomers.len(), new);
    let source = members[drop..]
        .iter()
        .chain(&newcomers)
        .map(|n| amplitude_id(*n).to_string())
        .collect();
    (spec, source)
}

/// The journal head of `pipeline` for `target` in the local state directory.
fn journal_head(dir: &Path, pipeline: &str, target: &str) -> serde_json::Value {
    let path = dir.join(format!("state/{pipeline}/journals/{target}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("journal {}: {e}", path.display()));
    serde_json::from_str(&text).expect("journal JSON")
}

/// A chunk refused with `status` ends its plan; the next run re-plans (with `retry_tweak`
/// applied to the pipeline file) and leaves the cohort exactly as the source says.
async fn a_refused_chunk_ends_the_plan(
    status: u16,
    cohort: &str,
    retry_tweak: Option<(&str, &str)>,
) {
    let (spec, source) = mirror_case(cohort, 2000, 110 + status as u64, 300, 1200);
    let e = emu::start_emulator(emulator_config(vec![spec])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_ids(
        &dir.path().join("crm.csv"),
        "amplitude_id",
        source.iter().cloned(),
    );
    let name = format!("refused-{status}");
    let file = pipeline_file(
        dir.path(),
        &name,
        &e.base_url,
        "crm.csv",
        "amplitude_id",
        &format!("cohort_id = \"{cohort}\""),
        "mode = \"mirror\"\nchunk_size = 1000\nmax_removal_pct = 30",
    );
    let mut rule = cohort_sync::emulator::FaultRule::new(FaultKind::ClientError, MEMBERSHIP, 1);
    rule.status = Some(status);
    emu::add_fault(&e.base_url, &rule).await;

    let (code, report, stderr) = cli_run(dir.path(), &file, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    let p = &report["pipelines"][0];
    let err = p["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("chunk 1 of 3 (ADD, 1000 ids)")
            && err.contains(&format!("HTTP {status}"))
            && err.contains("re-plans from the current source")
            && !err.contains("sends the remaining calls"),
        "{err}"
    );
    assert_eq!(p["reverse"]["journal"]["status"], "failed", "{p}");
    assert_eq!(p["reverse"]["calls"][0]["status"], "failed");
    assert_eq!(p["reverse"]["calls"][1]["status"], "not_sent");
    let head = journal_head(dir.path(), &name, cohort);
    assert_eq!(head["status"], "failed");
    assert!(
        head["ended_reason"]
            .as_str()
            .is_some_and(|r| r.contains(&format!("HTTP {status}"))),
        "{head}"
    );
    let log = emu::requests(&e.base_url).await;
    assert!(changes(&log).is_empty(), "{:?}", changes(&log));
    let since = log.last().map_or(0, |l| l.seq);

    if let Some((from, to)) = retry_tweak {
        let text = std::fs::read_to_string(&file).expect("read");
        assert!(text.contains(from));
        std::fs::write(&file, text.replace(from, to)).expect("write");
    }
    let (code, report, stderr) = cli_run(dir.path(), &file, &[]);
    assert_eq!(code, Some(0), "{stderr}\n{report}");
    let rev = &report["pipelines"][0]["reverse"];
    assert_eq!(rev["journal"]["resumed"], false, "{rev}");
    assert_eq!(rev["journal"]["status"], "closed");
    let log = emu::requests_since(&e.base_url, since).await;
    let sizes: Vec<u64> = changes(&log).iter().map(|(_, n)| *n).collect();
    let max = if retry_tweak.is_some() { 400 } else { 1000 };
    assert!(sizes.iter().all(|n| *n <= max), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<u64>(), 1500, "1,200 ADD + 300 REMOVE");
    assert_eq!(
        member_amplitude_ids(&e.base_url, cohort).await,
        source.iter().cloned().collect()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_refused_with_413_ends_the_plan_and_a_smaller_chunk_size_replans() {
    a_refused_chunk_ends_the_plan(
        413,
        "too-big",
        Some(("chunk_size = 1000", "chunk_size = 400")),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_refused_with_400_ends_the_plan_and_the_next_run_replans() {
    a_refused_chunk_ends_the_plan(400, "bad-request", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_source_supersedes_the_unfinished_plan() {
    let (spec, source) = mirror_case("moving", 2000, 120, 100, 900);
    let e = emu::start_emulator(emulator_config(vec![spec])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("crm.csv");
    write_ids(&csv, "amplitude_id", source.iter().cloned());
    let file = pipeline_file(
        dir.path(),
        "moving",
        &e.base_url,
        "crm.csv",
        "amplitude_id",
        r#"cohort_id = "moving""#,
        "mode = \"mirror\"\nchunk_size = 300",
    );
    // A 5xx is retryable: the run fails and the journal stays open.
    let mut rule = cohort_sync::emulator::FaultRule::new(FaultKind::ServerError, MEMBERSHIP, 1);
    rule.status = Some(503);
    emu::add_fault(&e.base_url, &rule).await;
    let (code, report, stderr) = cli_run(dir.path(), &file, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    let err = report["pipelines"][0]["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("the next run sends the remaining calls"),
        "{err}"
    );
    assert_eq!(
        journal_head(dir.path(), "moving", "moving")["status"],
        "open"
    );
    let first_planner = report["run_id"].clone();
    let since = emu::requests(&e.base_url).await.last().map_or(0, |l| l.seq);

    // The CRM list changes before the next run: half the newcomers (at its end) leave,
    // 200 others come.
    let extra: Vec<String> = member_numbers(777, "late", 1000)
        .map(|n| amplitude_id(n).to_string())
        .filter(|id| !source.contains(id))
        .take(200)
        .collect();
    let later: Vec<String> = source[..source.len() - 450]
        .iter()
        .cloned()
        .chain(extra)
        .collect();
    write_ids(&csv, "amplitude_id", later.iter().cloned());

    let (code, report, stderr) = cli_run(dir.path(), &file, &[]);
    assert_eq!(code, Some(0), "{stderr}\n{report}");
    let rev = &report["pipelines"][0]["reverse"];
    assert_eq!(rev["superseded"]["marked"], true, "{rev}");
    assert!(
        rev["superseded"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("the source changed")),
        "{rev}"
    );
    assert_eq!(rev["superseded"]["planned_by"], first_planner);
    assert_eq!(rev["journal"]["resumed"], false);
    let log = emu::requests_since(&e.base_url, since).await;
    assert_eq!(
        changes(&log).iter().map(|(_, n)| n).sum::<u64>(),
        100 + 450 + 200,
        "the new plan (the old one sent 1,000 ids): {:?}",
        changes(&log)
    );
    assert_eq!(
        member_amplitude_ids(&e.base_url, "moving").await,
        later.iter().cloned().collect()
    );
    // The superseded head is kept as a record.
    let history = std::fs::read_dir(dir.path().join("state/moving/journal-history"))
        .expect("journal history")
        .count();
    assert_eq!(history, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_an_answer_and_its_journal_entry_resends_exactly_that_call() {
    let (spec, source) = mirror_case("doubt", 1000, 130, 50, 700);
    let e = emu::start_emulator(emulator_config(vec![spec])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_ids(
        &dir.path().join("crm.csv"),
        "amplitude_id",
        source.iter().cloned(),
    );
    let file = pipeline_file(
        dir.path(),
        "doubt",
        &e.base_url,
        "crm.csv",
        "amplitude_id",
        r#"cohort_id = "doubt""#,
        "mode = \"mirror\"\nchunk_size = 300",
    );
    // ADD 300, ADD 300, ADD 100, REMOVE 50: killed once the second ADD is answered.
    let (code, _, stderr) = cli_run(
        dir.path(),
        &file,
        &[("COHORT_SYNC_CRASH_AT", "reverse.chunk.answered#2")],
    );
    assert_eq!(code, None, "killed by its crash point: {stderr}");
    assert!(stderr.contains("reverse.chunk.answered #2"), "{stderr}");
    let log = emu::requests(&e.base_url).await;
    assert_eq!(
        changes(&log),
        vec![("ADD".to_string(), 300), ("ADD".to_string(), 300)]
    );
    let since = log.last().map_or(0, |l| l.seq);

    let (code, report, stderr) = cli_run(dir.path(), &file, &[]);
    assert_eq!(code, Some(0), "{stderr}\n{report}");
    let rev = &report["pipelines"][0]["reverse"];
    assert_eq!(rev["journal"]["resumed"], true, "{rev}");
    assert_eq!(rev["calls_resent_in_doubt"], 1, "{rev}");
    let resent: Vec<u64> = rev["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .filter(|c| c["resent_in_doubt"] == true)
        .filter_map(|c| c["index"].as_u64())
        .collect();
    assert_eq!(resent, vec![1], "the second chunk, and only it");
    let log = emu::requests_since(&e.base_url, since).await;
    assert_eq!(cohort_requests(&log), 0, "resumed, not re-planned");
    assert_eq!(
        changes(&log),
        vec![
            ("ADD".to_string(), 300),
            ("ADD".to_string(), 100),
            ("REMOVE".to_string(), 50)
        ]
    );
    assert_eq!(
        member_amplitude_ids(&e.base_url, "doubt").await,
        source.iter().cloned().collect()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_creating_plan_reconciles_the_cohort_it_created_instead_of_making_another() {
    let e = emu::start_emulator(emulator_config(vec![])).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ids: Vec<String> = member_numbers(140, "fresh", 1500)
        .map(|n| amplitude_id(n).to_string())
        .collect();
    let csv = dir.path().join("crm.csv");
    write_ids(&csv, "amplitude_id", ids[..1000].iter().cloned());
    let file = pipeline_file(
        dir.path(),
        "create-doubt",
        &e.base_url,
        "crm.csv",
        "amplitude_id",
        r#"create = { name = "CRM doubt", owner = "ops@example.com", published = true }"#,
        "chunk_size = 400",
    );
    // Killed after the creating upload was answered, before the journal recorded it.
    let (code, _, stderr) = cli_run(
        dir.path(),
        &file,
        &[("COHORT_SYNC_CRASH_AT", "reverse.chunk.answered")],
    );
    assert_eq!(code, None, "killed by its crash point: {stderr}");
    let log = emu::requests(&e.base_url).await;
    assert_eq!(changes(&log), vec![("UPLOAD".to_string(), 400)]);
    let since = log.last().map_or(0, |l| l.seq);

    // The list grows before the next run: a plan only reports what a run will do.
    write_ids(&csv, "amplitude_id", ids.iter().cloned());
    let plan = std::process::Command::new(env!("CARGO_BIN_EXE_cohort-sync"))
        .args([
            "plan",
            file.to_str().expect("path"),
            "--report",
            "plan.json",
        ])
        .current_dir(dir.path())
        .env("COHORT_SYNC_TIME_SCALE", "0.01")
        .output()
        .expect("plan");
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let planned: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("plan.json")).expect("plan report"),
    )
    .expect("plan JSON");
    let rev = &planned["pipelines"][0]["reverse"];
    assert_eq!(rev["superseded"]["marked"], false, "{rev}");
    assert_eq!(rev["outcome"], "planned");
    assert_eq!(
        journal_head(dir.path(), "create-doubt", "new-CRM_doubt")["status"],
        "open",
        "a plan changes nothing"
    );

    let (code, report, stderr) = cli_run(dir.path(), &file, &[]);
    assert_eq!(code, Some(0), "{stderr}\n{report}");
    let rev = &report["pipelines"][0]["reverse"];
    assert_eq!(rev["superseded"]["marked"], true, "{rev}");
    let created = rev["target"]["cohort_id"]
        .as_str()
        .expect("cohort id")
        .to_string();
    let log = emu::requests_since(&e.base_url, since).await;
    assert!(
        !log.iter().any(|l| l.path == UPLOAD),
        "no second cohort: {:?}",
        changes(&log)
    );
    assert!(
        log.iter()
            .filter(|l| l.path == MEMBERSHIP)
            .all(|l| l.cohort_id.as_deref() == Some(&created))
    );
    assert_eq!(
        member_amplitude_ids(&e.base_url, &created).await,
        ids.iter().cloned().collect()
    );
}

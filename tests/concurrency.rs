//! Two runners at once on one state: they are made to overlap on purpose (the second
//! starts when the emulator's log shows the first one's work in progress, with jobs and
//! calls slowed down by the emulator, never by sleeps in the test), and the emulator's
//! log shows that no cohort was requested twice and no reverse call sent by both. Each
//! test runs three times: with the state on S3 (moto), on Azure Blob Storage (Azurite) and
//! in a local directory. Both hold here:
//! these runs find leases held or free, never the same lease expired at the same instant
//! (the one gap of a local directory, shown in tests/state_stores.rs).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cohort_sync::emulator::{FaultKind, FaultRule};
use common::emulator::{EVENT_DEADLINE, cohort};
use common::expect::{expected_digest, export_columns};
use common::harness::{self, outcomes};
use common::log::{self, LIST, MEMBERSHIP, REQUEST_STATUS, spent_requests};
use serde_json::Value;

/// Where a test keeps its state (and, for exports, its output).
#[derive(Clone, Copy, Debug)]
enum StateAt {
    S3,
    Azure,
    LocalDir,
}

impl StateAt {
    /// `(output, state)` URLs for a run named `name`.
    fn urls(self, h: &harness::Harness, name: &str) -> (String, String) {
        match self {
            StateAt::S3 => {
                let bucket = common::s3::create_bucket(name);
                (format!("s3://{bucket}/out"), format!("s3://{bucket}/state"))
            }
            StateAt::Azure => {
                let container = common::azure::create_container(name);
                (
                    format!("az://{container}/out"),
                    format!("az://{container}/state"),
                )
            }
            StateAt::LocalDir => (
                h.path("out").to_string_lossy().into_owned(),
                h.path("state").to_string_lossy().into_owned(),
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_exports_at_once_on_s3_state_request_and_export_each_cohort_once() {
    two_exports_at_once_request_and_export_each_cohort_once(StateAt::S3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_exports_at_once_on_azure_state_request_and_export_each_cohort_once() {
    two_exports_at_once_request_and_export_each_cohort_once(StateAt::Azure).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_exports_at_once_on_a_local_state_dir_request_and_export_each_cohort_once() {
    two_exports_at_once_request_and_export_each_cohort_once(StateAt::LocalDir).await;
}

async fn two_exports_at_once_request_and_export_each_cohort_once(at: StateAt) {
    let ids: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
    let cohorts = ids.iter().map(|id| cohort(id, 500)).collect();
    // Each job takes 2 s (scaled: 200 Amplitude seconds × 0.01).
    let h = harness::start(cohorts, |c| c.job_duration = Duration::from_secs(200)).await;
    let (output, state) = at.urls(&h, "overlap");
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let file = h.export_pipeline("shared", &refs, &output, &state, "");
    let first = {
        let h = &h;
        let file = file.clone();
        async move { h.run_env(&[&file], &[], &[]).await }
    };
    let second = async {
        // The barrier: the first runner has a job in progress.
        h.wait_for_request("the first runner's request", |r| {
            r.path.starts_with(REQUEST_STATUS)
        })
        .await;
        h.run_env(&[&file], &[], &[]).await
    };
    let ((code_a, report_a, err_a), (code_b, report_b, err_b)) = tokio::join!(first, second);
    let report_a = report_a.unwrap_or_else(|| panic!("no report A: {err_a}"));
    let report_b = report_b.unwrap_or_else(|| panic!("no report B: {err_b}"));
    // They overlapped: the second run started while the first held leases.
    let started_b = report_b["started_at"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let finished_a = report_a["finished_at"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(started_b < finished_a, "B started after A finished");

    let log = h.requests().await;
    // They overlapped in the emulator's log too: the second runner's cohort list (each
    // runner lists once) came before the last status or file call of the runs.
    let lists: Vec<u64> = log
        .iter()
        .filter(|r| r.path == LIST)
        .map(|r| r.seq)
        .collect();
    assert_eq!(lists.len(), 2, "one cohort list per runner");
    let last_work = log
        .iter()
        .filter(|r| r.path.starts_with(REQUEST_STATUS) || r.path.ends_with("/file"))
        .map(|r| r.seq)
        .max()
        .expect("status and file calls");
    assert!(
        lists[1] < last_work,
        "the second runner started after all work ended"
    );
    let spent: Vec<String> = spent_requests(&log)
        .iter()
        .map(|r| r.cohort_id.clone().unwrap_or_default())
        .collect();
    let distinct: BTreeSet<&String> = spent.iter().collect();
    assert_eq!(spent.len(), 10, "one request per cohort: {spent:?}");
    assert_eq!(distinct.len(), 10);

    let exported = |report: &Value| -> BTreeSet<String> {
        outcomes(report)
            .into_iter()
            .filter(|(_, o)| o == "exported")
            .map(|(c, _)| c)
            .collect()
    };
    let (a, b) = (exported(&report_a), exported(&report_b));
    assert!(
        a.is_disjoint(&b),
        "exported by both: {:?}",
        a.intersection(&b)
    );
    assert_eq!(a.len() + b.len(), 10, "A {a:?}, B {b:?}");
    // What a runner did not export, the other did; it says why (another runner exported
    // it meanwhile, or holds it).
    for (report, code, err) in [(&report_a, code_a, &err_a), (&report_b, code_b, &err_b)] {
        for (c, o) in outcomes(report) {
            assert!(
                ["exported", "skipped_unchanged", "skipped_leased"].contains(&o.as_str()),
                "{c}: {o}\n{err}"
            );
        }
        let leased = outcomes(report).iter().any(|(_, o)| o == "skipped_leased");
        assert_eq!(code, if leased { 1 } else { 0 }, "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_reverse_run_on_the_same_target_on_s3_state_sends_nothing_and_says_why() {
    a_second_reverse_run_on_the_same_target_sends_nothing_and_says_why(StateAt::S3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_reverse_run_on_the_same_target_on_azure_state_sends_nothing_and_says_why() {
    a_second_reverse_run_on_the_same_target_sends_nothing_and_says_why(StateAt::Azure).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_reverse_run_on_the_same_target_on_a_local_state_dir_sends_nothing_and_says_why() {
    a_second_reverse_run_on_the_same_target_sends_nothing_and_says_why(StateAt::LocalDir).await;
}

async fn a_second_reverse_run_on_the_same_target_sends_nothing_and_says_why(at: StateAt) {
    let h = harness::start(vec![cohort("target", 1_000)], |_| {}).await;
    let source = h.write_crm_source("target", 0..990, 600);
    let file = h.reverse_pipeline(
        "crm",
        "crm.csv",
        "amplitude_id",
        "cohort_id = \"target\"",
        "mode = \"mirror\"\nchunk_size = 200",
    );
    let (_, state) = at.urls(&h, "reverse");
    let text = std::fs::read_to_string(&file).expect("pipeline");
    let text = text.replacen(
        "[state]\nurl = \"state\"",
        &format!("[state]\nurl = \"{state}\""),
        1,
    );
    assert!(text.contains(&state), "{text}");
    // On Azure the CRM list is read from the container too.
    let text = match at {
        StateAt::Azure => {
            let source_url = state.replacen("/state", "/crm/list.csv", 1);
            let container = source_url
                .trim_start_matches("az://")
                .split('/')
                .next()
                .unwrap_or_default()
                .to_string();
            common::azure::put(&container, "crm/list.csv", &h.path("crm.csv"));
            std::fs::remove_file(h.path("crm.csv")).expect("remove the local copy");
            text.replacen("url = \"crm.csv\"", &format!("url = \"{source_url}\""), 1)
        }
        _ => text,
    };
    std::fs::write(&file, text).expect("pipeline");
    // Each membership call is applied, then its answer held 3 s: the first runner is
    // busy long enough for the second to find its lease.
    let mut slow = FaultRule::new(FaultKind::Stall, "/api/3/cohorts/membership", 100);
    slow.delay_secs = Some(300.0);
    h.add_fault(&slow).await;
    let first = {
        let h = &h;
        let file = file.clone();
        async move { h.run_env(&[&file], &[], &[]).await }
    };
    let second = async {
        h.wait_for_request("the first runner's membership call", |r| {
            r.path == MEMBERSHIP
        })
        .await;
        let since = h.requests().await.len();
        let out = h.run_env(&[&file], &[], &[]).await;
        (out, since)
    };
    let ((code_a, report_a, err_a), ((code_b, report_b, err_b), since)) =
        tokio::join!(first, second);
    assert_eq!(code_a, 0, "{err_a}");
    assert_eq!(code_b, 1, "{err_b}");
    let report_b = report_b.expect("report B");
    let rev = &report_b["pipelines"][0]["reverse"];
    assert_eq!(rev["outcome"], "leased_elsewhere", "{rev:#}");
    let error = report_b["pipelines"][0]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("another runner is reconciling"), "{error}");
    assert!(
        error.contains(
            report_a
                .as_ref()
                .and_then(|r| r["run_id"].as_str())
                .unwrap_or("?")
        ),
        "names the other run: {error}"
    );
    // B sent no membership call (all calls after B started were A's: 3 chunks in total).
    let log = h.requests().await;
    let calls = log::change_calls(&log).len();
    assert_eq!(calls, 4, "600 adds in 3 chunks + 10 removes: {calls}");
    assert!(since > 0);
    let got = h.member_ids("target").await;
    assert!(
        got == source,
        "membership differs from the source: {} missing, {} extra",
        source.difference(&got).count(),
        got.difference(&source).count()
    );
}

/// Whether process `pid` is stopped (state `T` in /proc/PID/stat).
fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .and_then(|i| s[i + 1..].split_whitespace().next().map(str::to_string))
        })
        .is_some_and(|state| state == "T" || state == "t")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_holder_paused_past_its_lease_on_s3_state_is_taken_over_and_its_writes_are_refused() {
    a_holder_paused_past_its_lease_is_taken_over_and_its_writes_are_refused(StateAt::S3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_holder_paused_past_its_lease_on_azure_state_is_taken_over_and_its_writes_are_refused() {
    a_holder_paused_past_its_lease_is_taken_over_and_its_writes_are_refused(StateAt::Azure).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_holder_paused_past_its_lease_on_a_local_state_dir_is_taken_over_and_its_writes_are_refused()
 {
    a_holder_paused_past_its_lease_is_taken_over_and_its_writes_are_refused(StateAt::LocalDir)
        .await;
}

async fn a_holder_paused_past_its_lease_is_taken_over_and_its_writes_are_refused(at: StateAt) {
    let h = harness::start(vec![cohort("paused", 2_000)], |_| {}).await;
    let (output, state) = at.urls(&h, "paused");
    let file = h.export_pipeline("paused", &["paused"], &output, &state, "");
    let file_s = file.to_string_lossy().into_owned();
    let report_a = h.path("report-a.json");
    // A freezes (SIGSTOP) with its file complete, just before publishing it.
    let a = h
        .command(&["run", &file_s, "--report", &report_a.to_string_lossy()])
        .env("COHORT_SYNC_CRASH_AT", "export.upload.completed:stop")
        .spawn()
        .expect("spawn A");
    let pid = a.id().expect("pid");
    let deadline = Instant::now() + EVENT_DEADLINE;
    while !is_stopped(pid) {
        assert!(Instant::now() < deadline, "A never reached its stop point");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // B waits out A's lease (A's heartbeat is frozen too) and exports the cohort.
    let (code_b, report_b, err_b) = h.run_env(&[&file], &[], &[]).await;
    assert_eq!(code_b, 0, "{err_b}");
    let report_b = report_b.expect("report B");
    assert_eq!(
        report_b["pipelines"][0]["cohorts"][0]["outcome"],
        "exported"
    );
    assert_eq!(
        report_b["pipelines"][0]["cohorts"][0]["request_reused"], true,
        "B downloads A's request: {report_b:#}"
    );

    // A wakes up: its fence finds the lease taken over and it writes nothing.
    let resumed = tokio::process::Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .status()
        .await
        .expect("kill -CONT");
    assert!(resumed.success());
    let out_a = a.wait_with_output().await.expect("A ends");
    let err_a = String::from_utf8_lossy(&out_a.stderr);
    assert_eq!(out_a.status.code(), Some(1), "{err_a}");
    let report_a: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_a).expect("report A")).expect("JSON");
    let a_cohort = &report_a["pipelines"][0]["cohorts"][0];
    assert_eq!(a_cohort["outcome"], "failed", "{a_cohort:#}");
    let detail = a_cohort["detail"].as_str().unwrap_or_default();
    // (B has finished and released the lease by then: it is gone rather than B's.)
    assert!(detail.contains("not publishing the file"), "{detail}");
    assert!(detail.contains("lease was lost"), "{detail}");

    // A's unpublished file is gone with it (a local output stages files under `_staging/`).
    if let StateAt::LocalDir = at {
        let staging = h.path("out").join("_staging");
        assert!(!staging.exists(), "A left {}", staging.display());
    }

    // One request in all, one exact file, B's _SUCCESS only.
    assert_eq!(spent_requests(&h.requests().await).len(), 1);
    let tree = common::peers::check_tree(&output, &export_columns(&h.cohorts[0]));
    let objects: Vec<&str> = tree["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let successes: Vec<&&str> = objects.iter().filter(|o| o.ends_with("_SUCCESS")).collect();
    assert_eq!(successes.len(), 1, "{objects:?}");
    assert!(successes[0].contains(report_b["run_id"].as_str().unwrap_or("?")));
    assert_eq!(tree["dataset_rows"].as_u64(), Some(2_000), "{tree:#}");
    let spec = &h.cohorts[0];
    let file = tree["files"]
        .as_object()
        .and_then(|f| f.values().next())
        .expect("a file");
    assert_eq!(
        file["digest"].as_str(),
        Some(expected_digest(spec, &spec.props).as_str())
    );
}

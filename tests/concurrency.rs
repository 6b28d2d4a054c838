//! Two runners at once on one state: they are made to overlap on purpose (the second
//! starts when the emulator's log shows the first one's work in progress, with jobs and
//! calls slowed down by the emulator, never by sleeps in the test), and the emulator's
//! log shows that no cohort was requested twice and no reverse call sent by both.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use cohort_sync::emulator::{FaultKind, FaultRule};
use common::runner::{self, Harness, cohort, spent_requests};
use serde_json::Value;

/// Waits until the emulator's log holds a request matching `pred` (bounded: 60 s).
async fn wait_for_log(h: &Harness, what: &str, pred: impl Fn(&Value) -> bool) {
    for _ in 0..6_000 {
        if h.requests().await.iter().any(&pred) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the emulator never saw {what}");
}

fn outcomes(report: &Value) -> Vec<(String, String)> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_exports_at_once_on_s3_state_request_and_export_each_cohort_once() {
    let ids: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
    let cohorts = ids.iter().map(|id| cohort(id, 500, &[])).collect();
    // Each job takes 2 s (scaled: 200 Amplitude seconds × 0.01).
    let h = runner::start(cohorts, |c| c.job_duration = Duration::from_secs(200)).await;
    let bucket = common::create_bucket("overlap");
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let file = h.export_pipeline(
        "shared",
        &refs,
        &format!("s3://{bucket}/out"),
        &format!("s3://{bucket}/state"),
        "",
    );
    let first = {
        let h = &h;
        let file = file.clone();
        async move { h.run_env(&[&file], &[], &[]).await }
    };
    let second = async {
        // The barrier: the first runner has a job in progress.
        wait_for_log(&h, "the first runner's request", |r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/api/5/cohorts/request-status/"))
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
    let spent: Vec<String> = spent_requests(&log)
        .iter()
        .map(|r| r["cohort_id"].as_str().unwrap_or_default().to_string())
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
async fn a_second_reverse_run_on_the_same_target_sends_nothing_and_says_why() {
    use cohort_sync::emulator::universe::{amplitude_id, member_numbers};
    let spec = cohort("target", 1_000, &[]);
    let h = runner::start(vec![spec.clone()], |_| {}).await;
    let members: Vec<u64> = member_numbers(spec.seed, "target", 1_000).collect();
    let mut csv = String::from("amplitude_id\n");
    let known: BTreeSet<u64> = members.iter().copied().collect();
    let newcomers: Vec<u64> = member_numbers(spec.seed + 1, "others", 2_000)
        .filter(|n| !known.contains(n))
        .take(600)
        .collect();
    let source: BTreeSet<String> = members[..990]
        .iter()
        .chain(&newcomers)
        .map(|n| amplitude_id(*n).to_string())
        .collect();
    for id in &source {
        csv.push_str(id);
        csv.push('\n');
    }
    std::fs::write(h.path("crm.csv"), csv).expect("source");
    let file = h.write(
        "crm",
        &format!(
            "kind = \"reverse\"\nname = \"crm\"\n\n{}\n[state]\nurl = \"state\"\n\n[source]\nurl = \"crm.csv\"\nid_column = \"amplitude_id\"\nid_kind = \"amplitude_id\"\n\n[target]\ncohort_id = \"target\"\n\n[reconcile]\nmode = \"mirror\"\nchunk_size = 200\n",
            h.connection()
        ),
    );
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
        wait_for_log(&h, "the first runner's membership call", |r| {
            r["path"] == "/api/3/cohorts/membership"
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
    let calls = log
        .iter()
        .filter(|r| r["path"] == "/api/3/cohorts/membership")
        .count();
    assert_eq!(calls, 4, "600 adds in 3 chunks + 10 removes: {calls}");
    assert!(since > 0);
    let got: BTreeSet<String> =
        common::emulator::members(&h.emu.base_url, runner::APP_ID, "target")
            .await
            .into_iter()
            .map(|(a, _)| a.to_string())
            .collect();
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
async fn a_holder_paused_past_its_lease_is_taken_over_and_its_writes_are_refused() {
    let h = runner::start(vec![cohort("paused", 2_000, &[])], |_| {}).await;
    let bucket = common::create_bucket("paused");
    let file = h.export_pipeline(
        "paused",
        &["paused"],
        &format!("s3://{bucket}/out"),
        &format!("s3://{bucket}/state"),
        "",
    );
    let file_s = file.to_string_lossy().into_owned();
    let report_a = h.path("report-a.json");
    // A freezes (SIGSTOP) with its file complete, just before publishing it.
    let a = h
        .command(&["run", &file_s, "--report", &report_a.to_string_lossy()])
        .env("COHORT_SYNC_CRASH_AT", "export.upload.completed:stop")
        .spawn()
        .expect("spawn A");
    let pid = a.id().expect("pid");
    for _ in 0..6_000 {
        if is_stopped(pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(is_stopped(pid), "A never reached its stop point");

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
    let resumed = std::process::Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .status()
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

    // One request in all, one exact file, B's _SUCCESS only.
    assert_eq!(spent_requests(&h.requests().await).len(), 1);
    let root = format!("s3://{bucket}/out");
    let tree = common::runner::check_tree(&root, &common::runner::export_columns(&h.cohorts[0]));
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
        Some(common::runner::expected_digest(spec, &spec.props).as_str())
    );
}

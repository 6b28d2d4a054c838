//! The quota-aware runner end to end against the time-scaled emulator. Every assertion
//! about requests reads the emulator's own request log (its admin endpoint), not the
//! runner's counters.

mod common;

use cohort_sync::emulator::FaultKind;
use common::runner::{self, cohort, matching, spent_requests, status_count};
use serde_json::Value;

fn outcomes(report: &Value) -> Vec<String> {
    report["pipelines"][0]["cohorts"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| c["outcome"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn count(v: &[String], what: &str) -> usize {
    v.iter().filter(|o| o.as_str() == what).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn second_run_with_nothing_changed_spends_nothing() {
    let cohorts = (0..4).map(|i| cohort(&format!("c{i}"), 50, &[])).collect();
    let h = runner::start(cohorts, |_| {}).await;
    let file = h.export_pipeline("twice", &[], "out", "state", "");
    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(spent_requests(&h.requests().await).len(), 4);
    assert_eq!(
        report["pipelines"][0]["requests"].as_array().map(Vec::len),
        Some(4)
    );
    for r in report["pipelines"][0]["requests"]
        .as_array()
        .into_iter()
        .flatten()
    {
        assert_eq!(r["reason"], "first_export", "{r:#}");
        assert!(r["request_id"].as_str().is_some());
    }

    h.clear_requests().await;
    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}");
    let log = h.requests().await;
    assert_eq!(
        spent_requests(&log).len(),
        0,
        "second run spent quota: {log:#?}"
    );
    assert!(matching(&log, "/file").is_empty());
    assert_eq!(count(&outcomes(&report), "skipped_unchanged"), 4);

    // One cohort recomputed: only it is downloaded again, for that reason.
    h.patch_cohort(
        "c2",
        serde_json::json!({ "last_computed_ms": 1_765_000_000_000i64 }),
    )
    .await;
    h.clear_requests().await;
    let (code, report, _) = h.run(&file, &[]).await;
    assert_eq!(code, 0);
    let log = h.requests().await;
    let spent = spent_requests(&log);
    assert_eq!(spent.len(), 1);
    assert_eq!(spent[0]["cohort_id"], "c2");
    assert_eq!(
        report["pipelines"][0]["requests"][0]["reason"],
        "cohort_changed"
    );

    // --force always requests anew (the earlier file may be the one being replaced): four
    // requests, four files, none reused.
    h.clear_requests().await;
    let (code, report, _) = h.run(&file, &["--force"]).await;
    assert_eq!(code, 0);
    let log = h.requests().await;
    assert_eq!(spent_requests(&log).len(), 4);
    assert_eq!(matching(&log, "/file").len(), 4);
    let reasons: Vec<&serde_json::Value> = report["pipelines"][0]["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| &r["reason"])
        .collect();
    assert_eq!(reasons, vec!["forced"; 4], "{report:#}");
    let cohorts = report["pipelines"][0]["cohorts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(cohorts.len(), 4);
    assert!(
        cohorts
            .iter()
            .all(|c| c["outcome"] == "exported" && c["request_reused"] == false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seventy_cohorts_spend_exactly_seventy_requests_and_never_hit_a_limit() {
    let cohorts = (0..70)
        .map(|i| cohort(&format!("k{i:02}"), 20, &[]))
        .collect();
    let h = runner::start(cohorts, |_| {}).await;
    let file = h.export_pipeline(
        "seventy",
        &[],
        "out",
        "state",
        "[quota]\nmax_parallel = 5\n",
    );
    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}");
    let log = h.requests().await;
    assert_eq!(spent_requests(&log).len(), 70);
    assert_eq!(status_count(&log, 429), 0, "a rate limit was hit");
    assert_eq!(count(&outcomes(&report), "exported"), 70);
    assert_eq!(report["pipelines"][0]["quota_spent"], 70);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_what_fits_the_budget_runs_and_the_rest_is_deferred() {
    let cohorts = (0..8).map(|i| cohort(&format!("b{i}"), 10, &[])).collect();
    let h = runner::start(cohorts, |_| {}).await;
    h.set_usage(495).await;
    let file = h.export_pipeline("budget", &[], "out", "state", "[quota]\nreserve = 0\n");

    // plan says so without spending anything.
    let file_s = file.to_string_lossy().into_owned();
    let (code, stdout, stderr) = h.cli(&["plan", &file_s]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("deferred"), "{stdout}");
    assert_eq!(
        spent_requests(&h.requests().await).len(),
        0,
        "plan spent quota"
    );

    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 3, "{stderr}");
    let o = outcomes(&report);
    assert_eq!(count(&o, "exported"), 5, "{o:?}");
    assert_eq!(count(&o, "deferred_quota"), 3, "{o:?}");
    let log = h.requests().await;
    assert_eq!(spent_requests(&log).len(), 5);
    assert_eq!(
        status_count(&log, 429),
        0,
        "nothing half-attempted against the limit"
    );
    let usage: Value = h
        .admin_get(&format!("/_emulator/apps/{}/usage", runner::APP_ID))
        .await
        .json()
        .await
        .expect("usage");
    assert_eq!(usage["used"], 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_download_failing_after_the_job_completed_costs_no_second_request() {
    let h = runner::start(vec![cohort("flaky", 30_000, &["gp:country"])], |_| {}).await;
    h.fault(FaultKind::Reset, "/file", 1).await;
    h.fault(FaultKind::Truncate, "/file", 1).await;
    let file = h.export_pipeline(
        "flaky",
        &["flaky"],
        "out",
        "state",
        "[download]\nprops = true\n",
    );
    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let log = h.requests().await;
    assert_eq!(
        spent_requests(&log).len(),
        1,
        "the cohort was requested twice"
    );
    let files = matching(&log, "/file");
    assert_eq!(files.len(), 3, "two failed bodies, then a good one");
    let rid = report["pipelines"][0]["cohorts"][0]["request_id"]
        .as_str()
        .expect("request id");
    assert!(
        files
            .iter()
            .all(|r| r["path"].as_str().is_some_and(|p| p.contains(rid)))
    );
    assert_eq!(report["pipelines"][0]["cohorts"][0]["file_attempts"], 3);
    assert_eq!(report["pipelines"][0]["cohorts"][0]["rows"], 30_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crashed_run_leaves_its_request_for_the_next_run_to_reuse() {
    let h = runner::start(vec![cohort("again", 100, &[])], |_| {}).await;
    // Every /file fails this run (more than the runner's attempts).
    h.fault(FaultKind::ServerError, "/file", 100).await;
    let file = h.export_pipeline("again", &["again"], "out", "state", "");
    let (code, _, _) = h.run(&file, &[]).await;
    assert_eq!(code, 1);
    h.clear_faults().await;
    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["pipelines"][0]["cohorts"][0]["request_reused"], true);
    assert_eq!(
        spent_requests(&h.requests().await).len(),
        1,
        "only the first run's request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_runners_on_one_s3_state_spend_each_request_once() {
    let cohorts: Vec<_> = (0..10)
        .map(|i| cohort(&format!("s{i}"), 2_000, &[]))
        .collect();
    let h = runner::start(cohorts, |_| {}).await;
    let bucket = common::create_bucket("shared-state");
    let file = h.export_pipeline(
        "shared",
        &[],
        &format!("s3://{bucket}/cohorts"),
        &format!("s3://{bucket}/state"),
        "[quota]\nmax_parallel = 2\n",
    );
    let (a, b) = tokio::join!(h.run(&file, &[]), h.run(&file, &[]));
    for (code, _, stderr) in [&a, &b] {
        assert!(*code == 0, "{stderr}");
    }
    let log = h.requests().await;
    let spent = spent_requests(&log);
    assert_eq!(spent.len(), 10, "a cohort's request was spent twice");
    let mut ids: Vec<&str> = spent
        .iter()
        .filter_map(|r| r["cohort_id"].as_str())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10);
    let exported = count(&outcomes(&a.1), "exported") + count(&outcomes(&b.1), "exported");
    assert_eq!(exported, 10, "every cohort exported by exactly one runner");
}

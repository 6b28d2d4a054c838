//! The quota-aware runner end to end against the time-scaled emulator. Every assertion
//! about what was spent reads the emulator's own request log and usage counter (its
//! admin endpoints), not the runner's counters; `plan` is checked against the run it
//! predicts.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use cohort_sync::emulator::{CohortSpec, FaultKind};
use common::emulator::{CohortSpecExt, cohort};
use common::expect::{expected_digest, export_columns};
use common::harness::{self, Harness, outcomes, with_outcome};
use common::log::{
    cohort_request_attempts, file_calls, matching, request_id_of, spent_cohorts, spent_requests,
    status_count,
};
use common::peers::check_tree;
use serde_json::Value;

fn count(report: &Value, what: &str) -> usize {
    outcomes(report).iter().filter(|(_, o)| o == what).count()
}

fn set(ids: &[&str]) -> Vec<String> {
    let s: BTreeSet<String> = ids.iter().map(|i| i.to_string()).collect();
    s.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn second_run_with_nothing_changed_spends_nothing() {
    let cohorts = (0..4).map(|i| cohort(&format!("c{i}"), 50)).collect();
    let h = harness::start(cohorts, |_| {}).await;
    let file = h.export_pipeline("twice", &[], "out", "state", "");
    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        spent_cohorts(&h.requests().await),
        set(&["c0", "c1", "c2", "c3"])
    );
    for r in report["pipelines"][0]["requests"]
        .as_array()
        .into_iter()
        .flatten()
    {
        assert_eq!(r["reason"], "first_export", "{r:#}");
    }

    h.clear_requests().await;
    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}");
    let log = h.requests().await;
    assert!(
        cohort_request_attempts(&log).is_empty(),
        "second run asked for a cohort: {log:#?}"
    );
    assert!(file_calls(&log, None).is_empty());
    assert_eq!(count(&report, "skipped_unchanged"), 4);

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
    assert_eq!(spent_cohorts(&log), ["c2"]);
    assert_eq!(
        report["pipelines"][0]["requests"][0]["reason"],
        "cohort_changed"
    );

    // --force always requests anew (the earlier file may be the one being replaced): four
    // requests, four files, each of its own new request id.
    h.clear_requests().await;
    let (code, report, _) = h.run(&file, &["--force"]).await;
    assert_eq!(code, 0);
    let log = h.requests().await;
    assert_eq!(spent_cohorts(&log), set(&["c0", "c1", "c2", "c3"]));
    for id in ["c0", "c1", "c2", "c3"] {
        let rid = request_id_of(&log, id);
        assert_eq!(file_calls(&log, Some(&rid)).len(), 1, "{id}");
    }
    assert_eq!(file_calls(&log, None).len(), 4);
    let reasons: Vec<&Value> = report["pipelines"][0]["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| &r["reason"])
        .collect();
    assert_eq!(reasons, vec!["forced"; 4], "{report:#}");
    assert_eq!(count(&report, "exported"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seventy_cohorts_spend_exactly_seventy_requests_and_never_hit_a_limit() {
    let cohorts = (0..70).map(|i| cohort(&format!("k{i:02}"), 20)).collect();
    let h = harness::start(cohorts, |_| {}).await;
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
    assert_eq!(spent_cohorts(&log).len(), 70, "one request per cohort");
    assert_eq!(status_count(&log, 429), 0, "a rate limit was hit");
    assert_eq!(count(&report, "exported"), 70);
    assert_eq!(h.usage().await.0, 70);
}

/// What `plan` printed for one cohort: `(would download, deferred)` from its line.
fn plan_line(stdout: &str, id: &str) -> (bool, bool) {
    let line = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .unwrap_or_else(|| panic!("plan does not name {id}:\n{stdout}"));
    (
        line.contains("would download"),
        line.contains("deferred (quota)"),
    )
}

/// `plan` says which cohorts a run would download and which it would defer, and what it
/// would spend — and spends nothing; then the run does exactly that, as the emulator's
/// log shows: `spend` are the cohorts requested, the rest deferred (exit 3).
async fn plan_then_run(h: &Harness, file: &std::path::Path, spend: &[&str], deferred: &[&str]) {
    let seq = h.last_seq().await;
    let (used, _) = h.usage().await;
    let plan = h.plan(&[file], &[]).await;
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    for id in spend {
        assert_eq!(
            plan_line(&plan.stdout, id),
            (true, false),
            "{id}\n{}",
            plan.stdout
        );
    }
    for id in deferred {
        assert_eq!(
            plan_line(&plan.stdout, id),
            (false, true),
            "{id}\n{}",
            plan.stdout
        );
    }
    assert!(
        plan.stdout
            .contains(&format!("quota would spend: {}", spend.len())),
        "{}",
        plan.stdout
    );
    let planned = plan.report();
    assert_eq!(with_outcome(planned, "planned"), set(spend), "{planned:#}");
    assert_eq!(with_outcome(planned, "deferred_quota"), set(deferred));
    assert_eq!(planned["pipelines"][0]["quota_spent"], spend.len());
    let log = h.requests_since(seq).await;
    assert!(
        cohort_request_attempts(&log).is_empty(),
        "plan asked for a cohort"
    );
    assert!(file_calls(&log, None).is_empty(), "plan downloaded");
    assert_eq!(h.usage().await.0, used, "plan spent quota");

    let (code, report, stderr) = h.run(file, &[]).await;
    assert_eq!(code, 3, "deferred by quota: {stderr}\n{report:#}");
    let log = h.requests_since(seq).await;
    assert_eq!(spent_cohorts(&log), set(spend), "the cohorts requested");
    assert_eq!(spent_requests(&log).len(), spend.len());
    // Nothing half-attempted: no deferred cohort was asked for, not even once. (A 429 on a
    // planned cohort's request, which a loaded machine can bunch up, costs nothing and is
    // retried: what was spent is checked above.)
    let attempted: BTreeSet<String> = cohort_request_attempts(&log)
        .iter()
        .filter_map(|r| r.cohort_id.clone())
        .collect();
    assert!(
        set(deferred).iter().all(|d| !attempted.contains(d)),
        "a deferred cohort was asked for: {attempted:?}"
    );
    assert_eq!(with_outcome(&report, "exported"), set(spend));
    assert_eq!(with_outcome(&report, "deferred_quota"), set(deferred));
    assert_eq!(h.usage().await.0, used + spend.len() as u32);
    // Deferred cohorts mean the data is not all there: no _SUCCESS.
    let run_id = report["run_id"].as_str().expect("run id");
    let name = report["pipelines"][0]["name"].as_str().expect("name");
    assert!(
        h.path(&format!("out/_runs/{run_id}/{name}/manifest.json"))
            .exists()
    );
    assert!(
        !h.path(&format!("out/_runs/{run_id}/{name}/_SUCCESS"))
            .exists()
    );
}

/// 8 cohorts, 5 downloads left this month, `reserve = 2`: 3 run.
fn budget_cohorts(sizes: &[u64]) -> Vec<CohortSpec> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, size)| cohort(&format!("p{i}"), *size))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_reserve_the_listed_priority_runs_the_first_listed() {
    let h = harness::start(budget_cohorts(&[10; 8]), |_| {}).await;
    h.set_usage(495).await;
    let file = h.export_pipeline(
        "listed",
        &["p5", "p1", "p7", "p3", "p0", "p2", "p4", "p6"],
        "out",
        "state",
        "[quota]\nreserve = 2\npriority = \"listed\"\n",
    );
    plan_then_run(
        &h,
        &file,
        &["p5", "p1", "p7"],
        &["p3", "p0", "p2", "p4", "p6"],
    )
    .await;
    assert_eq!(h.usage().await.0, 498, "the reserve of 2 is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_reserve_smallest_first_runs_the_smallest() {
    let h = harness::start(budget_cohorts(&[50, 10, 40, 20, 80, 30, 70, 60]), |_| {}).await;
    h.set_usage(495).await;
    let file = h.export_pipeline(
        "smallest",
        &[],
        "out",
        "state",
        "[quota]\nreserve = 2\npriority = \"smallest_first\"\n",
    );
    plan_then_run(
        &h,
        &file,
        &["p1", "p3", "p5"],
        &["p0", "p2", "p4", "p6", "p7"],
    )
    .await;
}

/// `stale_first` (the default): never exported first, then the longest since the last
/// export. s3, s1 and s5 were exported in that order (one run each); then every cohort
/// is recomputed and 4 downloads are left after the reserve: s0, s2, s4 (never exported)
/// and s3 (exported longest ago) run; the listed order (s5, s1, s3, s0, s2, s4) and the
/// most recent exports (s1, s5) would pick others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_reserve_stale_first_runs_never_exported_then_longest_ago() {
    let ids = ["s5", "s1", "s3", "s0", "s2", "s4"];
    let h = harness::start(ids.iter().map(|id| cohort(id, 10)).collect(), |_| {}).await;
    for id in ["s3", "s1", "s5"] {
        let one = h.export_pipeline("stale", &[id], "out", "state", "");
        let (code, _, stderr) = h.run(&one, &[]).await;
        assert_eq!(code, 0, "{stderr}");
    }
    assert_eq!(spent_cohorts(&h.requests().await), set(&["s1", "s3", "s5"]));
    for id in ids {
        h.patch_cohort(
            id,
            serde_json::json!({ "last_computed_ms": 1_765_000_000_000i64 }),
        )
        .await;
    }
    h.set_usage(490).await;
    let file = h.export_pipeline("stale", &ids, "out", "state", "[quota]\nreserve = 6\n");
    plan_then_run(&h, &file, &["s0", "s2", "s4", "s3"], &["s1", "s5"]).await;
}

/// Export `run --dry-run`: says what it would do, asks Amplitude for nothing but the free
/// list and usage calls, writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_spends_nothing_and_writes_nothing() {
    let h = harness::start(vec![cohort("d0", 30), cohort("d1", 30)], |_| {}).await;
    let file = h.export_pipeline("dry", &[], "out", "state", "");
    let (code, report, stderr) = h.run(&file, &["--dry-run"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["mode"], "dry_run");
    assert_eq!(with_outcome(&report, "planned"), set(&["d0", "d1"]));
    assert_eq!(
        report["pipelines"][0]["quota_spent"], 2,
        "what a run would spend"
    );
    let log = h.requests().await;
    assert!(cohort_request_attempts(&log).is_empty(), "{log:#?}");
    assert!(file_calls(&log, None).is_empty());
    assert_eq!(h.usage().await.0, 0);
    assert!(!h.path("out").exists(), "a dry run writes no output");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_download_failing_after_the_job_completed_costs_no_second_request() {
    let h = harness::start(vec![cohort("flaky", 30_000).props(&["gp:country"])], |_| {}).await;
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
    let rid = request_id_of(&log, "flaky");
    let files = file_calls(&log, None);
    assert_eq!(files.len(), 3, "two failed bodies, then a good one");
    assert_eq!(
        file_calls(&log, Some(&rid)).len(),
        3,
        "all for the one request"
    );
    assert_eq!(report["pipelines"][0]["cohorts"][0]["rows"], 30_000);
    assert_exact(&h, "out");
}

/// Every cohort of the harness is in the tree at `out`, exact (pyarrow vs. the universe).
fn assert_exact(h: &Harness, out: &str) {
    for spec in &h.cohorts {
        let tree = check_tree(&h.path(out).to_string_lossy(), &export_columns(spec));
        let files = tree["files"].as_object().expect("files");
        let mine: Vec<&Value> = files
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("cohort_id={}/", spec.id)))
            .map(|(_, v)| v)
            .collect();
        assert_eq!(mine.len(), 1, "{}: {tree:#}", spec.id);
        assert_eq!(mine[0]["rows"].as_u64(), Some(spec.size));
        assert_eq!(
            mine[0]["digest"].as_str(),
            Some(expected_digest(spec, &spec.props).as_str())
        );
    }
}

/// Killed (SIGKILL) right after the request's 202 was saved, while the job still runs:
/// the rerun polls and downloads that request — one spent request in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_killed_before_the_job_ended_leaves_its_request_for_the_rerun() {
    // The job takes 200 s of Amplitude time (2 s here): the kill lands while it runs.
    let h = harness::start(vec![cohort("again", 100)], |c| {
        c.job_duration = Duration::from_secs(200)
    })
    .await;
    let file = h.export_pipeline("again", &["again"], "out", "state", "");
    let (code, report, stderr) = h
        .run_env(
            &[&file],
            &[],
            &[(cohort_sync::crash::ENV, "export.request.saved")],
        )
        .await;
    assert_eq!(code, -9, "killed at its crash point: {stderr}");
    assert!(report.is_none(), "a killed run writes no report");
    let log = h.requests().await;
    let rid = request_id_of(&log, "again");
    assert!(file_calls(&log, None).is_empty(), "killed before the file");
    let seq = h.last_seq().await;

    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let log = h.requests_since(seq).await;
    assert!(
        cohort_request_attempts(&log).is_empty(),
        "the rerun asked for the cohort again"
    );
    assert!(
        !matching(&log, &format!("request-status/{rid}")).is_empty(),
        "the rerun polled the earlier request"
    );
    assert_eq!(file_calls(&log, Some(&rid)).len(), 1);
    assert_eq!(spent_requests(&h.requests().await).len(), 1);
    assert_eq!(h.usage().await.0, 1, "one download spent in all");
    assert_eq!(report["pipelines"][0]["cohorts"][0]["request_reused"], true);
    assert_exact(&h, "out");
}

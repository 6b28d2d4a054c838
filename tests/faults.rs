//! The fault matrix of the export: one named test per fault — every fault the emulator
//! injects, and the answers the real service was seen to give (an HTML page with status
//! 200, a CSV that is not a cohort, `JOB FAILED`, a status nobody documents, a 404 for a
//! request id, a request that times out after it was sent, a lease held by a live runner,
//! one cohort in two pipelines). Each ends with exact output or a clear error and the
//! right exit code, never a second request for a cohort where the first was usable, and a
//! rerun (faults cleared) that completes the export. The reverse side's refused chunks
//! (413, 400) are in `reverse_apply.rs`.

mod common;

use cohort_sync::emulator::{FaultKind, FaultRule};
use common::emulator::{APP_ID, CohortSpecExt, api_key, cohort, secret_key};
use common::expect::{expected_digest, export_columns};
use common::harness::{self, Harness};
use common::log::{file_calls, presigned, request_id_of, spent_requests, status_count};
use common::peers::check_tree;
use serde_json::Value;

const PROPS: &[&str] = &["gp:country"];

/// One cohort `a` of 2,000 members (served in the `/file` body) and, with `big`, a cohort
/// `b` of 60,000 (served through the 302 to the presigned listener).
async fn harness(big: bool) -> Harness {
    let mut cohorts = vec![cohort("a", 2_000).props(PROPS)];
    if big {
        cohorts.push(cohort("b", 60_000).props(PROPS));
    }
    harness::start(cohorts, |c| c.redirect_threshold_rows = 50_000).await
}

fn pipeline(h: &Harness, extra: &str) -> std::path::PathBuf {
    let ids: Vec<&str> = h.cohorts.iter().map(|c| c.id.as_str()).collect();
    h.export_pipeline(
        "faulty",
        &ids,
        "out",
        "state",
        &format!("[download]\nprops = true\n{extra}"),
    )
}

fn rule(kind: FaultKind, path: &str, count: u32) -> FaultRule {
    FaultRule::new(kind, path, count)
}

async fn run(h: &Harness, file: &std::path::Path) -> (i32, Value, String) {
    let (code, report, stderr) = h.run_env(&[file], &[], &[]).await;
    let report = report.unwrap_or_else(|| panic!("no report; exit {code}\n{stderr}"));
    (code, report, stderr)
}

fn cohort_entry<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["pipelines"][0]["cohorts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["cohort_id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {report:#}"))
}

/// Every cohort of the harness is in the output once and exact, read by pyarrow and DuckDB.
fn assert_exact(h: &Harness) {
    let tree = check_tree(
        &h.path("out").to_string_lossy(),
        &export_columns(&h.cohorts[0]),
    );
    let files = tree["files"].as_object().expect("files");
    let mut total = 0;
    for spec in &h.cohorts {
        let mine: Vec<&Value> = files
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("cohort_id={}/", spec.id)))
            .map(|(_, v)| v)
            .collect();
        assert_eq!(mine.len(), 1, "{}: {tree:#}", spec.id);
        assert_eq!(mine[0]["rows"].as_u64(), Some(spec.size));
        assert_eq!(
            mine[0]["digest"].as_str(),
            Some(expected_digest(spec, &spec.props).as_str()),
            "{}: values differ from the emulator's members",
            spec.id
        );
        total += spec.size;
    }
    assert_eq!(tree["dataset_rows"].as_u64(), Some(total), "{tree:#}");
    assert_eq!(tree["duckdb_rows"].as_u64(), Some(total), "{tree:#}");
}

/// Nothing of cohort `id` was published, and no `_SUCCESS` exists.
fn assert_nothing_published(h: &Harness, id: &str) {
    let tree = check_tree(
        &h.path("out").to_string_lossy(),
        &export_columns(&h.cohorts[0]),
    );
    let objects: Vec<&str> = tree["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        !objects
            .iter()
            .any(|o| o.starts_with(&format!("cohort_id={id}/"))),
        "{objects:?}"
    );
    assert!(
        !objects.iter().any(|o| o.ends_with("_SUCCESS")),
        "{objects:?}"
    );
    assert!(
        !objects.iter().any(|o| o.contains('#')),
        "left behind: {objects:?}"
    );
}

/// The second run, faults cleared: exit 0 and exact output.
async fn rerun_clean(h: &Harness, file: &std::path::Path) -> Value {
    h.clear_faults().await;
    let (code, report, stderr) = run(h, file).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    assert_exact(h);
    report
}

async fn spent(h: &Harness) -> usize {
    spent_requests(&h.requests().await).len()
}

fn request_reasons(report: &Value) -> Vec<String> {
    report["pipelines"][0]["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

// ---- answers the real service was seen to give --------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_html_page_with_status_200_is_asked_again_and_never_published() {
    let h = harness(false).await;
    let file = pipeline(&h, "");
    h.add_fault(&rule(FaultKind::Body, "/file", 1)).await;
    let (code, report, stderr) = run(&h, &file).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    assert_eq!(cohort_entry(&report, "a")["file_attempts"], 2);
    assert_eq!(
        spent(&h).await,
        1,
        "asked /file again, never requested again"
    );
    assert_exact(&h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_html_page_every_time_fails_the_cohort_and_the_rerun_reuses_the_request() {
    let h = harness(false).await;
    let file = pipeline(&h, "");
    h.add_fault(&rule(FaultKind::Body, "/file", 20)).await;
    let (code, report, _) = run(&h, &file).await;
    assert_eq!(code, 1, "{report:#}");
    let a = cohort_entry(&report, "a");
    assert_eq!(a["outcome"], "failed");
    let detail = a["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("amplitude_id"), "{detail}");
    assert!(detail.contains("<html>"), "{detail}");
    assert_nothing_published(&h, "a");
    rerun_clean(&h, &file).await;
    assert_eq!(spent(&h).await, 1, "the rerun reused the kept request id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_that_is_not_a_cohort_is_never_published() {
    let h = harness(false).await;
    let file = pipeline(&h, "");
    let mut wrong = rule(FaultKind::Body, "/file", 20);
    wrong.body = Some("\"foo\",\"bar\"\n\"1\",\"2\"\n".into());
    h.add_fault(&wrong).await;
    let (code, report, _) = run(&h, &file).await;
    assert_eq!(code, 1, "{report:#}");
    let detail = cohort_entry(&report, "a")["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        detail.contains("amplitude_id") && detail.contains("foo"),
        "{detail}"
    );
    assert_nothing_published(&h, "a");
    // Not recorded as exported: the rerun exports it (with the same request).
    let report = rerun_clean(&h, &file).await;
    assert_eq!(cohort_entry(&report, "a")["outcome"], "exported");
    assert_eq!(spent(&h).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_far_from_the_listed_size_is_never_published() {
    let h = harness(false).await;
    let file = pipeline(&h, "");
    // A cohort CSV with the right header and 10 rows, for a cohort listed at 2,000.
    let mut short = rule(FaultKind::Body, "/file", 20);
    let mut body = String::from("\"amplitude_id\",\"user_id\",\"gp:country\"\n");
    for i in 1..=10 {
        body.push_str(&format!("\"{i}\",\"u{i}\",\"DE\"\n"));
    }
    short.body = Some(body);
    h.add_fault(&short).await;
    let (code, report, _) = run(&h, &file).await;
    assert_eq!(code, 1, "{report:#}");
    let detail = cohort_entry(&report, "a")["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(detail.contains("2000"), "names the listed size: {detail}");
    assert_nothing_published(&h, "a");
    rerun_clean(&h, &file).await;
    assert_eq!(spent(&h).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_failed_replaces_the_request_once() {
    let h = harness(false).await;
    let file = pipeline(&h, "");
    h.add_fault(&rule(FaultKind::JobFailed, "request-status", 1))
        .await;
    let (code, report, stderr) = run(&h, &file).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    assert_eq!(spent(&h).await, 2);
    assert_eq!(
        request_reasons(&report),
        vec!["first_export", "earlier_request_failed"]
    );
    assert_exact(&h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_status_replaces_the_request_once() {
    let h = harness(false).await;
    let file = pipeline(&h, "");
    h.add_fault(&rule(FaultKind::UnknownStatus, "request-status", 1))
        .await;
    let (code, report, stderr) = run(&h, &file).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    assert_eq!(spent(&h).await, 2);
    assert_eq!(
        request_reasons(&report),
        vec!["first_export", "earlier_request_failed"]
    );
    assert_exact(&h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_failing_twice_is_dropped_and_the_next_run_requests_anew() {
    let h = harness(false).await;
    let file = pipeline(&h, "");
    h.add_fault(&rule(FaultKind::JobFailed, "request-status", 2))
        .await;
    let (code, report, _) = run(&h, &file).await;
    assert_eq!(code, 1, "{report:#}");
    let detail = cohort_entry(&report, "a")["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(detail.contains("JOB FAILED"), "{detail}");
    assert!(detail.contains("requests the cohort anew"), "{detail}");
    assert_eq!(spent(&h).await, 2);
    // Not stranded: the next run (even without --force) requests anew and exports.
    let report = rerun_clean(&h, &file).await;
    assert_eq!(spent(&h).await, 3);
    assert_eq!(request_reasons(&report).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_for_the_request_id_replaces_it() {
    let h = harness(false).await;
    let file = pipeline(&h, "");
    h.add_fault(&rule(FaultKind::NotFound, "request-status", 1))
        .await;
    let (code, report, stderr) = run(&h, &file).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    assert_eq!(spent(&h).await, 2);
    assert_exact(&h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_for_the_file_replaces_the_request() {
    let h = harness(false).await;
    let file = pipeline(&h, "");
    h.add_fault(&rule(FaultKind::NotFound, "/file", 1)).await;
    let (code, report, stderr) = run(&h, &file).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    assert_eq!(spent(&h).await, 2);
    assert_exact(&h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_times_out_is_reported_possibly_spent() {
    let h = harness(false).await;
    let file = pipeline(&h, "");
    // Handled (the emulator counts it), then held 10 s: the client gives up after 1 s.
    let mut stall = rule(FaultKind::Stall, "/api/5/cohorts/request/", 1);
    stall.delay_secs = Some(1_000.0);
    h.add_fault(&stall).await;
    let text = std::fs::read_to_string(&file).expect("pipeline");
    std::fs::write(
        &file,
        text.replace("app_id = 4242\n", "app_id = 4242\nread_timeout_secs = 1\n"),
    )
    .expect("pipeline");
    let (code, report, _) = run(&h, &file).await;
    assert_eq!(code, 1, "{report:#}");
    let p = &report["pipelines"][0];
    assert_eq!(p["quota_spent"], 0, "{p:#}");
    assert_eq!(p["quota_possibly_spent"], 1, "{p:#}");
    assert_eq!(p["requests"][0]["outcome_unknown"], true, "{p:#}");
    assert_eq!(spent(&h).await, 1, "the emulator did count it");
    let report = rerun_clean(&h, &file).await;
    assert_eq!(report["pipelines"][0]["quota_spent"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_kept_alive_by_another_runner_means_no_success() {
    let h = harness(false).await;
    let file = pipeline(&h, "");
    // Another runner, on another host, renewing its lease far into the future.
    let lease = h.path("state/faulty/leases/a.json");
    std::fs::create_dir_all(lease.parent().expect("parent")).expect("mkdir");
    let live = serde_json::json!({
        "owner": "other-run",
        "holder": {"run_id": "other-run", "host": "elsewhere.example", "pid": 1},
        "acquired_at": "2026-01-01T00:00:00Z",
        "expires_at": "2999-01-01T00:00:00Z"
    });
    std::fs::write(&lease, live.to_string()).expect("lease");
    let (code, report, _) = run(&h, &file).await;
    assert_eq!(code, 1, "{report:#}");
    let a = cohort_entry(&report, "a");
    assert_eq!(a["outcome"], "skipped_leased");
    assert!(
        a["detail"]
            .as_str()
            .is_some_and(|d| d.contains("other-run") && d.contains("elsewhere.example")),
        "{a:#}"
    );
    assert_eq!(spent(&h).await, 0);
    assert_nothing_published(&h, "a");

    // The same holder on this host, its process gone: taken over at once.
    let mut child = tokio::process::Command::new("true").spawn().expect("spawn");
    let dead_pid = child.id().expect("pid");
    child.wait().await.expect("wait");
    let dead = serde_json::json!({
        "owner": "dead-run",
        "holder": {"run_id": "dead-run", "host": cohort_sync::state::host_name(), "pid": dead_pid},
        "acquired_at": "2026-01-01T00:00:00Z",
        "expires_at": "2999-01-01T00:00:00Z"
    });
    std::fs::write(&lease, dead.to_string()).expect("lease");
    rerun_clean(&h, &file).await;
    assert_eq!(spent(&h).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cohort_in_two_pipelines_of_a_run_is_requested_once() {
    let h = harness(false).await;
    let first = pipeline(&h, "");
    let second = h.export_pipeline(
        "second",
        &["a"],
        "out2",
        "state",
        "[download]\nprops = true\n",
    );
    let (code, report, stderr) = h.run_env(&[&first, &second], &[], &[]).await;
    let report = report.expect("report");
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    assert_eq!(spent(&h).await, 1, "{report:#}");
    assert_exact(&h);
    let tree = check_tree(
        &h.path("out2").to_string_lossy(),
        &export_columns(&h.cohorts[0]),
    );
    assert_eq!(tree["duckdb_rows"].as_u64(), Some(2_000), "{tree:#}");
    // Each pipeline has its own manifest and _SUCCESS.
    let run_id = report["run_id"].as_str().expect("run id");
    for (out, name) in [("out", "faulty"), ("out2", "second")] {
        assert!(
            h.path(&format!("{out}/_runs/{run_id}/{name}/_SUCCESS"))
                .exists()
        );
    }
}

// ---- every fault the emulator injects -------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_on_the_request_is_waited_out_and_requested_once() {
    let h = harness(false).await;
    let file = pipeline(&h, "");
    // `Retry-After: 100` in Amplitude time: 1 s at the emulator's time scale.
    let mut limited = rule(FaultKind::RateLimit, "/api/5/cohorts/request/", 1);
    limited.retry_after_secs = Some(100.0);
    h.add_fault(&limited).await;
    let (code, report, stderr) = run(&h, &file).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let log = h.requests().await;
    assert_eq!(status_count(&log, 429), 1);
    assert_eq!(spent_requests(&log).len(), 1);
    // The retry reached the emulator no sooner than the 429 said (times from its log).
    let refused = log.iter().find(|r| r.status == 429).expect("the 429");
    let retry = spent_requests(&log)[0];
    assert!(retry.seq > refused.seq);
    let waited = retry.at_ms - refused.at_ms;
    assert!(
        waited >= 1_000,
        "retried {waited} ms after a Retry-After of 1 s"
    );
    assert_exact(&h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_on_the_request_is_not_retried_and_reported_possibly_spent() {
    let h = harness(false).await;
    let file = pipeline(&h, "");
    h.add_fault(&rule(FaultKind::ServerError, "/api/5/cohorts/request/", 1))
        .await;
    let (code, report, _) = run(&h, &file).await;
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["pipelines"][0]["quota_possibly_spent"], 1);
    assert_eq!(spent(&h).await, 0);
    rerun_clean(&h, &file).await;
    assert_eq!(spent(&h).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_on_the_request_fails_clearly_and_spends_nothing() {
    let h = harness(false).await;
    let file = pipeline(&h, "");
    h.add_fault(&rule(FaultKind::ClientError, "/api/5/cohorts/request/", 1))
        .await;
    let (code, report, _) = run(&h, &file).await;
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["pipelines"][0]["quota_possibly_spent"], 0);
    assert!(
        cohort_entry(&report, "a")["detail"]
            .as_str()
            .is_some_and(|d| d.contains("400")),
        "{report:#}"
    );
    rerun_clean(&h, &file).await;
    assert_eq!(spent(&h).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_on_status_and_file_are_retried_with_the_same_request() {
    let h = harness(false).await;
    let file = pipeline(&h, "");
    h.add_fault(&rule(FaultKind::ServerError, "request-status", 2))
        .await;
    h.add_fault(&rule(FaultKind::ServerError, "/file", 2)).await;
    let (code, report, stderr) = run(&h, &file).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    assert_eq!(spent(&h).await, 1);
    assert_exact(&h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_or_truncated_body_is_asked_again_with_the_same_request() {
    let h = harness(true).await;
    let file = pipeline(&h, "");
    h.fault(FaultKind::Reset, "/file", 1).await;
    h.fault(FaultKind::Truncate, "/cohort-exports/", 1).await;
    let (code, report, stderr) = run(&h, &file).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    assert_eq!(spent(&h).await, 2, "one request per cohort");
    assert_eq!(cohort_entry(&report, "b")["file_attempts"], 2, "{report:#}");
    assert_exact(&h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_job_is_polled_until_done() {
    let h = harness(false).await;
    let file = pipeline(&h, "");
    h.fault(FaultKind::SlowJob, "request-status", 3).await;
    let (code, report, stderr) = run(&h, &file).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    assert_eq!(spent(&h).await, 1);
    assert_exact(&h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_presigned_link_is_asked_for_again() {
    let h = harness(true).await;
    let file = pipeline(&h, "");
    h.fault(FaultKind::ExpiredLink, "/cohort-exports/", 1).await;
    let (code, report, stderr) = run(&h, &file).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    assert_eq!(spent(&h).await, 2, "one request per cohort");
    assert_eq!(cohort_entry(&report, "b")["file_attempts"], 2, "{report:#}");
    // From the emulator's log: b's one request id was asked `/file` twice, its first
    // link refused as expired (403) and the second served.
    let log = h.requests().await;
    let rid = request_id_of(&log, "b");
    assert_eq!(file_calls(&log, Some(&rid)).len(), 2);
    let links: Vec<u16> = presigned(&log)
        .iter()
        .filter(|r| r.request_id.as_deref() == Some(rid.as_str()))
        .map(|r| r.status)
        .collect();
    assert_eq!(links, [403, 200]);
    assert_exact(&h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_on_the_cohort_list_is_retried_before_anything_is_spent() {
    let h = harness(false).await;
    let file = pipeline(&h, "");
    h.fault(FaultKind::ServerError, "/api/3/cohorts", 2).await;
    let (code, report, stderr) = run(&h, &file).await;
    assert_eq!(code, 0, "retried (idempotent): {stderr}\n{report:#}");
    assert_eq!(spent(&h).await, 1);
    assert_exact(&h);
}

// ---- the usage endpoint and the quota ledger ------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_usage_endpoint_runs_go_on_with_the_ledger() {
    let h = harness(true).await;
    let file = pipeline(&h, "");
    h.add_fault(&rule(FaultKind::NotFound, "/api/3/cohorts/usage", 1_000))
        .await;
    let (code, report, stderr) = run(&h, &file).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let usage = &report["pipelines"][0]["usage_before"];
    assert_eq!(usage["source"], "ledger_only", "{usage:#}");
    assert_eq!(usage["used"], 0);
    assert_eq!(usage["limit"], 500);
    assert!(
        usage["warning"]
            .as_str()
            .is_some_and(|w| w.contains("usage endpoint is unavailable")),
        "{usage:#}"
    );
    assert_eq!(
        stderr.matches("usage endpoint is unavailable").count(),
        1,
        "one warning: {stderr}"
    );
    assert_exact(&h);

    // Both cohorts recomputed: the next run counts the first run's two requests.
    for id in ["a", "b"] {
        h.patch_cohort(
            id,
            serde_json::json!({ "last_computed_ms": 1_765_000_000_000i64 }),
        )
        .await;
    }
    let (code, report, stderr) = run(&h, &file).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let usage = &report["pipelines"][0]["usage_before"];
    assert_eq!(
        (usage["used"].as_u64(), usage["ledger_used"].as_u64()),
        (Some(2), Some(2))
    );

    // `cohort-sync usage` shows both figures and where the count comes from.
    let (key, secret) = (api_key(APP_ID), secret_key(APP_ID));
    let app = APP_ID.to_string();
    let out = h
        .exec(
            &[
                "usage",
                "--base-url",
                h.base_url(),
                "--state",
                "state",
                "--app-id",
                &app,
                "--json",
            ],
            &[
                ("AMPLITUDE_API_KEY", &key),
                ("AMPLITUDE_SECRET_KEY", &secret),
            ],
        )
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let shown: Value = serde_json::from_str(&out.stdout).expect("usage JSON");
    assert_eq!(shown["usage"], 4, "{shown:#}");
    assert_eq!(shown["source"], "ledger_only");
    assert_eq!(shown["ledger"]["spent"], 4);
    assert!(shown["endpoint"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_usage_endpoint_cannot_make_a_run_overspend() {
    let h = harness(true).await;
    // 500 - 498 reserved = 2 downloads this month, whatever the endpoint says later.
    let file = pipeline(&h, "[quota]\nreserve = 498\n");
    let (code, report, stderr) = run(&h, &file).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    assert_eq!(spent(&h).await, 2);
    // The endpoint forgets them (lags, or was reset); the ledger does not.
    h.set_usage(0).await;
    for id in ["a", "b"] {
        h.patch_cohort(
            id,
            serde_json::json!({ "last_computed_ms": 1_765_000_000_000i64 }),
        )
        .await;
    }
    h.clear_requests().await;
    let (code, report, stderr) = run(&h, &file).await;
    assert_eq!(code, 3, "deferred by quota: {stderr}\n{report:#}");
    let usage = &report["pipelines"][0]["usage_before"];
    assert_eq!(usage["source"], "ledger", "{usage:#}");
    assert_eq!(
        (usage["endpoint_used"].as_u64(), usage["used"].as_u64()),
        (Some(0), Some(2))
    );
    assert_eq!(spent(&h).await, 0, "nothing left in the budget");
}

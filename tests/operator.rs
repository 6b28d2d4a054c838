//! What an operator's tools read, end to end against the emulator on loopback: JSON log
//! lines (every line parsed, the ids checked against the report and the emulator's log),
//! the `--metrics-file` (parsed by prometheus_client's text parser), the sync history
//! (read by DuckDB, and by pyarrow.dataset on S3), shell completions (bash's own parser),
//! `--help` examples and `--version`; and the docs an operator follows: README's quick
//! start run verbatim, docs/guide.md's `ddl` output and every error message it quotes
//! reproduced from the binary.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use cohort_sync::emulator::FaultKind;
use common::emulator::{CohortSpecExt, cohort};
use common::harness::{self, Harness};
use common::log::status_count;
use common::peers::{parse_metrics, read_history};
use serde_json::Value;

/// A reverse pipeline `crm` mirroring cohort `rev` (1,000 members) to a source that drops
/// 50 of them and adds 70 others; returns its file.
fn mirror_pipeline(h: &Harness, reconcile_extra: &str) -> std::path::PathBuf {
    h.write_crm_source("rev", 50..1_000, 70);
    h.reverse_pipeline(
        "crm",
        "crm.csv",
        "amplitude_id",
        "cohort_id = \"rev\"",
        &format!("mode = \"mirror\"\n{reconcile_extra}"),
    )
}

fn cohorts() -> Vec<cohort_sync::emulator::CohortSpec> {
    vec![
        cohort("alpha", 2_000).props(&["gp:plan"]),
        cohort("beta", 700),
        cohort("rev", 1_000),
    ]
}

fn parse_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {l:?}\n{stderr}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_run_pipeline_cohort_and_request_ids() {
    let h = harness::start(cohorts(), |_| {}).await;
    // Two 429s on status polls: their events must carry the cohort they belong to.
    h.fault(FaultKind::RateLimit, "request-status", 2).await;
    let export = h.export_pipeline(
        "nightly",
        &["alpha", "beta"],
        "out",
        "state",
        "[download]\npoll_initial_secs = 1\n",
    );
    let reverse = mirror_pipeline(&h, "");
    let f = h
        .invoke(
            "run",
            &[&export, &reverse],
            &["--log-format", "json", "--log", "debug"],
            &[],
        )
        .await;
    assert_eq!(f.code, 0, "{}", f.stderr);
    let report = f.report();
    let run_id = report["run_id"].as_str().expect("run id");
    let lines = parse_lines(&f.stderr);
    assert!(lines.len() > 10, "{}", f.stderr);
    for l in &lines {
        for key in ["time", "level", "message"] {
            assert!(l[key].is_string(), "no {key}: {l}");
        }
        assert!(
            chrono::DateTime::parse_from_rfc3339(l["time"].as_str().unwrap_or("")).is_ok(),
            "{l}"
        );
    }
    // The request id of each export cohort, from the report.
    let mut request_of: BTreeMap<String, String> = report["pipelines"][0]["cohorts"]
        .as_array()
        .expect("cohorts")
        .iter()
        .map(|c| {
            (
                c["cohort_id"].as_str().expect("id").to_string(),
                c["request_id"].as_str().expect("request id").to_string(),
            )
        })
        .collect();
    assert_eq!(request_of.len(), 2, "{report:#}");
    let exported = request_of.clone();
    // The reverse pipeline downloaded its baseline with a request of its own.
    let baseline = report["pipelines"][1]["reverse"]["baseline"]["request_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no baseline request: {report:#}"));
    request_of.insert("rev".into(), baseline.to_string());
    let in_cohort: Vec<&Value> = lines
        .iter()
        .filter(|l| l["cohort_id"].is_string())
        .collect();
    for l in &in_cohort {
        assert_eq!(l["run_id"], run_id, "{l}");
        let cohort_id = l["cohort_id"].as_str().unwrap_or_default();
        let pipeline = if cohort_id == "rev" { "crm" } else { "nightly" };
        assert_eq!(l["pipeline"], pipeline, "{l}");
    }
    // Every answer about a request (status polls, the 429s, /file) names that request and
    // the cohort it is for, although both cohorts were worked on at once.
    let mut by_request = 0;
    for l in &lines {
        let path = l["path"].as_str().unwrap_or_default();
        if let Some(rid) = path.strip_prefix("/api/5/cohorts/request-status/") {
            let cohort = request_of
                .iter()
                .find(|(_, r)| r.as_str() == rid)
                .map(|(c, _)| c.clone())
                .unwrap_or_else(|| panic!("unknown request {rid}: {l}"));
            assert_eq!(l["request_id"], rid, "{l}");
            assert_eq!(l["cohort_id"], cohort.as_str(), "{l}");
            let pipeline = if cohort == "rev" { "crm" } else { "nightly" };
            assert_eq!(l["pipeline"], pipeline, "{l}");
            by_request += 1;
        }
    }
    // At least one answer per request, and the two 429s.
    assert!(by_request >= 3 + 2, "status answers seen: {by_request}");
    let status_429: Vec<&&Value> = in_cohort
        .iter()
        .filter(|l| {
            l["status"] == 429
                && l["path"]
                    .as_str()
                    .is_some_and(|p| p.contains("request-status"))
        })
        .collect();
    assert_eq!(status_429.len(), 2, "{}", f.stderr);
    // The `exported` event of each cohort carries its request id.
    for (cohort, rid) in &exported {
        let exported = in_cohort
            .iter()
            .find(|l| l["message"] == "exported" && l["cohort_id"] == cohort.as_str())
            .unwrap_or_else(|| panic!("no exported event for {cohort}"));
        assert_eq!(exported["request_id"], rid.as_str(), "{exported}");
        assert!(
            exported["rows"].as_u64().is_some_and(|r| r > 0),
            "{exported}"
        );
    }
    // The reverse pipeline's membership calls carry its cohort (and its baseline request).
    let membership: Vec<&Value> = lines
        .iter()
        .filter(|l| l["path"] == "/api/3/cohorts/membership")
        .collect();
    assert!(!membership.is_empty(), "{}", f.stderr);
    for l in membership {
        assert_eq!(l["cohort_id"], "rev", "{l}");
        assert_eq!(l["request_id"], baseline, "{l}");
    }

    // The default stays text for humans.
    let plain = h.invoke("run", &[&export], &[], &[]).await;
    assert_eq!(plain.code, 0, "{}", plain.stderr);
    let first = plain.stderr.lines().next().unwrap_or_default();
    assert!(
        serde_json::from_str::<Value>(first).is_err() && first.contains("INFO"),
        "{first}"
    );
}

/// The samples of a family: labels → value.
fn samples(m: &Value, family: &str) -> BTreeMap<String, f64> {
    m["families"][family]["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("no family {family}: {m:#}"))
        .iter()
        .map(|s| {
            let labels = s["labels"]
                .as_object()
                .expect("labels")
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",");
            (labels, s["value"].as_f64().expect("value"))
        })
        .collect()
}

fn one(m: &Value, family: &str, labels: &str) -> f64 {
    *samples(m, family)
        .get(labels)
        .unwrap_or_else(|| panic!("no {family}{{{labels}}}: {:#}", m["families"][family]))
}

fn epoch(report: &Value, pointer: &str) -> f64 {
    let text = report
        .pointer(pointer)
        .and_then(Value::as_str)
        .expect(pointer);
    chrono::DateTime::parse_from_rfc3339(text)
        .expect("rfc3339")
        .timestamp_millis() as f64
        / 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_file_parses_and_keeps_each_pipelines_last_success() {
    let h = harness::start(cohorts(), |_| {}).await;
    h.fault(FaultKind::RateLimit, "request-status", 1).await;
    let metrics = h.path("textfile/cohort_sync.prom");
    std::fs::create_dir_all(metrics.parent().expect("dir")).expect("mkdir");
    let m_arg = metrics.to_string_lossy().into_owned();
    let export = h.export_pipeline(
        "nightly",
        &["alpha", "beta"],
        "out",
        "state",
        "[download]\npoll_initial_secs = 1\n",
    );

    // 1. The export alone.
    let first = h
        .invoke("run", &[&export], &["--metrics-file", &m_arg], &[])
        .await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    let r1 = first.report();
    let m = parse_metrics(&metrics);
    for (name, fam) in m["families"].as_object().expect("families") {
        assert_eq!(fam["type"], "gauge", "{name}");
        assert!(
            fam["help"].as_str().is_some_and(|h| !h.is_empty()),
            "{name}"
        );
    }
    let p = "pipeline=nightly";
    let cohorts = r1["pipelines"][0]["cohorts"].as_array().expect("cohorts");
    let rows: u64 = cohorts
        .iter()
        .map(|c| c["rows"].as_u64().unwrap_or(0))
        .sum();
    let bytes: u64 = cohorts
        .iter()
        .map(|c| c["bytes"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(rows, 2_700);
    assert_eq!(one(&m, "cohort_sync_rows_exported", p), rows as f64);
    assert_eq!(one(&m, "cohort_sync_bytes_exported", p), bytes as f64);
    assert_eq!(
        one(
            &m,
            "cohort_sync_cohorts",
            "outcome=exported,pipeline=nightly"
        ),
        2.0
    );
    assert_eq!(
        one(&m, "cohort_sync_cohorts", "outcome=failed,pipeline=nightly"),
        0.0
    );
    assert_eq!(one(&m, "cohort_sync_requests_spent", p), 2.0);
    let (used, limit) = h.usage().await;
    assert_eq!(one(&m, "cohort_sync_quota_used", p), f64::from(used));
    assert_eq!(
        one(&m, "cohort_sync_quota_left", p),
        f64::from(limit - used)
    );
    assert_eq!(one(&m, "cohort_sync_quota_limit", p), f64::from(limit));
    let log = h.requests().await;
    assert_eq!(
        one(&m, "cohort_sync_run_rate_limited_responses", ""),
        status_count(&log, 429) as f64
    );
    assert_eq!(status_count(&log, 429), 1);
    assert_eq!(one(&m, "cohort_sync_pipeline_success", p), 1.0);
    assert_eq!(one(&m, "cohort_sync_run_exit_code", ""), 0.0);
    let success_1 = one(&m, "cohort_sync_last_success_timestamp_seconds", p);
    assert_eq!(success_1, epoch(r1, "/pipelines/0/finished_at"));
    let run_info = samples(&m, "cohort_sync_run_info");
    let run_id = r1["run_id"].as_str().expect("run id");
    assert!(
        run_info
            .keys()
            .any(|k| k.contains(&format!("run_id={run_id}"))),
        "{run_info:?}"
    );
    let duration = one(&m, "cohort_sync_run_duration_seconds", "");
    assert!(duration >= 0.0, "{duration}");

    // 2. Another pipeline into the same file: the export's last success is kept.
    let reverse = mirror_pipeline(&h, "");
    let second = h
        .invoke("run", &[&reverse], &["--metrics-file", &m_arg], &[])
        .await;
    assert_eq!(second.code, 0, "{}", second.stderr);
    let r2 = second.report();
    let m = parse_metrics(&metrics);
    assert_eq!(
        one(&m, "cohort_sync_last_success_timestamp_seconds", p),
        success_1
    );
    let totals = &r2["pipelines"][0]["reverse_totals"];
    assert_eq!(totals["added"], 70, "{r2:#}");
    assert_eq!(totals["removed"], 50, "{r2:#}");
    for change in ["added", "removed", "skipped"] {
        assert_eq!(
            one(
                &m,
                "cohort_sync_reverse_ids",
                &format!("change={change},pipeline=crm")
            ),
            totals[change].as_f64().expect("count"),
            "{change}"
        );
    }
    assert_eq!(
        one(&m, "cohort_sync_cohorts", "outcome=applied,pipeline=crm"),
        1.0
    );
    assert_eq!(
        one(
            &m,
            "cohort_sync_last_success_timestamp_seconds",
            "pipeline=crm"
        ),
        epoch(r2, "/pipelines/0/finished_at")
    );
    // This run's gauges describe this run only.
    assert!(!samples(&m, "cohort_sync_pipeline_success").contains_key(p));

    // 3. The export fails (Amplitude refuses the key): its last success stays the first's.
    let broken = h.write(
        "nightly",
        &std::fs::read_to_string(&export)
            .expect("read")
            .replace("secret_key = \"", "secret_key = \"wrong-"),
    );
    let third = h
        .invoke("run", &[&broken], &["--metrics-file", &m_arg], &[])
        .await;
    assert_eq!(third.code, 1, "{}", third.stderr);
    let r3 = third.report();
    let m = parse_metrics(&metrics);
    assert_eq!(one(&m, "cohort_sync_pipeline_success", p), 0.0);
    assert_eq!(one(&m, "cohort_sync_run_exit_code", ""), 1.0);
    assert_eq!(
        one(&m, "cohort_sync_last_success_timestamp_seconds", p),
        success_1
    );
    assert_eq!(
        one(&m, "cohort_sync_last_run_timestamp_seconds", p),
        epoch(r3, "/pipelines/0/finished_at")
    );
    assert!(
        one(
            &m,
            "cohort_sync_last_success_timestamp_seconds",
            "pipeline=crm"
        ) > 0.0,
        "the reverse pipeline's last success is carried too"
    );
    // Nothing else is left in the textfile folder (the collector reads every *.prom).
    let names: Vec<String> = std::fs::read_dir(metrics.parent().expect("dir"))
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["cohort_sync.prom"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_while_writing_the_metrics_file_leaves_the_last_one_whole() {
    let h = harness::start(vec![cohort("alpha", 300)], |_| {}).await;
    let metrics = h.path("m.prom");
    let m_arg = metrics.to_string_lossy().into_owned();
    let export = h.export_pipeline("nightly", &["alpha"], "out", "state", "");
    let first = h
        .invoke("run", &[&export], &["--metrics-file", &m_arg], &[])
        .await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    let before = std::fs::read_to_string(&metrics).expect("metrics");

    let killed = h
        .invoke(
            "run",
            &[&export],
            &["--metrics-file", &m_arg],
            &[("COHORT_SYNC_CRASH_AT", "metrics.temp_written")],
        )
        .await;
    assert_eq!(killed.code, -9, "{}", killed.stderr);
    assert_eq!(std::fs::read_to_string(&metrics).expect("metrics"), before);
    parse_metrics(&metrics);

    let rerun = h
        .invoke("run", &[&export], &["--metrics-file", &m_arg], &[])
        .await;
    assert_eq!(rerun.code, 0, "{}", rerun.stderr);
    let m = parse_metrics(&metrics);
    let run_id = rerun.report()["run_id"]
        .as_str()
        .expect("run id")
        .to_string();
    assert!(
        samples(&m, "cohort_sync_run_info")
            .keys()
            .any(|k| k.contains(&run_id)),
        "{m:#}"
    );
}

/// The history rows of one run, by cohort id.
fn rows_of<'a>(history: &'a Value, run_id: &str) -> BTreeMap<String, &'a Value> {
    history["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["run_id"] == run_id)
        .map(|r| (r["cohort_id"].as_str().unwrap_or("-").to_string(), r))
        .collect()
}

/// Two export runs and a reverse run into one output; the history read back by `reader`.
async fn history_case(h: &Harness, output: &str, state: &str, root: &str, reader: &str) {
    let export = h.export_pipeline(
        "nightly",
        &["alpha", "beta"],
        output,
        state,
        "[download]\npoll_initial_secs = 1\n",
    );
    let (code, first, err) = h.run(&export, &[]).await;
    assert_eq!(code, 0, "{err}");
    let (code, second, err) = h.run(&export, &[]).await;
    assert_eq!(code, 0, "{err}");
    let reverse = mirror_pipeline(h, &format!("snapshots = \"{output}\""));
    let (code, third, err) = h.run(&reverse, &[]).await;
    assert_eq!(code, 0, "{err}");

    let history = read_history(root);
    assert_eq!(history["reader"], reader, "{history:#}");
    let files: Vec<&str> = history["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(files.len(), 3, "one file per pipeline per run: {files:?}");
    for f in &files {
        assert!(
            f.starts_with("pipeline=") && f.contains("/date=") && f.ends_with(".parquet"),
            "{f}"
        );
    }
    assert_eq!(
        history["rows"].as_array().map(Vec::len),
        Some(5),
        "{history:#}"
    );

    let r1 = rows_of(&history, first["run_id"].as_str().expect("id"));
    let date = &first["started_at"].as_str().expect("date")[..10];
    for c in first["pipelines"][0]["cohorts"]
        .as_array()
        .expect("cohorts")
    {
        let id = c["cohort_id"].as_str().expect("id");
        let row = r1[id];
        assert_eq!(row["pipeline"], "nightly", "{row}");
        assert_eq!(row["date"], date, "{row}");
        assert_eq!(row["kind"], "export", "{row}");
        assert_eq!(row["outcome"], "exported", "{row}");
        assert_eq!(row["rows"], c["rows"], "{row}");
        assert_eq!(row["bytes"], c["bytes"], "{row}");
        assert_eq!(row["request_id"], c["request_id"], "{row}");
        assert_eq!(row["request_reason"], "first_export", "{row}");
        assert_eq!(row["requests_spent"], 1, "{row}");
        assert_eq!(row["exit_code"], 0, "{row}");
        assert!(row["ids_added"].is_null(), "{row}");
        let left = first["pipelines"][0]["usage_before"]["remaining"]
            .as_i64()
            .expect("remaining")
            - 2;
        assert_eq!(row["quota_left"], left, "{row}");
        let started = chrono::DateTime::parse_from_rfc3339(row["started_at"].as_str().expect("t"))
            .expect("started");
        let finished =
            chrono::DateTime::parse_from_rfc3339(row["finished_at"].as_str().expect("t"))
                .expect("finished");
        assert!(started <= finished, "{row}");
    }
    let r2 = rows_of(&history, second["run_id"].as_str().expect("id"));
    assert_eq!(r2.len(), 2);
    for row in r2.values() {
        assert_eq!(row["outcome"], "skipped_unchanged", "{row}");
        assert_eq!(row["requests_spent"], 0, "{row}");
        assert!(row["reason"].is_string(), "{row}");
    }
    let r3 = rows_of(&history, third["run_id"].as_str().expect("id"));
    let row = r3["rev"];
    assert_eq!(row["pipeline"], "crm", "{row}");
    assert_eq!(row["kind"], "reverse", "{row}");
    assert_eq!(row["outcome"], "applied", "{row}");
    assert_eq!(row["ids_added"], 70, "{row}");
    assert_eq!(row["ids_removed"], 50, "{row}");
    let totals = &third["pipelines"][0]["reverse_totals"];
    assert_eq!(row["ids_skipped"], totals["skipped"], "{row}");
    assert!(
        third["pipelines"][0]["history"]
            .as_str()
            .is_some_and(|h| h.contains("_history/pipeline=crm/")),
        "{third:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_history_is_a_dataset_duckdb_reads() {
    let h = harness::start(cohorts(), |_| {}).await;
    let root = h.path("out").to_string_lossy().into_owned();
    history_case(&h, "out", "state", &root, "duckdb").await;
    // Snapshot readers still see only the snapshots (`_history/` is a `_` folder).
    let tree = common::peers::check_tree(&root, &[]);
    assert_eq!(tree["dataset_rows"], 2_700, "{tree:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_history_on_s3() {
    let h = harness::start(cohorts(), |_| {}).await;
    let bucket = common::s3::create_bucket("hist");
    let out = format!("s3://{bucket}/out");
    history_case(
        &h,
        &out,
        &format!("s3://{bucket}/state"),
        &out,
        "pyarrow.dataset",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_and_a_plan_write_no_history_and_no_metrics() {
    let h = harness::start(vec![cohort("alpha", 300)], |_| {}).await;
    let export = h.export_pipeline("nightly", &["alpha"], "out", "state", "");
    let metrics = h.path("m.prom");
    let m_arg = metrics.to_string_lossy().into_owned();
    let f = h
        .invoke(
            "run",
            &[&export],
            &["--dry-run", "--metrics-file", &m_arg],
            &[],
        )
        .await;
    assert_eq!(f.code, 0, "{}", f.stderr);
    let p = h.plan(&[&export], &[]).await;
    assert_eq!(p.code, 0, "{}", p.stderr);
    assert!(!metrics.exists());
    assert!(!h.path("out/_history").exists());
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cohort-sync")
}

fn output(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(bin())
        .args(args)
        .env_remove("COHORT_SYNC_LOG")
        .output()
        .expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn completions_for_bash_zsh_and_fish_name_every_command() {
    let commands = [
        "run",
        "plan",
        "cohorts",
        "usage",
        "convert",
        "validate",
        "emulate",
        "completions",
    ];
    for shell in ["bash", "zsh", "fish"] {
        let (code, script, err) = output(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        for c in commands {
            assert!(script.contains(c), "{shell} script lacks {c}");
        }
        // fish writes long options as `-l metrics-file`.
        assert!(script.contains("metrics-file"), "{shell}");
    }
    // bash's own parser accepts the bash script.
    let (_, script, _) = output(&["completions", "bash"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cohort-sync.bash");
    std::fs::write(&file, script).expect("write");
    let status = std::process::Command::new("bash")
        .arg("-n")
        .arg(&file)
        .status()
        .expect("bash");
    assert!(status.success());
    let (code, _, err) = output(&["completions", "tcsh"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn every_commands_help_ends_with_examples() {
    for cmd in [
        vec![],
        vec!["run"],
        vec!["plan"],
        vec!["cohorts"],
        vec!["usage"],
        vec!["convert"],
        vec!["validate"],
        vec!["emulate"],
        vec!["completions"],
    ] {
        let mut args = cmd.clone();
        args.push("--help");
        let (code, text, err) = output(&args);
        assert_eq!(code, 0, "{cmd:?}: {err}");
        let tail: Vec<&str> = text
            .trim_end()
            .lines()
            .rev()
            .take_while(|l| !l.is_empty())
            .collect();
        let examples: Vec<&&str> = tail.iter().filter(|l| l.starts_with("  ")).collect();
        assert_eq!(
            tail.last().copied(),
            Some("Examples:"),
            "{cmd:?} help does not end with examples:\n{text}"
        );
        assert!(
            (2..=3).contains(&examples.len()),
            "{cmd:?}: {} examples:\n{text}",
            examples.len()
        );
        for e in examples {
            assert!(e.contains("cohort-sync"), "{cmd:?}: {e}");
            if let Some(sub) = cmd.first() {
                assert!(e.contains(&format!("cohort-sync {sub}")), "{cmd:?}: {e}");
            }
        }
    }
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let (code, text, err) = output(&["--version"]);
    assert_eq!(code, 0, "{err}");
    let git = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let expected = std::env::var("COHORT_SYNC_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or(git)
        .unwrap_or_else(|| "unknown".into());
    assert_eq!(
        text.trim(),
        format!(
            "cohort-sync {} (commit {expected})",
            env!("CARGO_PKG_VERSION")
        )
    );
}

/// The fenced block that follows `marker` in `text` (its lines between the fences).
fn block_after<'a>(text: &'a str, marker: &str) -> Vec<&'a str> {
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in the docs"));
    let mut lines = text[at + marker.len()..]
        .lines()
        .skip_while(|l| !l.starts_with("```"));
    lines.next();
    lines.take_while(|l| !l.starts_with("```")).collect()
}

/// The names of every `<!-- KIND: NAME -->` marker in `text`.
fn markers(text: &str, kind: &str) -> Vec<String> {
    let open = format!("<!-- {kind}: ");
    text.lines()
        .filter_map(|l| l.strip_prefix(open.as_str())?.strip_suffix(" -->"))
        .map(str::to_string)
        .collect()
}

/// Whether `line` matches `pattern`, where each `<name>` (lowercase letters) stands for a
/// non-empty run of any characters and everything else must be equal.
fn matches_quoted(pattern: &str, line: &str) -> bool {
    // The literal pieces between placeholders.
    let mut pieces: Vec<String> = vec![String::new()];
    let mut rest = pattern;
    while let Some(c) = rest.chars().next() {
        if c == '<'
            && let Some(close) = rest.find('>')
            && close > 1
            && rest[1..close].chars().all(|c| c.is_ascii_lowercase())
        {
            pieces.push(String::new());
            rest = &rest[close + 1..];
            continue;
        }
        if let Some(last) = pieces.last_mut() {
            last.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    if pieces.len() == 1 {
        return line == pattern;
    }
    let (first, last) = (&pieces[0], &pieces[pieces.len() - 1]);
    let Some(mut tail) = line.strip_prefix(first.as_str()) else {
        return false;
    };
    for piece in &pieces[1..pieces.len() - 1] {
        // Each placeholder takes at least one character.
        let Some(found) = tail
            .char_indices()
            .nth(1)
            .and_then(|(i, _)| tail[i..].find(piece.as_str()).map(|f| i + f))
        else {
            return false;
        };
        tail = &tail[found + piece.len()..];
    }
    tail.len() > last.len() && tail.ends_with(last.as_str())
}

#[test]
fn quoted_patterns_match_as_documented() {
    assert!(matches_quoted(
        "run <run>: exit code 3",
        "run 2026-1: exit code 3"
    ));
    assert!(!matches_quoted(
        "run <run>: exit code 3",
        "run : exit code 3"
    ));
    assert!(!matches_quoted(
        "run <run>: exit code 3",
        "run x: exit code 1"
    ));
    assert!(matches_quoted("<time>  INFO a <x> b", "2026Z  INFO a 12 b"));
    assert!(matches_quoted("a < b", "a < b"));
    assert!(matches_quoted("`<A>` <dir>/x", "`<A>` /tmp/x"));
}

fn repo_file(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// docs/guide.md's worked export: the pipeline shown is the reviewed file and each SQL
/// block is what `cohort-sync ddl` prints for it today.
#[test]
fn the_guide_shows_the_ddl_the_binary_prints() {
    let guide = repo_file("docs/guide.md");
    let shown = block_after(&guide, "<!-- pipeline: tests/ddl/nightly-eu.toml -->").join("\n");
    let file = repo_file("tests/ddl/nightly-eu.toml");
    let without_comments: Vec<&str> = file.lines().skip_while(|l| l.starts_with('#')).collect();
    assert_eq!(shown, without_comments.join("\n"));
    let dialects = markers(&guide, "ddl");
    assert_eq!(dialects, ["duckdb", "snowflake"]);
    for dialect in dialects {
        let out = std::process::Command::new(bin())
            .args(["ddl", "tests/ddl/nightly-eu.toml", "--dialect", &dialect])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("EXPORT_BUCKET", "my-bucket")
            .output()
            .expect("run ddl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = String::from_utf8_lossy(&out.stdout);
        let quoted = block_after(&guide, &format!("<!-- ddl: {dialect} -->")).join("\n");
        assert_eq!(
            quoted,
            printed.trim_end(),
            "docs/guide.md's {dialect} block is stale"
        );
    }
}

/// Whether process `pid` is stopped (state `T` in /proc/PID/stat).
fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('T'))
        })
        .unwrap_or(false)
}

/// Reproduces one troubleshooting case of docs/guide.md; returns everything the binary
/// printed (stdout, then stderr).
async fn troubleshoot_case(h: &Harness, name: &str, base: &str) -> String {
    use common::emulator::{APP_ID, api_key, secret_key};
    let (key, secret) = (api_key(APP_ID), secret_key(APP_ID));
    let keys = [
        ("AMPLITUDE_API_KEY", key.as_str()),
        ("AMPLITUDE_SECRET_KEY", secret.as_str()),
    ];
    let nightly = |from: &str, to: &str| {
        assert!(
            base.contains(from),
            "{from:?} is not in the guide's nightly.toml"
        );
        std::fs::write(h.path("nightly.toml"), base.replacen(from, to, 1)).expect("write");
    };
    let ids = "ids = [\"d3m0a01\"]";
    let both = |f: harness::Finished| format!("{}{}", f.stdout, f.stderr);
    match name {
        "toml-syntax" => {
            nightly(ids, "ids = [\"d3m0a01\"");
            both(h.exec(&["validate", "nightly.toml"], &[]).await)
        }
        "unknown-key" => {
            nightly("url = \"out\"", "url = \"out\"\ncompresion = \"zstd\"");
            both(h.exec(&["validate", "nightly.toml"], &[]).await)
        }
        "missing-env" => {
            let app = format!("app_id = {APP_ID}");
            nightly(
                &app,
                &format!("{app}\napi_key = \"${{AMPLITUDE_PROD_KEY}}\""),
            );
            both(h.exec(&["validate", "nightly.toml"], &[]).await)
        }
        "no-credentials" => {
            nightly(ids, ids);
            both(h.exec(&["run", "nightly.toml"], &[]).await)
        }
        "wrong-secret" => {
            nightly(ids, ids);
            let env = [
                ("AMPLITUDE_API_KEY", key.as_str()),
                ("AMPLITUDE_SECRET_KEY", "wrong"),
            ];
            both(h.exec(&["run", "nightly.toml"], &env).await)
        }
        "unknown-api-key" => {
            nightly(ids, ids);
            let env = [
                ("AMPLITUDE_API_KEY", "not-a-key"),
                ("AMPLITUDE_SECRET_KEY", "wrong"),
            ];
            both(h.exec(&["run", "nightly.toml"], &env).await)
        }
        "quota-spent" => {
            nightly(ids, ids);
            let (used, limit) = h.usage().await;
            h.set_usage(limit).await;
            let out = both(h.exec(&["run", "nightly.toml"], &keys).await);
            h.set_usage(used).await;
            out
        }
        "lease-held" => {
            nightly(ids, ids);
            // The first run freezes (SIGSTOP) holding the cohort's lease.
            let mut first = h.command(&["run", "nightly.toml"]);
            first
                .envs(keys)
                .env("COHORT_SYNC_CRASH_AT", "export.lease.acquired:stop");
            let mut first = first.spawn().expect("spawn the first run");
            let pid = first.id().expect("pid");
            while !is_stopped(pid) {
                assert!(
                    first.try_wait().ok().flatten().is_none(),
                    "the first run ended before its stop point"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            let out = both(h.exec(&["run", "nightly.toml"], &keys).await);
            first.kill().await.expect("kill the first run");
            out
        }
        "unwritable-output" => {
            std::fs::write(h.path("reports.txt"), b"a file").expect("write");
            nightly("url = \"out\"", "url = \"reports.txt/out\"");
            both(h.exec(&["run", "nightly.toml"], &keys).await)
        }
        "bad-crm-row" | "crm-missing-column" => {
            let text = if name == "bad-crm-row" {
                "amplitude_id\n1001\n1002\nabc-17\n"
            } else {
                "email\na@example.com\n"
            };
            std::fs::write(h.path("crm.csv"), text).expect("write");
            h.reverse_pipeline(
                "crm",
                "crm.csv",
                "amplitude_id",
                "cohort_id = \"d3m0a01\"",
                "mode = \"add_only\"",
            );
            both(h.exec(&["run", "crm.toml"], &keys).await)
        }
        other => {
            panic!("docs/guide.md has a troubleshooting case {other:?} this test cannot reproduce")
        }
    }
}

/// Every message docs/guide.md quotes in its troubleshooting section still comes out of
/// the binary verbatim for that case (`<…>` placeholders aside), so the guide cannot go
/// stale; and every case is reproduced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guide_quotes_the_messages_the_binary_prints() {
    use common::emulator::APP_ID;
    let guide = repo_file("docs/guide.md");
    let cases = markers(&guide, "troubleshoot");
    assert_eq!(
        cases,
        [
            "toml-syntax",
            "unknown-key",
            "missing-env",
            "no-credentials",
            "wrong-secret",
            "unknown-api-key",
            "quota-spent",
            "lease-held",
            "unwritable-output",
            "bad-crm-row",
            "crm-missing-column"
        ]
    );
    let h = harness::start(vec![cohort("d3m0a01", 300).named("Trial users")], |_| {}).await;
    let base = block_after(&guide, "The cases below use this pipeline")
        .join("\n")
        .replace("http://127.0.0.1:8080", h.base_url())
        .replace("app_id = 100001", &format!("app_id = {APP_ID}"));
    let mut stale = Vec::new();
    for case in &cases {
        let printed = troubleshoot_case(&h, case, &base).await;
        let quoted = block_after(&guide, &format!("<!-- troubleshoot: {case} -->"));
        assert!(!quoted.is_empty(), "{case}: nothing quoted");
        for line in quoted.iter().filter(|l| !l.starts_with("$ ")) {
            if !printed.lines().any(|p| matches_quoted(line, p)) {
                stale.push(format!(
                    "{case}: {line:?} is not in what the binary printed:\n{printed}"
                ));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "docs/guide.md is stale:\n{}",
        stale.join("\n")
    );
}

/// README's "Quick start by hand" block, run verbatim by bash in a copy of `pipelines/`,
/// with the built binary first on the PATH.
#[test]
fn the_readme_quick_start_runs_verbatim() {
    use std::os::unix::process::CommandExt;
    let readme = repo_file("README.md");
    let script = block_after(&readme, "<!-- quickstart -->").join("\n");
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = tempfile::tempdir().expect("tempdir");
    let (out_file, err_file) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines"))
        .arg(dir.path())
        .status()
        .expect("cp");
    assert!(copied.success());
    let bin_dir = Path::new(bin()).parent().expect("bin dir");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = std::process::Command::new("bash")
        .args(["-e", "-c", &script])
        .current_dir(dir.path())
        .env("PATH", path)
        .env_remove("AMPLITUDE_API_KEY")
        .env_remove("AMPLITUDE_SECRET_KEY")
        .env_remove(cohort_sync::crash::ENV)
        // Files, not pipes: an emulator left running would hold a pipe open.
        .stdout(std::fs::File::create(&out_file).expect("stdout file"))
        .stderr(std::fs::File::create(&err_file).expect("stderr file"))
        .process_group(0)
        .spawn()
        .expect("run bash");
    let group = i32::try_from(child.id()).expect("pid");
    let status = child.wait().expect("bash ends");
    // Whatever the script did, nothing it started (the emulator) outlives it.
    // SAFETY: kill(2) on the process group this test created; no memory is involved.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
    let stdout = std::fs::read_to_string(&out_file).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_file).unwrap_or_default();
    assert!(status.success(), "{stdout}\n{stderr}");
    let exits: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("run ") && l.contains(": exit code "))
        .collect();
    assert_eq!(exits.len(), 3, "{stdout}");
    assert!(exits.iter().all(|l| l.ends_with("exit code 0")), "{stdout}");
    assert!(stdout.contains("quota spent: 0"), "{stdout}");
    assert!(stdout.contains("outcome: applied"), "{stdout}");
    assert!(stdout.contains("cohort_id=d3m0a01"), "{stdout}");
}

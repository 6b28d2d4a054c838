//! Kill-anywhere: a run is killed (SIGKILL) or stopped (SIGTERM) at a named point of its
//! work — before and after the request, mid-poll, mid-download, mid-upload, before the
//! manifest, before, inside and after the sync-history write, between a membership answer
//! and its journal entry — then run again as cron would. After each, read as a warehouse
//! user would (pyarrow.dataset and DuckDB over the whole Hive tree, every file's values
//! against the emulator's members; DuckDB over the sync history) and from the emulator's
//! log:
//!
//! - the rerun exits 0 and every cohort's file is exact, once, at its final key;
//! - the whole tree reads (nothing half-written or staged where readers look);
//! - at most one download request per cohort was spent (two only for a kill between the
//!   request's answer and the state write, and then the rerun reports it possibly spent);
//! - `_SUCCESS` exists only for runs that did every cohort;
//! - the OpenLineage file (`[lineage] file`) holds whole, valid events only, the rerun's
//!   START and COMPLETE last;
//! - exit codes: -9 (killed), 143 (SIGTERM), 0 (rerun);
//! - with `output.changes = true`, a second export killed while writing its change files
//!   leaves, after the rerun, change files equal to DuckDB's `EXCEPT` of the two snapshots;
//! - a reverse run killed while its diff spills ids to temporary files leaves them behind
//!   (they hold people's ids): the rerun removes them and still applies the exact plan.
//!
//! Points are armed with the test-only `COHORT_SYNC_CRASH_AT` (src/crash.rs): the binary
//! signals itself exactly there, so each case is deterministic. The outcome of every case
//! is written to `$CARGO_TARGET_TMPDIR/kill-anywhere.txt`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::emulator::{CohortSpecExt, cohort};
use common::expect::{expected_digest, export_columns};
use common::harness::{self, Harness};
use common::log::{changes, spent_by_cohort, spent_requests};
use common::peers::{check_tree, read_history};
use futures::StreamExt;
use serde_json::Value;

const PROPS: &[&str] = &["gp:country", "gp:plan"];
const PIPELINE: &str = "killable";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Export,
    Reverse,
    /// A reverse run whose lists are over the diff's memory budget, killed while spilling.
    ReverseSpill,
    /// A second export with `output.changes = true`, after the members changed.
    Changes,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    kind: Kind,
    point: &'static str,
    hit: u32,
    term: bool,
    s3: bool,
}

impl Case {
    /// Killed with SIGKILL at `point`'s `hit`-th pass, on a local output and state.
    fn killed(kind: Kind, point: &'static str, hit: u32) -> Case {
        Case {
            kind,
            point,
            hit,
            term: false,
            s3: false,
        }
    }

    /// Stopped with SIGTERM there instead.
    fn by_sigterm(self) -> Case {
        Case { term: true, ..self }
    }

    /// On S3 (moto) instead.
    fn on_s3(self) -> Case {
        Case { s3: true, ..self }
    }
    fn arm(&self) -> String {
        format!(
            "{}#{}{}",
            self.point,
            self.hit,
            if self.term { ":term" } else { "" }
        )
    }

    fn label(&self) -> String {
        format!(
            "{:?} {} {} on {}",
            self.kind,
            if self.term { "SIGTERM" } else { "SIGKILL" },
            self.arm(),
            if self.s3 { "s3" } else { "local" }
        )
    }
}

fn export_cases() -> Vec<Case> {
    let kill = |point, hit| Case::killed(Kind::Export, point, hit);
    let term = |point, hit| kill(point, hit).by_sigterm();
    let s3 = |point, hit| kill(point, hit).on_s3();
    vec![
        kill("export.history.before", 1),
        kill("lineage.start.sent", 1),
        kill("lineage.end.before", 1),
        term("lineage.start.sent", 1),
        kill("export.history.written", 1),
        kill("export.output.probed", 1),
        kill("export.lease.acquired", 1),
        kill("export.lease.acquired", 2),
        kill("export.request.intent_saved", 1),
        kill("export.request.intent_saved", 2),
        kill("export.request.answered", 1),
        kill("export.request.answered", 2),
        kill("export.request.saved", 1),
        kill("export.request.saved", 2),
        kill("export.poll", 1),
        kill("export.poll", 2),
        kill("export.poll", 3),
        kill("export.download.chunk", 1),
        kill("export.download.chunk", 4),
        kill("export.download.chunk", 12),
        kill("export.download.chunk", 30),
        kill("export.encode.row_group", 1),
        kill("export.encode.row_group", 2),
        kill("export.upload.part", 1),
        kill("export.upload.part", 2),
        kill("export.upload.part", 3),
        kill("export.upload.completed", 1),
        kill("export.upload.completed", 2),
        kill("export.published", 1),
        kill("export.published", 2),
        kill("export.state.saved", 1),
        kill("export.state.saved", 2),
        kill("export.manifest.before", 1),
        kill("export.manifest.written", 1),
        kill("history.before", 1),
        kill("history.temp_written", 1),
        kill("history.written", 1),
        kill("run.report.before", 1),
        term("export.history.written", 1),
        term("export.lease.acquired", 1),
        term("export.request.intent_saved", 1),
        term("export.request.saved", 2),
        term("export.poll", 2),
        term("export.download.chunk", 4),
        term("export.encode.row_group", 1),
        term("export.upload.part", 1),
        term("export.upload.completed", 1),
        term("export.published", 1),
        term("export.manifest.before", 1),
        term("history.before", 1),
        term("run.report.before", 1),
        s3("export.history.written", 1),
        s3("export.output.probed", 1),
        s3("export.lease.acquired", 1),
        s3("export.request.answered", 1),
        s3("export.request.saved", 1),
        s3("export.poll", 1),
        s3("export.download.chunk", 1),
        s3("export.encode.row_group", 1),
        s3("export.upload.part", 2),
        s3("export.published", 1),
        s3("export.poll", 2),
        s3("export.download.chunk", 6),
        s3("export.upload.part", 1),
        s3("export.upload.completed", 1),
        s3("export.state.saved", 1),
        s3("export.manifest.written", 1),
        s3("history.before", 1),
        s3("history.written", 1),
    ]
}

/// The reverse plan of these cases: ADD 300, ADD 300, ADD 100, REMOVE 50 (chunks 1-4),
/// after a baseline download of the 1,000-member cohort; then the derived baseline's ids
/// and head.
fn reverse_cases() -> Vec<Case> {
    let kill = |point, hit| Case::killed(Kind::Reverse, point, hit);
    let term = |point, hit| kill(point, hit).by_sigterm();
    vec![
        kill("export.poll", 1),
        kill("reverse.journal.created", 1),
        kill("reverse.chunk.sending", 1),
        kill("reverse.chunk.sending", 2),
        kill("reverse.chunk.sending", 4),
        kill("reverse.chunk.answered", 1),
        kill("reverse.chunk.answered", 3),
        kill("reverse.chunk.answered", 4),
        kill("reverse.chunk.journaled", 1),
        kill("reverse.chunk.journaled", 2),
        kill("reverse.chunk.journaled", 4),
        kill("reverse.journal.closed", 1),
        kill("reverse.derived.ids_written", 1),
        kill("reverse.derived.written", 1),
        term("reverse.chunk.sending", 2),
        term("reverse.chunk.journaled", 1),
        term("reverse.chunk.journaled", 3),
    ]
}

/// A reverse run over a 70,000-member cohort with a 1 MiB diff budget: each side's ids
/// spill to temporary files once while read (#1, #3) and once more when the list is done
/// (#2, #4).
fn reverse_spill_cases() -> Vec<Case> {
    let kill = |point, hit| Case::killed(Kind::ReverseSpill, point, hit);
    vec![
        kill("reverse.ids.spilled", 1),
        kill("reverse.ids.spilled", 2),
        kill("reverse.ids.spilled", 3),
        kill("reverse.ids.spilled", 4),
        kill("reverse.ids.spilled", 4).by_sigterm(),
    ]
}

/// The change file's steps (the second export of a cohort whose members changed): the
/// previous snapshot's copy aside (S3, same key), the change file written and published,
/// the snapshot published after it.
fn changes_cases() -> Vec<Case> {
    let kill = |point, hit| Case::killed(Kind::Changes, point, hit);
    let term = |point, hit| kill(point, hit).by_sigterm();
    let s3 = |point, hit| kill(point, hit).on_s3();
    vec![
        kill("export.upload.completed", 1),
        kill("export.changes.written", 1),
        kill("export.changes.written", 2),
        kill("export.changes.published", 1),
        kill("export.changes.published", 2),
        kill("export.published", 1),
        kill("export.state.saved", 1),
        term("export.changes.written", 1),
        term("export.changes.published", 1),
        s3("export.changes.previous_copied", 1),
        s3("export.changes.previous_copied", 2),
        s3("export.changes.written", 1),
        s3("export.published", 1),
        s3("export.state.saved", 1),
    ]
}

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(msg()) }
}

/// Runs one export case; `Ok` describes what happened, `Err` what went wrong.
async fn export_case(case: Case) -> Result<String, String> {
    let cohorts = vec![
        cohort("big", 60_000).props(PROPS),
        cohort("small", 3_000).props(PROPS),
    ];
    // Jobs take 1 s (100 Amplitude seconds at the test's time scale): long enough that
    // `export.poll#3` is reached even when a busy machine slows the runner's polls.
    let h = harness::start(cohorts, |c| {
        c.redirect_threshold_rows = 50_000;
        c.job_duration = std::time::Duration::from_secs(100);
    })
    .await;
    let (output, state, root) = if case.s3 {
        let bucket = common::s3::create_bucket("kill");
        (
            format!("s3://{bucket}/out"),
            format!("s3://{bucket}/state"),
            format!("s3://{bucket}/out"),
        )
    } else {
        (
            "out".to_string(),
            "state".to_string(),
            h.path("out").to_string_lossy().into_owned(),
        )
    };
    let file = h.export_pipeline(
        PIPELINE,
        &["big", "small"],
        &output,
        &state,
        "[download]\nprops = true\n\n[lineage]\nfile = \"lineage.ndjson\"\n",
    );
    let files = [file.as_path()];

    let (first, first_report, first_err) = h
        .run_env(&files, &[], &[("COHORT_SYNC_CRASH_AT", &case.arm())])
        .await;
    let expected_first = if case.term { 143 } else { -9 };
    // A SIGTERM is handled asynchronously: when it lands as the run finishes its last
    // step, the run may complete instead — then it must have done everything.
    let finished = case.term && first == 0;
    ensure(first == expected_first || finished, || {
        format!(
            "first run exited {first}, expected {expected_first} (point not reached?)\n{first_err}"
        )
    })?;
    if case.term {
        let report = first_report
            .as_ref()
            .ok_or("a stopped run writes its report")?;
        if finished {
            let all_done = report["pipelines"][0]["cohorts"]
                .as_array()
                .is_some_and(|c| c.iter().all(|c| c["outcome"] == "exported"));
            ensure(all_done, || {
                format!("exit 0 after SIGTERM with work left: {report:#}")
            })?;
        }
    }
    let (second, second_report, second_err) = h.run_env(&files, &[], &[]).await;
    ensure(second == 0, || {
        format!("rerun exited {second}\n{second_err}\n{second_report:#?}")
    })?;
    let second_report = second_report.ok_or("rerun wrote no report")?;
    check_outputs(&h, &root, &second_report)?;
    check_lineage_events(&h, &second_report)?;

    // Quota: one request per cohort, two only across the answer → state-write window.
    let log = h.requests().await;
    let spent: BTreeMap<String, usize> = spent_by_cohort(&log);
    let possibly = second_report["pipelines"][0]["quota_possibly_spent"]
        .as_u64()
        .unwrap_or(0);
    // Cohorts run in parallel: whatever point the kill was armed at, another cohort may
    // have been inside the request → state-write window then. Only there can a second
    // request happen, and the rerun then reports the first as possibly spent.
    for (cohort, n) in &spent {
        ensure(*n <= 2, || {
            format!("cohort {cohort} was requested {n} times: {spent:?}")
        })?;
    }
    // Every extra request is reported as possibly spent (a request whose intent was saved
    // but that the kill stopped before it left is reported too: nobody can tell).
    let extra: usize = spent.values().map(|n| n.saturating_sub(1)).sum();
    ensure(extra as u64 <= possibly, || {
        format!("{extra} extra request(s) but the rerun reports {possibly} possibly spent")
    })?;
    Ok(format!(
        "first exit {first}, rerun exit 0, requests {spent:?}{}",
        if possibly > 0 {
            format!(", rerun reports {possibly} possibly spent")
        } else {
            String::new()
        }
    ))
}

/// The OpenLineage file after the rerun: every line a whole event valid against the spec
/// (whatever the kill cut), and the rerun's own START and COMPLETE last.
fn check_lineage_events(h: &Harness, rerun: &Value) -> Result<(), String> {
    let checked = common::peers::check_lineage(&h.path("lineage.ndjson"));
    let events = checked["events"].as_array().ok_or("no events")?;
    let n = events.len();
    ensure(n >= 2, || format!("{n} lineage events"))?;
    let (start, end) = (&events[n - 2], &events[n - 1]);
    ensure(
        start["eventType"] == "START"
            && end["eventType"] == "COMPLETE"
            && start["run"]["runId"] == end["run"]["runId"]
            && end["run"]["facets"]["cohortSync"]["runId"] == rerun["run_id"],
        || format!("the rerun's events are not START, COMPLETE: {start:#} {end:#}"),
    )
}

/// The tree after the rerun: each cohort once, exact, readable whole by pyarrow and
/// DuckDB; nothing staged or half-written; `_SUCCESS` only for complete runs.
fn check_outputs(h: &Harness, root: &str, report: &Value) -> Result<(), String> {
    // Every cohort of these tests has the same property columns.
    let tree = check_tree(root, &export_columns(&h.cohorts[0]));
    let files = tree["files"].as_object().ok_or("no files")?;
    let mut total = 0;
    for spec in &h.cohorts {
        let mine: Vec<(&String, &Value)> = files
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("cohort_id={}/", spec.id)))
            .collect();
        ensure(mine.len() == 1, || {
            format!(
                "cohort {}: {} files: {:?}",
                spec.id,
                mine.len(),
                files.keys()
            )
        })?;
        let (path, f) = mine[0];
        ensure(f["rows"].as_u64() == Some(spec.size), || {
            format!("{path}: {} rows, expected {}", f["rows"], spec.size)
        })?;
        ensure(
            f["digest"].as_str() == Some(expected_digest(spec, &spec.props).as_str()),
            || format!("{path}: values differ from the emulator's members"),
        )?;
        total += spec.size;
    }
    ensure(tree["dataset_rows"].as_u64() == Some(total), || {
        format!(
            "pyarrow.dataset read {} rows, expected {total}",
            tree["dataset_rows"]
        )
    })?;
    if !root.starts_with("s3://") {
        ensure(tree["duckdb_rows"].as_u64() == Some(total), || {
            format!("DuckDB read {} rows, expected {total}", tree["duckdb_rows"])
        })?;
    }
    let objects: Vec<&str> = tree["objects"]
        .as_array()
        .ok_or("no objects")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for o in &objects {
        ensure(!o.contains('#') && !o.starts_with("_staging"), || {
            format!("left behind after the rerun: {o} (all: {objects:?})")
        })?;
    }
    // `_SUCCESS`: the rerun's, plus the first run's only if that run finished everything.
    let run_id = report["run_id"].as_str().ok_or("no run id")?;
    let rerun_success = format!("_runs/{run_id}/{PIPELINE}/_SUCCESS");
    ensure(objects.contains(&rerun_success.as_str()), || {
        format!("no {rerun_success}: {objects:?}")
    })?;
    for o in objects.iter().filter(|o| o.ends_with("/_SUCCESS")) {
        let dir = o.trim_end_matches("_SUCCESS");
        let manifest = format!("{dir}manifest.json");
        ensure(objects.contains(&manifest.as_str()), || {
            format!("{o} without its manifest")
        })?;
    }
    check_history(root, run_id, h.cohorts.len())
}

/// The sync history reads whole (DuckDB, or pyarrow.dataset on S3), and holds the rerun's
/// row for every cohort; a file in it is a whole Parquet file or a hidden temporary one.
fn check_history(root: &str, run_id: &str, cohorts: usize) -> Result<(), String> {
    let history = read_history(root);
    let files: Vec<&str> = history["files"]
        .as_array()
        .ok_or("no history files")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for f in &files {
        let name = f.rsplit('/').next().unwrap_or_default();
        let whole = name.starts_with("run-") && name.ends_with(".parquet");
        let hidden = name.starts_with(".run-") && name.ends_with(".parquet.tmp");
        ensure(whole || hidden, || format!("unexpected history object {f}"))?;
    }
    let rows: Vec<&Value> = history["rows"]
        .as_array()
        .ok_or("no history rows")?
        .iter()
        .filter(|r| r["run_id"] == run_id)
        .collect();
    ensure(rows.len() == cohorts, || {
        format!(
            "the rerun has {} history rows, expected {cohorts}: {history:#}",
            rows.len()
        )
    })?;
    for r in rows {
        ensure(
            r["outcome"] == "exported" || r["outcome"] == "skipped_unchanged",
            || format!("rerun history row: {r}"),
        )?;
    }
    Ok(())
}

/// Runs one reverse case: a mirror of 1,000 members to a source that drops 50 and adds 700.
async fn reverse_case(case: Case) -> Result<String, String> {
    let h = harness::start(vec![cohort("rev", 1_000)], |_| {}).await;
    let source = h.write_crm_source("rev", 50..1_000, 700);
    let file = h.reverse_pipeline(
        "mirror",
        "crm.csv",
        "amplitude_id",
        "cohort_id = \"rev\"",
        "mode = \"mirror\"\nchunk_size = 300",
    );
    let files = [file.as_path()];
    let (first, first_report, first_err) = h
        .run_env(&files, &[], &[("COHORT_SYNC_CRASH_AT", &case.arm())])
        .await;
    let expected_first = if case.term { 143 } else { -9 };
    // A SIGTERM landing as the last call is answered may find nothing left to stop.
    let finished = case.term
        && first == 0
        && first_report
            .as_ref()
            .is_some_and(|r| r["pipelines"][0]["reverse"]["outcome"] == "applied");
    ensure(first == expected_first || finished, || {
        format!(
            "first run exited {first}, expected {expected_first} (point not reached?)\n{first_err}"
        )
    })?;
    let (second, report, second_err) = h.run_env(&files, &[], &[]).await;
    ensure(second == 0, || {
        format!("rerun exited {second}\n{second_err}\n{report:#?}")
    })?;
    let report = report.ok_or("rerun wrote no report")?;
    let rev = &report["pipelines"][0]["reverse"];
    same_membership(&h, "rev", &source).await?;
    // Each chunk applied once, plus the resends the rerun reports.
    let log = h.requests().await;
    let calls = changes(&log);
    // A call marked `sending` when the kill came may or may not have left: the rerun sends
    // it again and counts it resent in doubt, so the calls are 4 plus at most the resends.
    let resent = rev["calls_resent_in_doubt"].as_u64().unwrap_or(0);
    let n = calls.len() as u64;
    ensure((4..=4 + resent).contains(&n), || {
        format!("{n} membership calls for a 4-chunk plan with {resent} resend(s)")
    })?;
    // One baseline download, unless the first run had finished the plan (then the rerun is
    // an ordinary new run: the cohort changed, so it needs a fresh baseline, finds it in
    // sync and sends nothing).
    let spent = spent_requests(&log).len();
    let fresh_run = rev["outcome"] == "in_sync";
    ensure(spent <= if fresh_run { 2 } else { 1 }, || {
        format!(
            "{spent} baseline downloads requested (rerun outcome {})",
            rev["outcome"]
        )
    })?;
    // The derived baseline is all or nothing: killed once its head is written, the rerun
    // uses it (no second download) and finds the cohort in sync; killed before, the rerun
    // downloads. Either way the membership above is exact.
    let used = rev["baseline"]["used"].as_str().unwrap_or_default();
    match case.point {
        "reverse.derived.written" => ensure(used == "derived" && spent == 1 && fresh_run, || {
            format!("after a kill past the derived head: baseline {used}, {spent} downloads")
        })?,
        "reverse.derived.ids_written" | "reverse.journal.closed" => {
            ensure(used == "download" && spent == 2 && fresh_run, || {
                format!("after a kill before the derived head: baseline {used}, {spent} downloads")
            })?
        }
        _ => {}
    }
    Ok(format!(
        "first exit {first}, rerun exit 0, {} membership calls ({resent} resent in doubt), {spent} download request(s)",
        calls.len()
    ))
}

/// Runs one spill case: the killed run leaves its spill folders (people's ids) under its
/// TMPDIR; the rerun, with the same TMPDIR, removes them, applies the plan exactly and
/// leaves the folder empty, without another baseline download.
async fn reverse_spill_case(case: Case) -> Result<String, String> {
    let h = harness::start(vec![cohort("big", 70_000)], |_| {}).await;
    let source = h.write_crm_source("big", 50..70_000, 30);
    let file = h.reverse_pipeline(
        "mirror",
        "crm.csv",
        "amplitude_id",
        "cohort_id = \"big\"",
        "mode = \"mirror\"",
    );
    let files = [file.as_path()];
    let tmp = h.path("tmp");
    std::fs::create_dir(&tmp).map_err(|e| e.to_string())?;
    let tmp_s = tmp.to_string_lossy().into_owned();
    let env = [
        ("TMPDIR", tmp_s.as_str()),
        ("COHORT_SYNC_DIFF_MEMORY_MIB", "1"),
    ];
    let arm = case.arm();
    let armed: Vec<(&str, &str)> = env
        .iter()
        .copied()
        .chain([("COHORT_SYNC_CRASH_AT", arm.as_str())])
        .collect();
    let (first, _, first_err) = h.run_env(&files, &[], &armed).await;
    let expected_first = if case.term { 143 } else { -9 };
    ensure(first == expected_first, || {
        format!(
            "first run exited {first}, expected {expected_first} (point not reached?)\n{first_err}"
        )
    })?;
    let left = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let stranded = left(&tmp);
    if !case.term {
        ensure(!stranded.is_empty(), || {
            "the killed run left no spill folder: the case does not spill".to_string()
        })?;
    }
    let (second, report, second_err) = h.run_env(&files, &[], &env).await;
    ensure(second == 0, || {
        format!("rerun exited {second}\n{second_err}\n{report:#?}")
    })?;
    same_membership(&h, "big", &source).await?;
    let after = left(&tmp);
    ensure(after.is_empty(), || {
        format!("left under TMPDIR after the rerun: {after:?} (stranded by the kill: {stranded:?})")
    })?;
    let log = h.requests().await;
    let spent = spent_requests(&log).len();
    ensure(spent == 1, || {
        format!("{spent} baseline downloads requested")
    })?;
    Ok(format!(
        "first exit {first} leaving {} spill folder(s), rerun exit 0 removing them, {} membership calls, {spent} download request(s)",
        stranded.len(),
        changes(&log).len()
    ))
}

/// An error unless cohort `id` holds exactly `want`.
async fn same_membership(h: &Harness, id: &str, want: &BTreeSet<String>) -> Result<(), String> {
    let got = h.member_ids(id).await;
    ensure(&got == want, || {
        format!(
            "membership differs from the source: {} members, {} missing, {} extra",
            got.len(),
            want.difference(&got).count(),
            got.difference(want).count()
        )
    })
}

async fn run_case(case: Case) -> Result<String, String> {
    match case.kind {
        Kind::Export => export_case(case).await,
        Kind::Reverse => reverse_case(case).await,
        Kind::ReverseSpill => reverse_spill_case(case).await,
        Kind::Changes => changes_case(case).await,
    }
}

/// Runs one change-file case: two cohorts exported, their members changed, exported again
/// with the kill armed, then rerun. The change files must equal DuckDB's `EXCEPT` of the
/// two snapshots both ways, the killed export and its rerun spend one request per cohort
/// (two only across the answer → state-write window, reported), nothing is left staged.
async fn changes_case(case: Case) -> Result<String, String> {
    use common::changes::{check_change_file, churn};
    let cohorts = vec![cohort("big", 20_000), cohort("small", 3_000)];
    let h = harness::start(cohorts, |c| c.redirect_threshold_rows = 10_000).await;
    let (output, state, bucket) = if case.s3 {
        let bucket = common::s3::create_bucket("killch");
        (
            format!("s3://{bucket}/out"),
            format!("s3://{bucket}/state"),
            Some(bucket),
        )
    } else {
        ("out".to_string(), "state".to_string(), None)
    };
    let file = h.write(
        PIPELINE,
        &format!(
            "kind = \"export\"\nname = \"{PIPELINE}\"\n\n{}\n[select]\nids = [\"big\", \"small\"]\n\n[output]\nurl = \"{output}\"\nchanges = true\n\n[state]\nurl = \"{state}\"\n",
            h.connection()
        ),
    );
    let files = [file.as_path()];
    let today = chrono::Utc::now().date_naive().to_string();
    let read = |rel: &str| -> Vec<u8> {
        match &bucket {
            Some(b) => common::s3::get(b, &format!("out/{rel}")),
            None => std::fs::read(h.path("out").join(rel)).unwrap_or_default(),
        }
    };
    let (code, _, err) = h.run_env(&files, &[], &[]).await;
    ensure(code == 0, || format!("first export exited {code}\n{err}"))?;
    let mut churned = Vec::new();
    for id in ["big", "small"] {
        let rel = format!("cohort_id={id}/snapshot_date={today}/part-0.parquet");
        std::fs::write(h.path(&format!("old-{id}.parquet")), read(&rel))
            .map_err(|e| e.to_string())?;
        churned.push((id, churn(&h, id, 25, 60).await));
    }
    let since = h.last_seq().await;
    let (first, _, first_err) = h
        .run_env(&files, &[], &[("COHORT_SYNC_CRASH_AT", &case.arm())])
        .await;
    let expected_first = if case.term { 143 } else { -9 };
    ensure(first == expected_first || (case.term && first == 0), || {
        format!("killed export exited {first}, expected {expected_first}\n{first_err}")
    })?;
    let (second, report, second_err) = h.run_env(&files, &[], &[]).await;
    ensure(second == 0, || {
        format!("rerun exited {second}\n{second_err}")
    })?;
    let report = report.ok_or("rerun wrote no report")?;
    for (id, (added, removed)) in &churned {
        let new = h.path(&format!("new-{id}.parquet"));
        let changes = h.path(&format!("changes-{id}.parquet"));
        std::fs::write(
            &new,
            read(&format!(
                "cohort_id={id}/snapshot_date={today}/part-0.parquet"
            )),
        )
        .map_err(|e| e.to_string())?;
        std::fs::write(
            &changes,
            read(&format!(
                "_changes/cohort_id={id}/snapshot_date={today}/part-0.parquet"
            )),
        )
        .map_err(|e| e.to_string())?;
        let old = h.path(&format!("old-{id}.parquet"));
        let dir = h.path("");
        let checked = std::panic::catch_unwind(|| {
            check_change_file(&dir, &old, &new, &changes, added, removed)
        });
        ensure(checked.is_ok(), || {
            format!("cohort {id}: change file wrong")
        })?;
    }
    let log = h.requests_since(since).await;
    let spent = spent_by_cohort(&log);
    let possibly = report["pipelines"][0]["quota_possibly_spent"]
        .as_u64()
        .unwrap_or(0);
    let extra: usize = spent.values().map(|n| n.saturating_sub(1)).sum();
    ensure(
        spent.values().all(|n| *n <= 2) && extra as u64 <= possibly,
        || format!("requests after the change: {spent:?}, {possibly} reported possibly spent"),
    )?;
    let staged: Vec<String> = match &bucket {
        Some(b) => common::s3::keys(b, "out/_staging/"),
        None => {
            let dir = h.path("out/_staging");
            if dir.exists() {
                vec![dir.display().to_string()]
            } else {
                vec![]
            }
        }
    };
    ensure(staged.is_empty(), || format!("left staged: {staged:?}"))?;
    Ok(format!(
        "first exit {first}, rerun exit 0, requests after the change {spent:?}"
    ))
}

async fn run_all(cases: Vec<Case>, parallel: usize, name: &str) {
    let results: Vec<(Case, Result<String, String>)> = futures::stream::iter(cases)
        .map(|case| async move { (case, run_case(case).await) })
        .buffer_unordered(parallel)
        .collect()
        .await;
    let mut lines = Vec::new();
    let mut failures = Vec::new();
    for (case, result) in &results {
        match result {
            Ok(what) => lines.push(format!("ok    {}: {what}", case.label())),
            Err(e) => {
                lines.push(format!("FAIL  {}: {e}", case.label()));
                failures.push(format!("{}: {e}", case.label()));
            }
        }
    }
    lines.sort();
    let text = lines.join("\n");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("kill-anywhere-{name}.txt"));
    let _ = std::fs::write(&out, format!("{text}\n"));
    println!("{text}");
    assert!(
        failures.is_empty(),
        "{} of {} kill points failed:\n{}",
        failures.len(),
        results.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn export_survives_a_kill_or_stop_at_every_point() {
    let cases = export_cases();
    assert!(cases.len() >= 50, "{} export cases", cases.len());
    run_all(cases, 3, "export").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn change_files_survive_a_kill_or_stop_at_every_point() {
    let cases = changes_cases();
    run_all(cases, 3, "changes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reverse_apply_survives_a_kill_or_stop_at_every_point() {
    let cases = reverse_cases();
    assert!(cases.len() >= 15, "{} reverse cases", cases.len());
    run_all(cases, 3, "reverse").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reverse_spill_survives_a_kill_at_every_point() {
    run_all(reverse_spill_cases(), 3, "reverse-spill").await;
}

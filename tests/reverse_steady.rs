//! Reverse pipelines beyond the peers (issue 16), end to end against the emulator:
//! scheduled runs that spend no download in steady state (the derived baseline), the
//! owned-member mirror, and the rejected-ids ledger. Downloads are counted in the
//! emulator's request log; membership is read from the emulator.

mod common;

use std::collections::BTreeSet;

use cohort_sync::emulator::universe::{amplitude_id, member_numbers, user_id};
use common::emulator::cohort;
use common::files::{id_set, write_ids};
use common::harness::{self, Harness};
use common::log::{MEMBERSHIP, changes, spent_requests};
use serde_json::Value;

fn rev(report: &Value) -> &Value {
    &report["pipelines"][0]["reverse"]
}

/// The full list `what` the run wrote, read back.
fn list(report: &Value, what: &str) -> BTreeSet<String> {
    let at = rev(report)["lists"][what]
        .as_str()
        .unwrap_or_else(|| panic!("no {what} list: {:#}", rev(report)));
    id_set(&common::s3::read(at))
}

/// The cohort's members and `n` ids of the universe that are not members.
fn members_and_newcomers(seed: u64, id: &str, size: u64, n: usize) -> (Vec<u64>, Vec<u64>) {
    let members: Vec<u64> = member_numbers(seed, id, size).collect();
    let known: BTreeSet<u64> = members.iter().copied().collect();
    let newcomers: Vec<u64> = member_numbers(seed + 1, "newcomers", (n * 3) as u64)
        .filter(|x| !known.contains(x))
        .take(n)
        .collect();
    assert_eq!(newcomers.len(), n);
    (members, newcomers)
}

fn amp(ns: &[u64]) -> Vec<String> {
    ns.iter().map(|n| amplitude_id(*n).to_string()).collect()
}

/// Source of scheduled run `i`: the members but the first `10 (i + 1)`, plus the first
/// `20 (i + 1)` newcomers — a different list every run.
fn source_of_run(i: usize, members: &[u64], newcomers: &[u64]) -> BTreeSet<String> {
    amp(&members[10 * (i + 1)..])
        .into_iter()
        .chain(amp(&newcomers[..20 * (i + 1)]))
        .collect()
}

async fn run_ok(h: &Harness, file: &std::path::Path, args: &[&str]) -> Value {
    let (code, report, stderr) = h.run(file, args).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_scheduled_runs_with_a_changing_source_spend_one_download() {
    let spec = cohort("steady", 2_000);
    let (members, newcomers) = members_and_newcomers(spec.seed, "steady", 2_000, 250);
    let h = harness::start(vec![spec], |_| {}).await;
    let file = h.reverse_pipeline(
        "steady-sync",
        "crm.csv",
        "amplitude_id",
        r#"cohort_id = "steady""#,
        "mode = \"mirror\"\nchunk_size = 25",
    );
    for i in 0..10 {
        let source = source_of_run(i, &members, &newcomers);
        write_ids(&h.path("crm.csv"), "amplitude_id", source.iter().cloned());
        let seq = h.last_seq().await;
        let report = run_ok(&h, &file, &[]).await;
        let log = h.requests_since(seq).await;
        assert!(
            !changes(&log).is_empty(),
            "run {i} sends its changes: {:#}",
            rev(&report)
        );
        assert_eq!(h.member_ids("steady").await, source, "run {i}");
        let used = &rev(&report)["baseline"]["used"];
        assert_eq!(
            used,
            if i == 0 { "download" } else { "derived" },
            "run {i}: {:#}",
            rev(&report)["baseline"]
        );
        assert_eq!(rev(&report)["derived"]["written"], true, "run {i}");
    }
    let log = h.requests().await;
    assert_eq!(spent_requests(&log).len(), 1, "ten runs, one download");

    // A plan with a free derived baseline shows the counts and the full lists, and spends
    // nothing.
    let next = source_of_run(10, &members, &newcomers);
    write_ids(&h.path("crm.csv"), "amplitude_id", next.iter().cloned());
    let current = h.member_ids("steady").await;
    let seq = h.last_seq().await;
    let plan = h.plan(&[file.as_path()], &[]).await;
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let report = plan.report();
    assert_eq!(rev(report)["baseline"]["used"], "derived");
    assert_eq!(
        list(report, "add"),
        next.difference(&current).cloned().collect()
    );
    assert_eq!(
        list(report, "remove"),
        current.difference(&next).cloned().collect()
    );
    assert!(spent_requests(&h.requests_since(seq).await).is_empty());

    // Someone else changes the cohort (a recompute moves lastComputed): the derived
    // baseline no longer stands, the run downloads and says why.
    let moved = chrono::Utc::now().timestamp_millis() + 3_600_000;
    h.patch_cohort("steady", serde_json::json!({"last_computed_ms": moved}))
        .await;
    let seq = h.last_seq().await;
    let report = run_ok(&h, &file, &[]).await;
    let baseline = &rev(&report)["baseline"];
    assert_eq!(baseline["used"], "download", "{baseline:#}");
    let reason = baseline["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("lastComputed moved"), "{reason}");
    assert_eq!(spent_requests(&h.requests_since(seq).await).len(), 1);
    assert_eq!(h.member_ids("steady").await, next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_user_id_members_without_one_are_counted_and_runs_stay_free() {
    let spec = cohort("users", 1_500);
    let (members, newcomers) = members_and_newcomers(spec.seed, "users", 1_500, 100);
    let without = members.iter().filter(|n| user_id(**n).is_none()).count();
    assert!(without > 0, "the universe has members without a user id");
    let h = harness::start(vec![spec], |_| {}).await;
    let file = h.reverse_pipeline(
        "users-sync",
        "crm.csv",
        "user_id",
        r#"cohort_id = "users""#,
        "mode = \"add_only\"",
    );
    let users = |ns: &[u64]| -> Vec<String> { ns.iter().filter_map(|n| user_id(*n)).collect() };
    for i in 0..3 {
        let source: Vec<String> = users(&members[..500])
            .into_iter()
            .chain(users(&newcomers[..30 * (i + 1)]))
            .collect();
        write_ids(&h.path("crm.csv"), "user_id", source.into_iter());
        let report = run_ok(&h, &file, &[]).await;
        assert_eq!(
            rev(&report)["derived"]["written"],
            true,
            "run {i}: {:#}",
            rev(&report)["derived"]
        );
        if i > 0 {
            assert_eq!(rev(&report)["baseline"]["used"], "derived", "run {i}");
        }
    }
    assert_eq!(spent_requests(&h.requests().await).len(), 1);
    let log = h.requests().await;
    assert!(
        log.iter()
            .filter(|r| r.path == MEMBERSHIP)
            .all(|r| r.status < 300)
    );
}

/// Puts amplitude ids into / takes them out of a cohort as "someone else" would (the
/// emulator's admin API: a change that moves `lastComputed`, like any writer).
async fn someone_else(h: &Harness, cohort: &str, add: &[u64], remove: &[u64]) {
    let ids = |ns: &[u64]| -> Vec<i64> { ns.iter().map(|n| amplitude_id(*n)).collect() };
    h.patch_cohort(
        cohort,
        serde_json::json!({"add_members": ids(add), "remove_members": ids(remove)}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_owned_removes_only_what_it_added() {
    let spec = cohort("owned", 500);
    let (members, newcomers) = members_and_newcomers(spec.seed, "owned", 500, 80);
    let h = harness::start(vec![spec], |_| {}).await;
    let file = h.reverse_pipeline(
        "owned-sync",
        "crm.csv",
        "amplitude_id",
        r#"cohort_id = "owned""#,
        "mode = \"mirror_owned\"\nchunk_size = 20",
    );
    let all: BTreeSet<String> = amp(&members).into_iter().collect();

    // First run: the 100 members missing from the source were not added by this pipeline
    // and stay; the 50 newcomers are added (and owned).
    let first: BTreeSet<String> = amp(&members[..400])
        .into_iter()
        .chain(amp(&newcomers[..50]))
        .collect();
    write_ids(&h.path("crm.csv"), "amplitude_id", first.iter().cloned());
    let report = run_ok(&h, &file, &[]).await;
    assert_eq!(rev(&report)["not_owned_kept"], 100, "{:#}", rev(&report));
    let expected: BTreeSet<String> = all.union(&first).cloned().collect();
    assert_eq!(h.member_ids("owned").await, expected);

    // Someone else adds a member; the source then drops ten of the ids the pipeline added.
    let theirs = newcomers[70];
    someone_else(&h, "owned", &[theirs], &[]).await;
    let second: BTreeSet<String> = amp(&members[..400])
        .into_iter()
        .chain(amp(&newcomers[10..50]))
        .collect();
    write_ids(&h.path("crm.csv"), "amplitude_id", second.iter().cloned());
    let seq = h.last_seq().await;
    let report = run_ok(&h, &file, &[]).await;
    let calls = changes(&h.requests_since(seq).await);
    assert_eq!(
        calls,
        vec![("REMOVE".to_string(), 10)],
        "{:#}",
        rev(&report)
    );
    assert_eq!(
        list(&report, "remove"),
        amp(&newcomers[..10]).into_iter().collect()
    );
    let mut expected: BTreeSet<String> = all.union(&second).cloned().collect();
    expected.insert(amplitude_id(theirs).to_string());
    assert_eq!(h.member_ids("owned").await, expected);
    // The behavioral side changed the cohort: that run could not use its derived baseline.
    assert_eq!(rev(&report)["baseline"]["used"], "download");

    // The source drops every id the pipeline added: they all go; the member someone else
    // added and the members that were there before the pipeline stay.
    let third: BTreeSet<String> = amp(&members[..400]).into_iter().collect();
    write_ids(&h.path("crm.csv"), "amplitude_id", third.iter().cloned());
    let report = run_ok(&h, &file, &[]).await;
    let mut expected: BTreeSet<String> = all.clone();
    expected.insert(amplitude_id(theirs).to_string());
    assert_eq!(h.member_ids("owned").await, expected, "{:#}", rev(&report));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_ids_are_held_back_until_retried() {
    let spec = cohort("rej", 300);
    let (members, newcomers) = members_and_newcomers(spec.seed, "rej", 300, 5);
    let h = harness::start(vec![spec], |_| {}).await;
    let file = h.reverse_pipeline(
        "rej-sync",
        "crm.csv",
        "amplitude_id",
        r#"cohort_id = "rej""#,
        "mode = \"add_only\"",
    );
    // Amplitude ids no member has: the emulator skips them.
    let unknown: Vec<String> = (1..=3).map(|i| (i * 7).to_string()).collect();
    let source: Vec<String> = amp(&members)
        .into_iter()
        .chain(amp(&newcomers))
        .chain(unknown.iter().cloned())
        .collect();
    write_ids(&h.path("crm.csv"), "amplitude_id", source.iter().cloned());

    let seq = h.last_seq().await;
    let report = run_ok(&h, &file, &[]).await;
    assert_eq!(
        changes(&h.requests_since(seq).await),
        vec![("ADD".to_string(), 8)]
    );
    assert_eq!(
        rev(&report)["rejected"]["recorded"],
        3,
        "{:#}",
        rev(&report)
    );
    let at = rev(&report)["lists"]["rejected"]
        .as_str()
        .expect("rejected list");
    let lines: Vec<Value> = String::from_utf8(common::s3::read(at))
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let ids: BTreeSet<String> = lines
        .iter()
        .map(|l| l["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids, unknown.iter().cloned().collect());
    assert!(
        lines
            .iter()
            .all(|l| l["times"] == 1 && l["reason"] == "skipped by a membership ADD")
    );

    // The next run holds them back: nothing to send.
    let seq = h.last_seq().await;
    let report = run_ok(&h, &file, &[]).await;
    assert!(changes(&h.requests_since(seq).await).is_empty());
    assert_eq!(
        rev(&report)["rejected"]["held_back"],
        3,
        "{:#}",
        rev(&report)
    );
    assert_eq!(
        list(&report, "held_back"),
        unknown.iter().cloned().collect()
    );
    let summary = rev(&report)["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("3 ids held back"), "{summary}");

    // --retry-rejected sends them again; Amplitude skips them again: seen twice now.
    let seq = h.last_seq().await;
    let report = run_ok(&h, &file, &["--retry-rejected"]).await;
    assert_eq!(
        changes(&h.requests_since(seq).await),
        vec![("ADD".to_string(), 3)]
    );
    assert_eq!(rev(&report)["rejected"]["retried"], 3);
    let at = rev(&report)["lists"]["rejected"]
        .as_str()
        .expect("rejected list");
    let text = String::from_utf8(common::s3::read(at)).expect("utf-8");
    assert!(text.lines().all(|l| l.contains("\"times\":2")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_id_kind_is_refused_unless_forced() {
    let spec = cohort("kind", 200);
    let (members, _) = members_and_newcomers(spec.seed, "kind", 200, 1);
    let h = harness::start(vec![spec], |_| {}).await;
    write_ids(&h.path("crm.csv"), "amplitude_id", amp(&members[..150]));
    let by_amp = h.reverse_pipeline(
        "kind-sync",
        "crm.csv",
        "amplitude_id",
        r#"cohort_id = "kind""#,
        "mode = \"add_only\"",
    );
    run_ok(&h, &by_amp, &[]).await;
    let users: Vec<String> = members[..150].iter().filter_map(|n| user_id(*n)).collect();
    write_ids(&h.path("users.csv"), "user_id", users.into_iter());
    let by_user = h.reverse_pipeline(
        "kind-sync",
        "users.csv",
        "user_id",
        r#"cohort_id = "kind""#,
        "mode = \"add_only\"",
    );
    let seq = h.last_seq().await;
    let (code, report, stderr) = h.run(&by_user, &[]).await;
    assert_eq!(code, 1, "{stderr}");
    let error = report["pipelines"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("source.id_kind is user_id") && error.contains("--force"),
        "{error}"
    );
    assert_eq!(rev(&report)["outcome"], "refused");
    assert!(h.requests_since(seq).await.is_empty(), "nothing was asked");
    let (code, report, stderr) = h.run(&by_user, &["--force"]).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_a_member_removed_behind_the_tools_back() {
    let spec = cohort("ver", 400);
    let (members, newcomers) = members_and_newcomers(spec.seed, "ver", 400, 30);
    let h = harness::start(vec![spec], |_| {}).await;
    let source: BTreeSet<String> = amp(&members[20..])
        .into_iter()
        .chain(amp(&newcomers))
        .collect();
    write_ids(&h.path("crm.csv"), "amplitude_id", source.iter().cloned());
    let file = h.reverse_pipeline(
        "ver-sync",
        "crm.csv",
        "amplitude_id",
        r#"cohort_id = "ver""#,
        "mode = \"mirror\"\nverify = true",
    );
    let report_path = h.path("report-verify.json");
    // The run freezes after its last call, just before verifying; meanwhile someone else
    // removes a member the run expects to stay.
    let run = h
        .command(&[
            "run",
            &file.to_string_lossy(),
            "--report",
            &report_path.to_string_lossy(),
        ])
        .env("COHORT_SYNC_CRASH_AT", "reverse.verify.before:stop")
        .spawn()
        .expect("spawn");
    let pid = run.id().expect("pid");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !is_stopped(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never reached its verify step"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let gone = members[100];
    someone_else(&h, "ver", &[], &[gone]).await;
    let resumed = tokio::process::Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .status()
        .await
        .expect("kill -CONT");
    assert!(resumed.success());
    let out = run.wait_with_output().await.expect("run ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "drift fails the run: {stderr}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).expect("report"))
            .expect("JSON");
    let v = &rev(&report)["verify"];
    let gone_id = amplitude_id(gone).to_string();
    assert_eq!(v["verified"], true, "{v:#}");
    assert_eq!(v["missing"], 1, "{v:#}");
    assert_eq!(v["unexpected"], 0, "{v:#}");
    assert_eq!(v["sample_missing"], serde_json::json!([gone_id]));
    let missing = id_set(&common::s3::read(
        v["lists"]["missing"].as_str().expect("missing list"),
    ));
    assert_eq!(missing, BTreeSet::from([gone_id.clone()]));
    let error = report["pipelines"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains(&gone_id), "{error}");
    assert_eq!(rev(&report)["derived"]["written"], false);
    assert_eq!(rev(&report)["outcome"], "drift");
    // The baseline and the verify: two downloads.
    assert_eq!(spent_requests(&h.requests().await).len(), 2);

    // The next run puts the member back and verifies clean.
    let report = run_ok(&h, &file, &[]).await;
    assert_eq!(rev(&report)["verify"]["missing"], 0, "{:#}", rev(&report));
    assert_eq!(h.member_ids("ver").await, source);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_a_chunk_and_its_ownership_record_is_caught_up() {
    let spec = cohort("own-kill", 300);
    let (members, newcomers) = members_and_newcomers(spec.seed, "own-kill", 300, 60);
    let h = harness::start(vec![spec], |_| {}).await;
    let file = h.reverse_pipeline(
        "own-kill",
        "crm.csv",
        "amplitude_id",
        r#"cohort_id = "own-kill""#,
        "mode = \"mirror_owned\"\nchunk_size = 20\nmax_removal_pct = 50",
    );
    let with_newcomers: BTreeSet<String> =
        amp(&members).into_iter().chain(amp(&newcomers)).collect();
    write_ids(
        &h.path("crm.csv"),
        "amplitude_id",
        with_newcomers.iter().cloned(),
    );
    // Killed once the second ADD is journaled applied, before its ids are recorded as
    // owned; the rerun resumes the plan and records them from the journal first.
    let (code, _, stderr) = h
        .run_env(
            &[file.as_path()],
            &[],
            &[("COHORT_SYNC_CRASH_AT", "reverse.chunk.journaled#2")],
        )
        .await;
    assert_eq!(code, -9, "{stderr}");
    let report = run_ok(&h, &file, &[]).await;
    assert_eq!(
        rev(&report)["journal"]["resumed"],
        true,
        "{:#}",
        rev(&report)
    );
    assert_eq!(h.member_ids("own-kill").await, with_newcomers);

    // Every id the pipeline added leaves with the source: none was missed.
    write_ids(&h.path("crm.csv"), "amplitude_id", amp(&members));
    let seq = h.last_seq().await;
    let report = run_ok(&h, &file, &[]).await;
    let removed: u64 = changes(&h.requests_since(seq).await)
        .iter()
        .filter(|(op, _)| op == "REMOVE")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(removed, 60, "{:#}", rev(&report));
    assert_eq!(
        h.member_ids("own-kill").await,
        amp(&members).into_iter().collect::<BTreeSet<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_leaves_last_computed_as_it_was_is_caught_by_the_size() {
    let spec = cohort("sized", 400);
    let (members, newcomers) = members_and_newcomers(spec.seed, "sized", 400, 20);
    let h = harness::start(vec![spec], |_| {}).await;
    let file = h.reverse_pipeline(
        "sized-sync",
        "crm.csv",
        "amplitude_id",
        r#"cohort_id = "sized""#,
        "mode = \"add_only\"",
    );
    write_ids(
        &h.path("crm.csv"),
        "amplitude_id",
        amp(&members[..300])
            .into_iter()
            .chain(amp(&newcomers[..10])),
    );
    let report = run_ok(&h, &file, &[]).await;
    assert_eq!(rev(&report)["derived"]["written"], true);
    let head: Value = serde_json::from_str(
        &std::fs::read_to_string(h.path("state/sized-sync/reverse-derived/sized.json"))
            .expect("derived head"),
    )
    .expect("JSON");
    let recorded = head["last_computed"].as_i64().expect("last_computed");
    // Someone else adds a member within the same second as the tool's last call (a
    // service that reports lastComputed in seconds cannot tell): only the size shows it.
    someone_else(&h, "sized", &[newcomers[15]], &[]).await;
    h.patch_cohort(
        "sized",
        serde_json::json!({"last_computed_ms": recorded * 1000}),
    )
    .await;
    write_ids(
        &h.path("crm.csv"),
        "amplitude_id",
        amp(&members[..300])
            .into_iter()
            .chain(amp(&newcomers[..12])),
    );
    let seq = h.last_seq().await;
    let report = run_ok(&h, &file, &[]).await;
    let baseline = &rev(&report)["baseline"];
    assert_eq!(baseline["used"], "download", "{baseline:#}");
    let reason = baseline["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("the cohort lists 411 members"), "{reason}");
    assert_eq!(spent_requests(&h.requests_since(seq).await).len(), 1);
    let mut expected: BTreeSet<String> = amp(&members).into_iter().collect();
    expected.extend(amp(&newcomers[..12]));
    expected.insert(amplitude_id(newcomers[15]).to_string());
    assert_eq!(h.member_ids("sized").await, expected);
}

/// The derived baseline, the ownership ledger and the rejected-ids list on S3 (moto).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledgers_and_the_derived_baseline_on_s3() {
    let bucket = common::s3::create_bucket("revsteady");
    let spec = cohort("s3steady", 300);
    let (members, newcomers) = members_and_newcomers(spec.seed, "s3steady", 300, 40);
    let h = harness::start(vec![spec], |_| {}).await;
    let file = h.reverse_pipeline(
        "steady-s3",
        "crm.csv",
        "amplitude_id",
        r#"cohort_id = "s3steady""#,
        "mode = \"mirror_owned\"\nchunk_size = 10",
    );
    let text = std::fs::read_to_string(&file)
        .expect("read")
        .replace("url = \"state\"", &format!("url = \"s3://{bucket}/state\""))
        .replace(
            "lists_dir = \"lists\"",
            &format!("lists_dir = \"s3://{bucket}/lists\""),
        );
    std::fs::write(&file, text).expect("write");
    let unknown = "7".to_string();
    let first: Vec<String> = amp(&members)
        .into_iter()
        .chain(amp(&newcomers[..30]))
        .chain([unknown.clone()])
        .collect();
    write_ids(&h.path("crm.csv"), "amplitude_id", first.into_iter());
    let report = run_ok(&h, &file, &[]).await;
    assert_eq!(
        rev(&report)["derived"]["written"],
        true,
        "{:#}",
        rev(&report)
    );
    let at = rev(&report)["lists"]["rejected"]
        .as_str()
        .expect("rejected list");
    assert!(at.starts_with(&format!("s3://{bucket}/lists/")), "{at}");
    let keys = common::s3::keys(&bucket, "state/steady-s3/");
    for want in ["reverse-derived/s3steady.json", "reverse/rejected.json"] {
        assert!(keys.iter().any(|k| k.ends_with(want)), "{want}: {keys:?}");
    }

    // The source drops ten of the ids the pipeline added and three of the members it
    // found: the derived baseline (read from S3) is the baseline, the ten go, the three
    // stay, the unknown id is held back.
    let second: Vec<String> = amp(&members[3..])
        .into_iter()
        .chain(amp(&newcomers[10..30]))
        .chain([unknown])
        .collect();
    write_ids(&h.path("crm.csv"), "amplitude_id", second.into_iter());
    let seq = h.last_seq().await;
    let report = run_ok(&h, &file, &[]).await;
    let log = h.requests_since(seq).await;
    assert!(spent_requests(&log).is_empty(), "{:#}", rev(&report));
    assert_eq!(rev(&report)["baseline"]["used"], "derived");
    assert_eq!(changes(&log), vec![("REMOVE".to_string(), 10)]);
    assert_eq!(rev(&report)["rejected"]["held_back"], 1);
    let mut expected: BTreeSet<String> = amp(&members).into_iter().collect();
    expected.extend(amp(&newcomers[10..30]));
    assert_eq!(h.member_ids("s3steady").await, expected);
}

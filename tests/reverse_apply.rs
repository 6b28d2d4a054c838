//! Reverse pipelines end to end: the `cohort-sync` binary against the in-process Amplitude
//! emulator. Assertions are on what the emulator saw and holds — its request log (calls,
//! their operations and id counts, cohort requests) and the cohort's members — and on the
//! lists the run wrote, read back and compared with the sets the test computed; the
//! run's report is checked only for what it says about itself.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use cohort_sync::emulator::universe::{amplitude_id, member_numbers, user_id};
use cohort_sync::emulator::{CohortSpec, FaultKind, FaultRule};
use common::emulator::{CohortSpecExt, cohort};
use common::files::{id_set, write_ids};
use common::harness::{self, Harness};
use common::log::{
    MEMBERSHIP, UPLOAD, change_calls, changes, cohort_request_attempts, ops, spent_requests,
};
use serde_json::{Value, json};

/// The reverse part of a run report.
fn rev(report: &Value) -> &Value {
    &report["pipelines"][0]["reverse"]
}

/// The pipeline's error, if any.
fn error(report: &Value) -> &str {
    report["pipelines"][0]["error"].as_str().unwrap_or_default()
}

/// The full list `what` (`add`, `remove`, `skipped`, `upload`) the run wrote, read back.
fn list(report: &Value, what: &str) -> BTreeSet<String> {
    let at = rev(report)["lists"][what]
        .as_str()
        .unwrap_or_else(|| panic!("no {what} list: {:#}", rev(report)));
    id_set(&common::s3::read(at))
}

fn strings<'a>(ids: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
    ids.into_iter().cloned().collect()
}

/// A cohort of `size` members and a source that keeps all but the first `drop` and brings
/// `new` others (amplitude ids): what a mirror must add and remove.
struct MirrorCase {
    spec: CohortSpec,
    members: Vec<u64>,
    source: Vec<String>,
    add: BTreeSet<String>,
    remove: BTreeSet<String>,
}

fn mirror_case(id: &str, size: u64, seed: u64, drop: usize, new: usize) -> MirrorCase {
    let spec = cohort(id, size).seed(seed);
    let members: Vec<u64> = member_numbers(seed, id, size).collect();
    let known: BTreeSet<u64> = members.iter().copied().collect();
    let newcomers: Vec<u64> = member_numbers(seed + 1, "newcomers", (new * 3) as u64)
        .filter(|n| !known.contains(n))
        .take(new)
        .collect();
    assert_eq!(newcomers.len(), new);
    let text =
        |ns: &[u64]| -> Vec<String> { ns.iter().map(|n| amplitude_id(*n).to_string()).collect() };
    let source: Vec<String> = text(&members[drop..])
        .into_iter()
        .chain(text(&newcomers))
        .collect();
    MirrorCase {
        add: text(&newcomers).into_iter().collect(),
        remove: text(&members[..drop]).into_iter().collect(),
        spec,
        members,
        source,
    }
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

/// The journal head of `pipeline` for `target` in the local state directory.
fn journal_head(h: &Harness, pipeline: &str, target: &str) -> Value {
    let path = h.path(&format!("state/{pipeline}/journals/{target}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("journal {}: {e}", path.display()));
    serde_json::from_str(&text).expect("journal JSON")
}

/// A Parquet snapshot of `members` as the export writes it (footer metadata included),
/// under `root/cohort_id={cohort}/snapshot_date={date}/`.
fn write_snapshot(root: &Path, cohort: &str, date: &str, last_computed: i64, members: &[u64]) {
    let dir = root.join(format!("cohort_id={cohort}/snapshot_date={date}"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let amp: Vec<i64> = members.iter().map(|n| amplitude_id(*n)).collect();
    let users: Vec<Option<String>> = members.iter().map(|n| user_id(*n)).collect();
    common::peers::write_parquet(
        &dir.join("part-0.parquet"),
        &json!({
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
async fn mirror_applies_exactly_the_chunked_diff_and_a_rerun_sends_nothing() {
    let case = mirror_case("big", 240_000, 11, 10_000, 20_000);
    let h = harness::start(vec![case.spec.clone()], |_| {}).await;
    write_ids(
        &h.path("crm.csv"),
        "amplitude_id",
        case.source.iter().cloned(),
    );
    let file = h.reverse_pipeline(
        "big-sync",
        "crm.csv",
        "amplitude_id",
        r#"cohort_id = "big""#,
        "mode = \"mirror\"\nchunk_size = 8000\nmax_removals = 50000",
    );

    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let log = h.requests().await;
    assert_eq!(
        spent_requests(&log).len(),
        1,
        "one download for the baseline"
    );
    assert_eq!(
        changes(&log),
        ops(&[
            ("ADD", 8000),
            ("ADD", 8000),
            ("ADD", 4000),
            ("REMOVE", 8000),
            ("REMOVE", 2000),
        ])
    );
    let expected = strings(&case.source);
    assert_eq!(h.member_ids("big").await, expected);
    assert_eq!(list(&report, "add"), case.add);
    assert_eq!(list(&report, "remove"), case.remove);

    // Nothing changed in the source since. The apply moved the cohort's lastComputed, but
    // nothing else changed it: the rerun uses the membership the apply left (the derived
    // baseline, no download), finds it in sync, sends nothing.
    let seq = h.last_seq().await;
    let (used, _) = h.usage().await;
    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let log = h.requests_since(seq).await;
    assert!(spent_requests(&log).is_empty(), "the rerun spends nothing");
    assert_eq!(h.usage().await.0, used);
    assert!(change_calls(&log).is_empty(), "{:?}", changes(&log));
    assert_eq!(rev(&report)["baseline"]["used"], "derived");
    assert_eq!(h.member_ids("big").await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_stops_a_mirror_that_lost_60_percent_until_forced() {
    let h = harness::start(vec![cohort("crm", 1000).seed(21)], |_| {}).await;
    let (users, without) = user_members(21, "crm", 1000);
    assert!(without > 0, "the universe has members without user ids");
    let keep: Vec<String> = users.iter().take(users.len() * 4 / 10).cloned().collect();
    write_ids(&h.path("crm.csv"), "user_id", keep.iter().cloned());
    let file = h.reverse_pipeline(
        "guarded",
        "crm.csv",
        "user_id",
        r#"cohort_id = "crm""#,
        "mode = \"mirror\"",
    );
    let before = h.members("crm").await;

    let (code, report, _) = h.run(&file, &[]).await;
    assert_eq!(code, 1, "{report:#}");
    let err = error(&report);
    assert!(
        err.contains("removal guard") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(rev(&report)["guard"]["decision"], "refused");
    let log = h.requests().await;
    assert!(change_calls(&log).is_empty(), "nothing may be sent");
    assert_eq!(h.members("crm").await, before);

    let seq = h.last_seq().await;
    let (code, report, stderr) = h.run(&file, &["--force"]).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    assert_eq!(rev(&report)["guard"]["decision"], "forced");
    let log = h.requests_since(seq).await;
    let removed = users.len() - keep.len();
    assert_eq!(changes(&log), ops(&[("REMOVE", removed as u64)]));
    let after = h.members("crm").await;
    let named: BTreeSet<String> = after.iter().filter_map(|(_, u)| u.clone()).collect();
    assert_eq!(named, strings(&keep));
    // Members without a user id cannot be named, so they stay.
    assert_eq!(after.iter().filter(|(_, u)| u.is_none()).count(), without);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_amplitude_skips_are_in_the_report_and_the_list() {
    let h = harness::start(vec![cohort("vip", 200).seed(31)], |_| {}).await;
    let (users, _) = user_members(31, "vip", 200);
    let ghosts = ["ghost-1@nowhere.test", "not a user"];
    let source = users
        .iter()
        .cloned()
        .chain(ghosts.iter().map(|s| s.to_string()));
    write_ids(&h.path("crm.csv"), "user_id", source);
    let file = h.reverse_pipeline(
        "skips",
        "crm.csv",
        "user_id",
        r#"cohort_id = "vip""#,
        "mode = \"add_only\"",
    );
    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let log = h.requests().await;
    assert_eq!(changes(&log), ops(&[("ADD", 2)]));
    let ghosts: BTreeSet<String> = ghosts.iter().map(|s| s.to_string()).collect();
    assert_eq!(rev(&report)["skipped_ids"]["count"], 2);
    let sample: BTreeSet<String> = rev(&report)["skipped_ids"]["sample"]
        .as_array()
        .expect("sample")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    assert_eq!(sample, ghosts);
    assert_eq!(list(&report, "skipped"), ghosts);
    // Amplitude kept none of them.
    let named: BTreeSet<String> = h
        .members("vip")
        .await
        .into_iter()
        .filter_map(|(_, u)| u)
        .collect();
    assert!(named.is_disjoint(&ghosts));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_a_cohort_by_upload_then_add_and_reports_invalid_ids() {
    let h = harness::start(vec![], |_| {}).await;
    let (users, _) = user_members(41, "fresh", 2600);
    let invalid = "bad id";
    let source: Vec<String> = users.iter().cloned().chain([invalid.to_string()]).collect();
    write_ids(&h.path("crm.csv"), "user_id", source.iter().cloned());
    let file = h.reverse_pipeline(
        "create",
        "crm.csv",
        "user_id",
        r#"create = { name = "CRM beta", owner = "ops@example.com", published = true }"#,
        "chunk_size = 1000",
    );
    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let log = h.requests().await;
    let done = changes(&log);
    assert_eq!(done[0], ("UPLOAD".to_string(), 1000));
    assert!(done[1..].iter().all(|(op, _)| op == "ADD"), "{done:?}");
    assert_eq!(
        done.iter().map(|(_, n)| n).sum::<u64>(),
        source.len() as u64
    );
    let created = rev(&report)["target"]["cohort_id"]
        .as_str()
        .expect("created id")
        .to_string();
    assert_eq!(rev(&report)["target"]["created"], true);
    assert!(
        log.iter()
            .filter(|l| l.path == MEMBERSHIP)
            .all(|l| l.cohort_id.as_deref() == Some(&created))
    );
    let named: BTreeSet<String> = h
        .members(&created)
        .await
        .into_iter()
        .filter_map(|(_, u)| u)
        .collect();
    assert_eq!(named, strings(&users));
    let reported: Vec<&str> = rev(&report)["invalid_ids_sample"]
        .as_array()
        .into_iter()
        .chain(rev(&report)["skipped_ids"]["sample"].as_array())
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(reported.contains(&invalid), "{:#}", rev(&report));

    // The next run reconciles the cohort it created instead of creating another: the one
    // id Amplitude would not take is the whole difference, and it is held back (Amplitude
    // rejected it before); `--retry-rejected` sends it once more.
    let seq = h.last_seq().await;
    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let log = h.requests_since(seq).await;
    assert!(!log.iter().any(|l| l.path == UPLOAD), "no second cohort");
    assert!(changes(&log).is_empty(), "{:?}", changes(&log));
    assert_eq!(
        rev(&report)["rejected"]["held_back"],
        1,
        "{:#}",
        rev(&report)
    );
    let seq = h.last_seq().await;
    let (code, report, stderr) = h.run(&file, &["--retry-rejected"]).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let log = h.requests_since(seq).await;
    assert!(!log.iter().any(|l| l.path == UPLOAD), "no second cohort");
    assert_eq!(
        changes(&log),
        ops(&[("ADD", 1)]),
        "only the invalid id is retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_snapshot_spends_no_quota_and_a_stale_one_downloads() {
    let case = mirror_case("snap", 500, 51, 10, 0);
    let h = harness::start(vec![case.spec.clone()], |_| {}).await;
    let last_computed = case.spec.last_computed_ms / 1000;
    write_snapshot(
        &h.path("exports"),
        "snap",
        "2024-01-01",
        last_computed,
        &case.members,
    );
    write_ids(
        &h.path("crm.csv"),
        "amplitude_id",
        case.source.iter().cloned(),
    );
    let file = h.reverse_pipeline(
        "snapshots",
        "crm.csv",
        "amplitude_id",
        r#"cohort_id = "snap""#,
        "mode = \"mirror\"\nbaseline = \"auto\"\nsnapshots = \"exports\"",
    );
    let (used_before, _) = h.usage().await;

    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    assert_eq!(rev(&report)["baseline"]["used"], "snapshot");
    let log = h.requests().await;
    assert!(cohort_request_attempts(&log).is_empty());
    assert_eq!(h.usage().await.0, used_before);
    assert_eq!(changes(&log), ops(&[("REMOVE", 10)]));
    assert_eq!(h.member_ids("snap").await, strings(&case.source));

    // The apply moved lastComputed past the snapshot, but the membership it left is known
    // (the derived baseline): a plan is exact and free.
    let seq = h.last_seq().await;
    let plan = h.plan(&[&file], &[]).await;
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert_eq!(rev(plan.report())["baseline"]["used"], "derived");
    assert_eq!(rev(plan.report())["baseline"]["exact"], true);

    // Then the cohort is recomputed: neither the derived baseline nor the snapshot is
    // current. A plan does not spend quota for it; a run downloads.
    let later = chrono::Utc::now().timestamp_millis() + 3_600_000;
    h.patch_cohort("snap", json!({"last_computed_ms": later}))
        .await;
    let plan = h.plan(&[&file], &[]).await;
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert_eq!(rev(plan.report())["baseline"]["exact"], false);
    assert!(cohort_request_attempts(&h.requests_since(seq).await).is_empty());
    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    assert_eq!(rev(&report)["baseline"]["used"], "download");
    let log = h.requests_since(seq).await;
    assert_eq!(spent_requests(&log).len(), 1);
    assert_eq!(h.usage().await.0, used_before + 1);
    assert!(change_calls(&log).is_empty());
}

/// Several snapshots of the cohort: the baseline is the one with the newest
/// `lastComputed` — not the latest date in its path, nor the last written — and it is
/// used as it is (no download).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_of_several_snapshots_is_the_baseline() {
    let case = mirror_case("snaps", 400, 151, 8, 12);
    let h = harness::start(vec![case.spec.clone()], |_| {}).await;
    let lc = case.spec.last_computed_ms / 1000;
    let exports = h.path("exports");
    // Written newest first; the older ones hold fewer members and later dates.
    write_snapshot(&exports, "snaps", "2024-01-15", lc, &case.members);
    write_snapshot(
        &exports,
        "snaps",
        "2024-03-01",
        lc - 86_400,
        &case.members[30..],
    );
    write_snapshot(
        &exports,
        "snaps",
        "2024-02-01",
        lc - 2 * 86_400,
        &case.members[60..],
    );
    write_ids(
        &h.path("crm.csv"),
        "amplitude_id",
        case.source.iter().cloned(),
    );
    let file = h.reverse_pipeline(
        "snapshots",
        "crm.csv",
        "amplitude_id",
        r#"cohort_id = "snaps""#,
        "mode = \"mirror\"\nsnapshots = \"exports\"",
    );
    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let log = h.requests().await;
    assert!(cohort_request_attempts(&log).is_empty(), "no download");
    assert_eq!(changes(&log), ops(&[("ADD", 12), ("REMOVE", 8)]));
    assert_eq!(h.member_ids("snaps").await, strings(&case.source));
    let used = &rev(&report)["baseline"];
    assert_eq!(used["used"], "snapshot");
    assert!(
        used["snapshot"]["url"]
            .as_str()
            .is_some_and(|u| u.contains("snapshot_date=2024-01-15")),
        "{used:#}"
    );
}

/// `plan` and `run --dry-run` on a free baseline: the counts, the samples and the full
/// lists are exactly the sets to add and remove; blank, repeated and space-padded source
/// ids are counted; nothing is sent. The run then sends exactly those ids — the padded
/// one trimmed, the blanks and repeats never — as the emulator's log and members show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_dry_run_report_exactly_what_the_run_then_sends() {
    let case = mirror_case("p", 300, 61, 5, 7);
    let h = harness::start(vec![case.spec.clone()], |_| {}).await;
    write_snapshot(
        &h.path("exports"),
        "p",
        "2024-01-01",
        case.spec.last_computed_ms / 1000,
        &case.members,
    );
    // The source as a CRM exports it: one newcomer only with spaces around it, a blank
    // and an all-space id, one id twice and one again with spaces.
    let padded = case.add.iter().next().expect("a newcomer").clone();
    let mut lines: Vec<String> = case
        .source
        .iter()
        .map(|id| {
            if *id == padded {
                format!("  {id}  ")
            } else {
                id.clone()
            }
        })
        .collect();
    lines.extend([
        "\"\"".to_string(),
        "   ".to_string(),
        case.source[0].clone(),
        format!(" {} ", case.source[1]),
    ]);
    write_ids(&h.path("crm.csv"), "amplitude_id", lines.iter().cloned());
    let file = h.reverse_pipeline(
        "planned",
        "crm.csv",
        "amplitude_id",
        r#"cohort_id = "p""#,
        "mode = \"mirror\"\nsnapshots = \"exports\"",
    );
    let check = |report: &Value, stdout: &str| {
        let r = rev(report);
        assert_eq!(r["baseline"]["used"], "snapshot", "{r:#}");
        assert_eq!(r["counts"]["add"], 7, "{r:#}");
        assert_eq!(r["counts"]["remove"], 5, "{r:#}");
        assert_eq!(r["counts"]["unchanged"], 295, "{r:#}");
        assert_eq!(r["source"]["rows"], lines.len(), "{r:#}");
        assert_eq!(r["source"]["blank"], 2, "{r:#}");
        assert_eq!(r["source"]["duplicates"], 2, "{r:#}");
        assert_eq!(r["source"]["ids"], case.source.len(), "{r:#}");
        for (what, want) in [("add", &case.add), ("remove", &case.remove)] {
            let sample: BTreeSet<String> = r["samples"][what]
                .as_array()
                .expect("sample")
                .iter()
                .map(|v| v.as_str().expect("id").to_string())
                .collect();
            assert_eq!(&sample, want, "{what} sample: the whole set, under 10 ids");
            for id in want {
                assert!(stdout.contains(id.as_str()), "{what} {id} not printed");
            }
            assert_eq!(&list(report, what), want, "{what} list");
            let at = r["lists"][what].as_str().expect("list");
            assert!(
                stdout.contains(&format!("full {what} list: {at}")),
                "{stdout}"
            );
        }
        assert!(stdout.contains("7 to add, 5 to remove"), "{stdout}");
    };

    let plan = h.plan(&[&file], &[]).await;
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    check(plan.report(), &plan.stdout);
    let dry = h.invoke("run", &[&file], &["--dry-run"], &[]).await;
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    check(dry.report(), &dry.stdout);
    let log = h.requests().await;
    assert!(change_calls(&log).is_empty(), "plan or dry run sent a call");
    assert!(cohort_request_attempts(&log).is_empty());
    assert_eq!(h.usage().await.0, 0);

    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let log = h.requests().await;
    assert_eq!(changes(&log), ops(&[("ADD", 7), ("REMOVE", 5)]));
    assert_eq!(h.member_ids("p").await, strings(&case.source));
    assert_eq!(
        rev(&report)["skipped_ids"]["count"],
        0,
        "every id sent was valid"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_cohort_is_retried_and_a_failed_chunk_resumes_without_repeats() {
    let case = mirror_case("busy", 3000, 71, 0, 2500);
    let h = harness::start(vec![case.spec.clone()], |_| {}).await;
    write_ids(
        &h.path("crm.csv"),
        "amplitude_id",
        case.source.iter().cloned(),
    );
    let file = h.reverse_pipeline(
        "busy",
        "crm.csv",
        "amplitude_id",
        r#"cohort_id = "busy""#,
        "mode = \"add_only\"\nchunk_size = 500",
    );
    // Two 429s (cohort busy) are waited out.
    h.fault(FaultKind::RateLimit, MEMBERSHIP, 2).await;
    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let log = h.requests().await;
    let limited = log
        .iter()
        .filter(|l| l.path == MEMBERSHIP && l.status == 429)
        .count();
    assert_eq!(limited, 2);
    assert_eq!(changes(&log), ops(&[("ADD", 500); 5]));
    assert_eq!(h.member_ids("busy").await, strings(&case.source));

    // A 5xx is not retried by the client: the run stops, the journal keeps the rest.
    let known: BTreeSet<String> = strings(&case.source);
    let more: Vec<String> = member_numbers(73, "y", 5000)
        .map(|n| amplitude_id(n).to_string())
        .filter(|id| !known.contains(id))
        .take(1500)
        .collect();
    let all: Vec<String> = case.source.iter().chain(&more).cloned().collect();
    write_ids(&h.path("crm.csv"), "amplitude_id", all.iter().cloned());
    let seq = h.last_seq().await;
    let mut rule = FaultRule::new(FaultKind::ServerError, MEMBERSHIP, 1);
    rule.status = Some(503);
    h.add_fault(&rule).await;
    let (code, report, _) = h.run(&file, &[]).await;
    assert_eq!(code, 1, "{report:#}");
    let log = h.requests_since(seq).await;
    let sent: Vec<u16> = change_calls(&log).iter().map(|l| l.status).collect();
    assert_eq!(sent, [503], "a 5xx is not retried and stops the run");
    let seq = h.last_seq().await;
    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let log = h.requests_since(seq).await;
    assert!(
        cohort_request_attempts(&log).is_empty(),
        "the journal is resumed, not re-planned"
    );
    assert_eq!(
        changes(&log),
        ops(&[("ADD", 500); 3]),
        "the 1500 new ids in 3 chunks"
    );
    assert_eq!(h.member_ids("busy").await, strings(&all));
}

/// Killed (SIGKILL at its crash point) with its third chunk marked `sending` — the
/// moment a call is in flight — after two chunks were applied and journaled. A plan
/// meanwhile reports the unfinished plan and sends nothing; the rerun resumes it and
/// sends only the four chunks not journaled as applied (the third counted as resent in
/// doubt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_with_its_third_chunk_in_flight_is_resumed_with_only_the_rest() {
    let case = mirror_case("kill", 40_000, 81, 10_000, 20_000);
    let h = harness::start(vec![case.spec.clone()], |_| {}).await;
    write_ids(
        &h.path("crm.csv"),
        "amplitude_id",
        case.source.iter().cloned(),
    );
    let file = h.reverse_pipeline(
        "killed",
        "crm.csv",
        "amplitude_id",
        r#"cohort_id = "kill""#,
        "mode = \"mirror\"\nchunk_size = 5000\nmax_removals = 20000\nmax_removal_pct = 30",
    );

    let (code, _, stderr) = h
        .run_env(
            &[&file],
            &[],
            &[(cohort_sync::crash::ENV, "reverse.chunk.sending#3")],
        )
        .await;
    assert_eq!(code, -9, "killed at its crash point: {stderr}");
    let log = h.requests().await;
    assert_eq!(
        changes(&log),
        ops(&[("ADD", 5000), ("ADD", 5000)]),
        "the killed run got two chunks applied"
    );
    let seq = h.last_seq().await;

    let plan = h.plan(&[&file], &[]).await;
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert_eq!(rev(plan.report())["outcome"], "resume_pending");
    // The report lists ids: readable by its owner only.
    {
        use std::os::unix::fs::PermissionsExt;
        let path = plan.report_path.as_ref().expect("report path");
        let mode = std::fs::metadata(path)
            .expect("report")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let log = h.requests_since(seq).await;
    assert!(change_calls(&log).is_empty() && cohort_request_attempts(&log).is_empty());
    let seq = h.last_seq().await;

    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let log = h.requests_since(seq).await;
    assert!(
        cohort_request_attempts(&log).is_empty(),
        "the plan is resumed, not made again"
    );
    assert_eq!(
        changes(&log),
        ops(&[
            ("ADD", 5000),
            ("ADD", 5000),
            ("REMOVE", 5000),
            ("REMOVE", 5000),
        ]),
        "only the four chunks the first run did not finish"
    );
    assert_eq!(h.member_ids("kill").await, strings(&case.source));
    assert_eq!(rev(&report)["journal"]["resumed"], true);
    assert_eq!(rev(&report)["calls_resent_in_doubt"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_uploads_over_the_cohort_then_adds_the_rest() {
    let spec = cohort("rep", 800).seed(91);
    let members: Vec<u64> = member_numbers(91, "rep", 800).collect();
    let others: Vec<u64> = member_numbers(92, "z", 4000)
        .filter(|n| !members.contains(n))
        .take(2000)
        .collect();
    let h = harness::start(vec![spec], |_| {}).await;
    // Keeps 500 members, drops 300, brings 2,000 others: 2,500 ids in all.
    let source: Vec<String> = members[..500]
        .iter()
        .chain(&others)
        .map(|n| amplitude_id(*n).to_string())
        .collect();
    write_ids(&h.path("crm.csv"), "amplitude_id", source.iter().cloned());
    let file = h.reverse_pipeline(
        "replace",
        "crm.csv",
        "amplitude_id",
        r#"cohort_id = "rep""#,
        "mode = \"replace\"\nchunk_size = 1000\nmax_removal_pct = 50",
    );
    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let log = h.requests().await;
    assert!(
        cohort_request_attempts(&log).is_empty(),
        "replace needs no baseline download"
    );
    assert_eq!(
        changes(&log),
        ops(&[("UPLOAD", 1000), ("ADD", 1000), ("ADD", 500)])
    );
    let upload = log.iter().find(|l| l.path == UPLOAD).expect("upload");
    assert_eq!(
        upload.cohort_id.as_deref(),
        Some("rep"),
        "existing_cohort_id"
    );
    assert_eq!(h.member_ids("rep").await, strings(&source));
    // The guard estimated the removals from the cohort's size: 800 - 2,500 → none.
    assert_eq!(rev(&report)["guard"]["removals_estimated"], true);

    // An empty list cannot be uploaded, even with --force: nothing is sent.
    write_ids(&h.path("crm.csv"), "amplitude_id", []);
    let seq = h.last_seq().await;
    let (code, report, _) = h.run(&file, &["--force"]).await;
    assert_eq!(code, 1, "{report:#}");
    assert!(error(&report).contains("mode = \"mirror\""), "{report:#}");
    assert!(change_calls(&h.requests_since(seq).await).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_baseline_download_that_does_not_fit_the_month_stops_with_exit_3() {
    let h = harness::start(vec![cohort("q", 100).seed(95)], |_| {}).await;
    h.set_usage(500).await;
    write_ids(&h.path("crm.csv"), "user_id", ["someone".to_string()]);
    let file = h.reverse_pipeline(
        "quota",
        "crm.csv",
        "user_id",
        r#"cohort_id = "q""#,
        "mode = \"add_only\"",
    );
    let (code, report, _) = h.run(&file, &[]).await;
    assert_eq!(code, 3, "{report:#}");
    assert!(
        error(&report).contains("downloads are all used"),
        "{report:#}"
    );
    let log = h.requests().await;
    assert!(
        cohort_request_attempts(&log).is_empty(),
        "not even attempted"
    );
    assert!(change_calls(&log).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_journal_and_lists_on_s3() {
    let bucket = common::s3::create_bucket("revstate");
    let case = mirror_case("s3c", 400, 97, 20, 300);
    let h = harness::start(vec![case.spec.clone()], |_| {}).await;
    let local = h.path("crm.csv");
    write_ids(&local, "amplitude_id", case.source.iter().cloned());
    common::s3::put(&bucket, "in/crm.csv", &local);
    let file = h.reverse_pipeline(
        "on-s3",
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

    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let log = h.requests().await;
    assert_eq!(
        changes(&log),
        ops(&[("ADD", 100), ("ADD", 100), ("ADD", 100), ("REMOVE", 20)])
    );
    assert_eq!(h.member_ids("s3c").await, strings(&case.source));
    let keys = common::s3::keys(&bucket, "");
    assert!(
        keys.contains(&"state/on-s3/journals/s3c.json".to_string()),
        "{keys:?}"
    );
    assert!(
        !keys.iter().any(|k| k.contains("journal-chunks")),
        "a closed journal leaves no chunk documents: {keys:?}"
    );
    // The lists on S3, read back with boto3: exactly what was added and removed.
    for (what, want) in [("add", &case.add), ("remove", &case.remove)] {
        let at = rev(&report)["lists"][what].as_str().expect("list");
        assert!(
            at.starts_with(&format!("s3://{bucket}/lists/on-s3-")),
            "{at}"
        );
        assert_eq!(&list(&report, what), want, "{what}");
    }
}

/// A chunk refused with `status` ends its plan; the next run re-plans (with `retry_tweak`
/// applied to the pipeline file) and leaves the cohort exactly as the source says.
async fn a_refused_chunk_ends_the_plan(
    status: u16,
    cohort_id: &str,
    retry_tweak: Option<(&str, &str)>,
) {
    let case = mirror_case(cohort_id, 2000, 110 + status as u64, 300, 1200);
    let h = harness::start(vec![case.spec.clone()], |_| {}).await;
    write_ids(
        &h.path("crm.csv"),
        "amplitude_id",
        case.source.iter().cloned(),
    );
    let name = format!("refused-{status}");
    let file = h.reverse_pipeline(
        &name,
        "crm.csv",
        "amplitude_id",
        &format!("cohort_id = \"{cohort_id}\""),
        "mode = \"mirror\"\nchunk_size = 1000\nmax_removal_pct = 30",
    );
    let mut rule = FaultRule::new(FaultKind::ClientError, MEMBERSHIP, 1);
    rule.status = Some(status);
    h.add_fault(&rule).await;

    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 1, "{stderr}");
    let err = error(&report);
    assert!(
        err.contains("chunk 1 of 3 (ADD, 1000 ids)")
            && err.contains(&format!("HTTP {status}"))
            && err.contains("re-plans from the current source")
            && !err.contains("sends the remaining calls"),
        "{err}"
    );
    let r = rev(&report);
    assert_eq!(r["journal"]["status"], "failed", "{r:#}");
    assert_eq!(r["calls"][0]["status"], "failed");
    assert_eq!(r["calls"][1]["status"], "not_sent");
    let head = journal_head(&h, &name, cohort_id);
    assert_eq!(head["status"], "failed");
    assert!(
        head["ended_reason"]
            .as_str()
            .is_some_and(|r| r.contains(&format!("HTTP {status}"))),
        "{head}"
    );
    let log = h.requests().await;
    let calls: Vec<u16> = change_calls(&log).iter().map(|c| c.status).collect();
    assert_eq!(calls, [status], "the refused call, and nothing after it");
    let seq = h.last_seq().await;

    if let Some((from, to)) = retry_tweak {
        let text = std::fs::read_to_string(&file).expect("read");
        assert!(text.contains(from));
        std::fs::write(&file, text.replace(from, to)).expect("write");
    }
    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let r = rev(&report);
    assert_eq!(r["journal"]["resumed"], false, "{r:#}");
    assert_eq!(r["journal"]["status"], "closed");
    let log = h.requests_since(seq).await;
    let sizes: Vec<u64> = changes(&log).iter().map(|(_, n)| *n).collect();
    let max = if retry_tweak.is_some() { 400 } else { 1000 };
    assert!(sizes.iter().all(|n| *n <= max), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<u64>(), 1500, "1,200 ADD + 300 REMOVE");
    assert_eq!(h.member_ids(cohort_id).await, strings(&case.source));
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
    let case = mirror_case("moving", 2000, 120, 100, 900);
    let h = harness::start(vec![case.spec.clone()], |_| {}).await;
    let csv = h.path("crm.csv");
    write_ids(&csv, "amplitude_id", case.source.iter().cloned());
    let file = h.reverse_pipeline(
        "moving",
        "crm.csv",
        "amplitude_id",
        r#"cohort_id = "moving""#,
        "mode = \"mirror\"\nchunk_size = 300",
    );
    // A 5xx is retryable: the run fails and the journal stays open.
    let mut rule = FaultRule::new(FaultKind::ServerError, MEMBERSHIP, 1);
    rule.status = Some(503);
    h.add_fault(&rule).await;
    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        error(&report).contains("the next run sends the remaining calls"),
        "{report:#}"
    );
    assert_eq!(journal_head(&h, "moving", "moving")["status"], "open");
    let first_planner = report["run_id"].clone();
    let seq = h.last_seq().await;

    // The CRM list changes before the next run: half the newcomers (at its end) leave,
    // 200 others come.
    let extra: Vec<String> = member_numbers(777, "late", 1000)
        .map(|n| amplitude_id(n).to_string())
        .filter(|id| !case.source.contains(id))
        .take(200)
        .collect();
    let later: Vec<String> = case.source[..case.source.len() - 450]
        .iter()
        .cloned()
        .chain(extra)
        .collect();
    write_ids(&csv, "amplitude_id", later.iter().cloned());

    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let r = rev(&report);
    assert_eq!(r["superseded"]["marked"], true, "{r:#}");
    assert!(
        r["superseded"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("the source changed")),
        "{r:#}"
    );
    assert_eq!(r["superseded"]["planned_by"], first_planner);
    assert_eq!(r["journal"]["resumed"], false);
    let log = h.requests_since(seq).await;
    assert_eq!(
        changes(&log).iter().map(|(_, n)| n).sum::<u64>(),
        100 + 450 + 200,
        "the new plan (the old one sent nothing that stuck): {:?}",
        changes(&log)
    );
    assert_eq!(h.member_ids("moving").await, strings(&later));
    // The superseded head is kept as a record.
    let history = std::fs::read_dir(h.path("state/moving/journal-history"))
        .expect("journal history")
        .count();
    assert_eq!(history, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_an_answer_and_its_journal_entry_resends_exactly_that_call() {
    let case = mirror_case("doubt", 1000, 130, 50, 700);
    let h = harness::start(vec![case.spec.clone()], |_| {}).await;
    write_ids(
        &h.path("crm.csv"),
        "amplitude_id",
        case.source.iter().cloned(),
    );
    let file = h.reverse_pipeline(
        "doubt",
        "crm.csv",
        "amplitude_id",
        r#"cohort_id = "doubt""#,
        "mode = \"mirror\"\nchunk_size = 300",
    );
    // ADD 300, ADD 300, ADD 100, REMOVE 50: killed once the second ADD is answered.
    let (code, _, stderr) = h
        .run_env(
            &[&file],
            &[],
            &[(cohort_sync::crash::ENV, "reverse.chunk.answered#2")],
        )
        .await;
    assert_eq!(code, -9, "killed by its crash point: {stderr}");
    assert!(stderr.contains("reverse.chunk.answered #2"), "{stderr}");
    let log = h.requests().await;
    assert_eq!(changes(&log), ops(&[("ADD", 300), ("ADD", 300)]));
    let seq = h.last_seq().await;

    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let r = rev(&report);
    assert_eq!(r["journal"]["resumed"], true, "{r:#}");
    assert_eq!(r["calls_resent_in_doubt"], 1, "{r:#}");
    let resent: Vec<u64> = r["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .filter(|c| c["resent_in_doubt"] == true)
        .filter_map(|c| c["index"].as_u64())
        .collect();
    assert_eq!(resent, vec![1], "the second chunk, and only it");
    let log = h.requests_since(seq).await;
    assert!(
        cohort_request_attempts(&log).is_empty(),
        "resumed, not re-planned"
    );
    assert_eq!(
        changes(&log),
        ops(&[("ADD", 300), ("ADD", 100), ("REMOVE", 50)])
    );
    assert_eq!(h.member_ids("doubt").await, strings(&case.source));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_creating_plan_reconciles_the_cohort_it_created_instead_of_making_another() {
    let h = harness::start(vec![], |_| {}).await;
    let ids: Vec<String> = member_numbers(140, "fresh", 1500)
        .map(|n| amplitude_id(n).to_string())
        .collect();
    let csv = h.path("crm.csv");
    write_ids(&csv, "amplitude_id", ids[..1000].iter().cloned());
    let file = h.reverse_pipeline(
        "create-doubt",
        "crm.csv",
        "amplitude_id",
        r#"create = { name = "CRM doubt", owner = "ops@example.com", published = true }"#,
        "chunk_size = 400",
    );
    // Killed after the creating upload was answered, before the journal recorded it.
    let (code, _, stderr) = h
        .run_env(
            &[&file],
            &[],
            &[(cohort_sync::crash::ENV, "reverse.chunk.answered")],
        )
        .await;
    assert_eq!(code, -9, "killed by its crash point: {stderr}");
    let log = h.requests().await;
    assert_eq!(changes(&log), ops(&[("UPLOAD", 400)]));
    let seq = h.last_seq().await;

    // The list grows before the next run: a plan only reports what a run will do.
    write_ids(&csv, "amplitude_id", ids.iter().cloned());
    let plan = h.plan(&[&file], &[]).await;
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let r = rev(plan.report());
    assert_eq!(r["superseded"]["marked"], false, "{r:#}");
    assert_eq!(r["outcome"], "planned");
    assert_eq!(
        journal_head(&h, "create-doubt", "new-CRM_doubt")["status"],
        "open",
        "a plan changes nothing"
    );
    assert!(change_calls(&h.requests_since(seq).await).is_empty());

    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let r = rev(&report);
    assert_eq!(r["superseded"]["marked"], true, "{r:#}");
    let created = r["target"]["cohort_id"]
        .as_str()
        .expect("cohort id")
        .to_string();
    let log = h.requests_since(seq).await;
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
    assert_eq!(h.member_ids(&created).await, strings(&ids));
}

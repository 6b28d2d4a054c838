//! The live progress display of `run`, driven through a real pseudo-terminal
//! (`tests/py/pty_run.py`) against the emulator on loopback: cohort states and the overall
//! line appear on the terminal, log lines print whole between frames; nothing of it (no
//! cursor movement) appears when stderr is a pipe, with `--quiet`, or with JSON logs. The
//! summary and the report tell the time spent waiting for Amplitude's limits apart from
//! the rest, with the run paced so that one cohort must wait for the 4-a-minute limit.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use common::emulator::cohort;
use common::files::write_ids;
use common::harness::{self, Harness};
use serde_json::Value;

/// What the binary left under a pseudo-terminal.
struct OnTerminal {
    code: i32,
    stdout: String,
    /// Bytes as drawn, escape sequences included.
    raw: Vec<u8>,
    /// The same without escape sequences, one frame line or log line a line.
    text: String,
    report: Option<Value>,
}

/// Runs `cohort-sync run FILES --report R ARGS` with stderr on a terminal and `env`.
async fn run_on_terminal(
    h: &Harness,
    files: &[&PathBuf],
    args: &[&str],
    env: &[(&str, &str)],
) -> OnTerminal {
    let n = fastrand::u64(..);
    let raw = h.path(&format!("tty-{n}.raw"));
    let text = h.path(&format!("tty-{n}.txt"));
    let report = h.path(&format!("report-{n}.json"));
    let mut all: Vec<String> = vec!["run".into()];
    all.extend(files.iter().map(|f| f.to_string_lossy().into_owned()));
    all.push("--report".into());
    all.push(report.to_string_lossy().into_owned());
    all.extend(args.iter().map(|a| a.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut cmd = h.command_on_terminal(&raw, &text, &all);
    cmd.envs(env.iter().copied());
    let out = cmd.output().await.expect("run pty_run.py");
    assert!(
        out.stderr.is_empty(),
        "pty_run.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    OnTerminal {
        code: harness::exit_code(&out.status),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        raw: std::fs::read(&raw).expect("raw terminal output"),
        text: std::fs::read_to_string(&text).expect("terminal text"),
        report: std::fs::read_to_string(&report)
            .ok()
            .map(|t| serde_json::from_str(&t).expect("report is JSON")),
    }
}

/// Escape sequences only a live display writes: cursor up or down (`ESC [ n A`/`B`),
/// line or screen clears (`K`, `J`), cursor hide or show (`ESC [ ? 25 l`/`h`). Colours
/// (`m`) are the log lines'.
fn redraws(raw: &[u8]) -> usize {
    let mut count = 0;
    let mut i = 0;
    while i + 1 < raw.len() {
        if raw[i] == 0x1b && raw[i + 1] == b'[' {
            let mut j = i + 2;
            while j < raw.len() && (raw[j].is_ascii_digit() || raw[j] == b';' || raw[j] == b'?') {
                j += 1;
            }
            if j < raw.len() && b"ABKJlh".contains(&raw[j]) {
                count += 1;
            }
            i = j;
        } else {
            i += 1;
        }
    }
    count
}

/// `raw` without CSI escape sequences (colours, cursor moves, clears).
fn strip_escapes(raw: &[u8]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == 0x1b && raw.get(i + 1) == Some(&b'[') {
            let mut j = i + 2;
            while j < raw.len() && !(0x40..=0x7e).contains(&raw[j]) {
                j += 1;
            }
            i = j + 1;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Six cohorts, jobs that run a second: with the client paced at a time scale where a
/// minute is 3 s, the fifth request must wait for the 4-a-minute limit.
async fn paced_harness() -> (Harness, PathBuf) {
    let ids = ["c1", "c2", "c3", "c4", "c5", "c6"];
    let h = harness::start(ids.iter().map(|id| cohort(id, 20_000)).collect(), |c| {
        // 100 Amplitude seconds at the emulator's scale of 0.01: a job runs 1 s.
        c.job_duration = Duration::from_secs(100);
    })
    .await;
    let file = h.export_pipeline(
        "paced",
        &ids,
        "out",
        "state",
        "[download]\npoll_initial_secs = 1\n\n[quota]\nmax_parallel = 5\n",
    );
    (h, file)
}

/// The runner's pacing: a minute lasts 3 s (the emulator's own limits are faster still).
const CLIENT_SCALE: (&str, &str) = ("COHORT_SYNC_TIME_SCALE", "0.05");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_shows_cohort_states_and_the_summary_tells_waiting_apart() {
    let (h, file) = paced_harness().await;
    let t = run_on_terminal(&h, &[&file], &[], &[CLIENT_SCALE]).await;
    assert_eq!(t.code, 0, "stdout:\n{}\nterminal:\n{}", t.stdout, t.text);

    // The display drew there: the overall line and the cohorts' states.
    assert!(redraws(&t.raw) > 0, "no redraws on a terminal:\n{}", t.text);
    for expected in [
        "of 6 cohort(s) done",
        "6 of 6 cohort(s) done",
        "downloads spent",
        "done: exported",
    ] {
        assert!(
            t.text.contains(expected),
            "{expected:?} not on the terminal:\n{}",
            t.text
        );
    }
    // A cohort's own line said it waited for a slot, and how long yet.
    assert!(
        t.text.lines().any(|l| l.contains("paced c")
            && l.contains("waiting for a rate-limit slot (4/min, 60/10 min): ")
            && l.trim_end().ends_with(" left")),
        "no cohort line waiting for a slot:\n{}",
        t.text
    );
    // Log lines print whole above the bars: the display clears its lines, the log line
    // starts at the start of a line and ends it, then the display draws again.
    let logged: Vec<String> = t
        .raw
        .split(|b| *b == b'\n')
        .map(|line| {
            let plain = strip_escapes(line);
            let plain = plain.trim_end_matches('\r');
            plain.rsplit('\r').next().unwrap_or_default().to_string()
        })
        .filter(|l| l.contains("exported rows="))
        .collect();
    assert_eq!(logged.len(), 6, "{}", t.text);
    for line in &logged {
        assert!(
            line.starts_with(|c: char| c.is_ascii_digit())
                && line.contains(" INFO ")
                && !line.contains("cohort(s) done"),
            "a log line shares its line with the display: {line:?}"
        );
    }
    // The summary on stdout (a pipe) carries no escape sequence.
    assert!(!t.stdout.contains('\x1b'), "{}", t.stdout);

    // At least one cohort waited for a slot of the 4-a-minute window, and the report
    // keeps that time apart from the work.
    let report = t.report.as_ref().expect("report");
    let cohorts = report["pipelines"][0]["cohorts"]
        .as_array()
        .expect("cohorts");
    assert_eq!(cohorts.len(), 6);
    let waited: Vec<&Value> = cohorts
        .iter()
        .filter(|c| c["limit_waits"]["rate_slot_ms"].as_u64().unwrap_or(0) > 0)
        .collect();
    assert!(
        !waited.is_empty(),
        "no cohort waited for a slot: {report:#}"
    );
    for c in &waited {
        let w = &c["limit_waits"];
        let total = w["total_ms"].as_u64().expect("total_ms");
        assert_eq!(
            total,
            w["rate_slot_ms"].as_u64().unwrap_or(0)
                + w["in_flight_ms"].as_u64().unwrap_or(0)
                + w["rate_limited_ms"].as_u64().unwrap_or(0),
            "{c:#}"
        );
        assert!(
            total <= c["duration_ms"].as_u64().expect("duration_ms"),
            "{c:#}"
        );
    }
    let pipeline_wait = report["pipelines"][0]["limit_waits"]["rate_slot_ms"]
        .as_u64()
        .expect("the pipeline's waits");
    let cohorts_wait: u64 = cohorts
        .iter()
        .map(|c| c["limit_waits"]["rate_slot_ms"].as_u64().unwrap_or(0))
        .sum();
    assert!(pipeline_wait >= cohorts_wait, "{report:#}");
    // The summary says it in words, per cohort and for the pipeline.
    let waited_ids: BTreeSet<&str> = waited
        .iter()
        .map(|c| c["cohort_id"].as_str().expect("id"))
        .collect();
    for id in &waited_ids {
        let line = t
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("no summary line for {id}:\n{}", t.stdout));
        assert!(
            line.contains("s working + ")
                && line.contains("s waiting for Amplitude's limits (rate-limit slot "),
            "{line}"
        );
    }
    assert!(
        t.stdout.lines().any(|l| l.starts_with("  ")
            && l.contains("waiting for Amplitude's limits")
            && l.ends_with("in all (cohorts waiting side by side add up)")),
        "{}",
        t.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_progress_in_a_pipe_with_quiet_or_with_json_logs() {
    let (h, file) = paced_harness().await;

    // stderr a pipe: plain log lines, not one escape sequence.
    let piped = h.invoke("run", &[&file], &[], &[CLIENT_SCALE]).await;
    assert_eq!(piped.code, 0, "{}", piped.stderr);
    assert!(!piped.stderr.contains('\x1b'), "{}", piped.stderr);
    assert!(!piped.stderr.contains("cohort(s) done"), "{}", piped.stderr);
    assert!(piped.stderr.contains("starting"), "{}", piped.stderr);

    // `--force` so that each later run downloads again (and waits again).
    // On a terminal with --quiet: coloured log lines, but no display and no redraws.
    let quiet = run_on_terminal(&h, &[&file], &["--quiet", "--force"], &[CLIENT_SCALE]).await;
    assert_eq!(quiet.code, 0, "{}", quiet.text);
    assert_eq!(
        redraws(&quiet.raw),
        0,
        "{:?}",
        String::from_utf8_lossy(&quiet.raw)
    );
    assert!(!quiet.text.contains("cohort(s) done"), "{}", quiet.text);
    assert!(!quiet.text.contains("rate-limit slot ("), "{}", quiet.text);
    assert!(quiet.text.contains("exported rows="), "{}", quiet.text);
    // The report still tells the waits apart.
    let report = quiet.report.as_ref().expect("report");
    assert!(
        report["pipelines"][0]["limit_waits"]["rate_slot_ms"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{report:#}"
    );

    // JSON logs on a terminal: every line is a JSON object, no display.
    let json = run_on_terminal(
        &h,
        &[&file],
        &["--log-format", "json", "--force"],
        &[CLIENT_SCALE],
    )
    .await;
    assert_eq!(json.code, 0, "{}", json.text);
    assert!(!json.raw.contains(&0x1b), "{}", json.text);
    // Split as written (the text file breaks lines at the terminal's width too).
    let raw = String::from_utf8_lossy(&json.raw).into_owned();
    let lines: Vec<&str> = raw
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
        .collect();
    assert!(lines.len() > 6, "{}", json.text);
    for l in lines {
        let v: Value = serde_json::from_str(l)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}\n{}", json.text));
        assert!(v["message"].is_string(), "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reverse_run_shows_its_steps() {
    use cohort_sync::emulator::universe::{amplitude_id, member_numbers};
    let h = harness::start(vec![cohort("rev", 1_000)], |_| {}).await;
    let spec = h.spec("rev").clone();
    let members: Vec<u64> = member_numbers(spec.seed, "rev", 1_000).collect();
    // Drops 50 members: one REMOVE call.
    let source: BTreeSet<String> = members[50..]
        .iter()
        .map(|n| amplitude_id(*n).to_string())
        .collect();
    write_ids(&h.path("crm.csv"), "amplitude_id", source);
    let file = h.reverse_pipeline(
        "crm",
        "crm.csv",
        "amplitude_id",
        "cohort_id = \"rev\"",
        "mode = \"mirror\"",
    );
    let t = run_on_terminal(&h, &[&file], &[], &[]).await;
    assert_eq!(t.code, 0, "stdout:\n{}\nterminal:\n{}", t.stdout, t.text);
    assert!(redraws(&t.raw) > 0, "{}", t.text);
    for expected in ["crm (reverse)", "done: applied", "1 of 1 cohort(s) done"] {
        assert!(
            t.text.contains(expected),
            "{expected:?} not on the terminal:\n{}",
            t.text
        );
    }
    let report = t.report.as_ref().expect("report");
    assert_eq!(report["pipelines"][0]["reverse"]["outcome"], "applied");
}

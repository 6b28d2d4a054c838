//! A simulated month against the emulator: the real binary runs hourly on a clock the test
//! moves (the test-only `COHORT_SYNC_NOW=@FILE`, followed by the binary and the emulator
//! alike), with 30 cohorts Amplitude recomputes every hour, a limit of 500 and a reserve
//! of 20. Everything about what was spent, and when, is counted from the emulator's own
//! request log (each entry carries the emulator's clock) and its usage counter:
//!
//! - `pace = "even"`: every day of the month exports something, usage never passes 480,
//!   the last day still has budget, and every run exits 0 (cohorts beyond a run's share
//!   are `paced`, with the hour they are expected to run);
//! - today's defaults: the budget is gone on day 1, and `plan --month`, run after the
//!   first hours, predicts that day within one day;
//! - `refresh = "24h"` (one cohort overridden to `"6h"`) run hourly spends one download
//!   per cohort per day (four for the overridden one).
//!
//! Rate-limit windows and job times run 1000x faster (`COHORT_SYNC_TIME_SCALE`, the
//! emulator's `time_scale`); calendar time is the simulated clock.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use cohort_sync::clock::Clock;
use cohort_sync::emulator::{CohortSpec, LoggedRequest};
use common::emulator::cohort;
use common::harness::{self, Harness, outcomes};
use common::log::{spent_by_cohort, spent_requests};
use serde_json::Value;

const COHORTS: usize = 30;
const LIMIT: u32 = 500;
const RESERVE: u32 = 20;
const SCALE: &str = "0.001";
const MONTH_START: &str = "2026-11-01T00:00:00Z";
const DAYS: i64 = 30;

/// An emulator and the binary on one simulated clock.
struct Sim {
    h: Harness,
    clock_dir: tempfile::TempDir,
}

impl Sim {
    async fn start() -> Sim {
        let clock_dir = tempfile::tempdir().expect("tempdir");
        let sim = clock_dir.path().join("now");
        std::fs::write(&sim, MONTH_START).expect("clock file");
        let setting = format!("@{}", sim.display());
        let cohorts: Vec<CohortSpec> = (0..COHORTS)
            .map(|i| CohortSpec {
                recompute_secs: 3600,
                ..cohort(&format!("c{i:02}"), 3)
            })
            .collect();
        let h = harness::start(cohorts, |c| {
            c.clock = Clock::parse(&setting).expect("clock setting");
            c.time_scale = 0.001;
            c.job_duration = std::time::Duration::ZERO;
            c.monthly_limit = LIMIT;
        })
        .await;
        Sim { h, clock_dir }
    }

    fn clock_file(&self) -> PathBuf {
        self.clock_dir.path().join("now")
    }

    /// Moves both clocks to `at`.
    fn set_clock(&self, at: DateTime<Utc>) {
        let file = self.clock_file();
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, at.to_rfc3339()).expect("clock file");
        std::fs::rename(&tmp, &file).expect("clock file");
    }

    fn pipeline(&self, name: &str, quota: &str, select_extra: &str) -> PathBuf {
        self.pipeline_on(name, &format!("state-{name}"), quota, select_extra)
    }

    /// A pipeline keeping its state (and so the app's quota ledger) at `state`.
    fn pipeline_on(&self, name: &str, state: &str, quota: &str, select_extra: &str) -> PathBuf {
        let text = format!(
            "kind = \"export\"\nname = \"{name}\"\n\n{}\n[select]\nall_published = true\n{select_extra}\n\n[output]\nurl = \"out-{name}\"\n\n[state]\nurl = \"{state}\"\n\n[download]\npoll_initial_secs = 1\n\n[quota]\nreserve = {RESERVE}\n{quota}\n",
            self.h.connection()
        );
        self.h.write(name, &text)
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "COHORT_SYNC_NOW".into(),
                format!("@{}", self.clock_file().display()),
            ),
            ("COHORT_SYNC_TIME_SCALE".into(), SCALE.into()),
        ]
    }

    /// `cohort-sync COMMAND FILE ARGS` at `at`: (exit code, report).
    async fn at(
        &self,
        at: DateTime<Utc>,
        command: &str,
        file: &Path,
        args: &[&str],
    ) -> (i32, Value) {
        self.set_clock(at);
        let f = self.exec(command, file, args, &[]).await;
        let report = f.report().clone();
        (f.code, report)
    }

    /// `cohort-sync COMMAND FILE ARGS` on the clock as it is, with `extra` environment.
    async fn exec(
        &self,
        command: &str,
        file: &Path,
        args: &[&str],
        extra: &[(&str, &str)],
    ) -> harness::Finished {
        let env = self.env();
        let mut env: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.extend_from_slice(extra);
        self.h.invoke(command, &[file], args, &env).await
    }
}

fn start() -> DateTime<Utc> {
    MONTH_START.parse().expect("time")
}

/// Spent requests per simulated day, on the emulator's clock.
fn spent_per_day(log: &[LoggedRequest]) -> BTreeMap<NaiveDate, usize> {
    let mut out = BTreeMap::new();
    for r in spent_requests(log) {
        let at = r.clock.expect("the log carries the emulator's clock");
        *out.entry(at.date_naive()).or_default() += 1;
    }
    out
}

/// When the month's spent requests reached `n` (the emulator's clock), if they did.
fn reached(log: &[LoggedRequest], n: usize) -> Option<DateTime<Utc>> {
    spent_requests(log)
        .get(n.checked_sub(1)?)
        .and_then(|r| r.clock)
}

fn day(n: i64) -> NaiveDate {
    (start() + Duration::days(n)).date_naive()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn even_pacing_makes_the_month_last() {
    let sim = Sim::start().await;
    let file = sim.pipeline("even", "pace = \"even\"", "");
    let usable = (LIMIT - RESERVE) as usize;
    let mut paced_seen = None;
    for hour in 0..DAYS * 24 {
        let at = start() + Duration::hours(hour);
        let (code, report) = sim.at(at, "run", &file, &[]).await;
        assert_eq!(code, 0, "hour {hour}: {report:#}");
        if paced_seen.is_none()
            && let Some(c) = report["pipelines"][0]["cohorts"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["outcome"] == "paced")
        {
            paced_seen = Some(c.clone());
        }
        if hour == 24 * 10 {
            // Mid-month, the forecast knows pacing makes the budget last.
            let (code, plan) = sim.at(at, "plan", &file, &["--month"]).await;
            assert_eq!(code, 0, "{plan:#}");
            let f = &plan["pipelines"][0]["forecast"];
            assert_eq!(f["lasts_the_month"], true, "{f:#}");
            assert!(f["paced_deferred_per_day"].as_f64() > Some(0.0), "{f:#}");
        }
    }
    let log = sim.h.requests().await;
    let per_day = spent_per_day(&log);
    for d in 0..DAYS {
        assert!(
            per_day.get(&day(d)).copied().unwrap_or(0) > 0,
            "nothing exported on {}: {per_day:?}",
            day(d)
        );
    }
    let spent = spent_requests(&log).len();
    assert!(spent <= usable, "spent {spent} > {usable}: {per_day:?}");
    assert!(
        spent >= usable - 2,
        "pacing left {} of {usable} unspent: {per_day:?}",
        usable - spent
    );
    // The budget after the reserve was never reached before the last day.
    let last_day = start() + Duration::days(DAYS - 1);
    assert!(
        reached(&log, usable).is_none_or(|t| t >= last_day),
        "the budget was gone before the last day: {per_day:?}"
    );
    let (used, limit) = sim.h.usage().await;
    assert_eq!(limit, LIMIT);
    assert!(used as usize <= usable, "emulator usage {used}");
    assert_eq!(
        used as usize, spent,
        "the emulator's counter and its log agree"
    );
    // The stalest go first: the month's downloads rotate evenly over the 30 cohorts.
    let by_cohort = spent_by_cohort(&log);
    assert_eq!(by_cohort.len(), COHORTS, "{by_cohort:?}");
    assert!(
        by_cohort.values().all(|n| *n == usable / COHORTS),
        "{by_cohort:?}"
    );
    // December: the emulator's usage resets on the 1st and the allowance starts anew.
    let seq = sim.h.last_seq().await;
    let (code, report) = sim
        .at(start() + Duration::days(DAYS), "run", &file, &[])
        .await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(spent_requests(&sim.h.requests_since(seq).await).len(), 1);
    assert_eq!(sim.h.usage().await.0, 1, "usage reset on December 1st");
    let paced = paced_seen.expect("some run paced a cohort");
    assert!(paced["expected_at"].is_string(), "{paced:#}");
    assert!(
        paced["detail"]
            .as_str()
            .is_some_and(|d| d.contains("expected to run from")),
        "{paced:#}"
    );
    eprintln!("even pacing: spent {spent}, per day {per_day:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn todays_defaults_spend_the_month_on_day_one_as_plan_month_predicts() {
    let sim = Sim::start().await;
    let file = sim.pipeline("asap", "", "");
    let usable = (LIMIT - RESERVE) as usize;
    let mut predicted = None;
    let mut codes = Vec::new();
    for hour in 0..48 {
        let at = start() + Duration::hours(hour);
        if hour == 3 {
            let (code, plan) = sim.at(at, "plan", &file, &["--month"]).await;
            assert_eq!(code, 0, "{plan:#}");
            let f = &plan["pipelines"][0]["forecast"];
            assert_eq!(f["lasts_the_month"], false, "{f:#}");
            let t: DateTime<Utc> = f["runs_out_at"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no runs_out_at: {f:#}"));
            predicted = Some(t);
        }
        let (code, _) = sim.at(at, "run", &file, &[]).await;
        codes.push(code);
    }
    let log = sim.h.requests().await;
    let per_day = spent_per_day(&log);
    let gone = reached(&log, usable).unwrap_or_else(|| panic!("never spent: {per_day:?}"));
    assert_eq!(gone.date_naive(), day(0), "{per_day:?}");
    assert_eq!(per_day.get(&day(1)), None, "day 2 spent: {per_day:?}");
    assert_eq!(spent_requests(&log).len(), usable);
    // Once the budget is gone, every run stops by quota (exit 3).
    assert_eq!(codes.iter().filter(|c| **c == 0).count(), 16, "{codes:?}");
    assert!(codes[16..].iter().all(|c| *c == 3), "{codes:?}");
    let predicted = predicted.expect("forecast");
    let off = (predicted.date_naive() - gone.date_naive())
        .num_days()
        .abs();
    assert!(
        off <= 1,
        "plan --month said {predicted}, the simulation ran out at {gone}"
    );
    eprintln!("defaults: budget gone at {gone}, plan --month predicted {predicted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_refresh_spends_one_download_per_cohort_per_day() {
    let sim = Sim::start().await;
    let file = sim.pipeline(
        "daily",
        "refresh = \"24h\"",
        "refresh = { \"c00\" = \"6h\" }",
    );
    let days = 3;
    let mut fresh = 0;
    for hour in 0..days * 24 {
        let (code, report) = sim
            .at(start() + Duration::hours(hour), "run", &file, &[])
            .await;
        assert_eq!(code, 0, "hour {hour}: {report:#}");
        fresh += outcomes(&report)
            .iter()
            .filter(|(_, o)| o == "fresh_enough")
            .count();
    }
    let log = sim.h.requests().await;
    let mut per_cohort_day: BTreeMap<(String, NaiveDate), usize> = BTreeMap::new();
    for r in spent_requests(&log) {
        let at = r.clock.expect("clock");
        *per_cohort_day
            .entry((r.cohort_id.clone().unwrap_or_default(), at.date_naive()))
            .or_default() += 1;
    }
    for i in 0..COHORTS {
        let id = format!("c{i:02}");
        let want = if i == 0 { 4 } else { 1 };
        for d in 0..days {
            assert_eq!(
                per_cohort_day.get(&(id.clone(), day(d))).copied(),
                Some(want),
                "{id} on {}: {per_cohort_day:?}",
                day(d)
            );
        }
    }
    let expected_spent = (COHORTS - 1 + 4) * days as usize;
    assert_eq!(spent_requests(&log).len(), expected_spent);
    // Every other hourly run found each changed cohort fresh enough.
    assert_eq!(
        fresh,
        days as usize * 24 * COHORTS - expected_spent,
        "fresh_enough outcomes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_on_one_state_share_one_allowance() {
    let sim = Sim::start().await;
    let a = sim.pipeline_on("runner-a", "shared-state", "pace = \"even\"", "");
    let b = sim.pipeline_on("runner-b", "shared-state", "pace = \"even\"", "");
    // 05:10 on the 1st: hour 6 of 720, ceil(480 × 6 / 720) = 4 allowed by its end.
    let at = start() + Duration::minutes(5 * 60 + 10);
    let seq = sim.h.last_seq().await;
    let (code, first) = sim.at(at, "run", &a, &[]).await;
    assert_eq!(code, 0, "{first:#}");
    assert_eq!(first["pipelines"][0]["pace"]["share"], 4, "{first:#}");
    // A's concurrent requests each take a ticket and may give one back when they cross
    // (erring on the safe side), so A spends at most its share, and at least one.
    let spent_a = spent_requests(&sim.h.requests_since(seq).await).len();
    assert!((1..=4).contains(&spent_a), "A spent {spent_a}: {first:#}");
    let seq = sim.h.last_seq().await;
    let (code, second) = sim.at(at + Duration::minutes(20), "run", &b, &[]).await;
    assert_eq!(code, 0, "{second:#}");
    // B sees what A spent: its share is the rest of the hour's allowance, no more.
    assert_eq!(
        second["pipelines"][0]["pace"]["share"],
        4 - spent_a,
        "{second:#}"
    );
    let spent_b = spent_requests(&sim.h.requests_since(seq).await).len();
    assert!(
        spent_a + spent_b <= 4,
        "the two runners of the hour spent {spent_a} + {spent_b} of 4: {second:#}"
    );
    let paced = outcomes(&second)
        .iter()
        .filter(|(_, o)| o == "paced")
        .count();
    assert_eq!(paced, COHORTS - spent_b);
    // The next hour's allowance (5 in all) goes to whichever runner comes first.
    let seq = sim.h.last_seq().await;
    let (code, third) = sim.at(at + Duration::hours(1), "run", &b, &[]).await;
    assert_eq!(code, 0, "{third:#}");
    let spent_c = spent_requests(&sim.h.requests_since(seq).await).len();
    assert!(spent_c >= 1, "the next hour spends again: {third:#}");
    assert_eq!(sim.h.usage().await.0 as usize, spent_a + spent_b + spent_c);
    assert!(sim.h.usage().await.0 <= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_starting_together_still_share_one_allowance() {
    let sim = Sim::start().await;
    let a = sim.pipeline_on("together-a", "shared-state", "pace = \"even\"", "");
    let b = sim.pipeline_on("together-b", "shared-state", "pace = \"even\"", "");
    // 09:10 on the 1st: hour 10, ceil(480 × 10 / 720) = 7 allowed by its end; nothing spent.
    sim.set_clock(start() + Duration::minutes(9 * 60 + 10));
    let mut spent = 0;
    for round in 0..3 {
        let seq = sim.h.last_seq().await;
        let (fa, fb) = tokio::join!(sim.exec("run", &a, &[], &[]), sim.exec("run", &b, &[], &[]));
        assert_eq!((fa.code, fb.code), (0, 0), "{}\n{}", fa.stderr, fb.stderr);
        spent += spent_requests(&sim.h.requests_since(seq).await).len();
        assert!(
            spent <= 7,
            "round {round}: {spent} spent: {:#}\n{:#}",
            fa.report(),
            fb.report()
        );
    }
    // Racing for the last slots, both may have waited (and a runner's own requests may
    // cross and give a ticket back); a runner alone takes from what is left, never more.
    let seq = sim.h.last_seq().await;
    let (code, _) = sim
        .at(start() + Duration::minutes(9 * 60 + 20), "run", &a, &[])
        .await;
    assert_eq!(code, 0);
    let alone = spent_requests(&sim.h.requests_since(seq).await).len();
    assert!(
        spent == 7 || alone >= 1,
        "{spent} spent, then {alone} alone"
    );
    assert!(sim.h.usage().await.0 <= 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_holding_a_pacing_ticket_errs_on_the_safe_side() {
    let sim = Sim::start().await;
    // One download at a time, so exactly one ticket is taken when the kill lands.
    let file = sim.pipeline("ticket", "pace = \"even\"\nmax_parallel = 1", "");
    // 05:10: 4 allowed by the end of the hour.
    sim.set_clock(start() + Duration::minutes(5 * 60 + 10));
    let killed = sim
        .exec(
            "run",
            &file,
            &[],
            &[("COHORT_SYNC_CRASH_AT", "export.pace.reserved#1")],
        )
        .await;
    assert_eq!(killed.code, -9, "{}", killed.stderr);
    assert_eq!(spent_requests(&sim.h.requests().await).len(), 0);
    let rerun = sim.exec("run", &file, &[], &[]).await;
    assert_eq!(rerun.code, 0, "{}", rerun.stderr);
    // The ticket the kill left counts as a request of unknown outcome: 1 ticket + 3 spent
    // = the hour's 4.
    assert_eq!(spent_requests(&sim.h.requests().await).len(), 3);
    let usage = &rerun.report()["pipelines"][0]["usage_before"];
    assert_eq!(usage["ledger_used"], 1, "{usage:#}");
}

//! `cohort-sync plan --month`: how this month's budget fares under a pipeline's settings,
//! from its run history (how often runs happen, how many cohorts Amplitude recomputed
//! between runs) and the month's usage — when it runs out, the shortest freshness target
//! that lasts the month, and what even pacing would defer.
//!
//! The model: runs every `interval` hours (the history's mean gap), each finding
//! `recomputed` cohorts with new data (the history's mean). Without a target every one is
//! downloaded; a target of `R` exports each cohort at most once every `k = ⌈R / interval⌉`
//! runs, so a run downloads `min(recomputed, selected / k)`. Spend per hour is that over
//! the interval; the budget left (limit − reserve − used) lasts `left / rate` hours.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::plan::{PlanOptions, refresh_slack};
use crate::amplitude::types::RestDownloadUsage;
use crate::quota::{MonthHours, Pace};
use crate::state::RunRecord;

/// How far back the history is read.
pub const HISTORY_DAYS: i64 = 30;

/// Longest freshness target tried when looking for one that lasts the month.
const MAX_TARGET_HOURS: f64 = 31.0 * 24.0;

/// What the current plan sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demand {
    pub selected: u32,
    pub changed: u32,
    pub recomputed: Option<u32>,
}

/// The month's forecast for one pipeline (in the plan report as `forecast`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// Run records the forecast is based on (the last 30 days).
    pub runs: u32,
    /// Mean hours between runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_hours: Option<f64>,
    /// Mean cohorts recomputed between two runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recomputed_per_run: Option<f64>,
    pub selected: u32,
    /// Downloads a day under today's settings without pacing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downloads_per_day: Option<f64>,
    /// This month's budget left after the reserve.
    pub budget_left: u32,
    /// When usage resets (the 1st, 00:00 UTC).
    pub resets_at: DateTime<Utc>,
    /// When the budget runs out under today's settings (`None`: it lasts the month, or
    /// there is not enough history to tell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs_out_at: Option<DateTime<Utc>>,
    /// Whether the budget lasts until the reset under today's settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lasts_the_month: Option<bool>,
    /// The shortest `refresh` that lasts the month without pacing (any longer target
    /// lasts too); `"none"` when every change fits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_that_lasts: Option<String>,
    /// Under `pace = "even"`: downloads a day the allowance gives for the rest of the month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paced_downloads_per_day: Option<f64>,
    /// Under `pace = "even"`: downloads a day wanted beyond the allowance (deferred as
    /// `paced`, the stalest first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paced_deferred_per_day: Option<f64>,
    /// Under `pace = "even"`: hours between two exports of one cohort, on average.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paced_export_every_hours: Option<f64>,
    /// Why something could not be forecast, or an assumption worth knowing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Builds the forecast from the history (oldest first), the current plan's demand, the
/// pipeline's options and the month's usage, at `now`.
pub fn forecast(
    runs: &[RunRecord],
    demand: Demand,
    opts: &PlanOptions,
    usage: &RestDownloadUsage,
    now: DateTime<Utc>,
) -> Forecast {
    let month = MonthHours::of(now);
    let budget_left = usage
        .limit
        .saturating_sub(opts.reserve)
        .saturating_sub(usage.usage);
    let mut f = Forecast {
        runs: runs.len() as u32,
        interval_hours: None,
        recomputed_per_run: None,
        selected: demand.selected,
        downloads_per_day: None,
        budget_left,
        resets_at: month.end,
        runs_out_at: None,
        lasts_the_month: None,
        refresh_that_lasts: None,
        paced_downloads_per_day: None,
        paced_deferred_per_day: None,
        paced_export_every_hours: None,
        notes: Vec::new(),
    };
    if !opts.refresh.by_id.is_empty() {
        f.notes.push(
            "per-cohort targets (select.refresh) are not modelled: the pipeline's quota.refresh is used for every cohort".into(),
        );
    }
    let (Some(first), Some(last)) = (runs.first(), runs.last()) else {
        f.notes
            .push("no run recorded yet: run the pipeline (at least twice) first".into());
        return f;
    };
    if runs.len() < 2 || last.at <= first.at {
        f.notes.push(format!(
            "{} run recorded: at least two are needed to see how often runs happen",
            runs.len()
        ));
        return f;
    }
    let interval = (last.at - first.at).num_seconds() as f64 / 3600.0 / (runs.len() - 1) as f64;
    let recomputed: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.recomputed.map(f64::from))
        .collect();
    let per_run_changes = if recomputed.is_empty() {
        f.notes.push(
            "no run saw a previous one: cohorts changed since their last export are counted instead of recomputations".into(),
        );
        runs.iter().map(|r| f64::from(r.changed)).sum::<f64>() / runs.len() as f64
    } else {
        recomputed.iter().sum::<f64>() / recomputed.len() as f64
    };
    f.interval_hours = Some(round2(interval));
    f.recomputed_per_run = Some(round2(per_run_changes));
    let selected = f64::from(demand.selected);
    let per_hour = |target_hours: Option<f64>| -> f64 {
        let k = match target_hours {
            None => 1.0,
            Some(t) => (t / interval).ceil().max(1.0),
        };
        per_run_changes.min(selected / k) / interval
    };
    let target = opts.refresh.default.map(|t| {
        let slack = refresh_slack(t);
        (t.saturating_sub(slack)).as_secs_f64() / 3600.0
    });
    let rate = per_hour(target);
    f.downloads_per_day = Some(round2(rate * 24.0));
    let hours_left = month.hours_left(now);
    let left = f64::from(budget_left);
    let runs_out = (rate > 0.0).then(|| now + Duration::seconds((left / rate * 3600.0) as i64));
    match opts.pace {
        Pace::Even => {
            f.lasts_the_month = Some(true);
            f.notes.push(
                "pace = \"even\": the budget lasts the month by construction; without pacing it would run out at runs_out_at".into(),
            );
            f.runs_out_at = runs_out.filter(|t| *t < month.end);
        }
        Pace::Asap => {
            f.runs_out_at = runs_out.filter(|t| *t < month.end);
            f.lasts_the_month = Some(f.runs_out_at.is_none());
        }
    }
    f.refresh_that_lasts = shortest_lasting_target(&per_hour, interval, left, hours_left);
    if f.refresh_that_lasts.is_none() {
        f.notes.push(format!(
            "no refresh target up to 31 days lasts the month: {budget_left} downloads are left for {} selected cohorts",
            demand.selected
        ));
    }
    if hours_left > 0.0 {
        let share = left / hours_left;
        f.paced_downloads_per_day = Some(round2(share * 24.0));
        f.paced_deferred_per_day = Some(round2(((rate - share) * 24.0).max(0.0)));
        let exported = rate.min(share);
        if exported > 0.0 && selected > 0.0 {
            f.paced_export_every_hours = Some(round2(
                (selected / exported)
                    .max(target.unwrap_or(0.0))
                    .max(interval),
            ));
        }
    }
    f
}

/// The shortest target (a whole number of run intervals) whose spend fits what is left.
fn shortest_lasting_target(
    per_hour: &dyn Fn(Option<f64>) -> f64,
    interval: f64,
    left: f64,
    hours_left: f64,
) -> Option<String> {
    if per_hour(None) * hours_left <= left {
        return Some("none".into());
    }
    let mut k = 2.0;
    while k * interval <= MAX_TARGET_HOURS {
        if per_hour(Some(k * interval)) * hours_left <= left {
            // To the minute: the mean gap carries the runs' start-time jitter.
            let minutes = (k * interval * 60.0).round().max(1.0) as u64;
            let target = std::time::Duration::from_secs(minutes * 60);
            return Some(humantime::format_duration(target).to_string());
        }
        k += 1.0;
    }
    None
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::plan::{Priority, RefreshTargets};

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    fn hourly(n: u32, from: &str, recomputed: u32) -> Vec<RunRecord> {
        (0..n)
            .map(|i| RunRecord {
                run_id: format!("r{i}"),
                at: t(from) + Duration::hours(i as i64),
                selected: 30,
                changed: 30,
                recomputed: (i > 0).then_some(recomputed),
                fresh_enough: 0,
                spend: 30,
                paced: 0,
                deferred_quota: 0,
            })
            .collect()
    }

    fn opts(pace: Pace, refresh_hours: Option<u64>) -> PlanOptions {
        PlanOptions {
            skip_unchanged: true,
            force: false,
            props: false,
            prop_keys: vec![],
            reserve: 20,
            priority: Priority::StaleFirst,
            request_validity: Duration::days(7),
            refresh: RefreshTargets {
                default: refresh_hours.map(|h| std::time::Duration::from_secs(h * 3600)),
                by_id: Default::default(),
            },
            pace,
        }
    }

    fn usage(used: u32) -> RestDownloadUsage {
        RestDownloadUsage {
            limit: 500,
            usage: used,
            resets_at: None,
        }
    }

    const DEMAND: Demand = Demand {
        selected: 30,
        changed: 30,
        recomputed: Some(30),
    };

    #[test]
    fn thirty_hourly_cohorts_run_out_the_same_day() {
        let runs = hourly(3, "2026-11-01T00:00:00Z", 30);
        let now = t("2026-11-01T02:30:00Z");
        let f = forecast(&runs, DEMAND, &opts(Pace::Asap, None), &usage(90), now);
        assert_eq!(f.interval_hours, Some(1.0));
        assert_eq!(f.downloads_per_day, Some(720.0));
        assert_eq!(f.runs_out_at, Some(t("2026-11-01T15:30:00Z")));
        assert_eq!(f.lasts_the_month, Some(false));
        // 390 left over 717.5 hours: 30 cohorts every k hours with 30/k*717.5 <= 390
        // → k = 56.
        assert_eq!(f.refresh_that_lasts.as_deref(), Some("2days 8h"));
        assert_eq!(f.paced_deferred_per_day.map(|d| d > 700.0), Some(true));
    }

    #[test]
    fn a_daily_target_spends_each_cohort_once_a_day() {
        let runs = hourly(5, "2026-11-01T00:00:00Z", 30);
        let f = forecast(
            &runs,
            DEMAND,
            &opts(Pace::Asap, Some(24)),
            &usage(30),
            t("2026-11-01T05:00:00Z"),
        );
        assert_eq!(f.downloads_per_day, Some(30.0));
        // 450 left at 30 a day: gone after 15 days.
        assert_eq!(f.runs_out_at, Some(t("2026-11-16T05:00:00Z")));
    }

    #[test]
    fn even_pacing_lasts_and_says_what_it_defers() {
        let runs = hourly(3, "2026-11-01T00:00:00Z", 30);
        let f = forecast(
            &runs,
            DEMAND,
            &opts(Pace::Even, None),
            &usage(0),
            t("2026-11-01T00:00:00Z"),
        );
        assert_eq!(f.lasts_the_month, Some(true));
        assert_eq!(f.paced_downloads_per_day, Some(16.0));
        assert_eq!(f.paced_deferred_per_day, Some(704.0));
        assert_eq!(f.paced_export_every_hours, Some(45.0));
    }

    #[test]
    fn without_two_runs_it_says_so() {
        let f = forecast(
            &hourly(1, "2026-11-01T00:00:00Z", 30),
            DEMAND,
            &opts(Pace::Asap, None),
            &usage(0),
            t("2026-11-01T00:30:00Z"),
        );
        assert!(f.runs_out_at.is_none() && f.lasts_the_month.is_none());
        assert!(f.notes.iter().any(|n| n.contains("two")), "{:?}", f.notes);
    }
}

//! Even pacing of the month's downloads (`quota.pace = "even"`): the budget after the
//! reserve is spread evenly over the hours of the month (UTC, as Amplitude resets usage on
//! the 1st) as a cumulative allowance — by the end of hour `k` of `H`, at most
//! `ceil(usable × k / H)` downloads may have been spent this month. A run may spend the
//! allowance minus what is already spent (the larger of the quota ledger and the usage
//! endpoint), so hours that spent less than their share carry it forward, and several
//! runners sharing one ledger share one allowance: whatever one spends, the next sees.

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a pipeline spends the month's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Pace {
    /// Spend what the budget allows as soon as cohorts change (the month's budget can be
    /// gone on its first day).
    #[default]
    Asap,
    /// Spread the budget after the reserve evenly over the hours left in the month.
    Even,
}

/// The month a time falls in, as hours (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonthHours {
    pub start: DateTime<Utc>,
    /// The 1st of next month, 00:00 UTC: when usage resets.
    pub end: DateTime<Utc>,
    /// Hours in the month.
    pub total: u32,
    /// Hours begun so far, this one included (1..=total).
    pub begun: u32,
}

impl MonthHours {
    pub fn of(now: DateTime<Utc>) -> MonthHours {
        let start = first_of_month(now.year(), now.month()).unwrap_or(now);
        let (y, m) = if now.month() == 12 {
            (now.year() + 1, 1)
        } else {
            (now.year(), now.month() + 1)
        };
        let end = first_of_month(y, m).unwrap_or(start + Duration::days(31));
        let total = ((end - start).num_hours().max(1)) as u32;
        let begun = ((now - start).num_hours() + 1).clamp(1, total as i64) as u32;
        MonthHours {
            start,
            end,
            total,
            begun,
        }
    }

    /// Hours left in the month from `now` (fractional).
    pub fn hours_left(&self, now: DateTime<Utc>) -> f64 {
        ((self.end - now).num_seconds().max(0)) as f64 / 3600.0
    }
}

fn first_of_month(year: i32, month: u32) -> Option<DateTime<Utc>> {
    Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0).single()
}

/// What even pacing allows at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// The month's usable budget: limit minus reserve.
    pub usable: u32,
    /// Downloads the month may have spent by the end of the current hour.
    pub by_now: u32,
    /// What this run may spend: `by_now` minus what is spent.
    pub share: u32,
    pub month: MonthHours,
}

impl Allowance {
    /// The allowance at `now` for a month of `limit` downloads with `reserve` kept back,
    /// `used` already spent.
    pub fn at(now: DateTime<Utc>, limit: u32, reserve: u32, used: u32) -> Allowance {
        let month = MonthHours::of(now);
        let usable = limit.saturating_sub(reserve);
        let by_now = cumulative(usable, month.begun, month.total);
        Allowance {
            usable,
            by_now,
            share: by_now.saturating_sub(used),
            month,
        }
    }

    /// When the allowance first reaches `n` downloads this month (the start of that
    /// hour); the monthly reset when `n` is beyond this month's usable budget.
    pub fn reaches(&self, n: u32) -> DateTime<Utc> {
        if n > self.usable {
            return self.month.end;
        }
        if n == 0 {
            return self.month.start;
        }
        // Smallest k with ceil(usable*k/total) >= n, i.e. usable*k > (n-1)*total.
        let k =
            (u64::from(n - 1) * u64::from(self.month.total)) / u64::from(self.usable.max(1)) + 1;
        self.month.start + Duration::hours(k as i64 - 1)
    }
}

/// `ceil(usable × begun / total)`.
fn cumulative(usable: u32, begun: u32, total: u32) -> u32 {
    let total = u64::from(total.max(1));
    (u64::from(usable) * u64::from(begun)).div_ceil(total) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    #[test]
    fn the_allowance_grows_by_the_hour_and_reaches_the_budget_in_the_last_hour() {
        // November: 720 hours, 480 usable.
        let first = Allowance::at(t("2026-11-01T00:10:00Z"), 500, 20, 0);
        assert_eq!((first.month.total, first.by_now, first.share), (720, 1, 1));
        let second = Allowance::at(t("2026-11-01T01:59:59Z"), 500, 20, 1);
        assert_eq!((second.by_now, second.share), (2, 1));
        let third = Allowance::at(t("2026-11-01T02:00:00Z"), 500, 20, 2);
        assert_eq!((third.by_now, third.share), (2, 0));
        let last = Allowance::at(t("2026-11-30T23:30:00Z"), 500, 20, 470);
        assert_eq!((last.by_now, last.share), (480, 10));
        // Unspent hours carry forward; overspent ones give nothing until caught up.
        let late = Allowance::at(t("2026-11-16T00:00:00Z"), 500, 20, 0);
        assert_eq!(late.share, 241);
        assert_eq!(
            Allowance::at(t("2026-11-16T00:00:00Z"), 500, 20, 300).share,
            0
        );
    }

    #[test]
    fn reaches_names_the_hour_the_allowance_gets_there() {
        let a = Allowance::at(t("2026-11-10T05:00:00Z"), 500, 20, 0);
        assert_eq!(a.reaches(1), t("2026-11-01T00:00:00Z"));
        assert_eq!(a.reaches(2), t("2026-11-01T01:00:00Z"));
        assert_eq!(a.reaches(3), t("2026-11-01T03:00:00Z"));
        assert_eq!(a.reaches(480), t("2026-11-30T22:00:00Z"));
        assert_eq!(a.reaches(481), t("2026-12-01T00:00:00Z"));
        for n in 1..=480 {
            let at = a.reaches(n);
            assert!(Allowance::at(at, 500, 20, 0).by_now >= n, "{n}");
            if at > a.month.start {
                let before = at - Duration::seconds(1);
                assert!(Allowance::at(before, 500, 20, 0).by_now < n, "{n}");
            }
        }
    }

    #[test]
    fn december_rolls_over_the_year() {
        let m = MonthHours::of(t("2026-12-31T23:00:00Z"));
        assert_eq!(m.end, t("2027-01-01T00:00:00Z"));
        assert_eq!((m.total, m.begun), (744, 744));
    }
}

//! This month's download usage as a run counts it: the larger of what Amplitude's usage
//! endpoint reports and what the quota ledger in the state store counts (requests this
//! tool issued, and those whose outcome is unknown). The usage endpoint is on today's API
//! page but in no older doc and no public client: when it answers 404, 5xx or a shape we
//! do not know, the run goes on with the ledger and says so once — it never fails for it.

use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde::Serialize;

use crate::amplitude::AmplitudeClient;
use crate::amplitude::types::RestDownloadUsage;
use crate::state::{Ledger, MonthCount};

/// Amplitude's monthly limit of "get one cohort" requests (Growth and Enterprise plans),
/// assumed when the usage endpoint cannot tell.
pub const DEFAULT_MONTHLY_LIMIT: u32 = 500;

/// Where the month's figure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    /// The usage endpoint, at least as high as the ledger.
    Endpoint,
    /// The ledger counts more than the endpoint reports (it lags, or other tools share
    /// nothing with it): the ledger's count is used.
    Ledger,
    /// The endpoint is unavailable: the ledger alone, against the default limit.
    LedgerOnly,
}

/// The usage a run plans with, and both figures behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct MonthlyUsage {
    /// What the budget uses: the larger count, the endpoint's limit (or the default).
    pub effective: RestDownloadUsage,
    pub endpoint: Option<RestDownloadUsage>,
    pub ledger: Option<MonthCount>,
    pub source: UsageSource,
    /// Set when a figure could not be read (logged once as a warning).
    pub warning: Option<String>,
}

/// Reads the endpoint and the ledger (either may be unavailable) and combines them.
pub async fn read_usage(
    client: &AmplitudeClient,
    ledger: Option<&Ledger>,
    now: DateTime<Utc>,
) -> MonthlyUsage {
    let mut warnings = Vec::new();
    let endpoint = match client.usage().await {
        Ok(u) => Some(u),
        Err(e) => {
            warnings.push(format!(
                "the usage endpoint is unavailable ({e}); counting this month's downloads from the quota ledger"
            ));
            None
        }
    };
    let counted = match ledger {
        Some(l) => match l.month(now).await {
            Ok(c) => Some(c),
            Err(e) => {
                warnings.push(format!("the quota ledger cannot be read ({e})"));
                None
            }
        },
        None => None,
    };
    let usage = combine(endpoint, counted, now);
    let warning = (!warnings.is_empty()).then(|| warnings.join("; "));
    if let Some(w) = &warning {
        tracing::warn!("{w}");
    }
    MonthlyUsage { warning, ..usage }
}

/// The effective usage from the two figures.
pub fn combine(
    endpoint: Option<RestDownloadUsage>,
    ledger: Option<MonthCount>,
    now: DateTime<Utc>,
) -> MonthlyUsage {
    let counted = ledger.map_or(0, |c| c.total());
    let (effective, source) = match &endpoint {
        Some(e) if e.usage >= counted => (e.clone(), UsageSource::Endpoint),
        Some(e) => (
            RestDownloadUsage {
                usage: counted,
                ..e.clone()
            },
            UsageSource::Ledger,
        ),
        None => (
            RestDownloadUsage {
                limit: DEFAULT_MONTHLY_LIMIT,
                usage: counted,
                resets_at: Some(next_reset(now)),
            },
            UsageSource::LedgerOnly,
        ),
    };
    MonthlyUsage {
        effective,
        endpoint,
        ledger,
        source,
        warning: None,
    }
}

/// The next monthly reset: the 1st of next month, 00:00 UTC.
pub fn next_reset(now: DateTime<Utc>) -> String {
    let (y, m) = if now.month() == 12 {
        (now.year() + 1, 1)
    } else {
        (now.year(), now.month() + 1)
    };
    Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0)
        .single()
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S").to_string())
        .unwrap_or_else(|| "the 1st, UTC".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(usage: u32) -> RestDownloadUsage {
        RestDownloadUsage {
            limit: 500,
            usage,
            resets_at: Some("2026-12-01T00:00:00".into()),
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-11-29T12:00:00Z".parse().expect("time")
    }

    #[test]
    fn the_larger_figure_wins() {
        let ledger = MonthCount {
            spent: 40,
            unknown: 2,
        };
        let u = combine(Some(endpoint(30)), Some(ledger), now());
        assert_eq!((u.effective.usage, u.source), (42, UsageSource::Ledger));
        let u = combine(Some(endpoint(50)), Some(ledger), now());
        assert_eq!((u.effective.usage, u.source), (50, UsageSource::Endpoint));
    }

    #[test]
    fn without_the_endpoint_the_ledger_and_the_default_limit_decide() {
        let u = combine(
            None,
            Some(MonthCount {
                spent: 7,
                unknown: 1,
            }),
            now(),
        );
        assert_eq!(u.source, UsageSource::LedgerOnly);
        assert_eq!(u.effective.limit, DEFAULT_MONTHLY_LIMIT);
        assert_eq!(u.effective.usage, 8);
        assert_eq!(
            u.effective.resets_at.as_deref(),
            Some("2026-12-01T00:00:00")
        );
    }

    #[test]
    fn resets_roll_over_the_year() {
        let dec: DateTime<Utc> = "2026-12-31T23:00:00Z".parse().expect("time");
        assert_eq!(next_reset(dec), "2027-01-01T00:00:00");
    }
}

//! The JSON run report (`--report FILE`): per pipeline and per cohort what happened, every
//! request that spent quota and why, and the exit code the run ended with.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How one cohort of an export ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Downloaded and published.
    Exported,
    /// Would be exported (plan / dry run).
    Planned,
    /// `lastComputed` equals the last exported one: nothing to do.
    SkippedUnchanged,
    /// Archived and the pipeline does not include archived cohorts.
    SkippedArchived,
    /// Changed, but its last export is younger than its freshness target (`refresh`).
    FreshEnough,
    /// Beyond this run's share of the month under even pacing: runs later this month
    /// (`expected_at`). Not an error: the run exits 0.
    Paced,
    /// Another runner holds this cohort's lease.
    SkippedLeased,
    /// Did not fit in this month's budget (after the reserve).
    DeferredQuota,
    /// The run was stopped (SIGTERM/SIGINT) before the cohort was done; nothing published.
    Interrupted,
    Failed,
}

impl Outcome {
    /// The outcome as the report writes it (`exported`, `deferred_quota`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Exported => "exported",
            Outcome::Planned => "planned",
            Outcome::SkippedUnchanged => "skipped_unchanged",
            Outcome::SkippedArchived => "skipped_archived",
            Outcome::FreshEnough => "fresh_enough",
            Outcome::Paced => "paced",
            Outcome::SkippedLeased => "skipped_leased",
            Outcome::DeferredQuota => "deferred_quota",
            Outcome::Interrupted => "interrupted",
            Outcome::Failed => "failed",
        }
    }

    /// Whether the cohort needs nothing more from this run: a run whose cohorts all end so
    /// (or deferred by quota, which exits 3) may write `_SUCCESS`.
    pub fn is_done(self) -> bool {
        matches!(
            self,
            Outcome::Exported
                | Outcome::SkippedUnchanged
                | Outcome::SkippedArchived
                | Outcome::FreshEnough
                | Outcome::Paced
        )
    }
}

/// Why a request was spent (or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestReason {
    /// Never exported before.
    FirstExport,
    /// `lastComputed` changed since the last export.
    CohortChanged,
    /// Unchanged, but `--force` or `skip_unchanged = false`.
    Forced,
    /// The earlier request was too old (over 7 days) or for other columns.
    EarlierRequestUnusable,
    /// A reverse pipeline needed the cohort's current membership and no export snapshot
    /// was fresh enough.
    ReverseBaseline,
    /// A reverse pipeline with `verify = true` checked the cohort after its last call.
    ReverseVerify,
    /// Amplitude reported the earlier request failed (`JOB FAILED`), unknown (404) or in
    /// a state nobody documents: it was dropped and replaced.
    EarlierRequestFailed,
}

impl RequestReason {
    /// The reason in words, for summaries and details.
    pub fn describe(self) -> &'static str {
        match self {
            RequestReason::FirstExport => "never exported",
            RequestReason::CohortChanged => "lastComputed changed since the last export",
            RequestReason::Forced => "unchanged, but forced",
            RequestReason::EarlierRequestUnusable => {
                "the earlier request is older than 7 days or for other columns"
            }
            RequestReason::ReverseBaseline => "reverse baseline: no fresh snapshot",
            RequestReason::ReverseVerify => "reverse verify after apply",
            RequestReason::EarlierRequestFailed => {
                "Amplitude reported the earlier request failed or unknown"
            }
        }
    }
}

/// One request that spent (or, in a plan, would spend) one of the month's downloads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpentRequest {
    pub cohort_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub reason: RequestReason,
    pub at: DateTime<Utc>,
    /// The call got no answer (timed out or cut after it was sent): Amplitude may or may
    /// not have counted it. Counted in `quota_possibly_spent`, not in `quota_spent`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outcome_unknown: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CohortReport {
    pub cohort_id: String,
    pub name: String,
    pub outcome: Outcome,
    /// A sentence for humans: why skipped / deferred / failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_computed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Whether an earlier request's file was downloaded instead of spending quota.
    pub request_reused: bool,
    pub quota_spent: u32,
    /// `/file` calls made (more than 1 when a download failed and was asked again).
    pub file_attempts: u32,
    pub rows: u64,
    pub skipped_rows: u64,
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The membership change file written with the snapshot (`output.changes = true` and
    /// an earlier snapshot found): entered/exited counts and where it went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<super::changes::ChangeFile>,
    /// When a `paced` cohort is expected to run (the hour the month's allowance reaches it,
    /// if nothing else spends meanwhile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_at: Option<DateTime<Utc>>,
    /// Wall time of the cohort's work, waits for Amplitude's limits included (see
    /// `limit_waits`: the rest is lease, job, transfer and writing time).
    pub duration_ms: u64,
    /// Of `duration_ms`, the time spent waiting for Amplitude's limits (absent when the
    /// cohort did not wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_waits: Option<LimitWaits>,
    /// When this run started and ended the cohort's work (absent for a cohort it only
    /// planned, skipped or deferred).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

impl CohortReport {
    pub fn new(cohort_id: &str, name: &str, outcome: Outcome) -> Self {
        CohortReport {
            cohort_id: cohort_id.to_string(),
            name: name.to_string(),
            outcome,
            detail: None,
            last_computed: None,
            request_id: None,
            request_reused: false,
            quota_spent: 0,
            file_attempts: 0,
            rows: 0,
            skipped_rows: 0,
            bytes: 0,
            output: None,
            sha256: None,
            changes: None,
            expected_at: None,
            duration_ms: 0,
            limit_waits: None,
            started_at: None,
            finished_at: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// Time a piece of work (a cohort, a pipeline) spent waiting for Amplitude's limits
/// rather than transferring or waiting for its job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitWaits {
    /// The three below added up.
    pub total_ms: u64,
    /// Waiting for a slot of the single-cohort request windows (4 a minute, 60 in 10
    /// minutes), or for the same request another pipeline of the run was waiting to issue.
    pub rate_slot_ms: u64,
    /// Waiting for a free slot among the 5 requests in flight.
    pub in_flight_ms: u64,
    /// Backing off after HTTP 429 answers.
    pub rate_limited_ms: u64,
}

impl LimitWaits {
    /// `None` when nothing was waited (the report leaves the field out).
    pub fn of(t: &crate::quota::waits::WaitTotals) -> Option<Self> {
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let w = LimitWaits {
            total_ms: ms(t.total()),
            rate_slot_ms: ms(t.rate_slot),
            in_flight_ms: ms(t.in_flight),
            rate_limited_ms: ms(t.rate_limited),
        };
        (w.total_ms > 0).then_some(w)
    }
}

/// What a predicted finish rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PredictionBasis {
    /// Downloads timed at their own last export.
    pub known: u32,
    pub downloads: u32,
}

/// Monthly usage as read before the run: the figure the budget used and both behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageSnapshot {
    pub limit: u32,
    pub used: u32,
    pub remaining: u32,
    pub reserve: u32,
    /// `endpoint`, `ledger` (it counted more) or `ledger_only` (the endpoint is unavailable).
    #[serde(default)]
    pub source: String,
    /// What the usage endpoint reported (absent when unavailable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_used: Option<u32>,
    /// What the quota ledger counts this month (spent + outcome unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_used: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

impl UsageSnapshot {
    pub fn of(u: &super::usage::MonthlyUsage, reserve: u32) -> Self {
        UsageSnapshot {
            limit: u.effective.limit,
            used: u.effective.usage,
            remaining: u.effective.remaining(),
            reserve,
            source: serde_json::to_value(u.source)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            endpoint_used: u.endpoint.as_ref().map(|e| e.usage),
            ledger_used: u.ledger.map(|l| l.total()),
            warning: u.warning.clone(),
        }
    }
}

/// Even pacing's allowance as a run saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaceSnapshot {
    /// The month's budget after the reserve.
    pub usable: u32,
    /// Downloads the month may have spent by the end of this hour.
    pub allowed_by_now: u32,
    /// What this run could spend (allowed by now minus spent).
    pub share: u32,
    /// When usage resets (the 1st, 00:00 UTC).
    pub resets_at: DateTime<Utc>,
}

impl PaceSnapshot {
    pub fn of(a: &crate::quota::Allowance) -> Self {
        PaceSnapshot {
            usable: a.usable,
            allowed_by_now: a.by_now,
            share: a.share,
            resets_at: a.month.end,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineReport {
    pub file: String,
    pub name: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_before: Option<UsageSnapshot>,
    pub quota_spent: u32,
    /// Requests whose outcome is unknown (sent, no answer): maybe spent, maybe not.
    #[serde(default)]
    pub quota_possibly_spent: u32,
    pub requests: Vec<SpentRequest>,
    pub cohorts: Vec<CohortReport>,
    /// Earliest time the rate limits let the planned requests all start (plan only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub earliest_finish: Option<DateTime<Utc>>,
    /// When the planned downloads should all be written (plan only): the windows, the
    /// cohorts at a time, and each cohort's time at its last export (`runner::finish`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted_finish: Option<DateTime<Utc>>,
    /// How many of the planned downloads the prediction knows from their last export.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted_from: Option<PredictionBasis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// The sync-history file this run added (see `runner::history`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Reverse pipelines: what was planned / applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverse: Option<serde_json::Value>,
    /// Reverse pipelines: the ids this run's calls changed (metrics and history read it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse_totals: Option<ReverseTotals>,
    /// Time the whole pipeline spent waiting for Amplitude's limits (its cohorts' and its
    /// own calls'; concurrent cohorts' waits add up). Absent when nothing waited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_waits: Option<LimitWaits>,
    /// When the pipeline's execution started and ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Even pacing (`quota.pace = "even"`): the month's allowance at plan time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pace: Option<PaceSnapshot>,
    /// `plan --month`: the month's forecast.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<super::forecast::Forecast>,
    pub exit_code: u8,
}

/// What a reverse pipeline's calls did to its target cohort in this run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReverseTotals {
    /// The target cohort (absent while it is still to be created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cohort_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cohort_name: Option<String>,
    /// As the reverse report's `outcome` (`applied`, `in_sync`, `refused`, `failed`, ...).
    pub outcome: String,
    /// Ids sent by calls this run applied: ADD, and UPLOAD (create / replace).
    pub added: u64,
    /// Ids sent by REMOVE calls this run applied.
    pub removed: u64,
    /// Ids Amplitude skipped or reported invalid.
    pub skipped: u64,
}

impl PipelineReport {
    /// When the quota figures are known: (limit, used after this run, left after it).
    /// Possibly spent requests count as used, so what is left is never overstated.
    pub fn quota_after(&self) -> Option<(u32, u32, u32)> {
        let u = self.usage_before.as_ref()?;
        let used = u
            .used
            .saturating_add(self.quota_spent)
            .saturating_add(self.quota_possibly_spent);
        Some((u.limit, used, u.limit.saturating_sub(used)))
    }
}

impl PipelineReport {
    pub fn new(file: &str, name: &str, kind: &str) -> Self {
        PipelineReport {
            file: file.to_string(),
            name: name.to_string(),
            kind: kind.to_string(),
            usage_before: None,
            quota_spent: 0,
            quota_possibly_spent: 0,
            requests: Vec::new(),
            cohorts: Vec::new(),
            earliest_finish: None,
            predicted_finish: None,
            predicted_from: None,
            manifest: None,
            history: None,
            error: None,
            reverse: None,
            reverse_totals: None,
            limit_waits: None,
            started_at: None,
            finished_at: None,
            pace: None,
            forecast: None,
            exit_code: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub tool_version: String,
    pub run_id: String,
    pub mode: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub pipelines: Vec<PipelineReport>,
    /// HTTP 429 answers Amplitude gave this run (waited out and retried, or not).
    #[serde(default)]
    pub rate_limited_responses: u64,
    pub exit_code: u8,
}

/// The run's exit code from its pipelines': any failure → 1, else any quota stop → 3, else 0.
/// Config errors (2) are decided before anything runs.
pub fn combine_exit_codes(codes: impl IntoIterator<Item = u8>) -> u8 {
    let codes: Vec<u8> = codes.into_iter().collect();
    if codes.contains(&crate::exit::USAGE) {
        crate::exit::USAGE
    } else if codes.contains(&crate::exit::FAILED) {
        crate::exit::FAILED
    } else if codes.contains(&crate::exit::QUOTA) {
        crate::exit::QUOTA
    } else {
        crate::exit::OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_outranks_quota_outranks_ok() {
        assert_eq!(combine_exit_codes([0, 3, 0]), 3);
        assert_eq!(combine_exit_codes([3, 1, 0]), 1);
        assert_eq!(combine_exit_codes([]), 0);
    }

    #[test]
    fn as_str_is_the_serialized_name() {
        for o in [
            Outcome::Exported,
            Outcome::Planned,
            Outcome::SkippedUnchanged,
            Outcome::SkippedArchived,
            Outcome::FreshEnough,
            Outcome::Paced,
            Outcome::SkippedLeased,
            Outcome::DeferredQuota,
            Outcome::Interrupted,
            Outcome::Failed,
        ] {
            let json = serde_json::to_value(o).unwrap_or_default();
            assert_eq!(json.as_str(), Some(o.as_str()));
        }
    }

    #[test]
    fn outcomes_serialize_in_snake_case() {
        let r = CohortReport::new("c", "n", Outcome::DeferredQuota);
        let json = serde_json::to_string(&r).unwrap_or_default();
        assert!(json.contains("\"outcome\":\"deferred_quota\""), "{json}");
    }
}

//! The cohort's current membership, which the source is diffed against: the membership
//! the pipeline's last apply left (a derived baseline, see [`super::derived`]) when nothing
//! else changed the cohort since (free), else the newest export snapshot when it is not older than the cohort's `lastComputed` (free), else a fresh
//! download (request → poll → `/file`), which spends one of the month's downloads — after
//! checking there is one left, and recorded in the state like the export's requests, so a
//! crashed run's request is reused instead of spending again. `plan` and `--dry-run` never
//! spend: they use an earlier request's file, a stale snapshot (approximate counts), or
//! report the counts as unknown.

use std::path::Path;

use serde::Serialize;

use super::derived;
use super::failure::Failure;
use super::idset::IdCollector;
use super::snapshot::{self, Snapshot, SnapshotInfo};
use super::source::{ColumnSpec, ReadStats, collect_csv_with, read_ids};
use crate::amplitude::types::{Cohort, IdKind};
use crate::amplitude::{AmplitudeClient, ApiError};
use crate::config::{Baseline as BaselineSetting, Reconcile, SourceFormat};
use crate::export::GzipHint;
use crate::runner::context::RunMode;
use crate::runner::poll::{PollError, PollSettings, wait_for_job};
use crate::runner::report::{RequestReason, SpentRequest};
use crate::runner::usage::read_usage;
use crate::state::{Ledger, LedgerEntry, LedgerOutcome};
use crate::state::{RequestRecord, StateStore};

/// `/file` attempts for one request (a failed body is asked for again, never re-requested).
const FILE_ATTEMPTS: u32 = 3;

/// Column of Amplitude's download (and of export snapshots) holding ids of `kind`.
pub fn download_column(kind: IdKind) -> &'static str {
    match kind {
        IdKind::UserId => "user_id",
        IdKind::AmplitudeId => "amplitude_id",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BaselineUsed {
    /// The membership the last apply of this pipeline left (see [`super::derived`]).
    Derived,
    Snapshot,
    Download,
    /// No membership read (a plan that would have to spend quota, or `replace` without a
    /// fresh snapshot, or a cohort still to create).
    None,
}

/// Which baseline was used and why.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineReport {
    pub used: BaselineUsed,
    pub reason: String,
    /// False when the membership may be out of date (a stale snapshot used by a plan).
    pub exact: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cohort_last_computed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub request_reused: bool,
    /// Downloads spent (a plan: would spend).
    pub quota_spent: u32,
    pub rows: u64,
    /// Members without an id of the pipeline's kind (e.g. no user_id): cannot be matched.
    pub members_without_id: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub file_attempts: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl BaselineReport {
    pub fn none(reason: impl Into<String>) -> Self {
        BaselineReport {
            used: BaselineUsed::None,
            reason: reason.into(),
            exact: false,
            cohort_last_computed: None,
            snapshot: None,
            request_id: None,
            request_reused: false,
            quota_spent: 0,
            rows: 0,
            members_without_id: 0,
            file_attempts: 0,
        }
    }
}

/// The membership (when read), the report, and the request spent (or, in a plan, that
/// would be spent).
#[derive(Debug)]
pub struct Baseline {
    pub ids: Option<IdCollector>,
    pub report: BaselineReport,
    pub spent: Option<SpentRequest>,
}

/// Everything choosing and reading a baseline needs.
pub struct BaselineInput<'a> {
    pub client: &'a AmplitudeClient,
    pub state: &'a StateStore,
    pub cohort: &'a Cohort,
    pub reconcile: &'a Reconcile,
    pub poll: PollSettings,
    pub kind: IdKind,
    pub mode: RunMode,
    pub base_dir: &'a Path,
    /// How long a request's `/file` stays usable (7 days, scaled in tests).
    pub request_validity: chrono::Duration,
    /// Only a free baseline is wanted (`replace`, which uploads the whole list anyway).
    pub free_only: bool,
    /// The app's monthly quota ledger (the budget reads it, a request is added to it).
    pub ledger: &'a Ledger,
    pub pipeline: &'a str,
    pub run_id: &'a str,
    /// Whether the last apply's derived baseline still is the membership.
    pub derived: &'a derived::Check,
}

pub async fn acquire(input: &BaselineInput<'_>) -> Result<Baseline, Failure> {
    let cohort = input.cohort;
    let lc = cohort
        .last_computed
        .as_ref()
        .and_then(|t| t.epoch_seconds());
    let snap = match &input.reconcile.snapshots {
        Some(url) => snapshot::newest(
            url,
            &input.reconcile.snapshot_layout,
            &cohort.id,
            input.base_dir,
        )
        .await
        .map_err(|e| {
            Failure::failed(format!(
                "looking for snapshots of cohort {}: {e}",
                cohort.id
            ))
        })?,
        None => None,
    };
    let derived_note = match (input.reconcile.baseline, input.derived) {
        (BaselineSetting::Auto, derived::Check::Usable(head)) => {
            match derived::load(input.state, head).await {
                Ok(ids) => return Ok(from_derived(head, ids, lc)),
                Err(e) => Some(format!("the derived baseline cannot be used ({e})")),
            }
        }
        (BaselineSetting::Auto, derived::Check::Stale(why)) => {
            Some(format!("no free derived baseline: {why}"))
        }
        _ => None,
    };
    let fresh = snap.as_ref().filter(|s| s.fresh_for(lc)).cloned();
    let why_not_snapshot = match (&input.reconcile.snapshots, &snap) {
        (None, _) => "no reconcile.snapshots location is configured".to_string(),
        (Some(url), None) => format!("no snapshot of cohort {} found under {url}", cohort.id),
        (Some(_), Some(s)) => format!(
            "the newest snapshot {} has lastComputed {}, older than the cohort's {}",
            s.file.label(),
            show(s.last_computed),
            show(lc)
        ),
    };
    let why_not_snapshot = match derived_note {
        Some(note) => format!("{note}; {why_not_snapshot}"),
        None => why_not_snapshot,
    };
    let mut out = match (input.reconcile.baseline, fresh) {
        (BaselineSetting::Auto, Some(s)) => {
            let reason = format!(
                "snapshot {} has lastComputed {}, not older than the cohort's {}: no quota spent",
                s.file.label(),
                show(s.last_computed),
                show(lc)
            );
            load_snapshot(input, &s, reason, true).await?
        }
        (BaselineSetting::Snapshot, _) => match &snap {
            Some(s) => {
                let exact = s.fresh_for(lc);
                let reason = if exact {
                    format!(
                        "baseline = \"snapshot\": {} (lastComputed {})",
                        s.file.label(),
                        show(s.last_computed)
                    )
                } else {
                    format!(
                        "baseline = \"snapshot\": {}; it may be out of date (lastComputed {}, the cohort's is {})",
                        s.file.label(),
                        show(s.last_computed),
                        show(lc)
                    )
                };
                load_snapshot(input, s, reason, exact).await?
            }
            None => {
                return Err(Failure::failed(format!(
                    "baseline = \"snapshot\" but {why_not_snapshot}; export the cohort first or use baseline = \"auto\""
                )));
            }
        },
        (_, _) if input.free_only => Baseline {
            ids: None,
            report: BaselineReport::none(format!(
                "replace uploads the whole list, and {why_not_snapshot}: no baseline read (removals estimated from the cohort's size)"
            )),
            spent: None,
        },
        (BaselineSetting::Auto, None) => {
            download(
                input,
                snap.as_ref(),
                why_not_snapshot,
                RequestReason::ReverseBaseline,
            )
            .await?
        }
        (BaselineSetting::Download, _) => {
            download(
                input,
                snap.as_ref(),
                "baseline = \"download\"".to_string(),
                RequestReason::ReverseBaseline,
            )
            .await?
        }
    };
    out.report.cohort_last_computed = lc;
    Ok(out)
}

/// The derived baseline as this run's baseline: exact, free.
fn from_derived(head: &derived::DerivedHead, ids: IdCollector, lc: Option<i64>) -> Baseline {
    let mut report = BaselineReport::none(format!(
        "the membership run {} left (recorded with lastComputed {} and {} members, both unchanged since): no quota spent",
        head.written_by, head.last_computed, head.size
    ));
    report.used = BaselineUsed::Derived;
    report.exact = true;
    report.cohort_last_computed = lc;
    report.rows = head.ids + head.members_without_id;
    report.members_without_id = head.members_without_id;
    Baseline {
        ids: Some(ids),
        report,
        spent: None,
    }
}

fn show(t: Option<i64>) -> String {
    t.map_or_else(|| "unknown".to_string(), |t| t.to_string())
}

async fn load_snapshot(
    input: &BaselineInput<'_>,
    s: &Snapshot,
    reason: String,
    exact: bool,
) -> Result<Baseline, Failure> {
    let spec = ColumnSpec::new(download_column(input.kind), input.kind);
    let (ids, stats) = read_ids(&s.file, SourceFormat::Parquet, &spec)
        .await
        .map_err(|e| Failure::failed(format!("reading snapshot: {e}")))?;
    let mut report = BaselineReport::none(reason);
    report.used = BaselineUsed::Snapshot;
    report.exact = exact;
    report.snapshot = Some(s.info());
    fill(&mut report, stats);
    Ok(Baseline {
        ids: Some(ids),
        report,
        spent: None,
    })
}

fn fill(report: &mut BaselineReport, stats: ReadStats) {
    report.rows = stats.rows;
    report.members_without_id = stats.blank;
}

/// `verify = true`: the cohort's membership after the last call, by one download (checked
/// against the monthly budget like a baseline's, and recorded so that a crashed run's
/// request is reused).
pub async fn verify_download(input: &BaselineInput<'_>) -> Result<Baseline, Failure> {
    download(
        input,
        None,
        "verify after apply".to_string(),
        RequestReason::ReverseVerify,
    )
    .await
}

async fn download(
    input: &BaselineInput<'_>,
    stale: Option<&Snapshot>,
    why: String,
    reason: RequestReason,
) -> Result<Baseline, Failure> {
    let cohort = input.cohort;
    let now = crate::clock::now();
    let mut record = input
        .state
        .cohort(&cohort.id)
        .await
        .map_err(|e| Failure::failed(e.to_string()))?;
    let reusable = record.request.clone().filter(|r| {
        r.reusable_for(
            cohort.last_computed.as_ref(),
            false,
            &[],
            now,
            input.request_validity,
        )
    });

    if !input.mode.applies() {
        if let Some(r) = reusable {
            let reason = format!(
                "{why}; used the file of earlier request {} (no quota spent)",
                r.request_id
            );
            return fetch(input, &r.request_id, true, reason, None).await;
        }
        let would = SpentRequest {
            cohort_id: cohort.id.clone(),
            request_id: None,
            reason,
            at: now,
            outcome_unknown: false,
        };
        if let Some(s) = stale {
            let reason = format!(
                "{why}; a run downloads the cohort (1 of the monthly quota) — this {} used the stale snapshot instead, so the counts are approximate",
                input.mode.as_str()
            );
            let mut b = load_snapshot(input, s, reason, false).await?;
            b.report.quota_spent = 1;
            b.spent = Some(would);
            return Ok(b);
        }
        let mut report = BaselineReport::none(format!(
            "{why}; a run downloads the cohort (1 of the monthly quota); this {} spends none, so the add/remove counts are unknown",
            input.mode.as_str()
        ));
        report.quota_spent = 1;
        return Ok(Baseline {
            ids: None,
            report,
            spent: Some(would),
        });
    }

    if let Some(r) = reusable {
        let reason = format!(
            "{why}; reused earlier request {} (no quota spent)",
            r.request_id
        );
        let b = fetch(input, &r.request_id, true, reason, None).await?;
        mark_completed(input, &mut record).await;
        return Ok(b);
    }
    let usage = read_usage(input.client, Some(input.ledger), crate::clock::now())
        .await
        .effective;
    if usage.remaining() == 0 {
        return Err(Failure::quota(format!(
            "the baseline of cohort {} needs a download ({why}), but this month's {} downloads are all used (resets {}); export a snapshot the reverse pipeline can use, or wait",
            cohort.id,
            usage.limit,
            usage.resets_at.as_deref().unwrap_or("on the 1st, UTC")
        )));
    }
    let req = input
        .client
        .request_cohort(&cohort.id, false, &[])
        .await
        .map_err(|e| match e {
            ApiError::QuotaExhausted { .. } => Failure::quota(format!(
                "requesting cohort {} for the baseline: {e}",
                cohort.id
            )),
            other => Failure::failed(format!(
                "requesting cohort {} for the baseline: {other}",
                cohort.id
            )),
        })?;
    let entry = LedgerEntry {
        at: crate::clock::now(),
        cohort_id: cohort.id.clone(),
        request_id: Some(req.request_id.clone()),
        outcome: LedgerOutcome::Spent,
        pipeline: input.pipeline.to_string(),
        run_id: input.run_id.to_string(),
    };
    if let Err(e) = input.ledger.record(&entry).await {
        tracing::warn!(
            "recording request {} in the quota ledger: {e}",
            req.request_id
        );
    }
    record.cohort_name = cohort.name.clone();
    record.request = Some(RequestRecord {
        request_id: req.request_id.clone(),
        issued_at: crate::clock::now(),
        last_computed: cohort.last_computed.clone(),
        props: false,
        prop_keys: Vec::new(),
        completed: false,
    });
    let spent = SpentRequest {
        cohort_id: cohort.id.clone(),
        request_id: Some(req.request_id.clone()),
        reason,
        at: crate::clock::now(),
        outcome_unknown: false,
    };
    if let Err(e) = input.state.save_cohort(&record).await {
        // The request is spent either way: report it, and say the state is behind.
        tracing::warn!("cannot record request {} in the state: {e}", req.request_id);
    }
    let reason = format!("{why}; downloaded the cohort (1 of the monthly quota spent)");
    let b = fetch(input, &req.request_id, false, reason, Some(spent)).await?;
    mark_completed(input, &mut record).await;
    Ok(b)
}

async fn mark_completed(input: &BaselineInput<'_>, record: &mut crate::state::CohortRecord) {
    if let Some(r) = &mut record.request {
        r.completed = true;
    }
    if let Err(e) = input.state.save_cohort(record).await {
        tracing::warn!(
            "cannot update the state of cohort {}: {e}",
            record.cohort_id
        );
    }
}

/// Polls the job, downloads `/file` (asked again on a failed body) and parses the ids.
async fn fetch(
    input: &BaselineInput<'_>,
    request_id: &str,
    reused: bool,
    reason: String,
    spent: Option<SpentRequest>,
) -> Result<Baseline, Failure> {
    tracing::Span::current().record("request_id", request_id);
    let with_spent = |msg: String| {
        if spent.is_some() {
            format!("{msg} (request {request_id} spent quota; the next run reuses it)")
        } else {
            msg
        }
    };
    wait_for_job(input.client, request_id, &input.poll)
        .await
        .map_err(|e| match e {
            PollError::TimedOut { .. } | PollError::Stopped { .. } => {
                Failure::failed(e.to_string())
            }
            PollError::Api { .. } => Failure::failed(with_spent(e.to_string())),
        })?;
    let spec = ColumnSpec {
        column: download_column(input.kind).to_string(),
        kind: input.kind,
        first_of_repeated: true,
    };
    let label = format!("cohort {} (request {request_id})", input.cohort.id);
    let mut last = String::new();
    for attempt in 1..=FILE_ATTEMPTS {
        if attempt > 1 {
            tracing::warn!("baseline download of {label}: {last}; asking /file again");
            tokio::time::sleep(std::time::Duration::from_millis(300 * u64::from(attempt))).await;
        }
        let dl = match input.client.download_file(request_id).await {
            Ok(d) => d,
            Err(e) if e.is_retryable() => {
                last = e.to_string();
                continue;
            }
            Err(e) => {
                return Err(Failure::failed(with_spent(format!(
                    "downloading {label}: {e}"
                ))));
            }
        };
        let gzip = GzipHint::from_content_encoding(dl.content_encoding.as_deref());
        let parsed = collect_csv_with(dl.body, gzip, &spec, &label).await;
        match parsed {
            Ok((ids, stats)) => {
                let mut report = BaselineReport::none(reason);
                report.used = BaselineUsed::Download;
                report.exact = true;
                report.request_id = Some(request_id.to_string());
                report.request_reused = reused;
                report.quota_spent = u32::from(spent.is_some());
                report.file_attempts = attempt;
                fill(&mut report, stats);
                return Ok(Baseline {
                    ids: Some(ids),
                    report,
                    spent,
                });
            }
            // A failed or cut body: ask /file again.
            Err(e) if e.is_retryable() => last = e.to_string(),
            Err(e) => {
                return Err(Failure::failed(with_spent(format!(
                    "reading the baseline: {e}"
                ))));
            }
        }
    }
    Err(Failure::failed(with_spent(format!(
        "downloading {label} failed {FILE_ATTEMPTS} times: {last}"
    ))))
}

//! Executes one export pipeline: lists and selects cohorts, plans within the month's budget,
//! then downloads each planned cohort (lease → request or reuse → poll → `/file` → Parquet)
//! with bounded parallelism, publishes a per-run manifest, and reports every request spent.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use tracing::Instrument;

use super::cohort_job::{CohortJob, CohortResult, PaceGuard};
use super::context::RunContext;
use super::leases::lease_ttl;
use super::plan::{Action, ExportPlan, PlanOptions, PlannedCohort, plan_export};
use super::poll::PollSettings;
use super::progress::Event;
use super::report::{
    CohortReport, LimitWaits, Outcome, PaceSnapshot, PipelineReport, PredictionBasis,
    RequestReason, SpentRequest, UsageSnapshot,
};
use super::run_history::{forecast_month, record_run};
use super::select::{Selection, select};
use super::staging::Staging;
use super::usage::read_usage;
use crate::amplitude::ClientOptions;
use crate::amplitude::ids::{IdRole, check_id};
use crate::exit;
use crate::export::ConvertOptions;
use crate::quota::waits::{WaitMeter, metered};
use crate::state::{Ledger, REQUEST_VALIDITY_DAYS, StateStore};
use crate::storage::{self, Location};

/// Everything one export pipeline needs, already checked by the config loader.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    /// The pipeline file, as given on the command line (for the report).
    pub file: String,
    /// Namespaces the state of this pipeline.
    pub name: String,
    pub connection: ClientOptions,
    /// Keys the per-app rate limits.
    pub app_key: String,
    /// The Amplitude project id, when configured (names the quota ledger).
    pub app_id: Option<u64>,
    pub selection: Selection,
    pub plan: PlanOptions,
    pub poll: PollSettings,
    pub max_parallel: usize,
    pub output_url: String,
    pub layout: String,
    /// `output.changes_layout` when `output.changes = true` (see [`super::changes`]).
    pub changes_layout: Option<String>,
    pub state_url: String,
    /// Parser and Parquet settings; `source_name`, gzip hint and metadata are set per cohort.
    pub convert: ConvertOptions,
}

/// One published file in the run manifest.
#[derive(Debug, Clone, Serialize)]
pub struct ManifestFile {
    pub cohort_id: String,
    pub cohort_name: String,
    pub key: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
    pub request_id: String,
    pub last_computed: Option<String>,
    /// The membership change file written beside it, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<super::changes::ChangeFile>,
}

#[derive(Debug, Serialize)]
struct Manifest<'a> {
    run_id: &'a str,
    pipeline: &'a str,
    tool_version: &'a str,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    complete: bool,
    files: &'a [ManifestFile],
}

/// Runs (or plans) one export pipeline and reports what happened.
pub async fn execute(settings: &ExportSettings, ctx: &RunContext) -> PipelineReport {
    let mut report = PipelineReport::new(&settings.file, &settings.name, "export");
    report.started_at = Some(Utc::now());
    // The pipeline's own calls (list, usage) wait here; each cohort has its own meter.
    let meter = WaitMeter::new(None);
    if let Err((code, message)) =
        metered(Arc::clone(&meter), execute_into(settings, ctx, &mut report)).await
    {
        tracing::error!("{message}");
        report.error = Some(message);
        report.exit_code = code;
    }
    report.limit_waits = pipeline_waits(&meter.totals(), &report.cohorts);
    report.finished_at = Some(Utc::now());
    report
}

/// A pipeline's waits for Amplitude's limits: its own calls' and its cohorts'.
pub(crate) fn pipeline_waits(
    own: &crate::quota::waits::WaitTotals,
    cohorts: &[CohortReport],
) -> Option<LimitWaits> {
    let mut sum = LimitWaits::of(own).unwrap_or_default();
    for w in cohorts.iter().filter_map(|c| c.limit_waits.as_ref()) {
        sum.total_ms += w.total_ms;
        sum.rate_slot_ms += w.rate_slot_ms;
        sum.in_flight_ms += w.in_flight_ms;
        sum.rate_limited_ms += w.rate_limited_ms;
    }
    (sum.total_ms > 0).then_some(sum)
}

async fn execute_into(
    settings: &ExportSettings,
    ctx: &RunContext,
    report: &mut PipelineReport,
) -> Result<(), (u8, String)> {
    let failed = |e: &dyn std::fmt::Display| (exit::FAILED, e.to_string());
    let client = ctx
        .client(settings.connection.clone(), &settings.app_key)
        .map_err(|e| failed(&e))?;
    let cohorts = client
        .list_cohorts(false)
        .await
        .map_err(|e| (exit::FAILED, format!("listing cohorts: {e}")))?
        .cohorts;
    let selected = select(&cohorts, &settings.selection)
        .map_err(|e| (exit::USAGE, format!("{}: {e}", settings.file)))?;
    // An id Amplitude's list gives that is not an id goes into no URL and no state key.
    let (selected, bad_ids): (Vec<_>, Vec<_>) = selected
        .into_iter()
        .partition(|s| check_id(IdRole::Cohort, &s.cohort.id).is_ok());
    for bad in &bad_ids {
        let c = &bad.cohort;
        let why = check_id(IdRole::Cohort, &c.id).err().unwrap_or_default();
        tracing::error!("the cohort list names a cohort with an unusable id: {why}");
        let mut r = CohortReport::new(&c.id, &c.name, Outcome::Failed);
        r.detail = Some(format!(
            "Amplitude's cohort list gave an unusable id; nothing was requested: {why}"
        ));
        report.cohorts.push(r);
    }
    let state_location = storage::open(&settings.state_url, &ctx.base_dir)
        .map_err(|e| (exit::USAGE, format!("state url: {e}")))?;
    let ledger = Ledger::new(
        state_location.clone(),
        settings.app_id,
        settings.connection.credentials.api_key(),
    );
    let state = StateStore::new(state_location, &settings.name);
    let now = crate::clock::now();
    let monthly = read_usage(&client, Some(&ledger), now).await;
    report.usage_before = Some(UsageSnapshot::of(&monthly, settings.plan.reserve));
    let beyond_ledger = monthly
        .effective
        .usage
        .saturating_sub(monthly.ledger.map_or(0, |l| l.total()));
    let usage = monthly.effective;
    let limits = ctx.limits.for_app(&settings.app_key, &ctx.limit_settings());
    let mut plan_opts = settings.plan.clone();
    plan_opts.force = plan_opts.force || ctx.force;
    let mut plan = plan_export(selected, &state, usage, &limits, &plan_opts, now)
        .await
        .map_err(|e| failed(&e))?;
    plan.prediction = Some(super::finish::predict(
        &plan,
        &limits,
        settings.max_parallel.max(1),
    ));
    log_plan(&plan);
    report.pace = plan.pace.as_ref().map(PaceSnapshot::of);
    if ctx.forecast {
        report.forecast = Some(forecast_month(settings, &state, &plan, now).await);
    }
    if ctx.mode.applies() {
        record_run(&state, ctx, &plan, now).await;
    }

    if !ctx.mode.applies() {
        fill_planned(report, &plan, ctx.started_at);
        if report.cohorts.iter().any(|c| c.outcome == Outcome::Failed) {
            report.exit_code = exit::FAILED;
        }
        return Ok(());
    }

    let output = storage::open(&settings.output_url, &ctx.base_dir)
        .map_err(|e| (exit::USAGE, format!("output url: {e}")))?;
    probe_output(&output, ctx, settings)
        .await
        .map_err(|e| failed(&e))?;
    remove_orphaned_staging(&output, &state, settings, ctx).await;
    let job = Arc::new(CohortJob {
        client,
        state,
        output,
        settings: settings.clone(),
        run_id: ctx.run_id.clone(),
        run_started: ctx.started_at,
        holder: ctx.holder.clone(),
        snapshot_date: ctx.started_at.format("%Y-%m-%d").to_string(),
        lease_ttl: lease_ttl(ctx.time_scale),
        request_validity: plan_opts.request_validity,
        skip_unchanged: plan_opts.skip_unchanged && !plan_opts.force,
        force: plan_opts.force,
        spare_budget: Arc::new(AtomicU32::new(
            plan.budget
                .available
                .min(plan.pace.map_or(u32::MAX, |p| p.share))
                .saturating_sub(plan.budget.spend),
        )),
        shared_requests: Arc::clone(&ctx.shared_requests),
        stop: ctx.stop.clone(),
        ledger,
        time_scale: ctx.time_scale,
        pace: plan.pace.map(|_| PaceGuard {
            limit: plan.usage.limit,
            reserve: plan_opts.reserve,
            beyond_ledger,
        }),
        progress: ctx.progress.clone(),
    });

    let mut order = Vec::new();
    let mut downloads = Vec::new();
    for item in &plan.items {
        order.push(item.selected.cohort.id.clone());
        match not_downloaded(item) {
            Some(r) => report.cohorts.push(r),
            None => downloads.push(item.clone()),
        }
    }

    ctx.progress.emit(|| Event::Planned {
        pipeline: settings.name.as_str().into(),
        downloads: downloads.len(),
        quota: plan.budget.spend,
        skipped: report.cohorts.len(),
    });
    let parallel = settings.max_parallel.max(1);
    let results: Vec<CohortResult> = futures::stream::iter(downloads.into_iter().map(|item| {
        let job = Arc::clone(&job);
        // Every event of the cohort's work carries its id, and its request id once known.
        let span = tracing::info_span!(
            "cohort",
            cohort_id = %item.selected.cohort.id,
            request_id = tracing::field::Empty
        );
        async move { job.run(item).await }.instrument(span)
    }))
    .buffer_unordered(parallel)
    .collect()
    .await;

    let mut files = Vec::new();
    for result in results {
        report.requests.extend(result.spent);
        files.extend(result.file);
        report.cohorts.push(result.report);
    }
    // Report in the pipeline's plan order, whatever order the downloads finished in.
    let rank: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    report.cohorts.sort_by_key(|c| {
        rank.get(c.cohort_id.as_str())
            .copied()
            .unwrap_or(usize::MAX)
    });
    report.requests.sort_by_key(|r| r.at);
    report.quota_spent = report
        .requests
        .iter()
        .filter(|r| !r.outcome_unknown)
        .count() as u32;
    report.quota_possibly_spent =
        report.requests.iter().filter(|r| r.outcome_unknown).count() as u32;
    report.exit_code = exit_code(&report.cohorts);
    if ctx.stopping() {
        report.error = Some(format!(
            "stopped by a signal: {} of {} cohorts not done",
            report
                .cohorts
                .iter()
                .filter(|c| c.outcome == Outcome::Interrupted)
                .count(),
            report.cohorts.len()
        ));
    }
    files.sort_by(|a, b| a.cohort_id.cmp(&b.cohort_id));
    crate::crash::point("export.manifest.before");
    match publish_manifest(
        &job.output,
        ctx,
        settings,
        &files,
        report.exit_code == exit::OK && !ctx.stopping(),
    )
    .await
    {
        Ok(described) => report.manifest = Some(described),
        Err(e) => {
            report.exit_code = exit::FAILED;
            return Err((exit::FAILED, format!("writing the run manifest: {e}")));
        }
    }
    Ok(())
}

/// The pipeline's exit code from its cohorts: any cohort not done for a reason other than
/// the monthly quota → 1; else any deferred by quota → 3; else 0.
fn exit_code(cohorts: &[CohortReport]) -> u8 {
    if cohorts
        .iter()
        .any(|c| !c.outcome.is_done() && c.outcome != Outcome::DeferredQuota)
    {
        exit::FAILED
    } else if cohorts.iter().any(|c| c.outcome == Outcome::DeferredQuota) {
        exit::QUOTA
    } else {
        exit::OK
    }
}

/// Removes the staging folders that killed runs of this pipeline left in the output.
async fn remove_orphaned_staging(
    output: &Location,
    state: &StateStore,
    settings: &ExportSettings,
    ctx: &RunContext,
) {
    if !output.is_local {
        return;
    }
    let live = match state.live_lease_holders().await {
        Ok(live) => live,
        Err(e) => {
            tracing::warn!("not cleaning staging files: reading leases: {e}");
            return;
        }
    };
    let staging = Staging::new(output, &settings.name, &ctx.run_id);
    match staging.remove_orphans(&live) {
        Ok(removed) if !removed.is_empty() => tracing::info!(
            "removed {} staging folder(s) left by killed runs: {}",
            removed.len(),
            removed.join(", ")
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("cleaning staging files: {e}"),
    }
}

fn paced_report(item: &PlannedCohort, detail: &str, expected_at: DateTime<Utc>) -> CohortReport {
    let mut r = cohort_report(item, Outcome::Paced).with_detail(detail);
    r.expected_at = Some(expected_at);
    r
}

fn log_plan(plan: &ExportPlan) {
    tracing::info!(
        cohorts = plan.items.len(),
        spend = plan.spend(),
        deferred = plan.deferred(),
        paced = plan.paced(),
        used = plan.usage.usage,
        limit = plan.usage.limit,
        "plan"
    );
}

pub(crate) fn cohort_report(item: &PlannedCohort, outcome: Outcome) -> CohortReport {
    let mut r = CohortReport::new(
        &item.selected.cohort.id,
        &item.selected.cohort.name,
        outcome,
    );
    r.last_computed = item
        .selected
        .cohort
        .last_computed
        .as_ref()
        .map(|t| t.to_string());
    r
}

/// The report of a cohort the plan does not download (skipped, deferred by the budget,
/// paced to a later hour); `None` for a download.
fn not_downloaded(item: &PlannedCohort) -> Option<CohortReport> {
    match &item.action {
        Action::Skip { outcome, detail } => {
            Some(cohort_report(item, *outcome).with_detail(detail.clone()))
        }
        Action::Deferred { detail } => {
            Some(cohort_report(item, Outcome::DeferredQuota).with_detail(detail.clone()))
        }
        Action::Paced {
            detail,
            expected_at,
        } => Some(paced_report(item, detail, *expected_at)),
        Action::Download { .. } => None,
    }
}

/// Plan / dry run: what would happen, and the requests that would be spent.
fn fill_planned(report: &mut PipelineReport, plan: &ExportPlan, now: DateTime<Utc>) {
    for item in &plan.items {
        let Action::Download { reuse, reason } = &item.action else {
            report.cohorts.extend(not_downloaded(item));
            continue;
        };
        let mut r = cohort_report(item, Outcome::Planned);
        match (reuse, reason) {
            (Some(req), _) => {
                r.request_id = Some(req.request_id.clone());
                r.request_reused = true;
                r.detail = Some(format!(
                    "re-download the file of request {} (issued {}): no quota",
                    req.request_id, req.issued_at
                ));
            }
            (None, reason) => {
                let reason = reason.unwrap_or(RequestReason::FirstExport);
                r.quota_spent = 1;
                r.detail = Some(format!("new request ({})", reason.describe()));
                report.requests.push(SpentRequest {
                    cohort_id: item.selected.cohort.id.clone(),
                    request_id: None,
                    reason,
                    at: now,
                    outcome_unknown: false,
                });
            }
        }
        report.cohorts.push(r);
    }
    report.quota_spent = plan.spend();
    report.earliest_finish = Some(plan.earliest_finish(now));
    if let Some(p) = plan.prediction {
        report.predicted_finish =
            Some(now + chrono::Duration::from_std(p.time_to_finish).unwrap_or_default());
        report.predicted_from = Some(PredictionBasis {
            known: u32::try_from(p.known).unwrap_or(u32::MAX),
            downloads: u32::try_from(p.downloads).unwrap_or(u32::MAX),
        });
    }
}

/// `_runs/{run_id}/{pipeline}`: where a run's manifest of a pipeline goes.
fn run_dir(ctx: &RunContext, settings: &ExportSettings) -> String {
    format!(
        "_runs/{}/{}",
        super::layout::sanitize(&ctx.run_id),
        super::layout::sanitize(&settings.name)
    )
}

/// Proves that the output takes writes before anything is requested (an object written
/// and deleted in the run's `_runs/` folder): a file that cannot be written after
/// Amplitude answered would have spent a download for nothing.
async fn probe_output(
    output: &Location,
    ctx: &RunContext,
    settings: &ExportSettings,
) -> Result<(), String> {
    use object_store::ObjectStoreExt;
    let key = output.key(&format!("{}/.write-probe", run_dir(ctx, settings)));
    output
        .store
        .put(&key, bytes::Bytes::from_static(b"cohort-sync").into())
        .await
        .map_err(|e| {
            format!(
                "cannot write to the output {}: {e}; nothing was requested (check that it exists and that these credentials may write there)",
                output.display
            )
        })?;
    crate::crash::point("export.output.probed");
    if let Err(e) = output.store.delete(&key).await {
        tracing::warn!("removing {}: {e}", output.describe(&key));
    }
    Ok(())
}

/// Writes `_runs/{run_id}/{pipeline}/manifest.json` and, when every cohort succeeded,
/// `_SUCCESS` beside it (per pipeline: several pipelines may share one output).
async fn publish_manifest(
    output: &Location,
    ctx: &RunContext,
    settings: &ExportSettings,
    files: &[ManifestFile],
    complete: bool,
) -> Result<String, String> {
    use object_store::ObjectStoreExt;
    let manifest = Manifest {
        run_id: &ctx.run_id,
        pipeline: &settings.name,
        tool_version: env!("CARGO_PKG_VERSION"),
        started_at: ctx.started_at,
        finished_at: crate::clock::now(),
        complete,
        files,
    };
    let body = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
    let run_dir = run_dir(ctx, settings);
    let key = output.key(&format!("{run_dir}/manifest.json"));
    output
        .store
        .put(&key, body.into())
        .await
        .map_err(|e| e.to_string())?;
    crate::crash::point("export.manifest.written");
    if complete {
        let marker = output.key(&format!("{run_dir}/_SUCCESS"));
        output
            .store
            .put(&marker, bytes::Bytes::new().into())
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(output.describe(&key))
}

/// The request lifetime for this run's time scale.
pub fn request_validity(time_scale: f64) -> chrono::Duration {
    chrono::Duration::from_std(
        Duration::from_secs(REQUEST_VALIDITY_DAYS as u64 * 86_400).mul_f64(time_scale),
    )
    .unwrap_or(chrono::Duration::days(REQUEST_VALIDITY_DAYS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_validity_scales() {
        assert_eq!(request_validity(1.0), chrono::Duration::days(7));
        assert_eq!(request_validity(0.01).num_seconds(), 7 * 86_400 / 100);
    }

    #[test]
    fn only_done_cohorts_or_quota_deferrals_succeed() {
        let c = |o| CohortReport::new("c", "n", o);
        assert_eq!(
            exit_code(&[c(Outcome::Exported), c(Outcome::SkippedUnchanged)]),
            exit::OK
        );
        assert_eq!(
            exit_code(&[c(Outcome::Exported), c(Outcome::DeferredQuota)]),
            exit::QUOTA
        );
        for bad in [
            Outcome::SkippedLeased,
            Outcome::Interrupted,
            Outcome::Failed,
        ] {
            assert_eq!(
                exit_code(&[c(Outcome::DeferredQuota), c(bad)]),
                exit::FAILED
            );
        }
    }
}

//! Executes one export pipeline: lists and selects cohorts, plans within the month's budget,
//! then downloads each planned cohort (lease → request or reuse → poll → `/file` → Parquet)
//! with bounded parallelism, publishes a per-run manifest, and reports every request spent.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use tokio::time::Instant;

use super::context::RunContext;
use super::layout::{LayoutValues, render};
use super::plan::{Action, ExportPlan, PlanOptions, PlannedCohort, plan_export};
use super::poll::{PollSettings, wait_for_job};
use super::report::{
    CohortReport, Outcome, PipelineReport, RequestReason, SpentRequest, UsageSnapshot,
};
use super::select::{Selection, select};
use crate::amplitude::types::Timestamp;
use crate::amplitude::{AmplitudeClient, ApiError, ClientOptions};
use crate::exit;
use crate::export::{ConvertOptions, ConvertStats, GzipHint, convert_stream};
use crate::state::{LeaseOutcome, REQUEST_VALIDITY_DAYS, RequestRecord, StateStore};
use crate::storage::{self, Location};

/// `/file` attempts per cohort (the same request id each time: never a second request).
const MAX_FILE_ATTEMPTS: u32 = 5;

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
    pub selection: Selection,
    pub plan: PlanOptions,
    pub poll: PollSettings,
    pub max_parallel: usize,
    pub output_url: String,
    pub layout: String,
    pub state_url: String,
    /// Parser and Parquet settings; `source_name`, gzip hint and metadata are set per cohort.
    pub convert: ConvertOptions,
}

/// One published file in the run manifest.
#[derive(Debug, Clone, Serialize)]
struct ManifestFile {
    cohort_id: String,
    cohort_name: String,
    key: String,
    rows: u64,
    bytes: u64,
    sha256: String,
    request_id: String,
    last_computed: Option<String>,
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
    if let Err((code, message)) = execute_into(settings, ctx, &mut report).await {
        tracing::error!(pipeline = %settings.name, "{message}");
        report.error = Some(message);
        report.exit_code = code;
    }
    report
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
    let state_location = storage::open(&settings.state_url, &ctx.base_dir)
        .map_err(|e| (exit::USAGE, format!("state url: {e}")))?;
    let state = StateStore::new(state_location, &settings.name);
    let usage = client
        .usage()
        .await
        .map_err(|e| (exit::FAILED, format!("reading monthly usage: {e}")))?;
    report.usage_before = Some(UsageSnapshot {
        limit: usage.limit,
        used: usage.usage,
        remaining: usage.remaining(),
        reserve: settings.plan.reserve,
    });
    let limits = ctx.limits.for_app(&settings.app_key, &ctx.limit_settings());
    let mut plan_opts = settings.plan.clone();
    plan_opts.force = plan_opts.force || ctx.force;
    let plan = plan_export(selected, &state, usage, &limits, &plan_opts, Utc::now())
        .await
        .map_err(|e| failed(&e))?;
    log_plan(settings, &plan);

    if !ctx.mode.applies() {
        fill_planned(report, &plan, ctx.started_at);
        return Ok(());
    }

    let output = storage::open(&settings.output_url, &ctx.base_dir)
        .map_err(|e| (exit::USAGE, format!("output url: {e}")))?;
    let job = Arc::new(CohortJob {
        client,
        state,
        output,
        settings: settings.clone(),
        run_id: ctx.run_id.clone(),
        snapshot_date: ctx.started_at.format("%Y-%m-%d").to_string(),
        lease_ttl: lease_ttl(&settings.poll, ctx.time_scale),
        request_validity: plan_opts.request_validity,
        skip_unchanged: plan_opts.skip_unchanged && !plan_opts.force,
    });

    let mut order = Vec::new();
    let mut downloads = Vec::new();
    for (idx, item) in plan.items.iter().enumerate() {
        order.push(item.selected.cohort.id.clone());
        match &item.action {
            Action::Skip { outcome, detail } => {
                report
                    .cohorts
                    .push(cohort_report(item, *outcome).with_detail(detail.clone()));
            }
            Action::Deferred { detail } => {
                report
                    .cohorts
                    .push(cohort_report(item, Outcome::DeferredQuota).with_detail(detail.clone()));
            }
            Action::Download { .. } => downloads.push((idx, item.clone())),
        }
    }

    let parallel = settings.max_parallel.max(1);
    let results: Vec<(CohortReport, Option<SpentRequest>, Option<ManifestFile>)> =
        futures::stream::iter(downloads.into_iter().map(|(_, item)| {
            let job = Arc::clone(&job);
            async move { job.run(item).await }
        }))
        .buffer_unordered(parallel)
        .collect()
        .await;

    let mut files = Vec::new();
    for (cohort, spent, file) in results {
        if let Some(s) = spent {
            report.requests.push(s);
        }
        if let Some(f) = file {
            files.push(f);
        }
        report.cohorts.push(cohort);
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
    report.quota_spent = report.requests.len() as u32;

    let failed_any = report.cohorts.iter().any(|c| c.outcome == Outcome::Failed);
    let deferred_any = report
        .cohorts
        .iter()
        .any(|c| c.outcome == Outcome::DeferredQuota);
    report.exit_code = if failed_any {
        exit::FAILED
    } else if deferred_any {
        exit::QUOTA
    } else {
        exit::OK
    };
    files.sort_by(|a, b| a.cohort_id.cmp(&b.cohort_id));
    match publish_manifest(
        &job.output,
        ctx,
        settings,
        &files,
        report.exit_code == exit::OK,
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

/// How long a cohort's lease is held: the longest a download can legitimately take.
fn lease_ttl(poll: &PollSettings, time_scale: f64) -> chrono::Duration {
    let transfer = Duration::from_secs(30 * 60).mul_f64(time_scale.min(1.0));
    chrono::Duration::from_std(poll.max_wait + transfer).unwrap_or(chrono::Duration::hours(2))
}

fn log_plan(settings: &ExportSettings, plan: &ExportPlan) {
    tracing::info!(
        pipeline = %settings.name,
        cohorts = plan.items.len(),
        spend = plan.spend(),
        deferred = plan.deferred(),
        used = plan.usage.usage,
        limit = plan.usage.limit,
        "plan"
    );
}

fn cohort_report(item: &PlannedCohort, outcome: Outcome) -> CohortReport {
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

/// Plan / dry run: what would happen, and the requests that would be spent.
fn fill_planned(report: &mut PipelineReport, plan: &ExportPlan, now: DateTime<Utc>) {
    for item in &plan.items {
        match &item.action {
            Action::Skip { outcome, detail } => report
                .cohorts
                .push(cohort_report(item, *outcome).with_detail(detail.clone())),
            Action::Deferred { detail } => report
                .cohorts
                .push(cohort_report(item, Outcome::DeferredQuota).with_detail(detail.clone())),
            Action::Download { reuse, reason } => {
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
                        });
                    }
                }
                report.cohorts.push(r);
            }
        }
    }
    report.quota_spent = plan.spend();
    report.earliest_finish = Some(plan.earliest_finish(now));
}

/// What every cohort download of one pipeline run shares.
struct CohortJob {
    client: AmplitudeClient,
    state: StateStore,
    output: Location,
    settings: ExportSettings,
    run_id: String,
    snapshot_date: String,
    lease_ttl: chrono::Duration,
    request_validity: chrono::Duration,
    skip_unchanged: bool,
}

/// A cohort download failed; `spent` is set when quota was spent before it failed.
struct Failure {
    outcome: Outcome,
    message: String,
}

impl Failure {
    fn failed(message: impl Into<String>) -> Self {
        Failure {
            outcome: Outcome::Failed,
            message: message.into(),
        }
    }
}

impl CohortJob {
    /// Downloads one planned cohort; never panics, always reports.
    async fn run(
        &self,
        item: PlannedCohort,
    ) -> (CohortReport, Option<SpentRequest>, Option<ManifestFile>) {
        let started = Instant::now();
        let mut report = cohort_report(&item, Outcome::Exported);
        let mut spent = None;
        let cohort_id = item.selected.cohort.id.clone();
        let lease = match self
            .state
            .try_lease(&cohort_id, &self.run_id, self.lease_ttl)
            .await
        {
            Ok(LeaseOutcome::Acquired(lease)) => lease,
            Ok(LeaseOutcome::Held { owner, expires_at }) => {
                report.outcome = Outcome::SkippedLeased;
                report.detail = Some(format!(
                    "another runner ({owner}) holds this cohort until {expires_at}"
                ));
                return (report, None, None);
            }
            Err(e) => {
                report.outcome = Outcome::Failed;
                report.detail = Some(format!("taking the cohort's lease: {e}"));
                return (report, None, None);
            }
        };
        let result = self.download(&item, &mut report, &mut spent).await;
        if let Err(e) = self.state.release(&lease).await {
            tracing::warn!(cohort = %cohort_id, "releasing the lease: {e}");
        }
        report.duration_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(file) => {
                tracing::info!(
                    cohort = %cohort_id,
                    rows = report.rows,
                    bytes = report.bytes,
                    output = report.output.as_deref().unwrap_or("-"),
                    "exported"
                );
                (report, spent, file)
            }
            Err(f) => {
                tracing::error!(cohort = %cohort_id, "{}", f.message);
                report.outcome = f.outcome;
                report.detail = Some(f.message);
                (report, spent, None)
            }
        }
    }

    async fn download(
        &self,
        item: &PlannedCohort,
        report: &mut CohortReport,
        spent: &mut Option<SpentRequest>,
    ) -> Result<Option<ManifestFile>, Failure> {
        let cohort = &item.selected.cohort;
        let last_computed = cohort.last_computed.clone();
        // Another runner may have exported it between our plan and our lease.
        let mut record = self
            .state
            .cohort(&cohort.id)
            .await
            .map_err(|e| Failure::failed(format!("reading state: {e}")))?;
        record.cohort_name = cohort.name.clone();
        if self.skip_unchanged && record.unchanged_since_export(last_computed.as_ref()) {
            report.outcome = Outcome::SkippedUnchanged;
            report.detail = Some("exported by another runner during this run".into());
            return Ok(None);
        }
        let props = &self.settings.plan;
        let reusable = record.request.clone().filter(|r| {
            r.reusable_for(
                last_computed.as_ref(),
                props.props,
                &props.prop_keys,
                Utc::now(),
                self.request_validity,
            )
        });
        let request_id = match reusable {
            Some(req) => {
                report.request_reused = true;
                req.request_id
            }
            None => {
                let reason = match &item.action {
                    Action::Download {
                        reason: Some(r), ..
                    } => *r,
                    _ => RequestReason::EarlierRequestUnusable,
                };
                let issued = self
                    .client
                    .request_cohort(&cohort.id, props.props, &props.prop_keys)
                    .await
                    .map_err(|e| match e {
                        ApiError::QuotaExhausted { .. } => Failure {
                            outcome: Outcome::DeferredQuota,
                            message: format!("requesting cohort: {e}"),
                        },
                        e => Failure::failed(format!("requesting cohort: {e}")),
                    })?;
                let now = Utc::now();
                report.quota_spent = 1;
                *spent = Some(SpentRequest {
                    cohort_id: cohort.id.clone(),
                    request_id: Some(issued.request_id.clone()),
                    reason,
                    at: now,
                });
                // Remember the request at once: a crash from here on must not cost another.
                record.request = Some(RequestRecord {
                    request_id: issued.request_id.clone(),
                    issued_at: now,
                    last_computed: last_computed.clone(),
                    props: props.props || !props.prop_keys.is_empty(),
                    prop_keys: props.prop_keys.clone(),
                    completed: false,
                });
                self.state.save_cohort(&record).await.map_err(|e| {
                    Failure::failed(format!(
                        "saving request {} to the state: {e}",
                        issued.request_id
                    ))
                })?;
                issued.request_id
            }
        };
        report.request_id = Some(request_id.clone());

        wait_for_job(&self.client, &request_id, &self.settings.poll)
            .await
            .map_err(|e| Failure::failed(e.to_string()))?;

        let key_text = render(
            &self.settings.layout,
            &LayoutValues {
                cohort_id: &cohort.id,
                cohort_name: &cohort.name,
                date: &self.snapshot_date,
                request_id: &request_id,
                run_id: &self.run_id,
            },
        )
        .map_err(Failure::failed)?;
        let key = self.output.key(&key_text);
        let stats = self
            .fetch_and_convert(cohort, last_computed.as_ref(), &request_id, &key, report)
            .await?;

        let described = self.output.describe(&key);
        report.rows = stats.rows;
        report.skipped_rows = stats.skipped_rows;
        report.bytes = stats.bytes_written;
        report.sha256 = Some(stats.sha256.clone());
        report.output = Some(described.clone());
        if stats.skipped_rows > 0 {
            report.detail = Some(format!(
                "{} malformed row(s) skipped (on_bad_row = \"skip\"), first: {}",
                stats.skipped_rows,
                stats
                    .skipped_sample
                    .first()
                    .map(|s| format!("row {} (line {}): {}", s.row, s.line, s.reason))
                    .unwrap_or_default()
            ));
        }

        record.exported_last_computed = last_computed.clone();
        record.exported_at = Some(Utc::now());
        record.exported_key = Some(key.to_string());
        record.exported_rows = Some(stats.rows);
        if let Some(req) = record.request.as_mut() {
            req.completed = true;
        }
        self.state.save_cohort(&record).await.map_err(|e| {
            Failure::failed(format!(
                "published {described} but could not save the state: {e}"
            ))
        })?;
        Ok(Some(ManifestFile {
            cohort_id: cohort.id.clone(),
            cohort_name: cohort.name.clone(),
            key: described,
            rows: stats.rows,
            bytes: stats.bytes_written,
            sha256: stats.sha256,
            request_id,
            last_computed: last_computed.map(|t| t.to_string()),
        }))
    }

    /// Downloads `/file` and converts it; a body that fails or a link that expired is asked
    /// for again with the same request id, never with a new request.
    async fn fetch_and_convert(
        &self,
        cohort: &crate::amplitude::types::Cohort,
        last_computed: Option<&Timestamp>,
        request_id: &str,
        key: &object_store::path::Path,
        report: &mut CohortReport,
    ) -> Result<ConvertStats, Failure> {
        let mut opts = self.settings.convert.clone();
        opts.source_name = format!("cohort {} ({})", cohort.id, cohort.name);
        opts.metadata = vec![
            ("cohort_sync.cohort_id".into(), cohort.id.clone()),
            ("cohort_sync.cohort_name".into(), cohort.name.clone()),
            (
                "cohort_sync.last_computed".into(),
                last_computed.map(|t| t.to_string()).unwrap_or_default(),
            ),
            ("cohort_sync.request_id".into(), request_id.to_string()),
            (
                "cohort_sync.tool_version".into(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
        ];
        let mut last_error = String::new();
        for attempt in 1..=MAX_FILE_ATTEMPTS {
            report.file_attempts = attempt;
            if attempt > 1 {
                let pause = Duration::from_millis(500 * u64::from(attempt - 1));
                tracing::warn!(
                    cohort = %cohort.id,
                    request_id,
                    attempt,
                    "asking /file again with the same request id after: {last_error}"
                );
                tokio::time::sleep(pause).await;
            }
            let download = match self.client.download_file(request_id).await {
                Ok(d) => d,
                Err(e) if e.is_retryable() => {
                    last_error = e.to_string();
                    continue;
                }
                Err(e) => return Err(Failure::failed(format!("downloading: {e}"))),
            };
            opts.gzip = match download.content_encoding.as_deref() {
                Some(enc) if enc.eq_ignore_ascii_case("gzip") => GzipHint::Encoded,
                _ => GzipHint::Auto,
            };
            match convert_stream(download.body, &opts, Arc::clone(&self.output.store), key).await {
                Ok(stats) => return Ok(stats),
                Err(e) if e.is_retryable_download() => last_error = e.to_string(),
                Err(e) => return Err(Failure::failed(e.to_string())),
            }
        }
        Err(Failure::failed(format!(
            "download failed {MAX_FILE_ATTEMPTS} times with request {request_id} (kept for the next run, which spends no quota on it): {last_error}"
        )))
    }
}

/// Writes `_runs/{run_id}/manifest.json` and, when every cohort succeeded, `_SUCCESS`.
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
        finished_at: Utc::now(),
        complete,
        files,
    };
    let body = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
    let run_dir = format!("_runs/{}", super::layout::sanitize(&ctx.run_id));
    let key = output.key(&format!("{run_dir}/manifest.json"));
    output
        .store
        .put(&key, body.into())
        .await
        .map_err(|e| e.to_string())?;
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
    fn lease_covers_the_longest_wait() {
        let poll = PollSettings {
            initial: Duration::from_secs(1),
            max_interval: Duration::from_secs(10),
            max_wait: Duration::from_secs(3600),
        };
        assert!(lease_ttl(&poll, 1.0) >= chrono::Duration::seconds(3600));
    }
}

//! One cohort of an export run, start to end:
//!
//! ```text
//! lease (wait out a dead holder's) ─▶ heartbeat renews it while the steps below run
//!   ─▶ request (reuse a live request id, one issued by another pipeline of this run,
//!      or spend one; the intent is saved first, the id as soon as it is answered)
//!   ─▶ poll until JOB COMPLETED (a failed / unknown request is dropped and replaced once)
//!   ─▶ /file ─▶ CSV ─▶ Parquet, staged where readers do not look (asked again on a bad body)
//!   ─▶ publish at the final key ─▶ state records the export ─▶ release the lease
//! ```
//!
//! SIGTERM/SIGINT (the run's stop token) end every wait at once and abort an upload in
//! progress; a call already sent is let finish so its answer is saved. Crash points
//! (`crate::crash`) mark every boundary between two steps for the kill-anywhere tests:
//! `export.output.probed` (export.rs), `export.lease.acquired`, `export.request.intent_saved`, `export.request.answered`,
//! `export.request.saved`, `export.poll`, `export.download.chunk`, `export.upload.part`,
//! `export.upload.completed`, `export.changes.previous_copied` (S3), `export.changes.written`,
//! `export.changes.published` (with `output.changes = true` and an earlier snapshot),
//! `export.published`, `export.state.saved`; under even pacing
//! also `export.pace.reserved` and `export.pace.released` around the request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::changes::{self, Previous};
use super::export::{ExportSettings, ManifestFile, cohort_report};
use super::layout::{LayoutValues, render};
use super::leases::{Fence, LeaseKeeper, LeaseRefused};
use super::plan::{Action, PlannedCohort};
use super::poll::{PollError, wait_for_job_until};
use super::progress::{CohortProgress, CohortState, Progress, TransferMeter};
use super::report::{CohortReport, LimitWaits, Outcome, RequestReason, SpentRequest};
use super::shared_requests::{RequestKey, SharedRequests};
use super::staging::Staging;
use crate::amplitude::types::{Cohort, Timestamp};
use crate::amplitude::{AmplitudeClient, ApiError};
use crate::crash;
use crate::export::{BodyExpectation, ConvertStats, GzipHint, convert_stream};
use crate::quota::waits::{WaitKind, WaitMeter, current as current_meter, metered};
use crate::reverse::bytes::FileRef;
use crate::state::{
    CohortRecord, Holder, Ledger, LedgerEntry, LedgerOutcome, RequestRecord, StateStore,
};
use crate::storage::Location;

/// `/file` attempts per request (the same request id each time: never a second request).
const MAX_FILE_ATTEMPTS: u32 = 5;

/// What every cohort of one pipeline run shares.
pub struct CohortJob {
    pub client: AmplitudeClient,
    pub state: StateStore,
    pub output: Location,
    pub settings: ExportSettings,
    pub run_id: String,
    /// When the run started (on [`crate::clock`]).
    pub run_started: chrono::DateTime<chrono::Utc>,
    pub holder: Holder,
    pub snapshot_date: String,
    pub lease_ttl: chrono::Duration,
    pub request_validity: chrono::Duration,
    pub skip_unchanged: bool,
    /// `--force`: never reuse an earlier request.
    pub force: bool,
    /// Downloads this run may still spend beyond its plan (to replace failed requests).
    pub spare_budget: Arc<AtomicU32>,
    pub shared_requests: Arc<SharedRequests>,
    /// The run's stop token (SIGTERM/SIGINT).
    pub stop: CancellationToken,
    /// The app's monthly quota ledger (every request issued or of unknown outcome).
    pub ledger: Ledger,
    /// The run's time scale (1.0 against Amplitude): shortens the pause before asking
    /// `/file` again.
    pub time_scale: f64,
    /// Under `pace = "even"`: every new request first takes a ticket in the ledger.
    pub pace: Option<PaceGuard>,
    /// The run's live display (off unless on a terminal).
    pub progress: Progress,
}

/// Even pacing checked again at each new request, so that runners sharing one state
/// (one ledger) and planning at the same moment do not each spend the hour's share: the
/// request first writes its ledger entry (a ticket), then counts all the month's entries;
/// beyond the allowance by now it withdraws the ticket and the cohort is `paced`. Of two
/// runners racing for the last slot, the one that lists second sees both tickets, so they
/// never both go (at worst both wait for a later run). A kill in between leaves the
/// ticket, counted as a request of unknown outcome (the budget errs on the safe side by
/// one).
#[derive(Debug, Clone, Copy)]
pub struct PaceGuard {
    pub limit: u32,
    pub reserve: u32,
    /// What the usage endpoint counted beyond the ledger when the run planned.
    pub beyond_ledger: u32,
}

/// What one cohort's work produced.
pub struct CohortResult {
    pub report: CohortReport,
    pub spent: Vec<SpentRequest>,
    pub file: Option<ManifestFile>,
    /// Where the cohort's work is, for the live display.
    pub progress: CohortProgress,
}

/// A cohort that did not end as planned.
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

    fn interrupted(message: impl Into<String>) -> Self {
        Failure {
            outcome: Outcome::Interrupted,
            message: message.into(),
        }
    }
}

/// Why polling or downloading a request ended without a file.
enum RequestFailure {
    /// Amplitude says the request is unusable: drop it, a new one can work.
    Unusable(String),
    Other(Failure),
}

/// This cohort's waits for Amplitude's limits so far (its task's meter).
fn waited_so_far() -> Duration {
    current_meter().map_or(Duration::ZERO, |m| m.totals().total())
}

impl CohortJob {
    /// Does one planned cohort; never panics, always reports. Its waits for Amplitude's
    /// limits are measured apart (`limit_waits` in its report).
    pub async fn run(&self, item: PlannedCohort) -> CohortResult {
        let started = Instant::now();
        let progress = self
            .progress
            .cohort(&self.settings.name, &item.selected.cohort.id);
        progress.set(CohortState::Starting);
        let meter = WaitMeter::new(progress.observer());
        let mut out = CohortResult {
            report: cohort_report(&item, Outcome::Exported),
            spent: Vec::new(),
            file: None,
            progress,
        };
        out.report.started_at = Some(Utc::now());
        let out = metered(Arc::clone(&meter), self.run_into(item, out, started)).await;
        out.progress.set(CohortState::Finished {
            outcome: out.report.outcome.as_str().to_string(),
            ok: out.report.outcome.is_done(),
        });
        CohortResult {
            report: CohortReport {
                finished_at: Some(Utc::now()),
                limit_waits: LimitWaits::of(&meter.totals()),
                ..out.report
            },
            ..out
        }
    }

    async fn run_into(
        &self,
        item: PlannedCohort,
        mut out: CohortResult,
        started: Instant,
    ) -> CohortResult {
        let cohort_id = item.selected.cohort.id.clone();
        if self.stop.is_cancelled() {
            out.report.outcome = Outcome::Interrupted;
            out.report.detail = Some("not started: the run is stopping".into());
            return out;
        }
        let keeper = LeaseKeeper {
            state: &self.state,
            holder: &self.holder,
            ttl: self.lease_ttl,
            stop: &self.stop,
        };
        let mut lease = match keeper.take(&cohort_id, true).await {
            Ok(lease) => lease,
            Err(LeaseRefused::Held(message)) => {
                out.report.outcome = Outcome::SkippedLeased;
                out.report.detail = Some(message);
                return out;
            }
            Err(LeaseRefused::Stopped) => {
                out.report.outcome = Outcome::Interrupted;
                out.report.detail = Some(
                    "not started: the run is stopping (it was waiting for another runner's lease)"
                        .into(),
                );
                return out;
            }
            Err(LeaseRefused::Failed(message)) => {
                out.report.outcome = Outcome::Failed;
                out.report.detail = Some(message);
                return out;
            }
        };
        crash::point("export.lease.acquired");
        // The cohort's own stop: the run's, or a heartbeat that found the lease lost.
        let cohort_stop = self.stop.child_token();
        let mut lost_to = None;
        let fence = Fence::new(&self.state, &lease, self.lease_ttl);
        let result = {
            let work = self.download(&item, &mut out, &cohort_stop, &fence);
            let heartbeat = keeper.heartbeat(&mut lease);
            tokio::pin!(work, heartbeat);
            loop {
                tokio::select! {
                    r = &mut work => break r,
                    lost = &mut heartbeat, if lost_to.is_none() => {
                        tracing::error!("the lease was lost ({lost}); stopping work on the cohort");
                        lost_to = Some(lost);
                        cohort_stop.cancel();
                    }
                }
            }
        };
        keeper.release(&lease).await;
        out.report.duration_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(file) => {
                if out.report.outcome == Outcome::Exported {
                    tracing::info!(
                        rows = out.report.rows,
                        bytes = out.report.bytes,
                        output = out.report.output.as_deref().unwrap_or("-"),
                        "exported"
                    );
                }
                out.file = file;
            }
            Err(mut f) => {
                if let Some(lost) = lost_to {
                    f = Failure::failed(format!(
                        "the cohort's lease was lost ({lost}) and work stopped; nothing was published: {}",
                        f.message
                    ));
                } else if self.stop.is_cancelled() && f.outcome == Outcome::Failed {
                    f = Failure::interrupted(format!(
                        "stopped by a signal; nothing was published: {}",
                        f.message
                    ));
                }
                if f.outcome == Outcome::Paced {
                    tracing::info!("{}", f.message);
                } else {
                    tracing::error!("{}", f.message);
                }
                out.report.outcome = f.outcome;
                out.report.detail = Some(f.message);
            }
        }
        out
    }

    async fn download(
        &self,
        item: &PlannedCohort,
        out: &mut CohortResult,
        stop: &CancellationToken,
        fence: &Fence,
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
            out.report.outcome = Outcome::SkippedUnchanged;
            out.report.detail = Some("exported by another runner during this run".into());
            return Ok(None);
        }
        if let Some(sent_at) = record.request_in_doubt.take() {
            // An earlier run was killed between sending a request and saving its answer.
            out.spent.push(SpentRequest {
                cohort_id: cohort.id.clone(),
                request_id: None,
                reason: RequestReason::EarlierRequestUnusable,
                at: sent_at,
                outcome_unknown: true,
            });
            tracing::warn!(
                "an earlier run sent a download request at {sent_at} and stopped before saving its answer: it is counted as possibly spent"
            );
            self.record_in_ledger(&cohort.id, None, LedgerOutcome::Unknown, sent_at)
                .await;
        }
        let mut reason = match &item.action {
            Action::Download {
                reason: Some(r), ..
            } => *r,
            _ => RequestReason::EarlierRequestUnusable,
        };
        let mut replaced = 0;
        // The cohort's own time from here to its file, without waits for the limits (the
        // next run's `plan` predicts its length from it).
        let work_started = Instant::now();
        let waits_before = waited_so_far();
        loop {
            let request_id = self
                .obtain_request(cohort, &mut record, reason, out, fence)
                .await?;
            out.report.request_id = Some(request_id.clone());
            tracing::Span::current().record("request_id", request_id.as_str());
            match self
                .fetch_request(cohort, last_computed.as_ref(), &request_id, out, stop)
                .await
            {
                Ok(stats_and_key) => {
                    let waited = waited_so_far().saturating_sub(waits_before);
                    let work = work_started.elapsed().saturating_sub(waited);
                    record.exported_work_ms =
                        Some(u64::try_from(work.as_millis()).unwrap_or(u64::MAX));
                    return self
                        .record_export(cohort, &mut record, &request_id, stats_and_key, out, fence)
                        .await
                        .map(Some);
                }
                Err(RequestFailure::Other(f)) => return Err(f),
                Err(RequestFailure::Unusable(why)) => {
                    self.drop_request(cohort, &mut record, &request_id).await?;
                    replaced += 1;
                    let spare = replaced == 1
                        && !stop.is_cancelled()
                        && self
                            .spare_budget
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                    if !spare {
                        return Err(Failure::failed(format!(
                            "{why}; the request was dropped from the state and the next run requests the cohort anew{}",
                            if replaced > 1 {
                                " (its replacement failed too)"
                            } else if stop.is_cancelled() {
                                ""
                            } else {
                                " (this run's budget has no download left for a replacement)"
                            }
                        )));
                    }
                    tracing::warn!("{why}; requesting the cohort anew");
                    out.report.detail = Some(format!("replaced request {request_id}: {why}"));
                    reason = RequestReason::EarlierRequestFailed;
                }
            }
        }
    }

    /// The request to download: a live one from the state (free), one another pipeline of
    /// this run issued (free), or a new one (spends one download).
    async fn obtain_request(
        &self,
        cohort: &Cohort,
        record: &mut CohortRecord,
        reason: RequestReason,
        out: &mut CohortResult,
        fence: &Fence,
    ) -> Result<String, Failure> {
        let props = &self.settings.plan;
        let last_computed = cohort.last_computed.clone();
        out.progress.set(CohortState::Requesting);
        if !self.force
            && let Some(req) = record.request.as_ref().filter(|r| {
                r.reusable_for(
                    last_computed.as_ref(),
                    props.props,
                    &props.prop_keys,
                    crate::clock::now(),
                    self.request_validity,
                )
            })
        {
            out.report.request_reused = true;
            return Ok(req.request_id.clone());
        }
        let ticket = match &self.pace {
            Some(guard) => Some(self.take_ticket(cohort, guard, out).await?),
            None => None,
        };
        let key = self.request_key(cohort);
        let issuer = format!("{}#{}", self.settings.file, self.settings.name);
        let mut unknown = false;
        let unknown_ref = &mut unknown;
        let rec = &mut *record;
        let asked = Instant::now();
        let issued = self
            .shared_requests
            .get_or_issue(&key, &issuer, move || async move {
                let r = self.issue(cohort, rec, fence).await;
                if let Err(e) = &r {
                    *unknown_ref = e.outcome_unknown();
                }
                r
            })
            .await;
        // Waiting for the request another pipeline of this run was issuing is waiting for
        // the slot it waited for (its own wait is charged to its cohort).
        if let (Ok(i), Some(meter)) = (&issued, current_meter())
            && i.issuer != issuer
        {
            meter.add(WaitKind::RateSlot, asked.elapsed());
        }
        // The request's own entry is in the ledger now (spent or unknown), or it was
        // never sent: the ticket has served.
        if let Some(t) = ticket
            && let Err(e) = self.ledger.release(&t).await
        {
            tracing::warn!(
                "withdrawing the pacing ticket {t}: {e}; it counts as one more download this month"
            );
        }
        crash::point("export.pace.released");
        let issued = match issued {
            Ok(i) => i,
            Err(e) => {
                if unknown {
                    out.spent.push(SpentRequest {
                        cohort_id: cohort.id.clone(),
                        request_id: None,
                        reason,
                        at: crate::clock::now(),
                        outcome_unknown: true,
                    });
                }
                return Err(match e {
                    ApiError::QuotaExhausted { .. } => Failure {
                        outcome: Outcome::DeferredQuota,
                        message: format!("requesting cohort: {e}"),
                    },
                    ApiError::Stopped => {
                        Failure::interrupted("not requested: the run is stopping (no quota spent)")
                    }
                    e if unknown => Failure::failed(format!(
                        "requesting cohort: {e}; the request may have reached Amplitude and been counted (reported as possibly spent)"
                    )),
                    e => Failure::failed(format!("requesting cohort: {e}")),
                });
            }
        };
        let now = crate::clock::now();
        if issued.issuer == issuer {
            out.report.quota_spent += 1;
            out.progress.quota_spent();
            out.spent.push(SpentRequest {
                cohort_id: cohort.id.clone(),
                request_id: Some(issued.request_id.clone()),
                reason,
                at: now,
                outcome_unknown: false,
            });
        } else {
            out.report.request_reused = true;
        }
        // Remember the request at once: a crash from here on must not cost another.
        record.request_in_doubt = None;
        record.request = Some(RequestRecord {
            request_id: issued.request_id.clone(),
            issued_at: now,
            last_computed,
            props: props.props || !props.prop_keys.is_empty(),
            prop_keys: props.prop_keys.clone(),
            completed: false,
        });
        self.state.save_cohort(record).await.map_err(|e| {
            Failure::failed(format!(
                "saving request {} to the state: {e}",
                issued.request_id
            ))
        })?;
        crash::point("export.request.saved");
        Ok(issued.request_id)
    }

    /// Spends one download: saves the intent, sends the request, returns its id.
    async fn issue(
        &self,
        cohort: &Cohort,
        record: &mut CohortRecord,
        fence: &Fence,
    ) -> Result<String, ApiError> {
        if self.stop.is_cancelled() {
            return Err(ApiError::Stopped);
        }
        fence
            .check("requesting the cohort")
            .await
            .map_err(|message| ApiError::Transport {
                endpoint: "lease".into(),
                message,
                maybe_delivered: false,
            })?;
        let props = &self.settings.plan;
        record.request_in_doubt = Some(crate::clock::now());
        self.state
            .save_cohort(record)
            .await
            .map_err(|e| ApiError::Transport {
                endpoint: "state".into(),
                message: format!("saving the request intent: {e}"),
                maybe_delivered: false,
            })?;
        crash::point("export.request.intent_saved");
        let result = self
            .client
            .request_cohort(&cohort.id, props.props, &props.prop_keys)
            .await;
        match result {
            Ok(issued) => {
                crash::point("export.request.answered");
                self.record_in_ledger(
                    &cohort.id,
                    Some(&issued.request_id),
                    LedgerOutcome::Spent,
                    crate::clock::now(),
                )
                .await;
                Ok(issued.request_id)
            }
            Err(e) => {
                if e.outcome_unknown() {
                    self.record_in_ledger(
                        &cohort.id,
                        None,
                        LedgerOutcome::Unknown,
                        crate::clock::now(),
                    )
                    .await;
                }
                if !e.outcome_unknown() {
                    // Certainly not counted: no intent to remember.
                    record.request_in_doubt = None;
                    if let Err(se) = self.state.save_cohort(record).await {
                        tracing::warn!("clearing the request intent: {se}");
                    }
                } else {
                    // Reported as possibly spent by this run; the next need not again.
                    record.request_in_doubt = None;
                    let _ = self.state.save_cohort(record).await;
                }
                Err(e)
            }
        }
    }

    /// Adds a request to the month's ledger. A failure is logged, not fatal: the request
    /// is already in the cohort's state, and the usage endpoint counts it too.
    /// Takes a pacing ticket for one new request (see [`PaceGuard`]).
    async fn take_ticket(
        &self,
        cohort: &Cohort,
        guard: &PaceGuard,
        out: &mut CohortResult,
    ) -> Result<object_store::path::Path, Failure> {
        let now = crate::clock::now();
        let entry = LedgerEntry {
            at: now,
            cohort_id: cohort.id.clone(),
            request_id: None,
            outcome: LedgerOutcome::Unknown,
            pipeline: self.settings.name.clone(),
            run_id: self.run_id.clone(),
        };
        let ticket = self.ledger.reserve(&entry).await.map_err(|e| {
            Failure::failed(format!(
                "taking a pacing ticket in the quota ledger: {e}; nothing was requested"
            ))
        })?;
        crash::point("export.pace.reserved");
        let withdraw = |why: String| {
            let ticket = &ticket;
            async move {
                if let Err(e) = self.ledger.release(ticket).await {
                    tracing::warn!(
                        "withdrawing the pacing ticket {ticket}: {e}; it counts as one more download this month"
                    );
                }
                why
            }
        };
        let rank = match self.ledger.count(now).await {
            Ok(r) => r,
            Err(e) => {
                let why = format!("counting the quota ledger: {e}; nothing was requested");
                return Err(Failure::failed(withdraw(why).await));
            }
        };
        let allowance = crate::quota::Allowance::at(now, guard.limit, guard.reserve, 0);
        let position = rank + guard.beyond_ledger;
        if position <= allowance.by_now {
            return Ok(ticket);
        }
        let expected_at = allowance.reaches(position);
        out.report.expected_at = Some(expected_at);
        let why = format!(
            "paced: runners sharing this state spent this hour's share first (this would be download {position} of the month, {} allowed by the end of this hour); expected to run from {}",
            allowance.by_now,
            expected_at.format("%Y-%m-%d %H:%M UTC")
        );
        Err(Failure {
            outcome: Outcome::Paced,
            message: withdraw(why).await,
        })
    }

    async fn record_in_ledger(
        &self,
        cohort_id: &str,
        request_id: Option<&str>,
        outcome: LedgerOutcome,
        at: chrono::DateTime<Utc>,
    ) {
        let entry = LedgerEntry {
            at,
            cohort_id: cohort_id.to_string(),
            request_id: request_id.map(str::to_string),
            outcome,
            pipeline: self.settings.name.clone(),
            run_id: self.run_id.clone(),
        };
        if let Err(e) = self.ledger.record(&entry).await {
            tracing::warn!("recording the request in the quota ledger of cohort {cohort_id}: {e}");
        }
    }

    /// Forgets a request Amplitude called unusable, in the state and in this run.
    async fn drop_request(
        &self,
        cohort: &Cohort,
        record: &mut CohortRecord,
        request_id: &str,
    ) -> Result<(), Failure> {
        self.shared_requests
            .forget(&self.request_key(cohort), request_id);
        if record
            .request
            .as_ref()
            .is_some_and(|r| r.request_id == request_id)
        {
            record.request = None;
            self.state.save_cohort(record).await.map_err(|e| {
                Failure::failed(format!(
                    "request {request_id} is unusable, and dropping it from the state failed: {e}"
                ))
            })?;
        }
        Ok(())
    }

    fn request_key(&self, cohort: &Cohort) -> RequestKey {
        RequestKey {
            app: self.settings.app_key.clone(),
            cohort_id: cohort.id.clone(),
            last_computed: cohort.last_computed.as_ref().map(|t| t.to_string()),
            props: self.settings.plan.props,
            prop_keys: self.settings.plan.prop_keys.clone(),
        }
    }

    /// Waits for the job and downloads its file into the staging key; returns the stats
    /// and the staged and final keys.
    async fn fetch_request(
        &self,
        cohort: &Cohort,
        last_computed: Option<&Timestamp>,
        request_id: &str,
        out: &mut CohortResult,
        stop: &CancellationToken,
    ) -> Result<(ConvertStats, Staged), RequestFailure> {
        out.progress.set(CohortState::JobRunning {
            since: Instant::now(),
        });
        match wait_for_job_until(&self.client, request_id, &self.settings.poll, Some(stop)).await {
            Ok(_) => {}
            Err(e) if e.request_unusable() => return Err(RequestFailure::Unusable(e.to_string())),
            Err(e @ PollError::Stopped { .. }) => {
                return Err(RequestFailure::Other(Failure::interrupted(e.to_string())));
            }
            Err(e) => return Err(RequestFailure::Other(Failure::failed(e.to_string()))),
        }
        let key_text = render(
            &self.settings.layout,
            &LayoutValues {
                cohort_id: &cohort.id,
                cohort_name: &cohort.name,
                date: &self.snapshot_date,
                request_id,
                run_id: &self.run_id,
            },
        )
        .map_err(|e| RequestFailure::Other(Failure::failed(e)))?;
        let final_key = self.output.key(&key_text);
        let staging = Staging::new(&self.output, &self.settings.name, &self.run_id);
        let staged = staging.key_for(&cohort.id, &final_key);
        // Found before the new file is written: it may be about to be overwritten.
        let previous = match &self.settings.changes_layout {
            Some(_) => {
                self.find_previous(cohort, request_id, &final_key, out)
                    .await
            }
            None => None,
        };
        let stats = self
            .fetch_and_convert(cohort, last_computed, request_id, &staged, out, stop)
            .await?;
        Ok((
            stats,
            Staged {
                staged,
                final_key,
                previous,
            },
        ))
    }

    /// Downloads `/file` and converts it; a body that fails or a link that expired is asked
    /// for again with the same request id, never with a new request.
    async fn fetch_and_convert(
        &self,
        cohort: &Cohort,
        last_computed: Option<&Timestamp>,
        request_id: &str,
        key: &object_store::path::Path,
        out: &mut CohortResult,
        stop: &CancellationToken,
    ) -> Result<ConvertStats, RequestFailure> {
        let mut opts = self.settings.convert.clone();
        opts.source_name = format!("cohort {} ({})", cohort.id, cohort.name);
        opts.cancel = Some(stop.clone());
        // Only a cohort CSV is published: `amplitude_id` in the header, rows near the
        // listed size.
        opts.expect = Some(BodyExpectation::cohort(cohort.size));
        opts.metadata = vec![
            ("cohort_sync.cohort_id".into(), cohort.id.clone()),
            ("cohort_sync.cohort_name".into(), cohort.name.clone()),
            (
                "cohort_sync.last_computed".into(),
                last_computed.map(|t| t.to_string()).unwrap_or_default(),
            ),
            ("cohort_sync.request_id".into(), request_id.to_string()),
            (
                crate::reverse::snapshot::SNAPSHOT_DATE_KEY.into(),
                self.snapshot_date.clone(),
            ),
            (
                "cohort_sync.tool_version".into(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
        ];
        let fail = |f: Failure| RequestFailure::Other(f);
        let mut last_error = String::new();
        for attempt in 1..=MAX_FILE_ATTEMPTS {
            out.report.file_attempts += 1;
            if attempt > 1 {
                let scale = if self.time_scale.is_finite() {
                    self.time_scale.clamp(0.0, 1.0)
                } else {
                    1.0
                };
                let pause = Duration::from_millis(500 * u64::from(attempt - 1)).mul_f64(scale);
                tracing::warn!(
                    attempt,
                    "asking /file again with the same request id after: {last_error}"
                );
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.cancelled() => {
                        return Err(fail(Failure::interrupted(format!("stopped before asking /file again (request {request_id} is kept)"))));
                    }
                }
            }
            let download = match self.client.download_file(request_id).await {
                Ok(d) => d,
                Err(ApiError::Stopped) => {
                    return Err(fail(Failure::interrupted(format!(
                        "stopped before downloading (request {request_id} is kept)"
                    ))));
                }
                Err(e @ ApiError::NotFound { .. }) => {
                    return Err(RequestFailure::Unusable(format!(
                        "Amplitude does not know request {request_id} any more: {e}"
                    )));
                }
                Err(e) if e.is_retryable() => {
                    last_error = e.to_string();
                    continue;
                }
                Err(e) => return Err(fail(Failure::failed(format!("downloading: {e}")))),
            };
            opts.gzip = match download.content_encoding.as_deref() {
                Some(enc) if enc.eq_ignore_ascii_case("gzip") => GzipHint::Encoded,
                _ => GzipHint::Auto,
            };
            // Counted per network chunk and per batch (the display reads the counters).
            let meter = TransferMeter::new(download.content_length);
            opts.rows_read = Some(meter.rows_counter());
            out.progress.set(CohortState::Downloading {
                meter: Arc::clone(&meter),
            });
            let body = download.body.inspect(move |chunk| {
                if let Ok(bytes) = chunk {
                    meter.add_bytes(bytes.len() as u64);
                }
                crash::point("export.download.chunk");
            });
            match convert_stream(body, &opts, Arc::clone(&self.output.store), key).await {
                Ok(stats) => return Ok(stats),
                Err(e @ crate::export::ExportError::Stopped { .. }) => {
                    return Err(fail(Failure::interrupted(format!(
                        "{e}; request {request_id} is kept"
                    ))));
                }
                Err(e) if e.is_retryable_download() => last_error = e.to_string(),
                Err(e) => return Err(fail(Failure::failed(e.to_string()))),
            }
        }
        Err(fail(Failure::failed(format!(
            "download failed {MAX_FILE_ATTEMPTS} times with request {request_id} (kept for the next run, which spends no quota on it): {last_error}"
        ))))
    }

    /// Publishes the staged file and records the export in the state.
    async fn record_export(
        &self,
        cohort: &Cohort,
        record: &mut CohortRecord,
        request_id: &str,
        (stats, keys): (ConvertStats, Staged),
        out: &mut CohortResult,
        fence: &Fence,
    ) -> Result<ManifestFile, Failure> {
        crash::point("export.upload.completed");
        out.progress.set(CohortState::Writing);
        let staging = Staging::new(&self.output, &self.settings.name, &self.run_id);
        if let Err(lost) = fence.check("publishing the file").await {
            staging.discard(&keys.staged, &keys.final_key).await;
            return Err(Failure::failed(lost));
        }
        let changes = match &keys.previous {
            Some(previous) => {
                self.write_changes(cohort, previous, &keys, &staging, out)
                    .await
            }
            None => None,
        };
        staging
            .publish(&keys.staged, &keys.final_key)
            .await
            .map_err(Failure::failed)?;
        staging.tidy();
        crash::point("export.published");
        if let Some(previous) = &keys.previous {
            previous.release(&self.output).await;
        }
        let described = self.output.describe(&keys.final_key);
        let report = &mut out.report;
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
        let last_computed = cohort.last_computed.clone();
        record.exported_last_computed = last_computed.clone();
        record.exported_at = Some(crate::clock::now());
        record.exported_run_at = Some(self.run_started);
        record.exported_key = Some(keys.final_key.to_string());
        record.exported_rows = Some(stats.rows);
        if let Some(req) = record.request.as_mut() {
            req.completed = true;
        }
        fence
            .check("recording the export")
            .await
            .map_err(Failure::failed)?;
        self.state.save_cohort(record).await.map_err(|e| {
            Failure::failed(format!(
                "published {described} but could not save the state: {e}"
            ))
        })?;
        crash::point("export.state.saved");
        Ok(ManifestFile {
            cohort_id: cohort.id.clone(),
            cohort_name: cohort.name.clone(),
            key: described,
            rows: stats.rows,
            bytes: stats.bytes_written,
            sha256: stats.sha256,
            request_id: request_id.to_string(),
            last_computed: last_computed.map(|t| t.to_string()),
            changes,
        })
    }

    /// The snapshot the change file will compare with (see [`changes::find_previous`]);
    /// a failure to look is reported on the cohort and writes no change file.
    async fn find_previous(
        &self,
        cohort: &Cohort,
        request_id: &str,
        final_key: &object_store::path::Path,
        out: &mut CohortResult,
    ) -> Option<Previous> {
        match changes::find_previous(
            &self.output,
            &self.settings.name,
            &self.settings.layout,
            &cohort.id,
            request_id,
            final_key,
        )
        .await
        {
            Ok(found) => found,
            Err(e) => {
                self.change_failed(out, &format!("finding the previous snapshot: {e}"));
                None
            }
        }
    }

    /// Writes the change file of the staged snapshot and publishes it (before the snapshot,
    /// so that a kill in between leaves the previous snapshot to compute it again from).
    /// A failure is reported on the cohort; the snapshot is published all the same.
    async fn write_changes(
        &self,
        cohort: &Cohort,
        previous: &Previous,
        keys: &Staged,
        staging: &Staging<'_>,
        out: &mut CohortResult,
    ) -> Option<changes::ChangeFile> {
        let layout = self.settings.changes_layout.as_deref()?;
        let result = async {
            let request_id = out.report.request_id.clone().unwrap_or_default();
            let key_text = render(
                layout,
                &LayoutValues {
                    cohort_id: &cohort.id,
                    cohort_name: &cohort.name,
                    date: &self.snapshot_date,
                    request_id: &request_id,
                    run_id: &self.run_id,
                },
            )?;
            let final_key = self.output.key(&key_text);
            let staged = staging.key_named(&cohort.id, "changes", &final_key);
            let new = FileRef::Store {
                store: Arc::clone(&self.output.store),
                key: keys.staged.clone(),
                url: self.output.describe(&keys.staged),
            };
            let snap = &previous.snapshot;
            let meta = changes::ChangeMeta {
                cohort_id: &cohort.id,
                previous_date: &snap.date,
                date: &self.snapshot_date,
                previous_last_computed: snap.last_computed,
                last_computed: cohort
                    .last_computed
                    .as_ref()
                    .and_then(|t| t.epoch_seconds()),
                parquet: &self.settings.convert.parquet,
            };
            let started = Instant::now();
            let counts = changes::write(&snap.file, &new, &meta, &self.output, &staged).await?;
            crash::point("export.changes.written");
            staging.publish(&staged, &final_key).await?;
            crash::point("export.changes.published");
            tracing::info!(
                entered = counts.entered,
                exited = counts.exited,
                previous = previous.url.as_str(),
                ms = started.elapsed().as_millis() as u64,
                "membership changes written"
            );
            Ok::<_, String>(changes::ChangeFile {
                key: self.output.describe(&final_key),
                entered: counts.entered,
                exited: counts.exited,
                previous_snapshot: previous.url.clone(),
                previous_snapshot_date: snap.date.clone(),
                previous_last_computed: (!snap.last_computed_text.is_empty())
                    .then(|| snap.last_computed_text.clone()),
                duration_ms: started.elapsed().as_millis() as u64,
            })
        }
        .await;
        match result {
            Ok(file) => {
                out.report.changes = Some(file.clone());
                Some(file)
            }
            Err(e) => {
                self.change_failed(out, &format!("writing the change file: {e}"));
                None
            }
        }
    }

    fn change_failed(&self, out: &mut CohortResult, why: &str) {
        let message = format!(
            "no membership change file: {why} (the snapshot is exported all the same; the next export compares with it)"
        );
        tracing::error!("{message}");
        out.report.detail = Some(match out.report.detail.take() {
            Some(d) => format!("{d}; {message}"),
            None => message,
        });
    }
}

/// A file written to its staging key, to be published at its final key.
struct Staged {
    staged: object_store::path::Path,
    final_key: object_store::path::Path,
    /// The snapshot a change file compares with (`output.changes = true`).
    previous: Option<Previous>,
}

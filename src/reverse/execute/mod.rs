//! One reverse pipeline, end to end: finish an interrupted plan if the journal has one and
//! it was made from what the pipeline reads now (else mark it superseded and plan afresh);
//! otherwise read the source, get the baseline, diff, guard, write the lists, and (in a
//! run) journal the chunked plan and apply it. Everything that happened goes into the
//! pipeline report.

use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::apply::{ApplySettings, apply};
use super::baseline::{self, BaselineInput, BaselineReport};
use super::bytes::FileRef;
use super::derived;
use super::diff::{Diff, diff};
use super::failure::Failure;
use super::guard;
use super::idset::{IdCollector, IdList};
use super::journal::{
    ChunkEntry, ChunkOp, ChunkState, Journal, JournalDoc, JournalStatus, PlanFingerprint,
    UploadMeta,
};
use super::lists::{write_file, write_lists};
use super::owned;
use super::rejected;
use super::report::{
    Counts, DerivedReport, JournalReport, RejectedReport, ReverseReport, SAMPLE, SkippedReport,
    SourceReport, SupersededReport, TargetReport, VerifyReport,
};
use super::source::{ColumnSpec, ReadStats, read_ids};
use super::verify;
use crate::amplitude::AmplitudeClient;
use crate::amplitude::ApiError;
use crate::amplitude::types::{Cohort, UploadRequest};
use crate::config::{
    CreateCohort, MAX_CHUNK_SIZE, Pipeline, PipelineSpec, Reconcile, ReconcileMode, ReverseSpec,
    Target,
};
use crate::quota::waits::{WaitMeter, metered};
use crate::runner::context::RunContext;
use crate::runner::layout::sanitize;
use crate::runner::leases::{LeaseKeeper, LeaseRefused, lease_ttl};
use crate::runner::poll::PollSettings;
use crate::runner::progress::{ReverseProgress, ReverseStep};
use crate::runner::report::{LimitWaits, PipelineReport};
use crate::state::Ledger;
use crate::state::{REQUEST_VALIDITY_DAYS, StateStore};
use crate::storage;
use crate::{crash, exit};
use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;

mod ledgers;
mod settle;

use ledgers::{check_id_kind, diff_with_ledgers, update_rejected};
use settle::after_apply;

/// Amplitude's largest cohort.
const MAX_COHORT_MEMBERS: u64 = 2_000_000;

/// Threads the diff runs on.
const DIFF_THREADS: usize = 2;

/// Remembers the cohort a `create` target made, so later runs reconcile it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CreatedCohort {
    cohort_id: String,
    name: String,
    created_at: chrono::DateTime<chrono::Utc>,
    run_id: String,
}

/// Runs one reverse pipeline in `ctx.mode` and reports what happened.
pub async fn execute(pipeline: &Pipeline, ctx: &RunContext) -> PipelineReport {
    let mut report = PipelineReport::new(
        &pipeline.file.display().to_string(),
        &pipeline.name,
        "reverse",
    );
    let PipelineSpec::Reverse(spec) = &pipeline.spec else {
        report.error = Some("not a reverse pipeline".into());
        report.exit_code = exit::USAGE;
        return report;
    };
    report.started_at = Some(chrono::Utc::now());
    let mut rev = ReverseReport::new(ctx.mode.as_str(), spec.reconcile.mode, spec.source.id_kind);
    // The target's work: its events carry `cohort_id` (once known) and the baseline's
    // `request_id` (when one is downloaded), as an export cohort's do.
    let span = tracing::info_span!(
        "cohort",
        cohort_id = tracing::field::Empty,
        request_id = tracing::field::Empty
    );
    let progress = ctx.progress.reverse(&pipeline.name);
    // Every wait of the pipeline's calls for Amplitude's limits, shown and added up.
    let meter = WaitMeter::new(progress.observer());
    let result = metered(
        Arc::clone(&meter),
        run(pipeline, spec, ctx, &progress, &mut report, &mut rev),
    )
    .instrument(span)
    .await;
    report.limit_waits = LimitWaits::of(&meter.totals());
    if let Err(f) = &result {
        report.error = Some(f.message.clone());
        report.exit_code = f.code;
        // A refusal or another runner's lease is said as such; anything else failed.
        if !["refused", "leased_elsewhere", "drift"].contains(&rev.outcome.as_str()) {
            rev.outcome = if f.code == exit::QUOTA {
                "quota"
            } else {
                "failed"
            }
            .into();
        }
    }
    rev.summary = rev.render(report.error.as_deref());
    for line in rev.summary.lines() {
        tracing::debug!("{line}");
    }
    let counts = rev
        .counts
        .as_ref()
        .map_or("counts unknown".to_string(), |c| {
            format!("+{} / -{}", c.add, c.remove)
        });
    tracing::info!(
        "reverse {}: {counts}, {} calls sent, outcome {}",
        rev.mode,
        rev.calls_sent,
        rev.outcome
    );
    progress.step(ReverseStep::Finished {
        outcome: rev.outcome.clone(),
        ok: report.exit_code == exit::OK,
    });
    report.reverse_totals = Some(rev.totals());
    report.reverse = serde_json::to_value(&rev).ok();
    report.finished_at = Some(chrono::Utc::now());
    report
}

fn failed(e: impl std::fmt::Display) -> Failure {
    Failure::failed(e.to_string())
}

/// What the steps of a run share: the client, the state, and the target as resolved.
struct Setup {
    client: AmplitudeClient,
    state: StateStore,
    /// The journal's key: the cohort id, or `new-<name>` for a cohort to create.
    target_key: String,
    cohort_id: Option<String>,
    /// Set while the cohort is still to be created.
    create: Option<CreateCohort>,
    /// The live display's line of this pipeline.
    progress: ReverseProgress,
}

/// The run, as its steps: finish (or supersede) an unfinished plan; read the source; look
/// the cohort up; get the baseline; diff; cut the plan into chunks; guard it; write the
/// lists; journal the plan and apply it.
async fn run(
    pipeline: &Pipeline,
    spec: &ReverseSpec,
    ctx: &RunContext,
    progress: &ReverseProgress,
    report: &mut PipelineReport,
    rev: &mut ReverseReport,
) -> Result<(), Failure> {
    let mut setup = open(pipeline, spec, ctx, progress.clone()).await?;
    if !ctx.mode.applies() {
        return run_steps(&mut setup, pipeline, spec, ctx, report, rev).await;
    }
    // One runner at a time reconciles a target: the lease is held (and renewed) from the
    // plan to the last call, so two runs never both drive one journal.
    let state = setup.state.clone();
    let keeper = LeaseKeeper {
        state: &state,
        holder: &ctx.holder,
        ttl: lease_ttl(ctx.time_scale),
        stop: &ctx.stop,
    };
    let lease_id = format!("target-{}", setup.target_key);
    let mut lease = match keeper.take(&lease_id, true).await {
        Ok(lease) => lease,
        Err(LeaseRefused::Held(who)) => {
            rev.outcome = "leased_elsewhere".into();
            return Err(Failure::failed(format!(
                "another runner is reconciling this cohort: {who}; this run sent nothing"
            )));
        }
        Err(LeaseRefused::Stopped) => {
            return Err(Failure::failed(
                "stopped by a signal while waiting for another runner's lease; nothing was sent",
            ));
        }
        Err(LeaseRefused::Failed(e)) => return Err(Failure::failed(e)),
    };
    crate::crash::point("reverse.lease.acquired");
    let result = {
        let work = run_steps(&mut setup, pipeline, spec, ctx, report, rev);
        let heartbeat = keeper.heartbeat(&mut lease);
        tokio::pin!(work, heartbeat);
        tokio::select! {
            r = &mut work => r,
            lost = &mut heartbeat => Err(Failure::failed(format!(
                "the lease on the target was lost ({lost}); stopped where it was (the journal keeps the plan: a call in flight is resent in doubt by the next run)"
            ))),
        }
    };
    keeper.release(&lease).await;
    result
}

/// The run's steps, under the target's lease when it applies.
async fn run_steps(
    setup: &mut Setup,
    pipeline: &Pipeline,
    spec: &ReverseSpec,
    ctx: &RunContext,
    report: &mut PipelineReport,
    rev: &mut ReverseReport,
) -> Result<(), Failure> {
    rev.target = TargetReport {
        cohort_id: setup.cohort_id.clone(),
        name: setup.create.as_ref().map(|c| c.name.clone()),
        size: None,
        to_create: setup.create.is_some(),
        created: false,
    };
    let file = FileRef::parse(spec.source.url.as_str(), &ctx.base_dir).map_err(Failure::failed)?;
    check_id_kind(setup, spec, ctx, rev).await?;

    if let Some(journal) = unfinished_plan(setup, &file, spec, ctx, rev).await? {
        return resume(journal, setup, pipeline, spec, ctx, rev).await;
    }

    // The fingerprint is taken before the source is read: if the file changes in between,
    // the next run sees a difference and plans again (never the other way round).
    let fingerprint = if ctx.mode.applies() {
        Some(current_fingerprint(spec, &file).await?)
    } else {
        None
    };
    setup.progress.step(ReverseStep::ReadingSource);
    let source = read_source(&file, spec).await?;
    let cohort = current_cohort(setup, rev).await?;
    refuse_empty_source(&source, &cohort, &file, spec, ctx, rev)?;
    setup.progress.step(ReverseStep::Baseline);
    let base = get_baseline(setup, &cohort, pipeline, spec, ctx, report, rev).await?;
    let baseline_known = base.is_some();
    setup.progress.step(ReverseStep::Diffing);
    let (diffs, retried) =
        diff_with_ledgers(source.ids, base, setup, pipeline, spec, ctx, rev).await?;
    rev.source = Some(source_report(
        &file,
        source.stats.rows,
        source.stats.blank,
        diffs.d.counts.source_distinct,
        diffs.d.counts.source_duplicates,
    ));
    let plan = Plan::new(
        &spec.reconcile,
        setup.create.is_some(),
        baseline_known,
        &diffs,
    );
    plan.report_counts(rev);
    let too_big = plan.check_size(rev);
    guard_plan(&plan, &cohort, source.empty, ctx, rev);
    write_plan_lists(&plan, pipeline, ctx, rev).await?;

    if !ctx.mode.applies() {
        rev.outcome = "planned".into();
        return Ok(());
    }
    refuse_to_apply(&plan, too_big, rev)?;
    if plan.chunks.is_empty() {
        rev.outcome = "in_sync".into();
        return Ok(());
    }
    check_first_upload(&plan, setup, &cohort, pipeline, spec).await?;
    let mut journal = journal_plan(&plan, setup, &cohort, fingerprint, spec, ctx, rev).await?;
    let skipped = apply_journal(
        &mut journal,
        setup,
        pipeline,
        spec,
        ctx,
        Some(&retried),
        rev,
    )
    .await?;
    after_apply(
        &plan, &diffs, &skipped, setup, &cohort, &journal, pipeline, spec, ctx, report, rev,
    )
    .await
}

/// The client, the state, and the target: an existing cohort, one this pipeline created
/// earlier, or one to create.
async fn open(
    pipeline: &Pipeline,
    spec: &ReverseSpec,
    ctx: &RunContext,
    progress: ReverseProgress,
) -> Result<Setup, Failure> {
    let mut conn = pipeline
        .connection
        .resolve()
        .map_err(|e| Failure::usage(e.to_string()))?;
    conn.options.transfer = pipeline.download.transfer_limits(ctx.time_scale);
    let client = ctx.client(conn.options, &conn.app_key).map_err(failed)?;
    let state_loc = storage::open(pipeline.state.url.as_str(), &ctx.base_dir).map_err(failed)?;
    let state = StateStore::new(state_loc, &pipeline.name);
    let created_key = state.doc_key("reverse", "created-cohort");
    let (target_key, cohort_id, create) = match &spec.target {
        Target::Existing { cohort_id } => (cohort_id.clone(), Some(cohort_id.clone()), None),
        Target::Create(c) => match state
            .read::<CreatedCohort>(&created_key)
            .await
            .map_err(failed)?
        {
            Some((done, _)) if done.name == c.name => {
                (done.cohort_id.clone(), Some(done.cohort_id), None)
            }
            _ => (format!("new-{}", sanitize(&c.name)), None, Some(c.clone())),
        },
    };
    if let Some(id) = &cohort_id {
        tracing::Span::current().record("cohort_id", id.as_str());
    }
    Ok(Setup {
        client,
        state,
        target_key,
        cohort_id,
        create,
        progress,
    })
}

/// The open journal to finish first, if there is one and it was planned from what the
/// pipeline reads now (or by a version that did not record that). An open journal whose
/// inputs changed is superseded (marked so in a run, reported in a plan) and `None` is
/// returned: the caller plans afresh.
async fn unfinished_plan(
    setup: &mut Setup,
    file: &FileRef,
    spec: &ReverseSpec,
    ctx: &RunContext,
    rev: &mut ReverseReport,
) -> Result<Option<Journal>, Failure> {
    let Some(mut journal) = Journal::load(&setup.state, &setup.target_key)
        .await
        .map_err(failed)?
        .filter(|j| j.doc.status == JournalStatus::Open)
    else {
        return Ok(None);
    };
    if spec.reconcile.mode == ReconcileMode::MirrorOwned && ctx.mode.applies() {
        owned::catch_up(&setup.state, &journal)
            .await
            .map_err(Failure::failed)?;
    }
    let Some(planned_from) = journal.doc.fingerprint.clone() else {
        return Ok(Some(journal));
    };
    let now = current_fingerprint(spec, file).await.map_err(|f| {
        Failure::failed(format!(
            "{f}; the unfinished plan of run {} ({}) is kept until the source can be checked again",
            journal.doc.planned_by,
            journal.describe()
        ))
    })?;
    let changes = planned_from.differences(&now);
    if changes.is_empty() {
        return Ok(Some(journal));
    }
    let reason = changes.join("; ");
    tracing::info!(
        "not resuming the plan of run {}: {reason}; planning afresh",
        journal.doc.planned_by
    );
    rev.superseded = Some(SupersededReport {
        planned_by: journal.doc.planned_by.clone(),
        journal: journal.describe(),
        calls_left: journal.doc.remaining(),
        reason: reason.clone(),
        marked: ctx.mode.applies(),
    });
    // A creating plan may have created the cohort already: the new plan targets it.
    if setup.create.is_some()
        && let Some(id) = created_by(&journal, &setup.client).await
    {
        if ctx.mode.applies() {
            record_created(&setup.state, &journal, &id, &ctx.run_id).await?;
        }
        setup.target_key = id.clone();
        tracing::Span::current().record("cohort_id", id.as_str());
        setup.cohort_id = Some(id.clone());
        setup.create = None;
        rev.target.cohort_id = Some(id);
        rev.target.to_create = false;
    }
    if ctx.mode.applies() {
        journal
            .end(
                JournalStatus::Superseded,
                &format!("superseded by run {}: {reason}", ctx.run_id),
            )
            .await
            .map_err(failed)?;
        crash::point("reverse.journal.superseded");
    }
    Ok(None)
}

/// The cohort an unfinished creating plan created, if its upload went out: recorded in the
/// journal, or (upload in doubt) found by name among the cohorts.
async fn created_by(journal: &Journal, client: &AmplitudeClient) -> Option<String> {
    if let Some(id) = &journal.doc.cohort_id {
        return Some(id.clone());
    }
    let upload = journal
        .doc
        .chunks
        .iter()
        .find(|c| c.op == ChunkOp::Upload && c.state == ChunkState::Sending)?;
    let name = &journal.doc.upload.as_ref()?.name;
    super::apply::created_since(client, name, upload.sent_at?).await
}

/// Remembers the cohort a `create` target made, so later runs reconcile it.
async fn record_created(
    state: &StateStore,
    journal: &Journal,
    id: &str,
    run_id: &str,
) -> Result<(), Failure> {
    let doc = CreatedCohort {
        cohort_id: id.to_string(),
        name: journal
            .doc
            .upload
            .as_ref()
            .map(|u| u.name.clone())
            .unwrap_or_default(),
        created_at: crate::clock::now(),
        run_id: run_id.to_string(),
    };
    state
        .write(&state.doc_key("reverse", "created-cohort"), &doc)
        .await
        .map_err(|e| {
            Failure::failed(format!(
                "cohort {id} was created, but recording it in the state failed: {e}"
            ))
        })
}

/// Finishes an unfinished plan (in a run), or reports it (in a plan or dry run).
async fn resume(
    mut journal: Journal,
    setup: &Setup,
    pipeline: &Pipeline,
    spec: &ReverseSpec,
    ctx: &RunContext,
    rev: &mut ReverseReport,
) -> Result<(), Failure> {
    let applied_before = journal.doc.chunks.len() - journal.doc.remaining();
    rev.journal = Some(JournalReport {
        location: journal.describe(),
        planned_by: journal.doc.planned_by.clone(),
        resumed: ctx.mode.applies(),
        chunks: journal.doc.chunks.len(),
        applied_before,
        status: "open".into(),
    });
    rev.counts = Some(journal_counts(&journal.doc));
    if !ctx.mode.applies() {
        rev.outcome = "resume_pending".into();
        rev.baseline = Some(BaselineReport::none(format!(
            "run {} did not finish its plan ({}): `run` sends its {} remaining calls first, then plans afresh on the next run",
            journal.doc.planned_by,
            journal.doc.plan_summary,
            journal.doc.remaining()
        )));
        return Ok(());
    }
    tracing::info!(
        "resuming the plan of run {}: {} of {} calls left",
        journal.doc.planned_by,
        journal.doc.remaining(),
        journal.doc.chunks.len()
    );
    apply_journal(&mut journal, setup, pipeline, spec, ctx, None, rev)
        .await
        .map(|_| ())
}

/// What a plan is made from now: the source object (`head`) and the settings that shape
/// the chunks.
async fn current_fingerprint(
    spec: &ReverseSpec,
    file: &FileRef,
) -> Result<PlanFingerprint, Failure> {
    let meta = file
        .head()
        .await
        .map_err(|e| Failure::failed(format!("cannot read the source {}: {e}", file.label())))?;
    let rc = &spec.reconcile;
    Ok(PlanFingerprint {
        source_url: spec.source.url.as_str().to_string(),
        source_size: meta.size,
        source_last_modified: meta.last_modified,
        source_e_tag: meta.e_tag,
        mode: guard::mode_name(rc.mode).to_string(),
        chunk_size: rc.chunk_size.clamp(1, MAX_CHUNK_SIZE),
        id_kind: spec.source.id_kind,
        id_column: spec.source.id_column.clone(),
        target: match &spec.target {
            Target::Existing { cohort_id } => format!("cohort {cohort_id}"),
            Target::Create(c) => format!(
                "create {:?} (owner {}, published {})",
                c.name, c.owner, c.published
            ),
        },
    })
}

/// The source's distinct ids and what reading them counted.
struct SourceIds {
    ids: IdCollector,
    stats: ReadStats,
    empty: bool,
}

async fn read_source(file: &FileRef, spec: &ReverseSpec) -> Result<SourceIds, Failure> {
    let col = ColumnSpec::new(&spec.source.id_column, spec.source.id_kind);
    let (ids, stats) = read_ids(file, spec.source.format, &col)
        .await
        .map_err(failed)?;
    let empty = ids.total() == 0;
    Ok(SourceIds { ids, stats, empty })
}

/// The cohort as it is now (`None` while it is still to be created).
async fn current_cohort(setup: &Setup, rev: &mut ReverseReport) -> Result<Option<Cohort>, Failure> {
    let cohort = match &setup.cohort_id {
        Some(id) => Some(find_cohort(&setup.client, id).await?),
        None => None,
    };
    if let Some(c) = &cohort {
        rev.target.name = Some(c.name.clone());
        rev.target.size = c.size;
    }
    Ok(cohort)
}

/// Refuses an empty source before anything is spent on a baseline.
fn refuse_empty_source(
    source: &SourceIds,
    cohort: &Option<Cohort>,
    file: &FileRef,
    spec: &ReverseSpec,
    ctx: &RunContext,
    rev: &mut ReverseReport,
) -> Result<(), Failure> {
    let rc = &spec.reconcile;
    let empties = matches!(
        rc.mode,
        ReconcileMode::Mirror | ReconcileMode::Replace | ReconcileMode::MirrorOwned
    );
    if source.empty && empties && !rc.allow_empty_source && !ctx.force && ctx.mode.applies() {
        let size = cohort_size(cohort);
        let g = guard::check(rc.mode, 0, size, true, size, rc, false);
        rev.source = Some(source_report(
            file,
            source.stats.rows,
            source.stats.blank,
            0,
            0,
        ));
        let msg = g.refusal_message();
        rev.guard = Some(g);
        rev.outcome = "refused".into();
        return Err(Failure::failed(msg));
    }
    Ok(())
}

fn cohort_size(cohort: &Option<Cohort>) -> u64 {
    cohort.as_ref().and_then(|c| c.size).unwrap_or(0).max(0) as u64
}

/// The cohort's membership (`None` when unknown: no free baseline in a plan, or no cohort
/// yet), with the quota it spent added to the report.
async fn get_baseline(
    setup: &Setup,
    cohort: &Option<Cohort>,
    pipeline: &Pipeline,
    spec: &ReverseSpec,
    ctx: &RunContext,
    report: &mut PipelineReport,
    rev: &mut ReverseReport,
) -> Result<Option<IdCollector>, Failure> {
    let rc = &spec.reconcile;
    let base = match cohort {
        Some(c) => {
            let derived = derived_check(setup, c, spec).await;
            let input = BaselineInput {
                client: &setup.client,
                state: &setup.state,
                cohort: c,
                reconcile: rc,
                poll: scaled_poll(pipeline.download.poll_settings(), ctx.time_scale),
                kind: spec.source.id_kind,
                mode: ctx.mode,
                base_dir: &ctx.base_dir,
                request_validity: request_validity(ctx.time_scale),
                free_only: rc.mode == ReconcileMode::Replace,
                ledger: &Ledger::new(
                    setup.state.location().clone(),
                    pipeline.connection.app_id,
                    setup.client.api_key(),
                ),
                pipeline: &pipeline.name,
                run_id: &ctx.run_id,
                derived: &derived,
            };
            baseline::acquire(&input).await?
        }
        None => baseline::Baseline {
            ids: None,
            report: BaselineReport::none(
                "the cohort does not exist yet: every source id is uploaded",
            ),
            spent: None,
        },
    };
    if let Some(spent) = base.spent.clone() {
        report.quota_spent += 1;
        report.requests.push(spent);
    }
    rev.baseline = Some(base.report);
    Ok(base.ids)
}

/// Whether the membership the last apply left can stand in for a download (a state that
/// cannot be read only means it cannot: the run falls back to the other baselines).
async fn derived_check(setup: &Setup, cohort: &Cohort, spec: &ReverseSpec) -> derived::Check {
    let journal = match Journal::load(&setup.state, &setup.target_key).await {
        Ok(j) => j,
        Err(e) => return derived::Check::Stale(format!("the journal cannot be read: {e}")),
    };
    let doc = journal.as_ref().map(|j| &j.doc);
    match derived::check(&setup.state, cohort, spec.source.id_kind, doc).await {
        Ok(c) => c,
        Err(e) => derived::Check::Stale(format!("it cannot be read: {e}")),
    }
}

/// The diff against the baseline, and (when the baseline is not empty) against nothing:
/// every distinct source id, which an upload sends. The baseline is kept: the membership
/// an apply leaves is derived from it.
struct Diffs {
    d: Diff,
    full: Option<Diff>,
    base: IdCollector,
}

async fn diff_source(source: IdCollector, base_ids: IdCollector) -> Result<Diffs, Failure> {
    tokio::task::spawn_blocking(move || -> Result<Diffs, Failure> {
        let d = diff(&source, &base_ids, DIFF_THREADS).map_err(failed)?;
        // Replace uploads every distinct source id, whatever the baseline holds.
        let full = if base_ids.total() > 0 {
            Some(diff(&source, &IdCollector::new(), DIFF_THREADS).map_err(failed)?)
        } else {
            None
        };
        Ok(Diffs {
            d,
            full,
            base: base_ids,
        })
    })
    .await
    .map_err(|e| Failure::failed(format!("diff task failed: {e}")))?
}

/// What the plan sends, cut into chunks.
struct Plan<'a> {
    rc: &'a Reconcile,
    mode: ReconcileMode,
    d: &'a Diff,
    /// Every distinct source id (what an upload sends).
    all_source: &'a IdList,
    creating: bool,
    uploading: bool,
    baseline_known: bool,
    adds: bool,
    removes: bool,
    /// (operation, list, range of the list): the ids are turned into strings one chunk at
    /// a time when the journal is written.
    chunks: Vec<(ChunkOp, &'a IdList, Range<usize>)>,
}

impl<'a> Plan<'a> {
    fn new(rc: &'a Reconcile, creating: bool, baseline_known: bool, diffs: &'a Diffs) -> Self {
        let d = &diffs.d;
        let uploading = creating || rc.mode == ReconcileMode::Replace;
        let all_source = diffs.full.as_ref().map_or(&d.add, |f| &f.add);
        let chunk_size = rc.chunk_size.clamp(1, MAX_CHUNK_SIZE);
        let (adds, removes) = match rc.mode {
            _ if creating => (true, false),
            ReconcileMode::Mirror | ReconcileMode::MirrorOwned => (true, true),
            ReconcileMode::AddOnly => (true, false),
            ReconcileMode::RemoveOnly => (false, true),
            ReconcileMode::Replace => (false, false),
        };
        let mut chunks = Vec::new();
        if baseline_known || creating || uploading {
            if uploading {
                let n = all_source.len();
                if n > 0 {
                    chunks.push((ChunkOp::Upload, all_source, 0..chunk_size.min(n)));
                    let mut at = chunk_size.min(n);
                    while at < n {
                        let end = (at + chunk_size).min(n);
                        chunks.push((ChunkOp::Add, all_source, at..end));
                        at = end;
                    }
                }
            } else {
                for (wanted, op, list) in [
                    (adds, ChunkOp::Add, &d.add),
                    (removes, ChunkOp::Remove, &d.remove),
                ] {
                    if !wanted {
                        continue;
                    }
                    let mut at = 0;
                    while at < list.len() {
                        let end = (at + chunk_size).min(list.len());
                        chunks.push((op, list, at..end));
                        at = end;
                    }
                }
            }
        }
        Plan {
            rc,
            mode: rc.mode,
            d,
            all_source,
            creating,
            uploading,
            baseline_known,
            adds,
            removes,
            chunks,
        }
    }

    fn upload_ids(&self) -> u64 {
        if self.uploading {
            self.all_source.len() as u64
        } else {
            0
        }
    }

    /// The counts and samples, when known.
    fn report_counts(&self, rev: &mut ReverseReport) {
        let d = self.d;
        if !(self.baseline_known || self.uploading) {
            return;
        }
        rev.counts = Some(Counts {
            add: if self.baseline_known || self.creating {
                d.add.len() as u64
            } else {
                0
            },
            remove: if self.baseline_known {
                d.remove.len() as u64
            } else {
                0
            },
            unchanged: d.counts.unchanged,
            upload: self.upload_ids(),
        });
        if self.baseline_known || self.creating {
            rev.samples.add = d.add.sample(SAMPLE);
        }
        rev.samples.remove = d.remove.sample(SAMPLE);
    }

    /// Amplitude cohorts hold at most 2,000,000 users: the size the cohort would have when
    /// it is over that (warned about here, refused before applying).
    fn check_size(&self, rev: &mut ReverseReport) -> Option<u64> {
        let d = self.d;
        let resulting = match self.mode {
            _ if self.uploading => Some(self.all_source.len() as u64),
            ReconcileMode::Mirror | ReconcileMode::MirrorOwned if self.baseline_known => {
                Some(d.counts.baseline_distinct + d.add.len() as u64 - d.remove.len() as u64)
            }
            ReconcileMode::AddOnly if self.baseline_known => {
                Some(d.counts.baseline_distinct + d.add.len() as u64)
            }
            _ => None,
        };
        let too_big = resulting.filter(|n| *n > MAX_COHORT_MEMBERS);
        if let Some(n) = too_big {
            rev.warnings.push(format!(
                "the cohort would have {n} members; Amplitude cohorts hold at most {MAX_COHORT_MEMBERS}"
            ));
        }
        too_big
    }
}

/// The removal guard's decision (reported; a run refuses on it in [`refuse_to_apply`]).
fn guard_plan(
    plan: &Plan<'_>,
    cohort: &Option<Cohort>,
    source_empty: bool,
    ctx: &RunContext,
    rev: &mut ReverseReport,
) {
    let d = plan.d;
    let cohort_size = if plan.baseline_known {
        d.counts.baseline_distinct
    } else {
        cohort_size(cohort)
    };
    let (removals, estimated) = match plan.mode {
        _ if plan.creating => (0, false),
        ReconcileMode::AddOnly => (0, false),
        ReconcileMode::Replace if !plan.baseline_known => {
            (cohort_size.saturating_sub(d.counts.source_distinct), true)
        }
        _ => (d.remove.len() as u64, !plan.baseline_known),
    };
    if plan.baseline_known || plan.uploading || source_empty {
        rev.guard = Some(guard::check(
            plan.mode,
            d.counts.source_distinct,
            removals,
            estimated,
            cohort_size,
            plan.rc,
            ctx.force,
        ));
    }
}

/// The full lists of what the plan adds, removes and uploads.
async fn write_plan_lists(
    plan: &Plan<'_>,
    pipeline: &Pipeline,
    ctx: &RunContext,
    rev: &mut ReverseReport,
) -> Result<(), Failure> {
    let d = plan.d;
    let mut lists: Vec<(&str, &IdList)> = Vec::new();
    if plan.baseline_known || plan.creating {
        if plan.adds || plan.uploading {
            lists.push(("add", &d.add));
        }
        if plan.removes || (plan.uploading && plan.baseline_known) {
            lists.push(("remove", &d.remove));
        }
    }
    if plan.uploading && !plan.creating {
        lists.push(("upload", plan.all_source));
    }
    if lists.is_empty() {
        return Ok(());
    }
    let written = write_lists(
        &plan.rc.lists_dir,
        &ctx.base_dir,
        &pipeline.name,
        &ctx.run_id,
        &lists,
    )
    .await
    .map_err(Failure::failed)?;
    rev.lists.extend(written);
    Ok(())
}

/// What stops a run from applying the plan: the guard, the cohort size limit, an upload
/// without ids.
fn refuse_to_apply(
    plan: &Plan<'_>,
    too_big: Option<u64>,
    rev: &mut ReverseReport,
) -> Result<(), Failure> {
    if let Some(g) = &rev.guard
        && g.refused()
    {
        rev.outcome = "refused".into();
        return Err(Failure::failed(g.refusal_message()));
    }
    if let Some(n) = too_big {
        return Err(Failure::failed(format!(
            "refusing to apply: the cohort would have {n} members, and Amplitude cohorts hold at most {MAX_COHORT_MEMBERS}"
        )));
    }
    if plan.uploading && plan.chunks.is_empty() {
        // An upload needs ids: Amplitude has no way to upload an empty list.
        return Err(Failure::failed(if plan.creating {
            "the source has no ids: there is nothing to create the cohort from".to_string()
        } else {
            "the source has no ids and replace cannot upload an empty list; use mode = \"mirror\" (with allow_empty_source or --force) to remove every member".to_string()
        }));
    }
    Ok(())
}

/// Writes the plan to the journal (every chunk's ids, then the head) before any call.
/// Before anything is created or replaced: Amplitude refuses an upload none of whose ids
/// it knows (and a create needs one known id), so the first upload's ids are validated
/// with `skip_save` (nothing is saved). A first chunk with no known id ends the run with a
/// clear error while nothing is half-done.
async fn check_first_upload(
    plan: &Plan<'_>,
    setup: &Setup,
    cohort: &Option<Cohort>,
    pipeline: &Pipeline,
    spec: &ReverseSpec,
) -> Result<(), Failure> {
    let Some((ChunkOp::Upload, list, range)) = plan.chunks.first() else {
        return Ok(());
    };
    let Some(app_id) = pipeline.connection.app_id else {
        return Err(Failure::usage(
            "uploading needs connection.app_id (the Amplitude project id)",
        ));
    };
    let (name, owner, published) = match (&setup.create, cohort) {
        (Some(c), _) => (c.name.clone(), c.owner.clone(), c.published),
        (None, Some(c)) => (
            c.name.clone(),
            c.owners.first().cloned().unwrap_or_default(),
            c.published,
        ),
        (None, None) => return Ok(()),
    };
    let ids = list.strings(range.clone());
    let sample: Vec<String> = ids.iter().take(3).cloned().collect();
    let count = ids.len();
    let body = UploadRequest {
        name,
        app_id: app_id as i64,
        id_type: spec.source.id_kind.upload_id_type(),
        cg: None,
        ids,
        owner,
        published,
        skip_save: Some(true),
        skip_invalid_ids: Some(true),
        existing_cohort_id: setup.cohort_id.clone(),
    };
    let none_known = || {
        Failure::failed(format!(
            "none of the {count} ids of the first upload is known to Amplitude (e.g. {}): Amplitude refuses such an upload, so nothing was created or replaced; check source.id_column and source.id_kind ({})",
            sample.join(", "),
            match spec.source.id_kind {
                crate::amplitude::types::IdKind::UserId => "user_id",
                crate::amplitude::types::IdKind::AmplitudeId => "amplitude_id",
            }
        ))
    };
    match setup.client.upload(&body).await {
        Ok(r) if r.metadata.as_ref().and_then(|m| m.matched) == Some(0) => Err(none_known()),
        Ok(_) => Ok(()),
        Err(ApiError::InvalidRequest { status: 400, .. }) => Err(none_known()),
        Err(e) => Err(Failure::failed(format!(
            "validating the first upload (skip_save, nothing saved): {e}"
        ))),
    }
}

async fn journal_plan(
    plan: &Plan<'_>,
    setup: &Setup,
    cohort: &Option<Cohort>,
    fingerprint: Option<PlanFingerprint>,
    spec: &ReverseSpec,
    ctx: &RunContext,
    rev: &mut ReverseReport,
) -> Result<Journal, Failure> {
    let d = plan.d;
    let upload = if let Some(c) = &setup.create {
        Some(UploadMeta {
            name: c.name.clone(),
            owner: c.owner.clone(),
            published: c.published,
        })
    } else if plan.uploading {
        cohort.as_ref().map(|c| UploadMeta {
            name: c.name.clone(),
            owner: c.owners.first().cloned().unwrap_or_default(),
            published: c.published,
        })
    } else {
        None
    };
    let plan_summary = format!(
        "{:?}: +{} / -{} / upload {} against {}",
        plan.mode,
        d.add.len(),
        d.remove.len(),
        plan.upload_ids(),
        rev.baseline
            .as_ref()
            .map_or("no baseline".to_string(), |b| b.reason.clone())
    );
    let doc = JournalDoc {
        version: 1,
        target: setup.target_key.clone(),
        cohort_id: setup.cohort_id.clone(),
        upload,
        id_kind: spec.source.id_kind,
        planned_by: ctx.run_id.clone(),
        planned_at: crate::clock::now(),
        plan_summary,
        status: JournalStatus::Open,
        closed_at: None,
        ended_reason: None,
        fingerprint,
        chunks: plan
            .chunks
            .iter()
            .enumerate()
            .map(|(index, (op, _, range))| ChunkEntry::pending(index, *op, range.len()))
            .collect(),
    };
    let previous = Journal::load(&setup.state, &setup.target_key)
        .await
        .map_err(failed)?;
    let chunk_ids = plan
        .chunks
        .iter()
        .map(|(_, list, range)| list.strings(range.clone()));
    let journal = Journal::create(&setup.state, doc, chunk_ids, previous)
        .await
        .map_err(failed)?;
    crash::point("reverse.journal.created");
    rev.journal = Some(JournalReport {
        location: journal.describe(),
        planned_by: ctx.run_id.clone(),
        resumed: false,
        chunks: journal.doc.chunks.len(),
        applied_before: 0,
        status: "open".into(),
    });
    Ok(journal)
}

/// Sends the journal's remaining calls and reports them; records what Amplitude rejected
/// (and which of the `retried` ids it now took) in the rejected-ids ledger; answers the ids
/// Amplitude skipped.
#[allow(clippy::too_many_arguments)]
async fn apply_journal(
    journal: &mut Journal,
    setup: &Setup,
    pipeline: &Pipeline,
    spec: &ReverseSpec,
    ctx: &RunContext,
    retried: Option<&HashSet<String>>,
    rev: &mut ReverseReport,
) -> Result<Vec<String>, Failure> {
    let settings = ApplySettings {
        client: &setup.client,
        app_id: pipeline.connection.app_id,
        skip_invalid_ids: spec.reconcile.skip_invalid_ids,
        run_id: &ctx.run_id,
        stop: &ctx.stop,
        record_owned: spec.reconcile.mode == ReconcileMode::MirrorOwned,
        progress: Some(&setup.progress),
    };
    let outcome = apply(journal, &settings).await;
    let closed = journal.doc.status == JournalStatus::Closed;
    update_rejected(
        &outcome,
        retried.filter(|_| closed),
        setup,
        pipeline,
        spec,
        ctx,
        rev,
    )
    .await;
    rev.calls = outcome.calls;
    rev.calls_sent = outcome.sent;
    rev.calls_resent_in_doubt = outcome.resent_in_doubt;
    rev.skipped_ids = SkippedReport {
        count: outcome.skipped_total,
        sample: outcome.skipped_ids.iter().take(SAMPLE).cloned().collect(),
    };
    rev.invalid_ids_sample = outcome.invalid_ids_sample;
    if let Some(j) = &mut rev.journal {
        j.status = journal.doc.status.as_str().into();
    }
    if let Some(id) = &journal.doc.cohort_id {
        rev.target.cohort_id = Some(id.clone());
    }
    if setup.create.is_some()
        && let Some(id) = &journal.doc.cohort_id
    {
        rev.target.created = outcome.created_cohort_id.is_some();
        record_created(&setup.state, journal, id, &ctx.run_id).await?;
    }
    if !outcome.skipped_ids.is_empty() {
        let skipped: IdList = outcome.skipped_ids.iter().collect();
        match write_lists(
            &spec.reconcile.lists_dir,
            &ctx.base_dir,
            &pipeline.name,
            &ctx.run_id,
            &[("skipped", &skipped)],
        )
        .await
        {
            Ok(w) => rev.lists.extend(w),
            Err(e) => tracing::warn!("cannot write the skipped ids: {e}"),
        }
    }
    match outcome.error {
        Some(e) if outcome.plan_failed => Err(Failure::failed(format!(
            "{e}; the plan is abandoned ({} of its calls not sent; journal {} marked failed) and the next run re-plans from the current source",
            outcome.not_sent,
            journal.describe()
        ))),
        Some(e) => Err(Failure::failed(format!(
            "{e}; the journal {} keeps the plan, the next run sends the remaining calls",
            journal.describe()
        ))),
        None => {
            rev.outcome = "applied".into();
            Ok(outcome.skipped_ids)
        }
    }
}

fn journal_counts(doc: &JournalDoc) -> Counts {
    let sum = |op: ChunkOp| {
        doc.chunks
            .iter()
            .filter(|c| c.op == op)
            .map(|c| c.ids as u64)
            .sum::<u64>()
    };
    let upload = sum(ChunkOp::Upload);
    Counts {
        add: sum(ChunkOp::Add) + upload,
        remove: sum(ChunkOp::Remove),
        unchanged: 0,
        upload: if upload > 0 {
            upload + sum(ChunkOp::Add)
        } else {
            0
        },
    }
}

fn source_report(file: &FileRef, rows: u64, blank: u64, ids: u64, duplicates: u64) -> SourceReport {
    SourceReport {
        url: file.label(),
        rows,
        blank,
        ids,
        duplicates,
    }
}

async fn find_cohort(client: &AmplitudeClient, id: &str) -> Result<Cohort, Failure> {
    let list = client
        .list_cohorts(false)
        .await
        .map_err(|e| Failure::failed(format!("listing cohorts: {e}")))?;
    list.cohorts
        .into_iter()
        .find(|c| c.id == id)
        .ok_or_else(|| {
            Failure::failed(format!(
                "cohort {id} is not in the project's cohort list; check target.cohort_id"
            ))
        })
}

/// Poll intervals shrink with the time scale (tests against a fast emulator).
fn scaled_poll(p: PollSettings, time_scale: f64) -> PollSettings {
    let f = time_scale.min(1.0);
    PollSettings {
        initial: p.initial.mul_f64(f),
        max_interval: p.max_interval.mul_f64(f),
        max_wait: p.max_wait,
    }
}

fn request_validity(time_scale: f64) -> chrono::Duration {
    let secs = (REQUEST_VALIDITY_DAYS * 86_400) as f64 * time_scale;
    chrono::Duration::milliseconds((secs * 1000.0) as i64)
}

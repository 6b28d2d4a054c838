//! One reverse pipeline, end to end: finish an interrupted plan if the journal has one;
//! otherwise read the source, get the baseline, diff, guard, write the lists, and (in a
//! run) journal the chunked plan and apply it. Everything that happened goes into the
//! pipeline report.

use serde::{Deserialize, Serialize};

use super::apply::{ApplySettings, apply};
use super::baseline::{self, BaselineInput, BaselineReport};
use super::bytes::FileRef;
use super::diff::{Diff, diff};
use super::failure::Failure;
use super::guard;
use super::idset::IdCollector;
use super::journal::{
    ChunkEntry, ChunkOp, ChunkState, Journal, JournalDoc, JournalStatus, UploadMeta,
};
use super::lists::write_lists;
use super::report::{
    Counts, JournalReport, ReverseReport, SAMPLE, SkippedReport, SourceReport, TargetReport,
};
use super::source::{ColumnSpec, read_ids};
use crate::amplitude::AmplitudeClient;
use crate::amplitude::types::Cohort;
use crate::config::{MAX_CHUNK_SIZE, Pipeline, PipelineSpec, ReconcileMode, ReverseSpec, Target};
use crate::exit;
use crate::runner::context::RunContext;
use crate::runner::layout::sanitize;
use crate::runner::poll::PollSettings;
use crate::runner::report::PipelineReport;
use crate::state::{REQUEST_VALIDITY_DAYS, StateStore};
use crate::storage;

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
    let mut rev = ReverseReport::new(ctx.mode.as_str(), spec.reconcile.mode, spec.source.id_kind);
    let result = run(pipeline, spec, ctx, &mut report, &mut rev).await;
    if let Err(f) = &result {
        report.error = Some(f.message.clone());
        report.exit_code = f.code;
        if rev.outcome != "refused" {
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
        tracing::debug!(pipeline = %pipeline.name, "{line}");
    }
    let counts = rev
        .counts
        .as_ref()
        .map_or("counts unknown".to_string(), |c| {
            format!("+{} / -{}", c.add, c.remove)
        });
    tracing::info!(
        pipeline = %pipeline.name,
        "reverse {}: {counts}, {} calls sent, outcome {}",
        rev.mode,
        rev.calls_sent,
        rev.outcome
    );
    report.reverse = serde_json::to_value(&rev).ok();
    report
}

fn failed(e: impl std::fmt::Display) -> Failure {
    Failure::failed(e.to_string())
}

async fn run(
    pipeline: &Pipeline,
    spec: &ReverseSpec,
    ctx: &RunContext,
    report: &mut PipelineReport,
    rev: &mut ReverseReport,
) -> Result<(), Failure> {
    let rc = &spec.reconcile;
    let kind = spec.source.id_kind;
    let conn = pipeline
        .connection
        .resolve()
        .map_err(|e| Failure::usage(e.to_string()))?;
    let client = ctx.client(conn.options, &conn.app_key).map_err(failed)?;
    let state_loc = storage::open(pipeline.state.url.as_str(), &ctx.base_dir).map_err(failed)?;
    let state = StateStore::new(state_loc, &pipeline.name);

    // The target: an existing cohort, one this pipeline created earlier, or one to create.
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
    rev.target = TargetReport {
        cohort_id: cohort_id.clone(),
        name: create.as_ref().map(|c| c.name.clone()),
        size: None,
        to_create: create.is_some(),
        created: false,
    };

    // An interrupted plan is finished before anything new is planned.
    let previous = Journal::load(&state, &target_key).await.map_err(failed)?;
    if let Some(mut journal) = previous.filter(|j| j.doc.status == JournalStatus::Open) {
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
        return apply_journal(
            &mut journal,
            pipeline,
            spec,
            ctx,
            &client,
            rev,
            create.is_some(),
            &state,
        )
        .await;
    }

    // The source.
    let file = FileRef::parse(spec.source.url.as_str(), &ctx.base_dir).map_err(Failure::failed)?;
    let col = ColumnSpec::new(&spec.source.id_column, kind);
    let (source, stats) = read_ids(&file, spec.source.format, &col)
        .await
        .map_err(failed)?;
    let source_empty = source.total() == 0;

    // The cohort as it is now.
    let cohort = match &cohort_id {
        Some(id) => Some(find_cohort(&client, id).await?),
        None => None,
    };
    if let Some(c) = &cohort {
        rev.target.name = Some(c.name.clone());
        rev.target.size = c.size;
    }

    // Refuse an empty source before spending anything on a baseline.
    let empties = matches!(rc.mode, ReconcileMode::Mirror | ReconcileMode::Replace);
    if source_empty && empties && !rc.allow_empty_source && !ctx.force && ctx.mode.applies() {
        let size = cohort.as_ref().and_then(|c| c.size).unwrap_or(0).max(0) as u64;
        let g = guard::check(rc.mode, 0, size, true, size, rc, false);
        rev.source = Some(source_report(&file, stats.rows, stats.blank, 0, 0));
        let msg = g.refusal_message();
        rev.guard = Some(g);
        rev.outcome = "refused".into();
        return Err(Failure::failed(msg));
    }

    // The baseline.
    let base = match &cohort {
        Some(c) => {
            let input = BaselineInput {
                client: &client,
                state: &state,
                cohort: c,
                reconcile: rc,
                poll: scaled_poll(pipeline.download.poll_settings(), ctx.time_scale),
                kind,
                mode: ctx.mode,
                base_dir: &ctx.base_dir,
                request_validity: request_validity(ctx.time_scale),
                free_only: rc.mode == ReconcileMode::Replace,
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
    let baseline_known = base.ids.is_some();
    rev.baseline = Some(base.report);

    // The diff (against nothing when there is no baseline: that still dedupes the source).
    let base_ids = base.ids.unwrap_or_default();
    let (d, full) =
        tokio::task::spawn_blocking(move || -> Result<(Diff, Option<Diff>), Failure> {
            let d = diff(&source, &base_ids, DIFF_THREADS).map_err(failed)?;
            // Replace uploads every distinct source id, whatever the baseline holds.
            let full = if base_ids.total() > 0 {
                Some(diff(&source, &IdCollector::new(), DIFF_THREADS).map_err(failed)?)
            } else {
                None
            };
            Ok((d, full))
        })
        .await
        .map_err(|e| Failure::failed(format!("diff task failed: {e}")))??;
    rev.source = Some(source_report(
        &file,
        stats.rows,
        stats.blank,
        d.counts.source_distinct,
        d.counts.source_duplicates,
    ));

    // What the plan sends.
    let uploading = create.is_some() || rc.mode == ReconcileMode::Replace;
    let all_source = full.as_ref().map_or(&d.add, |f| &f.add);
    let chunk_size = rc.chunk_size.clamp(1, MAX_CHUNK_SIZE);
    let (adds, removes) = match rc.mode {
        _ if create.is_some() => (true, false),
        ReconcileMode::Mirror => (true, true),
        ReconcileMode::AddOnly => (true, false),
        ReconcileMode::RemoveOnly => (false, true),
        ReconcileMode::Replace => (false, false),
    };
    // (operation, list, range of the list): the ids are turned into strings one chunk at a
    // time when the journal is written.
    let mut chunks: Vec<(ChunkOp, &super::idset::IdList, std::ops::Range<usize>)> = Vec::new();
    if baseline_known || create.is_some() || uploading {
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
    let upload_ids = if uploading {
        all_source.len() as u64
    } else {
        0
    };
    if baseline_known || uploading {
        rev.counts = Some(Counts {
            add: if baseline_known || create.is_some() {
                d.add.len() as u64
            } else {
                0
            },
            remove: if baseline_known {
                d.remove.len() as u64
            } else {
                0
            },
            unchanged: d.counts.unchanged,
            upload: upload_ids,
        });
        if baseline_known || create.is_some() {
            rev.samples.add = d.add.sample(SAMPLE);
        }
        rev.samples.remove = d.remove.sample(SAMPLE);
    }

    // Amplitude cohorts hold at most 2,000,000 users.
    let resulting = match rc.mode {
        _ if uploading => Some(all_source.len() as u64),
        ReconcileMode::Mirror if baseline_known => {
            Some(d.counts.baseline_distinct + d.add.len() as u64 - d.remove.len() as u64)
        }
        ReconcileMode::AddOnly if baseline_known => {
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

    // The guard.
    let cohort_size = if baseline_known {
        d.counts.baseline_distinct
    } else {
        cohort.as_ref().and_then(|c| c.size).unwrap_or(0).max(0) as u64
    };
    let (removals, estimated) = match rc.mode {
        _ if create.is_some() => (0, false),
        ReconcileMode::AddOnly => (0, false),
        ReconcileMode::Replace if !baseline_known => {
            (cohort_size.saturating_sub(d.counts.source_distinct), true)
        }
        _ => (d.remove.len() as u64, !baseline_known),
    };
    if baseline_known || uploading || source_empty {
        rev.guard = Some(guard::check(
            rc.mode,
            d.counts.source_distinct,
            removals,
            estimated,
            cohort_size,
            rc,
            ctx.force,
        ));
    }

    // The full lists.
    let mut lists: Vec<(&str, &super::idset::IdList)> = Vec::new();
    if baseline_known || create.is_some() {
        if adds || uploading {
            lists.push(("add", &d.add));
        }
        if removes || (uploading && baseline_known) {
            lists.push(("remove", &d.remove));
        }
    }
    if uploading && create.is_none() {
        lists.push(("upload", all_source));
    }
    if !lists.is_empty() {
        let written = write_lists(
            &rc.lists_dir,
            &ctx.base_dir,
            &pipeline.name,
            &ctx.run_id,
            &lists,
        )
        .await
        .map_err(Failure::failed)?;
        rev.lists.extend(written);
    }

    if !ctx.mode.applies() {
        rev.outcome = "planned".into();
        return Ok(());
    }
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
    if uploading && chunks.is_empty() {
        // An upload needs ids: Amplitude has no way to upload an empty list.
        return Err(Failure::failed(if create.is_some() {
            "the source has no ids: there is nothing to create the cohort from".to_string()
        } else {
            "the source has no ids and replace cannot upload an empty list; use mode = \"mirror\" (with allow_empty_source or --force) to remove every member".to_string()
        }));
    }
    if chunks.is_empty() {
        rev.outcome = "in_sync".into();
        return Ok(());
    }

    // Journal the plan, then apply it.
    let upload = if let Some(c) = &create {
        Some(UploadMeta {
            name: c.name.clone(),
            owner: c.owner.clone(),
            published: c.published,
        })
    } else if uploading {
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
        rc.mode,
        d.add.len(),
        d.remove.len(),
        upload_ids,
        rev.baseline
            .as_ref()
            .map_or("no baseline".to_string(), |b| b.reason.clone())
    );
    let doc = JournalDoc {
        version: 1,
        target: target_key.clone(),
        cohort_id: cohort_id.clone(),
        upload,
        id_kind: kind,
        planned_by: ctx.run_id.clone(),
        planned_at: chrono::Utc::now(),
        plan_summary,
        status: JournalStatus::Open,
        closed_at: None,
        chunks: chunks
            .iter()
            .enumerate()
            .map(|(index, (op, _, range))| ChunkEntry {
                index,
                op: *op,
                ids: range.len(),
                state: ChunkState::Pending,
                attempts: 0,
                sent_at: None,
                applied_at: None,
                applied_by: None,
                skipped: 0,
                error: None,
            })
            .collect(),
    };
    let previous = Journal::load(&state, &target_key).await.map_err(failed)?;
    let chunk_ids = chunks
        .iter()
        .map(|(_, list, range)| list.strings(range.clone()));
    let mut journal = Journal::create(&state, doc, chunk_ids, previous)
        .await
        .map_err(failed)?;
    rev.journal = Some(JournalReport {
        location: journal.describe(),
        planned_by: ctx.run_id.clone(),
        resumed: false,
        chunks: journal.doc.chunks.len(),
        applied_before: 0,
        status: "open".into(),
    });
    apply_journal(
        &mut journal,
        pipeline,
        spec,
        ctx,
        &client,
        rev,
        create.is_some(),
        &state,
    )
    .await
}

/// Sends the journal's remaining calls and reports them.
#[allow(clippy::too_many_arguments)]
async fn apply_journal(
    journal: &mut Journal,
    pipeline: &Pipeline,
    spec: &ReverseSpec,
    ctx: &RunContext,
    client: &AmplitudeClient,
    rev: &mut ReverseReport,
    creating: bool,
    state: &StateStore,
) -> Result<(), Failure> {
    let settings = ApplySettings {
        client,
        app_id: pipeline.connection.app_id,
        skip_invalid_ids: spec.reconcile.skip_invalid_ids,
        run_id: &ctx.run_id,
    };
    let outcome = apply(journal, &settings).await;
    rev.calls = outcome.calls;
    rev.calls_sent = outcome.sent;
    rev.skipped_ids = SkippedReport {
        count: outcome.skipped_total,
        sample: outcome.skipped_ids.iter().take(SAMPLE).cloned().collect(),
    };
    rev.invalid_ids_sample = outcome.invalid_ids_sample;
    if let Some(j) = &mut rev.journal {
        j.status = match journal.doc.status {
            JournalStatus::Open => "open".into(),
            JournalStatus::Closed => "closed".into(),
        };
    }
    if let Some(id) = &journal.doc.cohort_id {
        rev.target.cohort_id = Some(id.clone());
    }
    if creating && let Some(id) = &journal.doc.cohort_id {
        rev.target.created = outcome.created_cohort_id.is_some();
        let doc = CreatedCohort {
            cohort_id: id.clone(),
            name: journal
                .doc
                .upload
                .as_ref()
                .map(|u| u.name.clone())
                .unwrap_or_default(),
            created_at: chrono::Utc::now(),
            run_id: ctx.run_id.clone(),
        };
        state
            .write(&state.doc_key("reverse", "created-cohort"), &doc)
            .await
            .map_err(|e| {
                Failure::failed(format!(
                    "cohort {id} was created, but recording it in the state failed: {e}"
                ))
            })?;
    }
    if !outcome.skipped_ids.is_empty() {
        let skipped: super::idset::IdList = outcome.skipped_ids.iter().collect();
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
        Some(e) => Err(Failure::failed(format!(
            "{e}; the journal {} keeps the plan, the next run sends the remaining calls",
            journal.describe()
        ))),
        None => {
            rev.outcome = "applied".into();
            Ok(())
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

//! The steps of a reverse run that read and write the pipeline's ledgers: the id kind
//! the state was made with, the rejected-ids ledger (ids held back, ids recorded), and the
//! ownership ledger of `mirror_owned` (removals kept to the ids the pipeline added).

use super::*;

/// The diff of the source against the baseline, less what the pipeline's ledgers hold
/// back: ids Amplitude rejected before (not added again), and in `mirror_owned` members
/// the pipeline did not add (not removed). Answers the rejected ids sent again.
#[allow(clippy::too_many_arguments)]
pub(super) async fn diff_with_ledgers(
    source: IdCollector,
    base: Option<IdCollector>,
    setup: &Setup,
    pipeline: &Pipeline,
    spec: &ReverseSpec,
    ctx: &RunContext,
    rev: &mut ReverseReport,
) -> Result<(Diffs, HashSet<String>), Failure> {
    let baseline_known = base.is_some();
    let mut diffs = diff_source(source, base.unwrap_or_default()).await?;
    let retried = hold_back_rejected(&mut diffs, setup, pipeline, spec, ctx, rev).await?;
    if spec.reconcile.mode == ReconcileMode::MirrorOwned && baseline_known {
        remove_only_owned(&mut diffs, setup, spec, ctx, rev).await?;
    }
    Ok((diffs, retried))
}

/// Refuses a changed `source.id_kind` unless `--force` (the pipeline's ledgers hold ids of
/// the kind it was made with), and records the kind in a run.
pub(super) async fn check_id_kind(
    setup: &Setup,
    spec: &ReverseSpec,
    ctx: &RunContext,
    rev: &mut ReverseReport,
) -> Result<(), Failure> {
    match rejected::check_kind(
        &setup.state,
        spec.source.id_kind,
        ctx.force,
        ctx.mode.applies(),
        &ctx.run_id,
    )
    .await
    {
        Ok(None) => Ok(()),
        Ok(Some(note)) => {
            rev.warnings.push(note);
            Ok(())
        }
        Err(message) => {
            rev.outcome = "refused".into();
            Err(Failure::failed(message))
        }
    }
}

/// Takes out of the adds the ids Amplitude rejected for this pipeline before (unless
/// `--retry-rejected`, or their entry is older than `retry_rejected_after_days`), reports
/// and lists them; answers the rejected ids the plan sends again.
pub(super) async fn hold_back_rejected(
    diffs: &mut Diffs,
    setup: &Setup,
    pipeline: &Pipeline,
    spec: &ReverseSpec,
    ctx: &RunContext,
    rev: &mut ReverseReport,
) -> Result<HashSet<String>, Failure> {
    let ledger = rejected::load(&setup.state, spec.source.id_kind)
        .await
        .map_err(|e| Failure::failed(format!("the rejected-ids ledger: {e}")))?;
    if ledger.entries.is_empty() {
        return Ok(HashSet::new());
    }
    let max_age = chrono::Duration::days(i64::from(spec.reconcile.retry_rejected_after_days));
    let held = if ctx.retry_rejected {
        HashSet::new()
    } else {
        ledger.held_back(crate::clock::now(), max_age)
    };
    let mut keep = IdList::new();
    let mut held_back = IdList::new();
    let mut retried = HashSet::new();
    for id in diffs.d.add.iter_str() {
        if held.contains(id) {
            held_back.push(id.as_bytes());
        } else {
            if ledger.entries.contains_key(id) {
                retried.insert(id.to_string());
            }
            keep.push(id.as_bytes());
        }
    }
    diffs.d.add = keep;
    let mut report = RejectedReport {
        held_back: held_back.len() as u64,
        retried: retried.len() as u64,
        ledger: ledger.entries.len() as u64,
        ..RejectedReport::default()
    };
    if !held_back.is_empty() {
        match write_lists(
            &spec.reconcile.lists_dir,
            &ctx.base_dir,
            &pipeline.name,
            &ctx.run_id,
            &[("held_back", &held_back)],
        )
        .await
        {
            Ok(w) => rev.lists.extend(w),
            Err(e) => tracing::warn!("cannot write the held-back ids: {e}"),
        }
    }
    report.sample = held_back.sample(SAMPLE);
    rev.rejected = Some(report);
    Ok(retried)
}

/// Records the ids Amplitude rejected in this run (and drops the `retried` ones it took)
/// in the pipeline's ledger, and writes the ledger with the run's lists. A ledger that
/// cannot be written is a warning: the next run sends those ids once more.
pub(super) async fn update_rejected(
    outcome: &crate::reverse::apply::ApplyOutcome,
    retried: Option<&HashSet<String>>,
    setup: &Setup,
    pipeline: &Pipeline,
    spec: &ReverseSpec,
    ctx: &RunContext,
    rev: &mut ReverseReport,
) {
    let kind = spec.source.id_kind;
    let mut ledger = match rejected::load(&setup.state, kind).await {
        Ok(l) => l,
        Err(e) => {
            rev.warnings
                .push(format!("the rejected-ids ledger cannot be read: {e}"));
            return;
        }
    };
    let mut reasons = Vec::with_capacity(outcome.skipped_ids.len());
    for (op, n) in &outcome.skipped_ops {
        let why = match op {
            ChunkOp::Upload => "reported invalid by the upload",
            ChunkOp::Add => "skipped by a membership ADD",
            ChunkOp::Remove => "skipped by a membership REMOVE",
        };
        reasons.extend(std::iter::repeat_n(why, *n));
    }
    let skipped: HashSet<&str> = outcome.skipped_ids.iter().map(String::as_str).collect();
    let accepted = retried
        .into_iter()
        .flatten()
        .map(String::as_str)
        .filter(|id| !skipped.contains(id));
    let rejected = outcome.skipped_ids.iter().map(String::as_str).zip(reasons);
    let before = ledger.clone();
    ledger.update(rejected, accepted, crate::clock::now());
    let report = rev.rejected.get_or_insert_with(RejectedReport::default);
    report.recorded = outcome.skipped_ids.len() as u64;
    report.ledger = ledger.entries.len() as u64;
    if ledger == before {
        return;
    }
    if let Err(e) = rejected::save(&setup.state, &ledger).await {
        rev.warnings.push(format!(
            "the rejected-ids ledger cannot be written ({e}): the next run sends this run's rejected ids again"
        ));
        return;
    }
    crash::point("reverse.rejected.saved");
    if ledger.entries.is_empty() {
        return;
    }
    match write_file(
        &spec.reconcile.lists_dir,
        &ctx.base_dir,
        &pipeline.name,
        &ctx.run_id,
        "rejected",
        "jsonl",
        ledger.to_jsonl(),
    )
    .await
    {
        Ok(at) => {
            rev.lists.insert("rejected".into(), at);
        }
        Err(e) => tracing::warn!("cannot write the rejected-ids list: {e}"),
    }
}

/// `mirror_owned`: keeps of the removals only the ids this pipeline added (its ownership
/// ledger, folded first in a run); the other members missing from the source stay and are
/// counted in the report.
pub(super) async fn remove_only_owned(
    diffs: &mut Diffs,
    setup: &Setup,
    spec: &ReverseSpec,
    ctx: &RunContext,
    rev: &mut ReverseReport,
) -> Result<(), Failure> {
    let kind = spec.source.id_kind;
    let ledger = |e: String| Failure::failed(format!("the ownership ledger: {e}"));
    if ctx.mode.applies() {
        owned::fold(&setup.state, &setup.target_key, kind)
            .await
            .map_err(ledger)?;
    }
    let owned = owned::load(&setup.state, &setup.target_key, kind)
        .await
        .map_err(ledger)?;
    if let Some(k) = owned.other_kind {
        rev.warnings.push(format!(
            "the ownership ledger holds {k:?} ids, the pipeline now reads {kind:?}: this run owns nothing it did not add itself"
        ));
    }
    let mut mine = IdList::new();
    let mut kept = 0u64;
    for id in diffs.d.remove.iter_str() {
        if owned.ids.contains(id) {
            mine.push(id.as_bytes());
        } else {
            kept += 1;
        }
    }
    diffs.d.remove = mine;
    rev.not_owned_kept = Some(kept);
    Ok(())
}

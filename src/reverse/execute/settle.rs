//! The steps of a reverse run after its journal closed: the membership the plan left,
//! checked by one download when `verify = true`, then recorded as the next run's free
//! baseline (the derived baseline).

use super::*;

/// The membership an applied plan left, as the run knows it.
pub(super) struct Expected {
    cohort_id: String,
    ids: IdList,
    /// Members without an id of the kind (and repeated ids): in the size, not in `ids`.
    unmatched: u64,
}

impl Expected {
    fn size(&self) -> u64 {
        self.ids.len() as u64 + self.unmatched
    }
}

/// After the journal closed: the membership the plan left, checked by one download when
/// `verify = true` (drift fails the run), then recorded as the next run's free baseline
/// (see [`derived`]). A derived baseline that cannot be recorded only costs the next run a
/// download: the report says why.
#[allow(clippy::too_many_arguments)]
pub(super) async fn after_apply(
    plan: &Plan<'_>,
    diffs: &Diffs,
    skipped: &[String],
    setup: &Setup,
    cohort: &Option<Cohort>,
    journal: &Journal,
    pipeline: &Pipeline,
    spec: &ReverseSpec,
    ctx: &RunContext,
    report: &mut PipelineReport,
    rev: &mut ReverseReport,
) -> Result<(), Failure> {
    let expected = expected_membership(plan, diffs, skipped, journal, rev);
    // The list right after the last call: what the derived baseline is tied to.
    let after = match &expected {
        Ok(e) => find_cohort(&setup.client, &e.cohort_id)
            .await
            .map_err(|f| f.message),
        Err(why) => Err(why.clone()),
    };
    if spec.reconcile.verify {
        let drift = match (&expected, &after) {
            (Ok(e), Ok(after)) => {
                match verify_step(e, after, setup, pipeline, spec, ctx, report, rev).await {
                    Ok(drift) => drift,
                    // Everything was applied: a verify that could not run (no download
                    // left, the download failed) is said, not made a failed run.
                    Err(f) => {
                        rev.warnings
                            .push(format!("verify after apply could not run: {}", f.message));
                        rev.verify = Some(VerifyReport::skipped(format!(
                            "not verified: {}",
                            f.message
                        )));
                        false
                    }
                }
            }
            (Err(why), _) | (_, Err(why)) => {
                rev.verify = Some(VerifyReport::skipped(format!("not verified: {why}")));
                false
            }
        };
        if drift {
            rev.outcome = "drift".into();
            rev.derived = Some(DerivedReport::not_written(
                "the cohort differs from what the run expected",
            ));
            return Err(Failure::failed(rev.verify.as_ref().map_or_else(
                || "verify after apply found drift".to_string(),
                VerifyReport::message,
            )));
        }
    }
    let written = match (expected, after) {
        (Ok(e), Ok(after)) => record_derived(&e, &after, cohort, journal, setup, spec, ctx).await,
        (Err(why), _) | (_, Err(why)) => Err(why),
    };
    if let Err(why) = &written {
        tracing::info!("no derived baseline recorded: {why}; the next run downloads the cohort");
    }
    rev.derived = Some(match written {
        Ok((at, size)) => DerivedReport {
            written: true,
            location: Some(at),
            size: Some(size),
            reason: "recorded: the next run uses it while the cohort's lastComputed and size stay as listed now".into(),
        },
        Err(reason) => DerivedReport::not_written(reason),
    });
    Ok(())
}

/// Baseline + applied adds − applied removes − skipped ids (or, after an upload, the
/// uploaded ids − skipped); `Err` says why it is not known exactly.
pub(super) fn expected_membership(
    plan: &Plan<'_>,
    diffs: &Diffs,
    skipped: &[String],
    journal: &Journal,
    rev: &ReverseReport,
) -> Result<Expected, String> {
    let baseline = rev.baseline.as_ref();
    let exact = baseline.is_some_and(|b| b.exact && b.used != baseline::BaselineUsed::None);
    if journal.doc.status != JournalStatus::Closed {
        return Err("the plan did not finish".into());
    }
    if !exact && !plan.uploading {
        return Err("the plan was not made against an exact baseline".into());
    }
    if rev.skipped_ids.count > skipped.len() as u64 {
        return Err(format!(
            "Amplitude skipped {} ids, more than this run keeps",
            rev.skipped_ids.count
        ));
    }
    let Some(cohort_id) = journal.doc.cohort_id.clone() else {
        return Err("the plan has no cohort id".into());
    };
    let base = (!plan.uploading).then_some(&diffs.base);
    let ids = derived::membership(base, plan.chunks.iter().cloned(), skipped, DIFF_THREADS)
        .map_err(|e| e.to_string())?;
    let unmatched = match baseline {
        Some(b) if !plan.uploading => b.members_without_id + diffs.d.counts.baseline_duplicates,
        _ => 0,
    };
    Ok(Expected {
        cohort_id,
        ids,
        unmatched,
    })
}

/// Writes the derived baseline when the cohort as listed after the last call bears it out:
/// `lastComputed` moved with the calls and the size is the expected one.
pub(super) async fn record_derived(
    e: &Expected,
    after: &Cohort,
    cohort: &Option<Cohort>,
    journal: &Journal,
    setup: &Setup,
    spec: &ReverseSpec,
    ctx: &RunContext,
) -> Result<(String, u64), String> {
    let before = cohort
        .as_ref()
        .and_then(|c| c.last_computed.as_ref())
        .and_then(|t| t.epoch_seconds());
    let Some(lc) = after.last_computed.as_ref().and_then(|t| t.epoch_seconds()) else {
        return Err("the cohort list gives no lastComputed".into());
    };
    if before.is_some_and(|b| lc <= b) {
        return Err(format!(
            "the cohort's lastComputed did not move with the calls ({lc}): a later change would not show either"
        ));
    }
    let size = e.size();
    if after.size != Some(size as i64) {
        return Err(format!(
            "the cohort lists {} members after the calls, the derived membership has {size}",
            after
                .size
                .map_or("an unknown number of".into(), |s| s.to_string())
        ));
    }
    let at = derived::write(
        &setup.state,
        &derived::Record {
            cohort_id: &e.cohort_id,
            kind: spec.source.id_kind,
            journal_run: &journal.doc.planned_by,
            run_id: &ctx.run_id,
            ids: &e.ids,
            members_without_id: e.unmatched,
            last_computed: lc,
            size,
        },
    )
    .await?;
    Ok((at, size))
}

/// `verify = true`: one download of the cohort (budgeted like a baseline) compared with the
/// expected membership; the drift is reported id by id (samples and full lists). Answers
/// whether there is drift.
#[allow(clippy::too_many_arguments)]
pub(super) async fn verify_step(
    e: &Expected,
    after: &Cohort,
    setup: &Setup,
    pipeline: &Pipeline,
    spec: &ReverseSpec,
    ctx: &RunContext,
    report: &mut PipelineReport,
    rev: &mut ReverseReport,
) -> Result<bool, Failure> {
    crash::point("reverse.verify.before");
    let none = derived::Check::Absent;
    let input = BaselineInput {
        client: &setup.client,
        state: &setup.state,
        cohort: after,
        reconcile: &spec.reconcile,
        poll: scaled_poll(pipeline.download.poll_settings(), ctx.time_scale),
        kind: spec.source.id_kind,
        mode: ctx.mode,
        base_dir: &ctx.base_dir,
        request_validity: request_validity(ctx.time_scale),
        free_only: false,
        ledger: &Ledger::new(
            setup.state.location().clone(),
            pipeline.connection.app_id,
            setup.client.api_key(),
        ),
        pipeline: &pipeline.name,
        run_id: &ctx.run_id,
        derived: &none,
    };
    let got = baseline::verify_download(&input).await?;
    if let Some(spent) = got.spent.clone() {
        report.quota_spent += 1;
        report.requests.push(spent);
    }
    let actual = got.ids.unwrap_or_default();
    let drift = verify::compare(&e.ids, &actual).map_err(failed)?;
    let mut v = VerifyReport::from_drift(&drift, got.report.request_id.clone());
    if !drift.is_empty() {
        match write_lists(
            &spec.reconcile.lists_dir,
            &ctx.base_dir,
            &pipeline.name,
            &ctx.run_id,
            &[
                ("missing", &drift.missing),
                ("unexpected", &drift.unexpected),
            ],
        )
        .await
        {
            Ok(w) => v.lists = w.into_iter().collect(),
            Err(err) => tracing::warn!("cannot write the drift lists: {err}"),
        }
    }
    rev.verify = Some(v);
    Ok(!drift.is_empty())
}

//! An export run's history: the record each applying run writes after planning (what it
//! saw and decided, for `plan --month`), and the month's forecast built from those
//! records (see [`super::forecast`] for the model).

use chrono::{DateTime, Utc};

use super::context::RunContext;
use super::export::ExportSettings;
use super::forecast::{Demand, Forecast, HISTORY_DAYS, forecast};
use super::plan::{Action, ExportPlan};
use super::report::Outcome;
use crate::state::{History, RunRecord, StateStore};

/// What the plan says about demand: cohorts selected, changed since their last export,
/// and recomputed since `previous` (the previous run's plan time).
fn demand(plan: &ExportPlan, previous: Option<DateTime<Utc>>) -> Demand {
    let live = plan
        .items
        .iter()
        .filter(|i| !i.selected.archived_skipped)
        .collect::<Vec<_>>();
    let changed = live
        .iter()
        .filter(|i| {
            !i.record
                .unchanged_since_export(i.selected.cohort.last_computed.as_ref())
        })
        .count() as u32;
    let recomputed = previous.map(|prev| {
        live.iter()
            .filter(|i| {
                i.selected
                    .cohort
                    .last_computed
                    .as_ref()
                    .and_then(|t| t.epoch_seconds())
                    .is_some_and(|s| s > prev.timestamp())
            })
            .count() as u32
    });
    Demand {
        selected: live.len() as u32,
        changed,
        recomputed,
    }
}

/// Writes the run's record to the pipeline's history (for `plan --month`). A failure is
/// logged: it only weakens a later forecast.
pub(crate) async fn record_run(
    state: &StateStore,
    ctx: &RunContext,
    plan: &ExportPlan,
    now: DateTime<Utc>,
) {
    let history = History::new(state);
    let previous = match history.latest().await {
        Ok(p) => p.map(|r| r.at),
        Err(e) => {
            tracing::warn!("reading the run history: {e}");
            None
        }
    };
    let d = demand(plan, previous);
    let count =
        |pred: fn(&Action) -> bool| plan.items.iter().filter(|i| pred(&i.action)).count() as u32;
    let record = RunRecord {
        run_id: ctx.run_id.clone(),
        at: now,
        selected: d.selected,
        changed: d.changed,
        recomputed: d.recomputed,
        fresh_enough: count(|a| {
            matches!(
                a,
                Action::Skip {
                    outcome: Outcome::FreshEnough,
                    ..
                }
            )
        }),
        spend: plan.spend(),
        paced: plan.paced() as u32,
        deferred_quota: plan.deferred() as u32,
    };
    crate::crash::point("export.history.before");
    if let Err(e) = history.record(&record).await {
        tracing::warn!("recording the run in the history: {e}");
    }
    crate::crash::point("export.history.written");
}

/// `plan --month`: the month under this pipeline's settings, from its run history.
pub(crate) async fn forecast_month(
    settings: &ExportSettings,
    state: &StateStore,
    plan: &ExportPlan,
    now: DateTime<Utc>,
) -> Forecast {
    let history = History::new(state);
    let runs = match history
        .since(now - chrono::Duration::days(HISTORY_DAYS))
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("reading the run history: {e}");
            Vec::new()
        }
    };
    let previous = runs.last().map(|r| r.at);
    forecast(
        &runs,
        demand(plan, previous),
        &settings.plan,
        &plan.usage,
        now,
    )
}

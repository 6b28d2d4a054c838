//! Decides, without spending any quota, what an export run does with each selected cohort:
//! skip it (unchanged, archived, exported recently enough for its freshness target),
//! download it with an earlier request id (free), or spend a new request — and which of
//! those fit the month's budget, and this run's even-pacing share, in priority order.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::report::{Outcome, RequestReason};
use super::select::Selected;
use crate::amplitude::types::RestDownloadUsage;
use crate::quota::{Allowance, AppLimits, BudgetDecision, Pace, plan_budget};
use crate::state::{CohortRecord, RequestRecord, StateError, StateStore};

/// Which cohorts go first when not all fit in the month's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// Never exported first, then the longest since the last export.
    #[default]
    StaleFirst,
    /// The pipeline's own order: listed ids, then name matches, then the rest.
    Listed,
    /// Smallest cohorts first (most cohorts refreshed for the budget).
    SmallestFirst,
}

#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub skip_unchanged: bool,
    /// `--force`: download even when unchanged.
    pub force: bool,
    pub props: bool,
    pub prop_keys: Vec<String>,
    pub reserve: u32,
    pub priority: Priority,
    /// How long a request id stays usable (7 days; scaled in tests).
    pub request_validity: chrono::Duration,
    /// Freshness targets (`quota.refresh`, `select.refresh`).
    pub refresh: RefreshTargets,
    /// `quota.pace`.
    pub pace: Pace,
}

/// How old a cohort's last export may get before a change is worth a download.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshTargets {
    /// `quota.refresh` (`None`: every change is exported).
    pub default: Option<Duration>,
    /// `select.refresh`, by cohort id (`None`: no target for that cohort).
    pub by_id: BTreeMap<String, Option<Duration>>,
}

impl RefreshTargets {
    /// The target of one cohort.
    pub fn of(&self, cohort_id: &str) -> Option<Duration> {
        match self.by_id.get(cohort_id) {
            Some(t) => *t,
            None => self.default,
        }
    }
}

/// Slack under a freshness target, so that the start-time jitter of a schedule does not
/// push a due export to the next run: 1% of the target, at most 5 minutes.
pub fn refresh_slack(target: Duration) -> Duration {
    (target / 100).min(Duration::from_secs(300))
}

/// What the run will do with one cohort.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Skip {
        outcome: Outcome,
        detail: String,
    },
    /// Download; `reuse` is an earlier request whose file is still valid (costs nothing).
    Download {
        reuse: Option<RequestRecord>,
        reason: Option<RequestReason>,
    },
    Deferred {
        detail: String,
    },
    /// Beyond this run's even-pacing share: expected to run at `expected_at`.
    Paced {
        detail: String,
        expected_at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone)]
pub struct PlannedCohort {
    pub selected: Selected,
    pub record: CohortRecord,
    pub action: Action,
}

impl PlannedCohort {
    pub fn cost(&self) -> u32 {
        match &self.action {
            Action::Download { reuse: None, .. } => 1,
            _ => 0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ExportPlan {
    /// In run order (priority order for downloads; skips keep their place).
    pub items: Vec<PlannedCohort>,
    pub usage: RestDownloadUsage,
    pub budget: BudgetDecision,
    /// Time from now until the rate limits let every new request start.
    pub time_to_issue: Duration,
    /// Even pacing's allowance (when `pace = "even"`).
    pub pace: Option<Allowance>,
    /// When the downloads should all be written (see `runner::finish`); set by the runner,
    /// which knows how many go at a time.
    pub prediction: Option<super::finish::Prediction>,
}

impl ExportPlan {
    pub fn spend(&self) -> u32 {
        self.items.iter().map(PlannedCohort::cost).sum()
    }

    pub fn deferred(&self) -> usize {
        self.items
            .iter()
            .filter(|i| matches!(i.action, Action::Deferred { .. }))
            .count()
    }

    pub fn paced(&self) -> usize {
        self.items
            .iter()
            .filter(|i| matches!(i.action, Action::Paced { .. }))
            .count()
    }

    pub fn earliest_finish(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + chrono::Duration::from_std(self.time_to_issue).unwrap_or_default()
    }
}

/// Builds the plan from the selection, the state and this month's usage.
pub async fn plan_export(
    selected: Vec<Selected>,
    state: &StateStore,
    usage: RestDownloadUsage,
    limits: &AppLimits,
    opts: &PlanOptions,
    now: DateTime<Utc>,
) -> Result<ExportPlan, StateError> {
    let mut items = Vec::with_capacity(selected.len());
    for sel in selected {
        let record = state.cohort(&sel.cohort.id).await?;
        let action = decide(&sel, &record, opts, now);
        items.push(PlannedCohort {
            selected: sel,
            record,
            action,
        });
    }
    sort_by_priority(&mut items, opts.priority);

    let costs: Vec<u32> = items
        .iter()
        .map(|i| match i.action {
            Action::Download { .. } => i.cost(),
            _ => 0,
        })
        .collect();
    let mut budget = plan_budget(&costs, usage.remaining(), opts.reserve);
    let pace = (opts.pace == Pace::Even)
        .then(|| Allowance::at(now, usage.limit, opts.reserve, usage.usage));
    if let Some(allowance) = &pace {
        apply_pace(
            &mut items,
            &mut budget,
            &costs,
            allowance,
            &usage,
            opts.reserve,
        );
    }
    for &idx in &budget.deferred {
        if let Some(item) = items.get_mut(idx) {
            item.action = Action::Deferred {
                detail: format!(
                    "monthly budget: {} of {} downloads used, reserve {}, {} available to this run",
                    usage.usage, usage.limit, opts.reserve, budget.available
                ),
            };
        }
    }
    let time_to_issue = limits.time_to_issue(budget.spend as usize);
    Ok(ExportPlan {
        items,
        usage,
        budget,
        time_to_issue,
        pace,
        prediction: None,
    })
}

/// Defers, in priority order, the downloads beyond this run's pacing share; each gets the
/// hour the allowance is expected to reach it (if nothing else spends meanwhile). While
/// the pace is what binds, a cohort the budget alone would defer is paced too (it runs
/// later this month, or after the reset once the month's allowance is all spent); the
/// budget's own deferral (`deferred_quota`, exit 3) stays for a budget gone early.
fn apply_pace(
    items: &mut [PlannedCohort],
    budget: &mut BudgetDecision,
    costs: &[u32],
    allowance: &Allowance,
    usage: &RestDownloadUsage,
    reserve: u32,
) {
    let pace_binds = allowance.share < budget.available || allowance.by_now >= allowance.usable;
    let in_run: std::collections::HashSet<usize> = budget.run.iter().copied().collect();
    let mut spend = 0u32;
    let mut waiting = 0u32;
    let mut run = Vec::with_capacity(budget.run.len());
    let mut deferred = Vec::new();
    for (idx, &cost) in costs.iter().enumerate() {
        if in_run.contains(&idx) {
            if spend + cost <= allowance.share {
                spend += cost;
                run.push(idx);
                continue;
            }
        } else if !pace_binds {
            deferred.push(idx);
            continue;
        }
        waiting += cost;
        let expected_at = allowance.reaches(usage.usage + spend + waiting);
        if let Some(item) = items.get_mut(idx) {
            item.action = Action::Paced {
                detail: format!(
                    "paced: {} of this month's {} downloads (limit {}, reserve {reserve}) are due by the end of this hour and {} are spent; expected to run from {}",
                    allowance.by_now,
                    allowance.usable,
                    usage.limit,
                    usage.usage,
                    expected_at.format("%Y-%m-%d %H:%M UTC")
                ),
                expected_at,
            };
        }
    }
    budget.run = run;
    budget.deferred = deferred;
    budget.spend = spend;
}

fn decide(sel: &Selected, record: &CohortRecord, opts: &PlanOptions, now: DateTime<Utc>) -> Action {
    let last_computed = sel.cohort.last_computed.as_ref();
    if sel.archived_skipped {
        return Action::Skip {
            outcome: Outcome::SkippedArchived,
            detail: "archived (set select.include_archived = true to export it)".into(),
        };
    }
    let unchanged = record.unchanged_since_export(last_computed);
    if !unchanged
        && !opts.force
        && let Some(detail) = fresh_enough(&sel.cohort.id, record, opts, now)
    {
        return Action::Skip {
            outcome: Outcome::FreshEnough,
            detail,
        };
    }
    if unchanged && opts.skip_unchanged && !opts.force {
        return Action::Skip {
            outcome: Outcome::SkippedUnchanged,
            detail: format!(
                "lastComputed {} equals the last export's",
                last_computed.map(|t| t.readable()).unwrap_or_default()
            ),
        };
    }
    // `--force` always requests anew (the earlier file may be what is being replaced).
    if !opts.force
        && let Some(req) = &record.request
        && req.reusable_for(
            last_computed,
            opts.props,
            &opts.prop_keys,
            now,
            opts.request_validity,
        )
    {
        return Action::Download {
            reuse: Some(req.clone()),
            reason: None,
        };
    }
    let reason = if unchanged {
        RequestReason::Forced
    } else if record.exported_last_computed.is_none() {
        if record.request.is_some() {
            RequestReason::EarlierRequestUnusable
        } else {
            RequestReason::FirstExport
        }
    } else {
        RequestReason::CohortChanged
    };
    Action::Download {
        reuse: None,
        reason: Some(reason),
    }
}

/// Why a changed cohort is not due yet under its freshness target (`None`: it is due).
fn fresh_enough(
    cohort_id: &str,
    record: &CohortRecord,
    opts: &PlanOptions,
    now: DateTime<Utc>,
) -> Option<String> {
    let target = opts.refresh.of(cohort_id)?;
    let last = record.exported_run_at.or(record.exported_at)?;
    let target_c = chrono::Duration::from_std(target).ok()?;
    let slack = chrono::Duration::from_std(refresh_slack(target)).ok()?;
    let age = now - last;
    if age >= target_c - slack {
        return None;
    }
    Some(format!(
        "changed, but last exported {} ago (refresh target {}): due from {}",
        humantime::format_duration(Duration::from_secs(age.num_seconds().max(0) as u64)),
        humantime::format_duration(target),
        (last + target_c - slack).format("%Y-%m-%d %H:%M UTC")
    ))
}

fn sort_by_priority(items: &mut [PlannedCohort], priority: Priority) {
    // Stable sorts: ties keep the pipeline's order.
    match priority {
        Priority::Listed => items.sort_by_key(|i| i.selected.listed_rank),
        Priority::SmallestFirst => items.sort_by_key(|i| {
            (
                i.selected.cohort.size.unwrap_or(i64::MAX),
                i.selected.listed_rank,
            )
        }),
        // `None` (never exported) sorts first; export times compare at full precision,
        // so two exports within one second keep their order.
        Priority::StaleFirst => {
            items.sort_by_key(|i| (i.record.exported_at, i.selected.listed_rank))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amplitude::types::{Cohort, Timestamp};
    use crate::quota::LimitSettings;
    use crate::storage;

    fn selected(id: &str, size: i64, lc: i64, rank: usize) -> Selected {
        Selected {
            cohort: Cohort {
                id: id.into(),
                name: id.into(),
                size: Some(size),
                last_computed: Some(Timestamp::Seconds(lc)),
                published: true,
                ..Cohort::default()
            },
            listed_rank: rank,
            archived_skipped: false,
        }
    }

    fn opts() -> PlanOptions {
        PlanOptions {
            skip_unchanged: true,
            force: false,
            props: false,
            prop_keys: vec![],
            reserve: 0,
            priority: Priority::StaleFirst,
            request_validity: chrono::Duration::days(7),
            refresh: RefreshTargets::default(),
            pace: Pace::Asap,
        }
    }

    fn usage(used: u32) -> RestDownloadUsage {
        RestDownloadUsage {
            limit: 500,
            usage: used,
            resets_at: None,
        }
    }

    #[tokio::test]
    async fn unchanged_skipped_reused_free_and_budget_defers_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateStore::new(storage::open("s", dir.path()).expect("open"), "p");
        let now = crate::clock::now();
        // "a" exported at lastComputed 10 (unchanged); "b" has a fresh request for lc 20.
        state
            .save_cohort(&CohortRecord {
                cohort_id: "a".into(),
                exported_last_computed: Some(Timestamp::Seconds(10)),
                exported_at: Some(now),
                ..CohortRecord::default()
            })
            .await
            .expect("save");
        state
            .save_cohort(&CohortRecord {
                cohort_id: "b".into(),
                request: Some(RequestRecord {
                    request_id: "rb".into(),
                    issued_at: now - chrono::Duration::hours(1),
                    last_computed: Some(Timestamp::Seconds(20)),
                    props: false,
                    prop_keys: vec![],
                    completed: false,
                }),
                ..CohortRecord::default()
            })
            .await
            .expect("save");
        let sel = vec![
            selected("a", 5, 10, 0),
            selected("b", 5, 20, 1),
            selected("c", 5, 30, 2),
            selected("d", 5, 40, 3),
        ];
        let limits = AppLimits::new(LimitSettings::default());
        let plan = plan_export(sel, &state, usage(499), &limits, &opts(), now)
            .await
            .expect("plan");
        let by_id = |id: &str| {
            plan.items
                .iter()
                .find(|i| i.selected.cohort.id == id)
                .map(|i| i.action.clone())
        };
        assert!(matches!(
            by_id("a"),
            Some(Action::Skip {
                outcome: Outcome::SkippedUnchanged,
                ..
            })
        ));
        assert!(
            matches!(by_id("b"), Some(Action::Download { reuse: Some(r), .. }) if r.request_id == "rb")
        );
        assert!(matches!(
            by_id("c"),
            Some(Action::Download {
                reuse: None,
                reason: Some(RequestReason::FirstExport)
            })
        ));
        assert!(matches!(by_id("d"), Some(Action::Deferred { .. })));
        assert_eq!(plan.spend(), 1);
        assert_eq!(plan.deferred(), 1);
    }

    #[tokio::test]
    async fn smallest_first_changes_who_is_deferred() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateStore::new(storage::open("s", dir.path()).expect("open"), "p");
        let sel = vec![selected("big", 1000, 1, 0), selected("small", 10, 1, 1)];
        let limits = AppLimits::new(LimitSettings::default());
        let o = PlanOptions {
            priority: Priority::SmallestFirst,
            ..opts()
        };
        let plan = plan_export(sel, &state, usage(499), &limits, &o, crate::clock::now())
            .await
            .expect("plan");
        assert_eq!(plan.items[0].selected.cohort.id, "small");
        assert!(matches!(plan.items[1].action, Action::Deferred { .. }));
    }

    #[tokio::test]
    async fn even_pacing_spends_the_share_and_paces_the_rest_in_priority_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateStore::new(storage::open("s", dir.path()).expect("open"), "p");
        let sel = || {
            (0..4)
                .map(|i| selected(&format!("c{i}"), 5, 1, i))
                .collect::<Vec<_>>()
        };
        let limits = AppLimits::new(LimitSettings::default());
        let o = PlanOptions {
            reserve: 20,
            pace: Pace::Even,
            ..opts()
        };
        // Hour 4 of November: 3 allowed by its end (ceil(480*4/720)), 2 spent → 1.
        let now: DateTime<Utc> = "2026-11-01T03:10:00Z".parse().expect("t");
        let plan = plan_export(sel(), &state, usage(2), &limits, &o, now)
            .await
            .expect("plan");
        assert_eq!(plan.spend(), 1);
        assert_eq!((plan.paced(), plan.deferred()), (3, 0));
        assert!(matches!(plan.items[0].action, Action::Download { .. }));
        let expected: Vec<String> = plan.items[1..]
            .iter()
            .map(|i| match &i.action {
                Action::Paced { expected_at, .. } => expected_at.to_rfc3339(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            expected,
            [
                "2026-11-01T04:00:00+00:00",
                "2026-11-01T06:00:00+00:00",
                "2026-11-01T07:00:00+00:00"
            ]
        );
        // The month's allowance all spent in its last hour: the rest waits for the reset
        // (paced, not a quota stop).
        let last: DateTime<Utc> = "2026-11-30T23:30:00Z".parse().expect("t");
        let plan = plan_export(sel(), &state, usage(480), &limits, &o, last)
            .await
            .expect("plan");
        assert_eq!((plan.spend(), plan.paced(), plan.deferred()), (0, 4, 0));
        assert!(plan.items.iter().all(|i| matches!(
            &i.action,
            Action::Paced { expected_at, .. } if expected_at.to_rfc3339() == "2026-12-01T00:00:00+00:00"
        )));
        // A budget gone early (others spent it) is still a quota stop.
        let mid: DateTime<Utc> = "2026-11-10T00:00:00Z".parse().expect("t");
        let plan = plan_export(sel(), &state, usage(480), &limits, &o, mid)
            .await
            .expect("plan");
        assert_eq!((plan.paced(), plan.deferred()), (0, 4));
    }

    #[tokio::test]
    async fn a_changed_cohort_younger_than_its_refresh_target_is_fresh_enough() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateStore::new(storage::open("s", dir.path()).expect("open"), "p");
        let now: DateTime<Utc> = "2026-11-02T00:00:00Z".parse().expect("t");
        for (id, age_h) in [("a", 20), ("b", 24), ("c", 2)] {
            state
                .save_cohort(&CohortRecord {
                    cohort_id: id.into(),
                    exported_last_computed: Some(Timestamp::Seconds(1)),
                    exported_run_at: Some(now - chrono::Duration::hours(age_h)),
                    ..CohortRecord::default()
                })
                .await
                .expect("save");
        }
        let sel = vec![
            selected("a", 5, 2, 0),
            selected("b", 5, 2, 1),
            selected("c", 5, 2, 2),
        ];
        let o = PlanOptions {
            refresh: RefreshTargets {
                default: Some(Duration::from_secs(24 * 3600)),
                by_id: [("c".to_string(), Some(Duration::from_secs(3600)))].into(),
            },
            ..opts()
        };
        let limits = AppLimits::new(LimitSettings::default());
        let plan = plan_export(sel, &state, usage(0), &limits, &o, now)
            .await
            .expect("plan");
        let outcome = |id: &str| {
            plan.items
                .iter()
                .find(|i| i.selected.cohort.id == id)
                .map(|i| i.action.clone())
        };
        assert!(matches!(
            outcome("a"),
            Some(Action::Skip { outcome: Outcome::FreshEnough, detail }) if detail.contains("due from 2026-11-02 03:55 UTC")
        ));
        assert!(matches!(outcome("b"), Some(Action::Download { .. })));
        assert!(matches!(outcome("c"), Some(Action::Download { .. })));
    }
}

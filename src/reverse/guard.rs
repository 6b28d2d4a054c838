//! The removal guard: a plan that would remove more members than the pipeline allows (a
//! count, or a percentage of the cohort), or that would empty a cohort from an empty
//! source, is refused unless `--force`. A broken CRM export should never wipe a cohort.

use serde::Serialize;

use crate::config::{Reconcile, ReconcileMode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Within the limits.
    Pass,
    /// Over a limit: nothing is applied.
    Refused,
    /// Over a limit, applied anyway because of `--force`.
    Forced,
}

/// The guard's decision and the numbers it looked at.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GuardReport {
    pub decision: Decision,
    /// Why it refused (or would have, when forced); empty when it passed.
    pub reasons: Vec<String>,
    pub removals: u64,
    /// Members the cohort has now (the baseline's distinct ids, or the list call's size).
    pub cohort_size: u64,
    pub removal_pct: f64,
    pub max_removals: u64,
    pub max_removal_pct: f64,
    /// Whether `removals` is a lower bound (a `replace` without a baseline).
    pub removals_estimated: bool,
}

impl GuardReport {
    pub fn refused(&self) -> bool {
        self.decision == Decision::Refused
    }

    /// The error a refused run ends with.
    pub fn refusal_message(&self) -> String {
        format!(
            "refused by the removal guard: {}; nothing was sent. Check the source list, raise reconcile.max_removals / reconcile.max_removal_pct, or rerun with --force to apply anyway",
            self.reasons.join("; ")
        )
    }
}

/// Checks a plan removing `removals` of `cohort_size` members with `source_ids` distinct ids
/// in the source.
pub fn check(
    mode: ReconcileMode,
    source_ids: u64,
    removals: u64,
    removals_estimated: bool,
    cohort_size: u64,
    settings: &Reconcile,
    force: bool,
) -> GuardReport {
    let mut reasons = Vec::new();
    let empties = matches!(
        mode,
        ReconcileMode::Mirror | ReconcileMode::Replace | ReconcileMode::MirrorOwned
    );
    if source_ids == 0 && empties && !settings.allow_empty_source {
        let empties_what = if mode == ReconcileMode::MirrorOwned {
            "remove every member this pipeline added"
        } else {
            "empty the cohort"
        };
        reasons.push(format!(
            "the source has no ids, and {} would {empties_what} (set reconcile.allow_empty_source = true if that is intended)",
            mode_name(mode)
        ));
    }
    let at_least = if removals_estimated { "at least " } else { "" };
    if removals > settings.max_removals {
        reasons.push(format!(
            "it would remove {at_least}{removals} members, more than max_removals = {}",
            settings.max_removals
        ));
    }
    let pct = if cohort_size == 0 {
        0.0
    } else {
        removals as f64 * 100.0 / cohort_size as f64
    };
    if pct > settings.max_removal_pct {
        reasons.push(format!(
            "it would remove {at_least}{pct:.1}% of the cohort's {cohort_size} members, more than max_removal_pct = {}",
            settings.max_removal_pct
        ));
    }
    let decision = match (reasons.is_empty(), force) {
        (true, _) => Decision::Pass,
        (false, true) => Decision::Forced,
        (false, false) => Decision::Refused,
    };
    GuardReport {
        decision,
        reasons,
        removals,
        cohort_size,
        removal_pct: (pct * 100.0).round() / 100.0,
        max_removals: settings.max_removals,
        max_removal_pct: settings.max_removal_pct,
        removals_estimated,
    }
}

pub fn mode_name(mode: ReconcileMode) -> &'static str {
    match mode {
        ReconcileMode::Mirror => "mirror",
        ReconcileMode::AddOnly => "add_only",
        ReconcileMode::RemoveOnly => "remove_only",
        ReconcileMode::Replace => "replace",
        ReconcileMode::MirrorOwned => "mirror_owned",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(count: u64, pct: f64) -> Reconcile {
        Reconcile {
            max_removals: count,
            max_removal_pct: pct,
            ..Reconcile::default()
        }
    }

    #[test]
    fn passes_within_both_limits() {
        let g = check(
            ReconcileMode::Mirror,
            900,
            100,
            false,
            1000,
            &limits(100, 10.0),
            false,
        );
        assert_eq!(g.decision, Decision::Pass);
        assert!(g.reasons.is_empty());
    }

    #[test]
    fn refuses_over_either_limit_unless_forced() {
        let g = check(
            ReconcileMode::Mirror,
            400,
            600,
            false,
            1000,
            &limits(10_000, 10.0),
            false,
        );
        assert_eq!(g.decision, Decision::Refused);
        assert_eq!(g.removal_pct, 60.0);
        assert!(
            g.refusal_message()
                .contains("60.0% of the cohort's 1000 members"),
            "{}",
            g.refusal_message()
        );
        assert!(g.refusal_message().contains("--force"));
        let g = check(
            ReconcileMode::Mirror,
            10,
            101,
            false,
            1_000_000,
            &limits(100, 10.0),
            false,
        );
        assert_eq!(g.decision, Decision::Refused);
        assert!(
            g.reasons[0].contains("max_removals = 100"),
            "{:?}",
            g.reasons
        );
        let g = check(
            ReconcileMode::Mirror,
            10,
            101,
            false,
            1_000_000,
            &limits(100, 10.0),
            true,
        );
        assert_eq!(g.decision, Decision::Forced);
    }

    #[test]
    fn an_empty_source_is_refused_where_it_would_empty_the_cohort() {
        let empty_ok = Reconcile {
            allow_empty_source: true,
            ..limits(u64::MAX, 100.0)
        };
        let g = check(
            ReconcileMode::Mirror,
            0,
            0,
            false,
            0,
            &limits(10, 10.0),
            false,
        );
        assert_eq!(
            g.decision,
            Decision::Refused,
            "even an empty cohort: the source is suspect"
        );
        assert_eq!(
            check(ReconcileMode::Mirror, 0, 5, false, 5, &empty_ok, false).decision,
            Decision::Pass
        );
        assert_eq!(
            check(
                ReconcileMode::AddOnly,
                0,
                0,
                false,
                5,
                &limits(10, 10.0),
                false
            )
            .decision,
            Decision::Pass
        );
        let g = check(
            ReconcileMode::Replace,
            0,
            5,
            true,
            5,
            &limits(10, 100.0),
            false,
        );
        assert_eq!(g.decision, Decision::Refused);
    }
}

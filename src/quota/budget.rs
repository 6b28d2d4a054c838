//! The monthly download budget: which of the wanted downloads fit in what is left this
//! month after the reserve. Candidates come in priority order; a candidate that reuses an
//! earlier request costs nothing. Nothing is half-attempted: what does not fit is deferred
//! whole.

/// Which candidates run and which wait for next month (indices into the input).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BudgetDecision {
    pub run: Vec<usize>,
    pub deferred: Vec<usize>,
    /// Downloads the run will spend.
    pub spend: u32,
    /// Downloads the budget allowed (remaining minus reserve).
    pub available: u32,
}

/// `costs[i]` is the quota candidate `i` spends (0 when it reuses a live request id, else 1),
/// in priority order. Runs every candidate that fits in `remaining - reserve`, in order;
/// free candidates always run.
pub fn plan_budget(costs: &[u32], remaining: u32, reserve: u32) -> BudgetDecision {
    let available = remaining.saturating_sub(reserve);
    let mut decision = BudgetDecision {
        available,
        ..BudgetDecision::default()
    };
    for (i, &cost) in costs.iter().enumerate() {
        if decision.spend + cost <= available {
            decision.spend += cost;
            decision.run.push(i);
        } else {
            decision.deferred.push(i);
        }
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_fits_runs_in_priority_order() {
        let d = plan_budget(&[1; 8], 5, 0);
        assert_eq!(d.run, vec![0, 1, 2, 3, 4]);
        assert_eq!(d.deferred, vec![5, 6, 7]);
        assert_eq!(d.spend, 5);
    }

    #[test]
    fn reserve_is_never_spent_and_free_ones_always_run() {
        let d = plan_budget(&[1, 0, 1, 1, 0], 3, 1);
        assert_eq!(d.run, vec![0, 1, 2, 4]);
        assert_eq!(d.deferred, vec![3]);
        assert_eq!(d.available, 2);
        let none = plan_budget(&[1, 1], 2, 5);
        assert!(none.run.is_empty());
        assert_eq!(none.available, 0);
    }
}

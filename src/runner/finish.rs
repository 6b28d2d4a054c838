//! When an export run should finish: each cohort to download takes its own time after its
//! request (the job at Amplitude, the transfer, the write: its last export's, from the
//! state), requests wait for the rate windows, `max_parallel` cohorts go at a time in plan
//! order. [`predict`] simulates exactly that; a cohort never exported before is given the
//! median of the known ones, or a default (a 30 s job plus 500,000 rows a second) when
//! none is known.

use std::time::Duration;

use super::plan::{Action, ExportPlan};
use crate::quota::AppLimits;

/// Amplitude's job time assumed for a cohort with no earlier export (time-scaled).
const DEFAULT_JOB: Duration = Duration::from_secs(30);
/// Rows a second assumed for the transfer and write of a cohort with no earlier export.
const DEFAULT_ROWS_PER_SEC: f64 = 500_000.0;

/// A run's predicted length and what it rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prediction {
    /// From the plan until the last download is written.
    pub time_to_finish: Duration,
    /// Downloads whose time comes from their own last export.
    pub known: usize,
    /// Downloads in the plan.
    pub downloads: usize,
}

/// The prediction for `plan`'s downloads under `limits`, `parallel` at a time.
pub fn predict(plan: &ExportPlan, limits: &AppLimits, parallel: usize) -> Prediction {
    let downloads: Vec<_> = plan
        .items
        .iter()
        .filter(|i| matches!(i.action, Action::Download { .. }))
        .collect();
    let known: Vec<Option<Duration>> = downloads
        .iter()
        .map(|i| i.record.exported_work_ms.map(Duration::from_millis))
        .collect();
    let mut measured: Vec<Duration> = known.iter().flatten().copied().collect();
    measured.sort();
    let median = measured.get(measured.len() / 2).copied();
    let works: Vec<Duration> = downloads
        .iter()
        .zip(&known)
        .map(|(item, own)| {
            own.or(median).unwrap_or_else(|| {
                let rows = item.selected.cohort.size.unwrap_or(0).max(0) as f64;
                DEFAULT_JOB.mul_f64(limits.time_scale())
                    + Duration::from_secs_f64(rows / DEFAULT_ROWS_PER_SEC)
            })
        })
        .collect();
    Prediction {
        time_to_finish: limits.time_to_finish(&works, parallel),
        known: measured.len(),
        downloads: downloads.len(),
    }
}

//! Run history of an export pipeline, for `plan --month`: one small document per run
//! that applied (`{pipeline}/runs/{time}-{run_id}.json`), written once after the plan and
//! never rewritten — a killed run leaves either its whole record or none, and two runners
//! never write the same key. Records older than [`KEEP_DAYS`] are pruned as new ones are
//! written.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::store::{StateError, StateStore};

/// How long run records are kept.
pub const KEEP_DAYS: i64 = 62;

/// What one run saw and decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    /// When the run planned (on [`crate::clock`]).
    pub at: DateTime<Utc>,
    /// Cohorts selected (archived ones set aside not counted).
    pub selected: u32,
    /// Cohorts whose data changed since their last export (or never exported): what the
    /// run would download without freshness targets, pacing or budget.
    pub changed: u32,
    /// Cohorts Amplitude recomputed since the previous run planned (`lastComputed` later
    /// than that run's `at`); absent for a pipeline's first recorded run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recomputed: Option<u32>,
    pub fresh_enough: u32,
    /// New downloads the plan spends.
    pub spend: u32,
    pub paced: u32,
    pub deferred_quota: u32,
}

const FOLDER: &str = "runs";

/// The run records of one pipeline.
#[derive(Debug, Clone)]
pub struct History<'a> {
    state: &'a StateStore,
}

impl<'a> History<'a> {
    pub fn new(state: &'a StateStore) -> Self {
        History { state }
    }

    /// Writes one run's record (atomically, at a key of its own), then prunes old ones
    /// (best effort: a failed delete is retried by the next run).
    pub async fn record(&self, run: &RunRecord) -> Result<(), StateError> {
        let key = self.state.doc_key(FOLDER, &name(run.at, &run.run_id));
        self.state.write(&key, run).await?;
        let cutoff = name(run.at - Duration::days(KEEP_DAYS), "");
        if let Ok(keys) = self.state.list_folder(FOLDER).await {
            for k in keys {
                if k.filename().is_some_and(|f| f < cutoff.as_str())
                    && let Err(e) = self.state.delete(&k).await
                {
                    tracing::debug!("pruning run record {k}: {e}");
                }
            }
        }
        Ok(())
    }

    /// Records of runs that planned at or after `since`, oldest first. An unreadable
    /// record is skipped with a warning (it only weakens a forecast).
    pub async fn since(&self, since: DateTime<Utc>) -> Result<Vec<RunRecord>, StateError> {
        let from = name(since, "");
        let mut keys: Vec<_> = self
            .state
            .list_folder(FOLDER)
            .await?
            .into_iter()
            .filter(|k| k.filename().is_some_and(|f| f >= from.as_str()))
            .collect();
        keys.sort();
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            match self.state.read::<RunRecord>(&k).await {
                Ok(Some((r, _))) => out.push(r),
                Ok(None) => {}
                Err(e) => tracing::warn!("skipping run record: {e}"),
            }
        }
        Ok(out)
    }

    /// The newest record, if any.
    pub async fn latest(&self) -> Result<Option<RunRecord>, StateError> {
        let keys = self.state.list_folder(FOLDER).await?;
        let Some(newest) = keys.into_iter().max() else {
            return Ok(None);
        };
        Ok(self.state.read::<RunRecord>(&newest).await?.map(|(r, _)| r))
    }
}

/// Time-sortable file name stem of a record.
fn name(at: DateTime<Utc>, run_id: &str) -> String {
    format!(
        "{}-{}",
        at.format("%Y%m%dT%H%M%S%.3fZ"),
        crate::runner::layout::sanitize(run_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage;

    fn run(at: &str, id: &str) -> RunRecord {
        RunRecord {
            run_id: id.into(),
            at: at.parse().expect("time"),
            selected: 3,
            changed: 2,
            recomputed: Some(1),
            fresh_enough: 0,
            spend: 1,
            paced: 1,
            deferred_quota: 0,
        }
    }

    #[tokio::test]
    async fn records_are_listed_oldest_first_and_old_ones_pruned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateStore::new(storage::open("s", dir.path()).expect("open"), "p");
        let h = History::new(&state);
        h.record(&run("2026-08-01T00:00:00Z", "old"))
            .await
            .expect("record");
        h.record(&run("2026-11-02T00:00:00Z", "b"))
            .await
            .expect("record");
        h.record(&run("2026-11-01T00:00:00Z", "a"))
            .await
            .expect("record");
        let all = h
            .since("2026-01-01T00:00:00Z".parse().expect("t"))
            .await
            .expect("since");
        let ids: Vec<&str> = all.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, vec!["a", "b"], "the August record is pruned");
        let latest = h.latest().await.expect("latest").expect("some");
        assert_eq!(latest.run_id, "b");
        let nov2 = h
            .since("2026-11-01T12:00:00Z".parse().expect("t"))
            .await
            .expect("since");
        assert_eq!(nov2.len(), 1);
    }
}

//! What the state remembers about one exported cohort.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::amplitude::types::Timestamp;

/// How long Amplitude keeps a request's `/file` link usable.
pub const REQUEST_VALIDITY_DAYS: i64 = 7;

/// Per cohort of one pipeline: the last successful export and the newest download request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CohortRecord {
    pub cohort_id: String,
    #[serde(default)]
    pub cohort_name: String,
    /// `lastComputed` of the cohort when it was last exported successfully.
    #[serde(default)]
    pub exported_last_computed: Option<Timestamp>,
    #[serde(default)]
    pub exported_at: Option<DateTime<Utc>>,
    /// When the run that made the last export started: freshness targets (`refresh`)
    /// measure a cohort's age from here, so a schedule's runs stay a whole period apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exported_run_at: Option<DateTime<Utc>>,
    /// Where the last export's Parquet file was published.
    #[serde(default)]
    pub exported_key: Option<String>,
    #[serde(default)]
    pub exported_rows: Option<u64>,
    /// What the last export took after its request, without waits for Amplitude's limits
    /// (the job, the transfer, the write): `plan` predicts the next run's length from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exported_work_ms: Option<u64>,
    /// The newest download request (written as soon as it is issued, so a crashed run
    /// leaves it behind for the next one to reuse instead of spending quota again).
    #[serde(default)]
    pub request: Option<RequestRecord>,
    /// Set just before a download request is sent and cleared once its answer is saved:
    /// a run that finds it set knows an earlier run was killed in between, so that request
    /// may have been spent although nobody knows its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_in_doubt: Option<DateTime<Utc>>,
}

/// One `GET /api/5/cohorts/request/:id` that spent quota.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub request_id: String,
    pub issued_at: DateTime<Utc>,
    /// `lastComputed` the cohort had when the request was issued.
    #[serde(default)]
    pub last_computed: Option<Timestamp>,
    #[serde(default)]
    pub props: bool,
    #[serde(default)]
    pub prop_keys: Vec<String>,
    /// Set once the file was downloaded and published.
    #[serde(default)]
    pub completed: bool,
}

impl RequestRecord {
    /// Whether this request's file can serve an export of a cohort with `last_computed`
    /// and the given props, at `now` (younger than 7 days, same data, same columns).
    /// `validity` is the request lifetime (7 days, scaled in tests).
    pub fn reusable_for(
        &self,
        last_computed: Option<&Timestamp>,
        props: bool,
        prop_keys: &[String],
        now: DateTime<Utc>,
        validity: chrono::Duration,
    ) -> bool {
        self.last_computed.as_ref() == last_computed
            && self.props == props
            && self.prop_keys == prop_keys
            && now - self.issued_at < validity
    }
}

impl CohortRecord {
    /// Whether the cohort's data is unchanged since its last successful export.
    pub fn unchanged_since_export(&self, last_computed: Option<&Timestamp>) -> bool {
        match (&self.exported_last_computed, last_computed) {
            (Some(done), Some(now)) => done == now,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(issued_at: DateTime<Utc>) -> RequestRecord {
        RequestRecord {
            request_id: "r1".into(),
            issued_at,
            last_computed: Some(Timestamp::Seconds(100)),
            props: true,
            prop_keys: vec!["country".into()],
            completed: false,
        }
    }

    #[test]
    fn reuse_needs_same_data_same_columns_and_a_live_link() {
        let now = crate::clock::now();
        let week = chrono::Duration::days(REQUEST_VALIDITY_DAYS);
        let keys = vec!["country".to_string()];
        let r = request(now - chrono::Duration::days(6));
        assert!(r.reusable_for(Some(&Timestamp::Seconds(100)), true, &keys, now, week));
        assert!(!r.reusable_for(Some(&Timestamp::Seconds(101)), true, &keys, now, week));
        assert!(!r.reusable_for(Some(&Timestamp::Seconds(100)), false, &keys, now, week));
        assert!(!r.reusable_for(Some(&Timestamp::Seconds(100)), true, &[], now, week));
        let old = request(now - chrono::Duration::days(7));
        assert!(!old.reusable_for(Some(&Timestamp::Seconds(100)), true, &keys, now, week));
    }

    #[test]
    fn unchanged_only_with_both_timestamps_equal() {
        let mut rec = CohortRecord::default();
        assert!(!rec.unchanged_since_export(Some(&Timestamp::Seconds(5))));
        rec.exported_last_computed = Some(Timestamp::Seconds(5));
        assert!(rec.unchanged_since_export(Some(&Timestamp::Seconds(5))));
        assert!(!rec.unchanged_since_export(Some(&Timestamp::Seconds(6))));
        assert!(!rec.unchanged_since_export(None));
    }
}

//! `[download]`: how cohort files are requested, waited for and parsed (export, and the
//! reverse side's baseline download).

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::export::{BadRowPolicy, ColumnType, DEFAULT_BATCH_ROWS};
use crate::runner::poll::PollSettings;

/// Download settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Download {
    /// Ask for user properties (`props=1`). Implied by a non-empty `prop_keys`.
    #[serde(default)]
    pub props: bool,
    /// Only these user properties (`propKeys`); empty: all of them when `props`.
    #[serde(default)]
    pub prop_keys: Vec<String>,
    /// First wait between job status polls, seconds (≥ 1); doubles each poll.
    #[serde(default = "default_poll_initial")]
    #[schemars(range(min = 1))]
    pub poll_initial_secs: u64,
    /// Longest wait between polls, seconds (≥ `poll_initial_secs`).
    #[serde(default = "default_poll_max")]
    #[schemars(range(min = 1))]
    pub poll_max_secs: u64,
    /// Give up waiting for a job after this many seconds (≥ 1); the request id is kept and
    /// a later run downloads it without spending quota.
    #[serde(default = "default_max_wait")]
    #[schemars(range(min = 1))]
    pub max_wait_secs: u64,
    /// What to do with a malformed CSV row: `fail` the cohort or `skip` (and count) it.
    #[serde(default)]
    pub on_bad_row: BadRowPolicy,
    /// Rows per Arrow record batch (≥ 1).
    #[serde(default = "default_batch_rows")]
    #[schemars(range(min = 1))]
    pub batch_rows: usize,
    /// Column name → type; columns not listed are `utf8` (`amplitude_id`: `int64`).
    #[serde(default)]
    pub column_types: BTreeMap<String, ColumnType>,
}

fn default_poll_initial() -> u64 {
    2
}

fn default_poll_max() -> u64 {
    60
}

fn default_max_wait() -> u64 {
    3600
}

fn default_batch_rows() -> usize {
    DEFAULT_BATCH_ROWS
}

impl Default for Download {
    fn default() -> Self {
        Download {
            props: false,
            prop_keys: Vec::new(),
            poll_initial_secs: default_poll_initial(),
            poll_max_secs: default_poll_max(),
            max_wait_secs: default_max_wait(),
            on_bad_row: BadRowPolicy::default(),
            batch_rows: default_batch_rows(),
            column_types: BTreeMap::new(),
        }
    }
}

impl Download {
    /// Whether to request properties: `props`, or any `prop_keys`.
    pub fn wants_props(&self) -> bool {
        self.props || !self.prop_keys.is_empty()
    }

    /// Polling intervals for [`crate::runner::poll::wait_for_job`].
    pub fn poll_settings(&self) -> PollSettings {
        PollSettings {
            initial: Duration::from_secs(self.poll_initial_secs),
            max_interval: Duration::from_secs(self.poll_max_secs),
            max_wait: Duration::from_secs(self.max_wait_secs),
        }
    }
}

//! `[download]`: how cohort files are requested, waited for and parsed (export, and the
//! reverse side's baseline download).

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

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
    pub poll_initial_secs: u64,
    /// Longest wait between polls, seconds (≥ `poll_initial_secs`).
    #[serde(default = "default_poll_max")]
    pub poll_max_secs: u64,
    /// Give up waiting for a job after this many seconds (≥ 1); the request id is kept and
    /// a later run downloads it without spending quota.
    #[serde(default = "default_max_wait")]
    pub max_wait_secs: u64,
    /// What to do with a malformed CSV row: `fail` the cohort or `skip` (and count) it.
    #[serde(default)]
    pub on_bad_row: OnBadRow,
    /// Rows per Arrow record batch (≥ 1).
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// Column name → type; columns not listed are `utf8`.
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
    65_536
}

impl Default for Download {
    fn default() -> Self {
        Download {
            props: false,
            prop_keys: Vec::new(),
            poll_initial_secs: default_poll_initial(),
            poll_max_secs: default_poll_max(),
            max_wait_secs: default_max_wait(),
            on_bad_row: OnBadRow::default(),
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

/// What to do with a CSV row that cannot be parsed or typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnBadRow {
    /// Fail the cohort (nothing is published).
    #[default]
    Fail,
    /// Skip the row and count it in the run report.
    Skip,
}

/// Arrow type of a cohort file column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    Int64,
    Float64,
    Boolean,
    Utf8,
}

impl ColumnType {
    /// The Arrow data type.
    pub fn arrow_type(self) -> arrow::datatypes::DataType {
        use arrow::datatypes::DataType;
        match self {
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Utf8 => DataType::Utf8,
        }
    }
}

//! `[download]`: how cohort files are requested, waited for and parsed (export, and the
//! reverse side's baseline download).

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::amplitude::{
    DEFAULT_DEADLINE_SECS, DEFAULT_MIN_BYTES_PER_SEC, DEFAULT_RATE_WINDOW_SECS, TransferLimits,
};
use crate::export::{
    BadRowPolicy, ColumnType, CsvLimits, DEFAULT_BATCH_ROWS, DEFAULT_MAX_COLUMNS,
    DEFAULT_MAX_FIELD_BYTES, DEFAULT_MAX_GZIP_RATIO, DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_ROW_BYTES, RaiseWith,
};
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
    /// First wait between job status polls, seconds (1..=3600); doubles each poll.
    #[serde(default = "default_poll_initial")]
    #[schemars(range(min = 1, max = 3600))]
    pub poll_initial_secs: u64,
    /// Longest wait between polls, seconds (≥ `poll_initial_secs`, at most 86400).
    #[serde(default = "default_poll_max")]
    #[schemars(range(min = 1, max = 86400))]
    pub poll_max_secs: u64,
    /// Give up waiting for a job after this many seconds (1..=604800, the 7 days a request
    /// lives); the request id is kept and a later run downloads it without spending quota.
    #[serde(default = "default_max_wait")]
    #[schemars(range(min = 1, max = 604800))]
    pub max_wait_secs: u64,
    /// A file body must arrive within this many seconds of waiting for the server
    /// (1..=86400; default 3600). Past it the download fails, retryable with the same
    /// request id.
    #[serde(default = "default_deadline")]
    #[schemars(range(min = 1, max = 86400))]
    pub deadline_secs: u64,
    /// A file body must keep at least this many bytes per second over the last
    /// `rate_window_secs` of waiting (0..=1073741824; 0 turns the check off; default
    /// 65536, 64 KiB/s).
    #[serde(default = "default_min_bytes_per_sec")]
    #[schemars(range(min = 0, max = 1073741824))]
    pub min_bytes_per_sec: u64,
    /// The window `min_bytes_per_sec` is measured over, seconds (1..=3600; default 60).
    #[serde(default = "default_rate_window")]
    #[schemars(range(min = 1, max = 3600))]
    pub rate_window_secs: u64,
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
    /// Limits of the CSV reader (the defaults are far above any cohort file).
    #[serde(default)]
    pub limits: DownloadLimits,
}

/// `[download.limits]`: how large a cohort file's field, row and header may be, and how
/// much a gzip body may expand. A body past one fails the cohort naming the limit.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DownloadLimits {
    /// Longest field, in bytes as written (quotes included), ≥ 1.
    #[serde(default = "default_max_field_bytes")]
    #[schemars(range(min = 1))]
    pub max_field_bytes: usize,
    /// Longest row, in bytes as written, ≥ 1.
    #[serde(default = "default_max_row_bytes")]
    #[schemars(range(min = 1))]
    pub max_row_bytes: usize,
    /// Longest header row, in bytes, ≥ 1.
    #[serde(default = "default_max_header_bytes")]
    #[schemars(range(min = 1))]
    pub max_header_bytes: usize,
    /// Most columns in the header, ≥ 1.
    #[serde(default = "default_max_columns")]
    #[schemars(range(min = 1))]
    pub max_columns: usize,
    /// Most bytes a gzip body may expand to per compressed byte (after 8 MiB), ≥ 1.
    #[serde(default = "default_max_gzip_ratio")]
    #[schemars(range(min = 1))]
    pub max_gzip_ratio: u64,
}

fn default_max_field_bytes() -> usize {
    DEFAULT_MAX_FIELD_BYTES
}

fn default_max_row_bytes() -> usize {
    DEFAULT_MAX_ROW_BYTES
}

fn default_max_header_bytes() -> usize {
    DEFAULT_MAX_HEADER_BYTES
}

fn default_max_columns() -> usize {
    DEFAULT_MAX_COLUMNS
}

fn default_max_gzip_ratio() -> u64 {
    DEFAULT_MAX_GZIP_RATIO
}

impl Default for DownloadLimits {
    fn default() -> Self {
        DownloadLimits {
            max_field_bytes: DEFAULT_MAX_FIELD_BYTES,
            max_row_bytes: DEFAULT_MAX_ROW_BYTES,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_columns: DEFAULT_MAX_COLUMNS,
            max_gzip_ratio: DEFAULT_MAX_GZIP_RATIO,
        }
    }
}

impl DownloadLimits {
    /// The reader's limits (a 0 reads as 1); messages point at `[download.limits]`.
    pub fn csv_limits(&self) -> CsvLimits {
        CsvLimits {
            max_field_bytes: self.max_field_bytes.max(1),
            max_row_bytes: self.max_row_bytes.max(1),
            max_header_bytes: self.max_header_bytes.max(1),
            max_columns: self.max_columns.max(1),
            max_gzip_ratio: self.max_gzip_ratio.max(1),
            raise_with: RaiseWith::DownloadLimits,
        }
    }
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

fn default_deadline() -> u64 {
    DEFAULT_DEADLINE_SECS
}

fn default_min_bytes_per_sec() -> u64 {
    DEFAULT_MIN_BYTES_PER_SEC
}

fn default_rate_window() -> u64 {
    DEFAULT_RATE_WINDOW_SECS
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
            deadline_secs: default_deadline(),
            min_bytes_per_sec: default_min_bytes_per_sec(),
            rate_window_secs: default_rate_window(),
            on_bad_row: BadRowPolicy::default(),
            batch_rows: default_batch_rows(),
            column_types: BTreeMap::new(),
            limits: DownloadLimits::default(),
        }
    }
}

impl Download {
    /// Whether to request properties: `props`, or any `prop_keys`.
    pub fn wants_props(&self) -> bool {
        self.props || !self.prop_keys.is_empty()
    }

    /// Polling intervals for [`crate::runner::poll::wait_for_job`] (bounded to the
    /// ranges `validate` checks, whatever the values).
    pub fn poll_settings(&self) -> PollSettings {
        PollSettings {
            initial: Duration::from_secs(self.poll_initial_secs.clamp(1, 3_600)),
            max_interval: Duration::from_secs(self.poll_max_secs.clamp(1, 86_400)),
            max_wait: Duration::from_secs(self.max_wait_secs.clamp(1, 604_800)),
        }
    }

    /// The file body's deadline and minimum rate, the durations under `time_scale`.
    pub fn transfer_limits(&self, time_scale: f64) -> TransferLimits {
        TransferLimits {
            deadline_secs: self.deadline_secs,
            min_bytes_per_sec: self.min_bytes_per_sec,
            rate_window_secs: self.rate_window_secs,
            time_scale,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_and_can_be_raised() {
        let d: Download = toml::from_str("").expect("empty");
        assert_eq!(
            d.limits.csv_limits(),
            CsvLimits {
                raise_with: RaiseWith::DownloadLimits,
                ..CsvLimits::default()
            }
        );
        let d: Download =
            toml::from_str("[limits]\nmax_field_bytes = 262144\nmax_columns = 5000\n")
                .expect("limits");
        let l = d.limits.csv_limits();
        assert_eq!((l.max_field_bytes, l.max_columns), (262_144, 5000));
        assert_eq!(l.max_row_bytes, DEFAULT_MAX_ROW_BYTES);
        assert!(toml::from_str::<Download>("[limits]\nmax_fields = 3\n").is_err());
    }
}

//! Export-only sections: `[select]` (which cohorts), `[output]` (where and how the Parquet
//! goes) and `[quota]` (how the monthly budget is spent).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::values::{Layout, NamePattern, Refresh, StorageUrl};
use crate::export::{Compression, DEFAULT_ROW_GROUP_ROWS, DEFAULT_ZSTD_LEVEL};
use crate::quota::Pace;
use crate::runner::plan::{Priority, RefreshTargets};
use crate::runner::select::Selection;

/// An export pipeline's own settings.
#[derive(Debug, Clone)]
pub struct ExportSpec {
    pub select: Select,
    pub output: Output,
    pub quota: Quota,
}

/// Which cohorts to export; at least one of `ids`, `names`, `all_published`.
///
/// Listed `ids` are always exported, archived or not. Cohorts found only through `names` or
/// `all_published` are skipped when archived unless `include_archived`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Select {
    /// Cohort ids, exported in this order under the `listed` priority.
    #[serde(default)]
    pub ids: Vec<String>,
    /// Glob patterns on cohort names (`*`, `?`, `[...]`; case-sensitive).
    #[serde(default)]
    pub names: Vec<NamePattern>,
    /// Every published (discoverable) cohort.
    #[serde(default)]
    pub all_published: bool,
    /// Also export archived cohorts matched by `names` / `all_published`.
    #[serde(default)]
    pub include_archived: bool,
    /// Per-cohort freshness targets by cohort id, overriding `quota.refresh`
    /// (e.g. `refresh = { "abc123" = "1h", "def456" = "none" }`).
    #[serde(default)]
    pub refresh: BTreeMap<String, Refresh>,
}

impl Select {
    /// Whether nothing at all is selected (rejected by [`super::load`]).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.names.is_empty() && !self.all_published
    }

    /// The selection for [`crate::runner::select::select`].
    pub fn selection(&self) -> Selection {
        Selection {
            ids: self.ids.clone(),
            names: self.names.iter().map(|p| p.pattern().clone()).collect(),
            all_published: self.all_published,
            include_archived: self.include_archived,
        }
    }
}

/// Where snapshots are written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// Local directory (relative to the current directory) or `s3://bucket/prefix`
    /// (`gs://bucket/prefix`, `az://container/prefix`, `abfss://…` too).
    pub url: StorageUrl,
    /// Object key template under `url`; placeholders `{cohort_id}` (required),
    /// `{cohort_name}`, `{date}`, `{request_id}`, `{run_id}`.
    #[serde(default)]
    pub layout: Layout,
    /// Parquet compression codec.
    #[serde(default)]
    pub compression: CompressionCodec,
    /// zstd level 1..=22 (zstd only; default 3).
    #[serde(default)]
    #[schemars(range(min = 1, max = 22))]
    pub compression_level: Option<i32>,
    /// Rows per Parquet row group (≥ 1).
    #[serde(default = "default_row_group_rows")]
    #[schemars(range(min = 1))]
    pub row_group_rows: usize,
    /// Also write a membership change file when a cohort is exported and an earlier
    /// snapshot of it is in the output: one row per member that entered or exited since
    /// (computed locally, no quota). Off by default: it adds files of another schema
    /// under the output.
    #[serde(default)]
    pub changes: bool,
    /// Object key template of change files (same placeholders as `layout`; default
    /// `_changes/cohort_id={cohort_id}/snapshot_date={date}/part-0.parquet`); it must not
    /// be able to render a snapshot's key.
    #[serde(default = "default_changes_layout")]
    pub changes_layout: Layout,
}

fn default_changes_layout() -> Layout {
    Layout::changes_default()
}

fn default_row_group_rows() -> usize {
    DEFAULT_ROW_GROUP_ROWS
}

impl Output {
    /// The codec with its level, as the export writer takes it.
    pub fn compression(&self) -> Compression {
        match self.compression {
            CompressionCodec::Zstd => {
                Compression::Zstd(self.compression_level.unwrap_or(DEFAULT_ZSTD_LEVEL))
            }
            CompressionCodec::Snappy => Compression::Snappy,
            CompressionCodec::Lz4 => Compression::Lz4,
            CompressionCodec::None => Compression::None,
        }
    }
}

/// Parquet codec name as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CompressionCodec {
    #[default]
    Zstd,
    Snappy,
    Lz4,
    None,
}

/// How the monthly download budget is spent.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Never spend the last N cohort downloads of the month.
    #[serde(default)]
    pub reserve: u32,
    /// Skip a cohort whose `lastComputed` has not changed since its last export.
    #[serde(default = "yes")]
    pub skip_unchanged: bool,
    /// Which cohorts go first when not all fit in the budget.
    #[serde(default, deserialize_with = "priority_name::deserialize")]
    #[schemars(with = "PriorityName")]
    pub priority: Priority,
    /// Freshness target: a changed cohort whose last export is younger than this is
    /// skipped as `fresh_enough` at no cost (`"24h"`, `"6h"`, `"7d"`; default `"none"`:
    /// every change is exported). `select.refresh` overrides it per cohort.
    #[serde(default)]
    pub refresh: Refresh,
    /// `asap` (default): spend what the budget allows as soon as cohorts change. `even`:
    /// spread the month's budget (after the reserve) evenly over the hours until usage
    /// resets on the 1st (UTC); cohorts beyond a run's share are deferred as `paced`.
    #[serde(default)]
    pub pace: Pace,
    /// Cohorts downloaded at the same time (1..=5: Amplitude allows 5 concurrent requests).
    #[serde(default = "default_max_parallel")]
    #[schemars(range(min = 1, max = 5))]
    pub max_parallel: usize,
}

fn yes() -> bool {
    true
}

impl ExportSpec {
    /// The pipeline's freshness targets: `quota.refresh`, overridden per cohort by
    /// `select.refresh`.
    pub fn refresh_targets(&self) -> RefreshTargets {
        RefreshTargets {
            default: self.quota.refresh.target(),
            by_id: self
                .select
                .refresh
                .iter()
                .map(|(id, r)| (id.clone(), r.target()))
                .collect(),
        }
    }
}

fn default_max_parallel() -> usize {
    4
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            reserve: 0,
            skip_unchanged: true,
            priority: Priority::default(),
            refresh: Refresh::default(),
            pace: Pace::default(),
            max_parallel: default_max_parallel(),
        }
    }
}

/// Names of [`Priority`] in pipeline files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum PriorityName {
    /// Never exported first, then the longest since the last export.
    #[default]
    StaleFirst,
    /// The pipeline's own order: listed ids, then name matches, then the rest.
    Listed,
    /// Smallest cohorts first (most cohorts refreshed for the budget).
    SmallestFirst,
}

mod priority_name {
    use super::{Priority, PriorityName};
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Priority, D::Error> {
        Ok(match PriorityName::deserialize(d)? {
            PriorityName::StaleFirst => Priority::StaleFirst,
            PriorityName::Listed => Priority::Listed,
            PriorityName::SmallestFirst => Priority::SmallestFirst,
        })
    }
}

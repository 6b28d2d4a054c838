//! Export-only sections: `[select]` (which cohorts), `[output]` (where and how the Parquet
//! goes) and `[quota]` (how the monthly budget is spent).

use schemars::JsonSchema;
use serde::Deserialize;

use super::values::{Layout, NamePattern, StorageUrl};
use crate::export::{Compression, DEFAULT_ROW_GROUP_ROWS, DEFAULT_ZSTD_LEVEL};
use crate::runner::plan::Priority;
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
    /// Cohorts downloaded at the same time (1..=5: Amplitude allows 5 concurrent requests).
    #[serde(default = "default_max_parallel")]
    #[schemars(range(min = 1, max = 5))]
    pub max_parallel: usize,
}

fn yes() -> bool {
    true
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

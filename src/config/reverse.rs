//! Reverse-only sections: `[source]` (the CRM list), `[target]` (the cohort to change) and
//! `[reconcile]` (how membership is brought in line, with guards).

use schemars::JsonSchema;
use serde::Deserialize;

use super::values::{Layout, SourceUrl, StorageUrl};
use crate::amplitude::types::IdKind;
use crate::reverse::source::Format;

/// Amplitude's limit of ids per upload or membership request.
pub const MAX_CHUNK_SIZE: usize = 100_000;

/// A reverse pipeline's own settings.
#[derive(Debug, Clone)]
pub struct ReverseSpec {
    pub source: Source,
    pub target: Target,
    pub reconcile: Reconcile,
}

/// The list of ids that the cohort should hold.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// `.csv`, `.csv.gz` or `.parquet` file: a local path or `s3://bucket/key`.
    pub url: SourceUrl,
    /// `auto`: by extension (gzip told by its magic bytes); or `csv` / `parquet`.
    #[serde(default)]
    pub format: SourceFormat,
    /// Column holding the ids.
    #[serde(default = "default_id_column")]
    pub id_column: String,
    /// What the ids are: `user_id` or `amplitude_id`.
    #[serde(default = "default_id_kind")]
    pub id_kind: IdKind,
}

fn default_id_column() -> String {
    "user_id".into()
}

fn default_id_kind() -> IdKind {
    IdKind::UserId
}

impl Source {
    /// The format to read: `format` unless `auto`, else told by the file's extension
    /// (`.csv`, `.csv.gz`, `.parquet`, case-insensitive). `None` when `auto` cannot tell
    /// (rejected by [`super::load`]).
    pub fn resolved_format(&self) -> Option<Format> {
        match self.format {
            SourceFormat::Auto => SourceFormat::from_name(self.url.file_name()),
            SourceFormat::Csv => Some(Format::Csv),
            SourceFormat::Parquet => Some(Format::Parquet),
        }
    }
}

/// Source file format as written in the file (`auto` resolves to a
/// [`crate::reverse::source::Format`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    /// By extension: `.csv`, `.csv.gz`, `.parquet` (case-insensitive).
    #[default]
    Auto,
    /// CSV with a header row, optionally gzip-compressed.
    Csv,
    Parquet,
}

impl SourceFormat {
    /// The format a file name's extension stands for.
    pub fn from_name(name: &str) -> Option<Format> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".csv") || lower.ends_with(".csv.gz") {
            Some(Format::Csv)
        } else if lower.ends_with(".parquet") {
            Some(Format::Parquet)
        } else {
            None
        }
    }
}

/// The cohort to change: an existing one, or one to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `cohort_id = "..."`.
    Existing { cohort_id: String },
    /// `create = { name, owner, published }`: upload a new cohort.
    Create(CreateCohort),
}

/// `[target]` as written: exactly one of `cohort_id` and `create` (checked by
/// [`super::load`]).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [{"required": ["cohort_id"]}, {"required": ["create"]}]))]
pub(crate) struct TargetTable {
    /// An existing cohort's id.
    #[serde(default)]
    pub cohort_id: Option<String>,
    /// A cohort to create by upload (needs `connection.app_id`).
    #[serde(default)]
    pub create: Option<CreateCohort>,
}

/// A cohort created by upload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCohort {
    /// Cohort name.
    pub name: String,
    /// Owner's Amplitude login (email).
    pub owner: String,
    /// Whether the cohort is discoverable by other users.
    #[serde(default)]
    pub published: bool,
}

/// How membership is reconciled, with its guards.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reconcile {
    /// `mirror` (add and remove), `add_only`, `remove_only`, `replace` (upload the whole
    /// list with `existing_cohort_id`), or `mirror_owned` (add, and remove only ids this
    /// pipeline added).
    #[serde(default)]
    pub mode: ReconcileMode,
    /// Where the cohort's current membership comes from.
    #[serde(default)]
    pub baseline: Baseline,
    /// Export output location to look for snapshots in (local path or `s3://`).
    #[serde(default)]
    pub snapshots: Option<StorageUrl>,
    /// Layout of those snapshots (same placeholders as `output.layout`).
    #[serde(default)]
    pub snapshot_layout: Layout,
    /// Refuse a plan removing more ids than this unless `--force`.
    #[serde(default = "default_max_removals")]
    pub max_removals: u64,
    /// Refuse a plan removing more than this percentage (0..=100) of the cohort unless
    /// `--force`.
    #[serde(default = "default_max_removal_pct")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub max_removal_pct: f64,
    /// Allow an empty source (which would empty the cohort in `mirror` / `replace`).
    #[serde(default)]
    pub allow_empty_source: bool,
    /// Drop ids that are not valid for `id_kind` (reported) instead of failing.
    #[serde(default = "yes")]
    pub skip_invalid_ids: bool,
    /// Ids per membership / upload request (1..=100000).
    #[serde(default = "default_chunk_size")]
    #[schemars(range(min = 1, max = 100_000))]
    pub chunk_size: usize,
    /// Where `plan` / `run --dry-run` write the full add/remove id lists (local path or
    /// `s3://`).
    #[serde(default = "default_lists_dir")]
    pub lists_dir: StorageUrl,
    /// Ids Amplitude skipped or reported invalid are held back (not sent again) for this
    /// many days after they were last rejected; `run --retry-rejected` sends them anyway.
    #[serde(default = "default_retry_rejected_after_days")]
    pub retry_rejected_after_days: u32,
    /// After the last call, download the cohort once (1 of the monthly quota) and compare
    /// it with the membership the run expected; drift is reported id by id and fails the
    /// run.
    #[serde(default)]
    pub verify: bool,
}

fn default_retry_rejected_after_days() -> u32 {
    30
}

fn yes() -> bool {
    true
}

fn default_max_removals() -> u64 {
    10_000
}

fn default_max_removal_pct() -> f64 {
    10.0
}

fn default_chunk_size() -> usize {
    MAX_CHUNK_SIZE
}

fn default_lists_dir() -> StorageUrl {
    StorageUrl::local_default("plans")
}

impl Default for Reconcile {
    fn default() -> Self {
        Reconcile {
            mode: ReconcileMode::default(),
            baseline: Baseline::default(),
            snapshots: None,
            snapshot_layout: Layout::default(),
            max_removals: default_max_removals(),
            max_removal_pct: default_max_removal_pct(),
            allow_empty_source: false,
            skip_invalid_ids: true,
            chunk_size: default_chunk_size(),
            lists_dir: default_lists_dir(),
            retry_rejected_after_days: default_retry_rejected_after_days(),
            verify: false,
        }
    }
}

/// How the source list is applied to the cohort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReconcileMode {
    /// Add missing ids and remove extra ones.
    #[default]
    Mirror,
    /// Only add missing ids.
    AddOnly,
    /// Only remove ids not in the source.
    RemoveOnly,
    /// Upload the whole list over the cohort (`existing_cohort_id`).
    Replace,
    /// Add missing ids; remove only ids this pipeline added earlier (recorded in the
    /// state's ownership ledger), never members someone else or a behavioral computation
    /// put in the cohort.
    MirrorOwned,
}

impl ReconcileMode {
    /// The name used in pipeline files.
    pub fn as_str(self) -> &'static str {
        match self {
            ReconcileMode::Mirror => "mirror",
            ReconcileMode::AddOnly => "add_only",
            ReconcileMode::RemoveOnly => "remove_only",
            ReconcileMode::Replace => "replace",
            ReconcileMode::MirrorOwned => "mirror_owned",
        }
    }
}

/// Where the cohort's current membership comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// The membership the pipeline's last apply left when nothing else changed the cohort
    /// since, else the newest export snapshot if not older than the cohort's
    /// `lastComputed`, else a download (which spends quota).
    #[default]
    Auto,
    /// Always download the cohort (spends one request of the monthly quota).
    Download,
    /// Always the newest snapshot (needs `snapshots`); fails when there is none.
    Snapshot,
}

impl Baseline {
    /// The name used in pipeline files.
    pub fn as_str(self) -> &'static str {
        match self {
            Baseline::Auto => "auto",
            Baseline::Download => "download",
            Baseline::Snapshot => "snapshot",
        }
    }
}

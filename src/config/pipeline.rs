//! The pipeline as a whole: the file's top level as written ([`PipelineFile`], which the
//! JSON Schema describes) and the checked [`Pipeline`] the runner uses.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;

use super::connection::Connection;
use super::download::Download;
use super::export::{ExportSpec, Output, Quota, Select};
use super::lineage::Lineage;
use super::reverse::{Reconcile, ReverseSpec, Source, Target, TargetTable};
use super::values::StorageUrl;
use crate::export::Compression;

/// A checked pipeline file, ready to run.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The file it was loaded from.
    pub file: PathBuf,
    /// `name`, or the file stem: namespaces the pipeline's state.
    pub name: String,
    pub connection: Connection,
    pub state: State,
    pub download: Download,
    pub spec: PipelineSpec,
    /// `[lineage]`: where OpenLineage run events go (none: not emitted).
    pub lineage: Option<Lineage>,
    /// Where some values sit in the file, for errors found when files are checked
    /// together ([`super::check_together`]).
    pub(crate) positions: Positions,
}

/// 1-based line and column of values of the file (`None`: not written, a default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Positions {
    pub name: Option<(usize, usize)>,
    pub state_url: Option<(usize, usize)>,
    pub output_url: Option<(usize, usize)>,
}

/// What the pipeline does.
#[derive(Debug, Clone)]
pub enum PipelineSpec {
    Export(ExportSpec),
    Reverse(ReverseSpec),
}

impl Pipeline {
    /// `export` or `reverse`.
    pub fn kind(&self) -> Kind {
        match self.spec {
            PipelineSpec::Export(_) => Kind::Export,
            PipelineSpec::Reverse(_) => Kind::Reverse,
        }
    }

    /// One line saying what the pipeline does (used by `cohort-sync validate`).
    pub fn summary(&self) -> String {
        match &self.spec {
            PipelineSpec::Export(e) => {
                let mut what = Vec::new();
                if !e.select.ids.is_empty() {
                    what.push(count(e.select.ids.len(), "id"));
                }
                if !e.select.names.is_empty() {
                    what.push(count(e.select.names.len(), "name pattern"));
                }
                if e.select.all_published {
                    what.push("all published".to_string());
                }
                let codec = match e.output.compression() {
                    Compression::Zstd(level) => format!("zstd level {level}"),
                    Compression::Snappy => "snappy".into(),
                    Compression::Lz4 => "lz4".into(),
                    Compression::None => "uncompressed".into(),
                };
                format!(
                    "export pipeline {:?}: {} → {}, {codec}",
                    self.name,
                    what.join(" + "),
                    e.output.url,
                )
            }
            PipelineSpec::Reverse(r) => {
                let target = match &r.target {
                    Target::Existing { cohort_id } => format!("cohort {cohort_id}"),
                    Target::Create(c) => format!("new cohort {:?}", c.name),
                };
                format!(
                    "reverse pipeline {:?}: {} → {target}, mode {}, baseline {}",
                    self.name,
                    r.source.url,
                    r.reconcile.mode.as_str(),
                    r.reconcile.baseline.as_str()
                )
            }
        }
    }
}

fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The two kinds of pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Download cohorts to Parquet.
    Export,
    /// Reconcile a CRM list into a cohort.
    Reverse,
}

/// `[state]`: where the run state (request ids, last exports, leases, journals) lives.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Local directory or `s3://bucket/prefix` (`gs://`, `az://`, `abfss://` too); shared by
    /// pipelines, namespaced by name.
    #[serde(default = "default_state_url")]
    pub url: StorageUrl,
}

fn default_state_url() -> StorageUrl {
    StorageUrl::local_default(".cohort-sync/state")
}

impl Default for State {
    fn default() -> Self {
        State {
            url: default_state_url(),
        }
    }
}

/// A cohort-sync pipeline file (TOML). Sections marked export-only or reverse-only are
/// errors in the other kind of file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "cohort-sync pipeline",
    extend("allOf" = [
        {
            "if": {"properties": {"kind": {"const": "export"}}},
            "then": {
                "required": ["select", "output"],
                "properties": {"source": false, "target": false, "reconcile": false}
            }
        },
        {
            "if": {"properties": {"kind": {"const": "reverse"}}},
            "then": {
                "required": ["source", "target"],
                "properties": {"select": false, "output": false, "quota": false}
            }
        }
    ])
)]
pub(crate) struct PipelineFile {
    /// `export` or `reverse`.
    pub kind: Kind,
    /// Pipeline name (letters, digits, `-`, `_`, `.`); default: the file stem. Namespaces
    /// the state.
    #[serde(default)]
    pub name: Option<String>,
    /// Amplitude API location and credentials.
    #[serde(default)]
    pub connection: Connection,
    /// Where run state is kept.
    #[serde(default)]
    pub state: State,
    /// Cohort download settings.
    #[serde(default)]
    pub download: Download,
    /// Export only: which cohorts.
    #[serde(default)]
    pub select: Option<Select>,
    /// Export only: where Parquet goes.
    #[serde(default)]
    pub output: Option<Output>,
    /// Export only: how the monthly budget is spent.
    #[serde(default)]
    pub quota: Option<Quota>,
    /// Reverse only: the CRM list.
    #[serde(default)]
    pub source: Option<Source>,
    /// Reverse only: the cohort to change (exactly one of `cohort_id`, `create`).
    #[serde(default)]
    pub target: Option<TargetTable>,
    /// Reverse only: how membership is reconciled.
    #[serde(default)]
    pub reconcile: Option<Reconcile>,
    /// Optional: OpenLineage run events of each `run` (START, then COMPLETE, FAIL or ABORT)
    /// to an HTTP endpoint or a file; the README's *Lineage* section says what they hold.
    #[serde(default)]
    pub lineage: Option<Lineage>,
}

//! `cohort-sync ddl`: the statements that expose an export pipeline's output as warehouse
//! tables, ready to paste. [`Dataset`] reads what a pipeline writes — where, in which key
//! layout, with which columns — and [`dialect`] renders it for DuckDB, Snowflake, BigQuery,
//! Athena or Databricks.
//!
//! A layout whose folders are all `name={placeholder}` (the default,
//! `cohort_id={cohort_id}/snapshot_date={date}/part-0.parquet`) is Hive-style: each such
//! folder becomes a partition column (`{date}` typed DATE, the others text). Files under
//! `_staging/`, `_runs/` and other `_` folders never match the file pattern.

pub mod dialect;

use crate::config::{Pipeline, PipelineSpec};
use crate::export::ColumnType;

pub use dialect::Dialect;

/// A partition column read from the key (`name=value` folders).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionColumn {
    pub name: String,
    pub is_date: bool,
}

/// The type of a column stored in the Parquet files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    /// A type the export's parser produces.
    Export(ColumnType),
    Date,
    /// A UTC timestamp.
    Timestamp,
}

impl From<ColumnType> for SqlType {
    fn from(t: ColumnType) -> Self {
        SqlType::Export(t)
    }
}

/// A column stored in the Parquet files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileColumn {
    pub name: String,
    pub ty: SqlType,
}

/// Which files of a pipeline a dataset describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Files {
    /// The snapshots: one row per cohort member per snapshot (`<pipeline>_snapshots`).
    Snapshots,
    /// The membership change files (`output.changes = true`): one row per member that
    /// entered or exited since the previous snapshot (`<pipeline>_changes`).
    Changes,
}

impl Files {
    /// The table name's suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Files::Snapshots => "snapshots",
            Files::Changes => "changes",
        }
    }

    /// What the files are and what a row is, for the header comment.
    pub fn describe(self) -> (&'static str, &'static str) {
        match self {
            Files::Snapshots => (
                "the Parquet snapshots",
                "one row per cohort member per snapshot",
            ),
            Files::Changes => (
                "the membership change files",
                "one row per member that entered or exited since the cohort's previous snapshot",
            ),
        }
    }
}

/// What an export pipeline writes, as a warehouse sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// The pipeline's name (the default table name is derived from it).
    pub pipeline: String,
    /// Root URL without a trailing slash: `s3://bucket/prefix` or an absolute local path.
    pub root: String,
    /// The layout with every placeholder replaced by `*` (relative to `root`).
    pub file_glob: String,
    /// The layout as a regular expression over the key under `root` (for Snowflake's
    /// `PATTERN`).
    pub file_regex: String,
    /// Partition columns in key order; empty when the layout is not Hive-style.
    pub partitions: Vec<PartitionColumn>,
    /// Why the layout is not Hive-style, when it is not.
    pub not_hive: Option<String>,
    /// Columns known before any file is read: `amplitude_id`, `user_id`, then the
    /// properties named in `download.prop_keys` and `download.column_types` (snapshots), or
    /// the change file's columns (changes).
    pub columns: Vec<FileColumn>,
    pub files: Files,
}

impl Dataset {
    /// The change files of an export pipeline that writes them (`output.changes = true`).
    pub fn changes_of(
        pipeline: &Pipeline,
        cwd: &std::path::Path,
    ) -> Result<Option<Dataset>, String> {
        let snapshots = Dataset::of(pipeline, cwd)?;
        let PipelineSpec::Export(spec) = &pipeline.spec else {
            return Ok(None);
        };
        if !spec.output.changes {
            return Ok(None);
        }
        let layout = spec.output.changes_layout.as_str();
        let (partitions, not_hive) = partitions_of(layout);
        let id_type = snapshots
            .columns
            .first()
            .map_or(SqlType::Export(ColumnType::Int64), |c| c.ty);
        let user_type = snapshots
            .columns
            .iter()
            .find(|c| c.name == "user_id")
            .map_or(SqlType::Export(ColumnType::Utf8), |c| c.ty);
        let col = |name: &str, ty: SqlType| FileColumn {
            name: name.to_string(),
            ty,
        };
        let columns = vec![
            col("amplitude_id", id_type),
            col("user_id", user_type),
            col("change", SqlType::Export(ColumnType::Utf8)),
            col("previous_snapshot_date", SqlType::Date),
            col("snapshot_date", SqlType::Date),
            col("previous_last_computed", SqlType::Timestamp),
            col("last_computed", SqlType::Timestamp),
        ];
        Ok(Some(Dataset {
            file_glob: replace_placeholders(layout, "*"),
            file_regex: layout_regex(layout),
            partitions,
            not_hive,
            columns,
            files: Files::Changes,
            ..snapshots
        }))
    }

    /// The file columns that are not partition columns too (engines that declare
    /// partition columns apart refuse a name twice; the values are the same).
    pub fn columns_beside_partitions(&self) -> impl Iterator<Item = &FileColumn> {
        self.columns
            .iter()
            .filter(|c| !self.partitions.iter().any(|p| p.name == c.name))
    }

    /// The dataset of an export pipeline; `cwd` resolves a relative local output.
    pub fn of(pipeline: &Pipeline, cwd: &std::path::Path) -> Result<Dataset, String> {
        let PipelineSpec::Export(spec) = &pipeline.spec else {
            return Err(format!(
                "{}: `ddl` describes an export pipeline's output; this is a reverse pipeline",
                pipeline.file.display()
            ));
        };
        let url = spec.output.url.as_str();
        let root = if url.contains("://") {
            url.trim_end_matches('/').to_string()
        } else {
            let path = std::path::Path::new(url);
            let abs = if path.is_absolute() {
                path.to_path_buf()
            } else {
                cwd.join(path)
            };
            abs.display().to_string().trim_end_matches('/').to_string()
        };
        let layout = spec.output.layout.as_str();
        let (partitions, not_hive) = partitions_of(layout);
        let mut columns = vec![
            FileColumn {
                name: "amplitude_id".into(),
                ty: ColumnType::Int64.into(),
            },
            FileColumn {
                name: "user_id".into(),
                ty: ColumnType::Utf8.into(),
            },
        ];
        let declared = &pipeline.download.column_types;
        let mut add = |name: &str| {
            if !columns.iter().any(|c| c.name == name) {
                let ty = declared.get(name).copied().unwrap_or(ColumnType::Utf8);
                columns.push(FileColumn {
                    name: name.to_string(),
                    ty: ty.into(),
                });
            }
        };
        for name in &pipeline.download.prop_keys {
            add(name);
        }
        for name in declared.keys() {
            add(name);
        }
        if let Some(c) = columns.iter_mut().find(|c| c.name == "user_id")
            && let Some(t) = declared.get("user_id")
        {
            c.ty = (*t).into();
        }
        Ok(Dataset {
            pipeline: pipeline.name.clone(),
            root,
            file_glob: replace_placeholders(layout, "*"),
            file_regex: layout_regex(layout),
            partitions,
            not_hive,
            columns,
            files: Files::Snapshots,
        })
    }

    /// `s3`, `file`, or the scheme of the root.
    pub fn scheme(&self) -> &str {
        self.root.split_once("://").map_or("file", |(s, _)| s)
    }

    /// A table name from the pipeline's name: lower case, `[a-z0-9_]`.
    pub fn table_name(&self) -> String {
        let mut s: String = self
            .pipeline
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        if s.starts_with(|c: char| c.is_ascii_digit()) || s.is_empty() {
            s.insert_str(0, "cohorts_");
        }
        s
    }
}

/// The partition columns of a layout's folders, or why it is not Hive-style.
fn partitions_of(layout: &str) -> (Vec<PartitionColumn>, Option<String>) {
    let parts: Vec<&str> = layout.split('/').collect();
    let folders = &parts[..parts.len().saturating_sub(1)];
    let mut out = Vec::new();
    for folder in folders {
        if !folder.contains('{') {
            continue;
        }
        let hive = folder.split_once('=').and_then(|(name, value)| {
            let ph = value.strip_prefix('{')?.strip_suffix('}')?;
            let plain_name =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            (plain_name && !ph.contains(['{', '}'])).then(|| PartitionColumn {
                name: name.to_string(),
                is_date: ph == "date",
            })
        });
        match hive {
            Some(p) => out.push(p),
            None => {
                return (
                    Vec::new(),
                    Some(format!(
                        "the folder `{folder}` of the layout is not `name={{placeholder}}`, so no \
                         partition column can be read from the key"
                    )),
                );
            }
        }
    }
    (out, None)
}

fn replace_placeholders(layout: &str, with: &str) -> String {
    let mut out = String::new();
    let mut rest = layout;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        match rest[start..].find('}') {
            Some(end) => {
                out.push_str(with);
                rest = &rest[start + end + 1..];
            }
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The layout as a regular expression over keys: placeholders match one path segment's
/// worth of characters, everything else literally.
fn layout_regex(layout: &str) -> String {
    const MARK: &str = "\u{1}";
    let marked = replace_placeholders(layout, MARK);
    let mut out = String::from(".*");
    for c in marked.chars() {
        match c {
            '\u{1}' => out.push_str("[^/]+"),
            '.' | '+' | '(' | ')' | '[' | ']' | '^' | '$' | '|' | '?' | '*' | '\\' => {
                out.push('[');
                if c == '\\' || c == '^' || c == ']' {
                    out.push('\\');
                }
                out.push(c);
                out.push(']');
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_layout_is_hive_style() {
        let (p, why) = partitions_of("cohort_id={cohort_id}/snapshot_date={date}/part-0.parquet");
        assert_eq!(why, None);
        assert_eq!(
            p,
            vec![
                PartitionColumn {
                    name: "cohort_id".into(),
                    is_date: false
                },
                PartitionColumn {
                    name: "snapshot_date".into(),
                    is_date: true
                }
            ]
        );
        assert_eq!(
            replace_placeholders(
                "cohort_id={cohort_id}/snapshot_date={date}/part-0.parquet",
                "*"
            ),
            "cohort_id=*/snapshot_date=*/part-0.parquet"
        );
        assert_eq!(
            layout_regex("cohort_id={cohort_id}/d={date}/run={run_id}.parquet"),
            ".*cohort_id=[^/]+/d=[^/]+/run=[^/]+[.]parquet"
        );
    }

    #[test]
    fn a_layout_with_bare_placeholder_folders_has_no_partitions() {
        let (p, why) = partitions_of("{cohort_id}/{date}.parquet");
        assert!(p.is_empty());
        assert!(why.is_some_and(|w| w.contains("`{cohort_id}`")));
        // Placeholders only in the file name: no partitions, still Hive-compatible.
        assert_eq!(
            partitions_of("all/{cohort_id}-{date}.parquet"),
            (vec![], None)
        );
    }
}

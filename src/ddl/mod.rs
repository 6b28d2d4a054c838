//! `cohort-sync ddl`: the statements that expose an export pipeline's output as warehouse
//! tables, ready to paste. [`Dataset`] reads what a pipeline writes — where, in which key
//! layout, with which columns: the snapshots, the sync history beside them and, with
//! `output.changes = true`, the membership change files — and
//! [`dialect`] renders it for DuckDB, Snowflake, BigQuery, Athena or Databricks.
//!
//! A layout whose folders are all `name={placeholder}` (the default,
//! `cohort_id={cohort_id}/snapshot_date={date}/part-0.parquet`) is Hive-style: each such
//! folder becomes a partition column (`{date}` typed DATE, the others text). Files under
//! `_staging/`, `_runs/` and other `_` folders never match the file pattern.

pub mod dialect;

use arrow::datatypes::{DataType, Schema};

use crate::config::{Pipeline, PipelineSpec};
use crate::export::ColumnType;
use crate::runner::history;

pub use dialect::Dialect;

/// A partition column read from the key (`name=value` folders).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionColumn {
    pub name: String,
    pub is_date: bool,
}

/// The type of a stored column, as the warehouses know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    Int64,
    Float64,
    Boolean,
    Utf8,
    /// A calendar day.
    Date,
    /// An instant (Parquet timestamp adjusted to UTC).
    Timestamp,
}

impl From<ColumnType> for SqlType {
    fn from(t: ColumnType) -> Self {
        match t {
            ColumnType::Int64 => SqlType::Int64,
            ColumnType::Float64 => SqlType::Float64,
            ColumnType::Boolean => SqlType::Boolean,
            ColumnType::Utf8 => SqlType::Utf8,
        }
    }
}

/// A column stored in the Parquet files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileColumn {
    pub name: String,
    pub ty: SqlType,
}

/// Which of a pipeline's datasets a [`Dataset`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contents {
    /// The cohort snapshots: one row per member per snapshot.
    Snapshots,
    /// The sync history (`runner::history`): one row per cohort per run.
    History,
    /// The membership change files (`output.changes = true`, `runner::changes`): one row
    /// per member that entered or exited since the cohort's previous snapshot.
    Changes,
}

impl Contents {
    /// The table name's suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Contents::Snapshots => "snapshots",
            Contents::History => "history",
            Contents::Changes => "changes",
        }
    }

    /// What one row is, for the comment above the statements.
    pub fn row(self) -> &'static str {
        match self {
            Contents::Snapshots => "one row per cohort member per snapshot",
            Contents::History => "the sync history, one row per cohort per run",
            Contents::Changes => {
                "the membership changes, one row per member that entered or exited since the \
                 cohort's previous snapshot"
            }
        }
    }
}

/// One dataset a pipeline writes, as a warehouse sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// The pipeline's name (table names are derived from it).
    pub pipeline: String,
    pub contents: Contents,
    /// The output's root URL without a trailing slash: `s3://bucket/prefix` or an absolute
    /// local path. Every dataset of a pipeline shares it.
    pub root: String,
    /// The layout's leading folders without placeholders (`_history`, `_changes`), where
    /// this dataset's files are; empty when the first folder already varies (the default
    /// snapshot layout starts at the root).
    pub dir: String,
    /// The file pattern with every placeholder replaced by `*` (relative to `root`).
    pub file_glob: String,
    /// The file pattern as a regular expression matched whole (Snowflake's `PATTERN`),
    /// whether the engine names a file by its key or by its path under the root: the
    /// root's last folder comes right before the layout, so the snapshots' pattern never
    /// takes the `_changes/` files, whose folders look the same.
    pub file_regex: String,
    /// Partition columns in key order; empty when the layout is not Hive-style.
    pub partitions: Vec<PartitionColumn>,
    /// Why the layout is not Hive-style, when it is not.
    pub not_hive: Option<String>,
    /// Columns known before any file is read. Snapshots: `amplitude_id`, `user_id`, then
    /// the properties named in `download.prop_keys` and `download.column_types`.
    pub columns: Vec<FileColumn>,
}

impl Dataset {
    /// The datasets of an export pipeline's output — its snapshots, its sync history and,
    /// when it writes them, its change files; `cwd` resolves a relative local output.
    pub fn all_of(pipeline: &Pipeline, cwd: &std::path::Path) -> Result<Vec<Dataset>, String> {
        let snapshots = Dataset::snapshots(pipeline, cwd)?;
        let history = Dataset::history(&snapshots);
        let changes = Dataset::changes(pipeline, &snapshots);
        Ok([Some(snapshots), Some(history), changes]
            .into_iter()
            .flatten()
            .collect())
    }

    /// The snapshots of an export pipeline; `cwd` resolves a relative local output.
    pub fn snapshots(pipeline: &Pipeline, cwd: &std::path::Path) -> Result<Dataset, String> {
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
                ty: SqlType::Int64,
            },
            FileColumn {
                name: "user_id".into(),
                ty: SqlType::Utf8,
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
            contents: Contents::Snapshots,
            dir: leading_dir(layout),
            file_glob: replace_placeholders(layout, "*"),
            file_regex: layout_regex(&root, layout),
            root,
            partitions,
            not_hive,
            columns,
        })
    }

    /// The sync history written beside `snapshots` (same output), with the columns of
    /// `runner::history`'s schema.
    pub fn history(snapshots: &Dataset) -> Dataset {
        let layout = format!(
            "{}/pipeline={{pipeline}}/date={{date}}/run-{{run_id}}.parquet",
            history::HISTORY_DIR
        );
        let (partitions, not_hive) = partitions_of(&layout);
        Dataset {
            pipeline: snapshots.pipeline.clone(),
            contents: Contents::History,
            root: snapshots.root.clone(),
            dir: leading_dir(&layout),
            file_glob: replace_placeholders(&layout, "*"),
            file_regex: layout_regex(&snapshots.root, &layout),
            partitions,
            not_hive,
            columns: columns_of(&history::schema()),
        }
    }

    /// The change files written beside `snapshots` when the pipeline sets
    /// `output.changes = true` (the columns of `runner::changes`, the ids typed like the
    /// snapshots').
    pub fn changes(pipeline: &Pipeline, snapshots: &Dataset) -> Option<Dataset> {
        let PipelineSpec::Export(spec) = &pipeline.spec else {
            return None;
        };
        if !spec.output.changes {
            return None;
        }
        let layout = spec.output.changes_layout.as_str();
        let (partitions, not_hive) = partitions_of(layout);
        let type_of = |name: &str, default| {
            snapshots
                .columns
                .iter()
                .find(|c| c.name == name)
                .map_or(default, |c| c.ty)
        };
        let col = |name: &str, ty| FileColumn {
            name: name.to_string(),
            ty,
        };
        Some(Dataset {
            pipeline: snapshots.pipeline.clone(),
            contents: Contents::Changes,
            root: snapshots.root.clone(),
            dir: leading_dir(layout),
            file_glob: replace_placeholders(layout, "*"),
            file_regex: layout_regex(&snapshots.root, layout),
            partitions,
            not_hive,
            columns: vec![
                col("amplitude_id", type_of("amplitude_id", SqlType::Int64)),
                col("user_id", type_of("user_id", SqlType::Utf8)),
                col("change", SqlType::Utf8),
                col("previous_snapshot_date", SqlType::Date),
                col("snapshot_date", SqlType::Date),
                col("previous_last_computed", SqlType::Timestamp),
                col("last_computed", SqlType::Timestamp),
            ],
        })
    }

    /// The file columns that are not partition columns too (engines that declare
    /// partition columns apart refuse a name twice; the values are the same).
    pub fn columns_beside_partitions(&self) -> impl Iterator<Item = &FileColumn> {
        self.columns
            .iter()
            .filter(|c| !self.partitions.iter().any(|p| p.name == c.name))
    }

    /// `s3`, `gs`, `az`, `abfss`, or `file` for a local output.
    pub fn scheme(&self) -> &str {
        if crate::storage::is_cloud_url(&self.root) {
            self.root.split_once("://").map_or("file", |(s, _)| s)
        } else {
            "file"
        }
    }

    /// `root/dir` without a trailing slash: where this dataset's files are and nothing else.
    pub fn location(&self) -> String {
        if self.dir.is_empty() {
            self.root.clone()
        } else {
            format!("{}/{}", self.root, self.dir)
        }
    }

    /// A name from the pipeline's name: lower case, `[a-z0-9_]` (stages and tables start
    /// with it).
    pub fn base_name(&self) -> String {
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

    /// This dataset's table: `{base_name}_snapshots`, `{base_name}_history`.
    pub fn table_name(&self) -> String {
        format!("{}_{}", self.base_name(), self.contents.suffix())
    }
}

/// The leading folders of `layout` that hold no placeholder, joined by `/`.
fn leading_dir(layout: &str) -> String {
    let parts: Vec<&str> = layout.split('/').collect();
    let folders = &parts[..parts.len().saturating_sub(1)];
    folders
        .iter()
        .take_while(|f| !f.contains('{'))
        .copied()
        .collect::<Vec<_>>()
        .join("/")
}

/// The stored columns of a Parquet schema written by this tool.
fn columns_of(schema: &Schema) -> Vec<FileColumn> {
    schema
        .fields()
        .iter()
        .map(|f| FileColumn {
            name: f.name().clone(),
            ty: match f.data_type() {
                DataType::Int64 | DataType::Int32 => SqlType::Int64,
                DataType::Float64 => SqlType::Float64,
                DataType::Boolean => SqlType::Boolean,
                DataType::Timestamp(..) => SqlType::Timestamp,
                DataType::Date32 | DataType::Date64 => SqlType::Date,
                _ => SqlType::Utf8,
            },
        })
        .collect()
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

/// The layout under `root` as a regular expression matched whole: placeholders match one
/// path segment's worth of characters, everything else literally; the path before the
/// layout is either empty (a path under the root) or ends with the root's last folder.
fn layout_regex(root: &str, layout: &str) -> String {
    const MARK: &str = "\u{1}";
    let under_bucket = root.split_once("://").map_or(root, |(_, rest)| {
        rest.split_once('/').map_or("", |(_, path)| path)
    });
    let mut out = match under_bucket.trim_matches('/').rsplit('/').next() {
        Some(last) if !last.is_empty() => format!("(.*{}/)?", regex_literal(last)),
        _ => String::new(),
    };
    for part in replace_placeholders(layout, MARK).split(MARK) {
        if !out.is_empty() || !part.is_empty() {
            out.push_str(&regex_literal(part));
        }
        out.push_str("[^/]+");
    }
    out.truncate(out.len() - "[^/]+".len());
    out
}

/// `s` with every regular-expression character in brackets (`.` → `[.]`).
fn regex_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '.' | '+' | '(' | ')' | '[' | ']' | '^' | '$' | '|' | '?' | '*' | '\\' | '{' | '}' => {
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
            layout_regex(
                "s3://b/amplitude/cohorts",
                "cohort_id={cohort_id}/d={date}/run={run_id}.parquet"
            ),
            "(.*cohorts/)?cohort_id=[^/]+/d=[^/]+/run=[^/]+[.]parquet"
        );
        assert_eq!(
            layout_regex("gs://b", "_changes/{cohort_id}.parquet"),
            "_changes/[^/]+[.]parquet"
        );
        assert_eq!(layout_regex("s3://b/", "{date}"), "[^/]+");
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

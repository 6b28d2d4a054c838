//! Finds the newest export snapshot of a cohort in an export pipeline's output: the objects
//! whose key fits the snapshot layout for that cohort id, judged by the `lastComputed` the
//! export wrote into each Parquet footer (`cohort_sync.last_computed`). Reading a footer
//! costs a couple of small range reads and no quota.

use std::path::Path as FsPath;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::Serialize;

use super::bytes::FileRef;
use super::parquet_ids::footer_metadata;
use crate::amplitude::types::Timestamp;
use crate::config::{Layout, StorageUrl};
use crate::runner::layout::sanitize;
use crate::storage::{self, Location};

/// Footer key holding the cohort's `lastComputed` at export time.
pub const LAST_COMPUTED_KEY: &str = "cohort_sync.last_computed";
/// Footer key holding the cohort id.
pub const COHORT_ID_KEY: &str = "cohort_sync.cohort_id";
/// Footer key holding the request id whose file the snapshot is.
pub const REQUEST_ID_KEY: &str = "cohort_sync.request_id";
/// Footer key holding the snapshot's date (`YYYY-MM-DD`, the run's `{date}`).
pub const SNAPSHOT_DATE_KEY: &str = "cohort_sync.snapshot_date";
/// Footer key naming what a file is; change files say [`KIND_CHANGES`] and are never
/// taken for a snapshot.
pub const KIND_KEY: &str = "cohort_sync.kind";
/// [`KIND_KEY`] of a membership change file.
pub const KIND_CHANGES: &str = "changes";
/// Footers read at most (the most recently written candidates).
const MAX_FOOTERS: usize = 8;

/// One snapshot found.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub file: FileRef,
    /// `cohort_sync.last_computed` as epoch seconds (`None` when absent or unreadable).
    pub last_computed: Option<i64>,
    pub modified: DateTime<Utc>,
    /// The footer's `cohort_sync.last_computed` as written (empty when absent).
    pub last_computed_text: String,
    /// The footer's `cohort_sync.request_id`.
    pub request_id: Option<String>,
    /// The footer's `cohort_sync.snapshot_date`, else the day the file was written (UTC).
    pub date: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotInfo {
    pub url: String,
    pub last_computed: Option<i64>,
}

impl Snapshot {
    pub fn info(&self) -> SnapshotInfo {
        SnapshotInfo {
            url: self.file.label(),
            last_computed: self.last_computed,
        }
    }

    /// Whether it holds the cohort as of `cohort_last_computed` or later.
    pub fn fresh_for(&self, cohort_last_computed: Option<i64>) -> bool {
        matches!((self.last_computed, cohort_last_computed), (Some(s), Some(c)) if s >= c)
    }
}

/// Parses the footer value (`lastComputed` as Amplitude sent it) to epoch seconds, the
/// way the cohort's own `lastComputed` is read: seconds, milliseconds or ISO-8601 text.
pub fn parse_last_computed(value: &str) -> Option<i64> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    Timestamp::Text(v.to_string()).epoch_seconds()
}

/// The layout as a glob pattern for one cohort (other placeholders match one path level
/// each), and the literal directory prefix to list under.
fn pattern_for(layout: &str, cohort_id: &str) -> (String, String) {
    let mut pattern = String::new();
    let mut literal = String::new();
    let mut literal_done = false;
    let mut rest = layout;
    while let Some(start) = rest.find('{') {
        let text = &rest[..start];
        pattern.push_str(&glob::Pattern::escape(text));
        if !literal_done {
            literal.push_str(text);
        }
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else {
            break;
        };
        if &after[..end] == "cohort_id" {
            let id = sanitize(cohort_id);
            pattern.push_str(&glob::Pattern::escape(&id));
            if !literal_done {
                literal.push_str(&id);
            }
        } else {
            pattern.push('*');
            literal_done = true;
        }
        rest = &after[end + 1..];
    }
    pattern.push_str(&glob::Pattern::escape(rest));
    if !literal_done {
        literal.push_str(rest);
    }
    let prefix = match literal.rfind('/') {
        Some(i) => literal[..i].to_string(),
        None => String::new(),
    };
    (pattern, prefix)
}

/// The snapshot of `cohort_id` with the highest `lastComputed` among the most recently
/// written candidates; `None` when there is none.
pub async fn newest(
    snapshots: &StorageUrl,
    layout: &Layout,
    cohort_id: &str,
    base_dir: &FsPath,
) -> Result<Option<Snapshot>, String> {
    let url = snapshots.as_str();
    if !url.starts_with("s3://") {
        let local = FsPath::new(url.strip_prefix("file://").unwrap_or(url));
        let dir = if local.is_relative() {
            base_dir.join(local)
        } else {
            local.to_path_buf()
        };
        if !dir.is_dir() {
            return Ok(None);
        }
    }
    let loc = storage::open(url, base_dir).map_err(|e| e.to_string())?;
    newest_in(&loc, layout.as_str(), cohort_id, None).await
}

/// [`newest`] in an opened output, leaving out the file of request `except_request`
/// (the export in progress: a rerun after a kill may find its own file published).
/// Ties on `lastComputed` go to the most recently written file.
pub async fn newest_in(
    loc: &Location,
    layout: &str,
    cohort_id: &str,
    except_request: Option<&str>,
) -> Result<Option<Snapshot>, String> {
    let (pattern, prefix) = pattern_for(layout, cohort_id);
    let glob = glob::Pattern::new(&pattern).map_err(|e| format!("layout {layout:?}: {e}"))?;
    let opts = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let root = loc.prefix.as_ref().to_string();
    let mut candidates: Vec<object_store::ObjectMeta> = loc
        .store
        .list(Some(&loc.key(&prefix)))
        .try_filter(|m| {
            let key = m.location.as_ref();
            let rel = key
                .strip_prefix(root.as_str())
                .unwrap_or(key)
                .trim_start_matches('/');
            std::future::ready(glob.matches_with(rel, opts))
        })
        .try_collect()
        .await
        .map_err(|e| format!("listing {}: {e}", loc.display))?;
    candidates.sort_by_key(|m| std::cmp::Reverse(m.last_modified));
    let mut best: Option<Snapshot> = None;
    for meta in candidates.into_iter().take(MAX_FOOTERS) {
        let file = FileRef::Store {
            store: loc.store.clone(),
            key: meta.location.clone(),
            url: loc.describe(&meta.location),
        };
        let Some(snap) = read_snapshot(file, meta.last_modified, cohort_id).await else {
            continue;
        };
        if except_request.is_some() && snap.request_id.as_deref() == except_request {
            continue;
        }
        let better = match &best {
            None => true,
            Some(b) => snap.last_computed > b.last_computed,
        };
        if better {
            best = Some(snap);
        }
    }
    Ok(best)
}

/// The snapshot `file` is, from its footer: `None` (logged) when the footer cannot be read,
/// names another cohort, or marks a change file.
pub async fn read_snapshot(
    file: FileRef,
    modified: DateTime<Utc>,
    cohort_id: &str,
) -> Option<Snapshot> {
    let footer = match footer_metadata(&file).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("skipping snapshot {}: {e}", file.label());
            return None;
        }
    };
    if footer
        .get(COHORT_ID_KEY)
        .is_some_and(|id| id.as_str() != cohort_id)
        || footer.get(KIND_KEY).is_some_and(|k| k == KIND_CHANGES)
    {
        return None;
    }
    let text = footer.get(LAST_COMPUTED_KEY).cloned().unwrap_or_default();
    Some(Snapshot {
        last_computed: parse_last_computed(&text),
        last_computed_text: text,
        request_id: footer.get(REQUEST_ID_KEY).cloned(),
        date: footer
            .get(SNAPSHOT_DATE_KEY)
            .cloned()
            .unwrap_or_else(|| modified.format("%Y-%m-%d").to_string()),
        modified,
        file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_becomes_a_pattern_and_a_prefix() {
        let (p, prefix) = pattern_for(
            "cohort_id={cohort_id}/snapshot_date={date}/part-0.parquet",
            "abc",
        );
        assert_eq!(p, "cohort_id=abc/snapshot_date=*/part-0.parquet");
        assert_eq!(prefix, "cohort_id=abc");
        let (p, prefix) = pattern_for("exports/{date}/{cohort_id}.parquet", "a*b");
        assert_eq!(
            p, "exports/*/a_b.parquet",
            "ids are sanitized as the export does"
        );
        assert_eq!(prefix, "exports");
        let (_, prefix) = pattern_for("{cohort_id}.parquet", "x");
        assert_eq!(prefix, "");
    }

    #[test]
    fn last_computed_values() {
        assert_eq!(parse_last_computed("1679440233"), Some(1679440233));
        assert_eq!(parse_last_computed("1679440233000"), Some(1679440233));
        assert_eq!(
            parse_last_computed("2023-03-21T23:10:33Z"),
            Some(1679440233)
        );
        assert_eq!(parse_last_computed(""), None);
        assert_eq!(parse_last_computed("soon"), None);
    }
}

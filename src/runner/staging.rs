//! Where a Parquet file is written before it is published, so that no reader ever meets
//! a half-written file.
//!
//! On a local output directory the file is written under
//! `{output}/_staging/{pipeline}/{run_id}/{cohort_id}.parquet` (object_store's own
//! `…#N` temporary file sits beside it while parts arrive) and renamed to its final key
//! when complete. Hive-style readers (pyarrow, Spark, Trino, DuckDB) skip paths whose
//! names start with `_` or `.`, so nothing in progress is ever part of the dataset. A run
//! killed mid-write leaves its staging folder behind; the next run of the pipeline
//! removes every staging folder whose run holds no live lease in the pipeline's state.
//!
//! On S3 a multipart upload is invisible until it is completed, so files are uploaded
//! straight to their final key; a killed run leaves an incomplete multipart upload that
//! only a bucket lifecycle rule (`AbortIncompleteMultipartUpload`) removes.

use std::collections::BTreeSet;
use std::path::PathBuf;

use object_store::ObjectStoreExt;
use object_store::path::Path;

use super::layout::sanitize;
use crate::storage::Location;

/// The folder under an output that holds files in progress.
pub const STAGING_DIR: &str = "_staging";

/// The staging area of one pipeline run on one output.
pub struct Staging<'a> {
    output: &'a Location,
    pipeline: String,
    run_id: String,
}

impl<'a> Staging<'a> {
    pub fn new(output: &'a Location, pipeline: &str, run_id: &str) -> Self {
        Staging {
            output,
            pipeline: sanitize(pipeline),
            run_id: sanitize(run_id),
        }
    }

    /// Where cohort `cohort_id`'s file is written before it is published at `final_key`
    /// (the final key itself where uploads are invisible until complete).
    pub fn key_for(&self, cohort_id: &str, final_key: &Path) -> Path {
        if !self.output.is_local {
            return final_key.clone();
        }
        self.output.key(&format!(
            "{STAGING_DIR}/{}/{}/{}.parquet",
            self.pipeline,
            self.run_id,
            sanitize(cohort_id)
        ))
    }

    /// Where another file of cohort `cohort_id` (`{cohort_id}.{what}.parquet`) is written
    /// before it is published at `final_key` (the final key itself on object stores).
    pub fn key_named(&self, cohort_id: &str, what: &str, final_key: &Path) -> Path {
        if !self.output.is_local {
            return final_key.clone();
        }
        self.output.key(&format!(
            "{STAGING_DIR}/{}/{}/{}.{}.parquet",
            self.pipeline,
            self.run_id,
            sanitize(cohort_id),
            sanitize(what)
        ))
    }

    /// Moves a complete staged file to its final key (an atomic rename on a local
    /// directory; nothing to do where the upload went straight to the final key).
    pub async fn publish(&self, staged: &Path, final_key: &Path) -> Result<(), String> {
        if staged == final_key {
            return Ok(());
        }
        self.output
            .store
            .rename(staged, final_key)
            .await
            .map_err(|e| {
                format!(
                    "publishing {} as {}: {e}",
                    self.output.describe(staged),
                    self.output.describe(final_key)
                )
            })
    }

    /// Deletes a staged file that will not be published (its lease was lost): the run
    /// leaves nothing behind for the next run to clean. Nothing to do where the upload
    /// went straight to the final key. A failure is logged; the next run removes the
    /// folder as an orphan.
    pub async fn discard(&self, staged: &Path, final_key: &Path) {
        if staged == final_key {
            return;
        }
        match self.output.store.delete(staged).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => tracing::warn!(
                "cannot remove the unpublished file {}: {e}",
                self.output.describe(staged)
            ),
        }
        self.tidy();
    }

    /// Removes the staging folders of this pipeline's earlier runs that hold no live
    /// lease (`live_runs`): what killed runs left behind. Returns the folders removed.
    pub fn remove_orphans(&self, live_runs: &BTreeSet<String>) -> Result<Vec<String>, String> {
        let Some(dir) = self.pipeline_dir() else {
            return Ok(Vec::new());
        };
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("listing {}: {e}", dir.display())),
        };
        let live: BTreeSet<String> = live_runs.iter().map(|r| sanitize(r)).collect();
        let mut removed = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| format!("listing {}: {e}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == self.run_id || live.contains(&name) {
                continue;
            }
            let path = entry.path();
            let result = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            match result {
                Ok(()) => removed.push(path.display().to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("removing {}: {e}", path.display())),
            }
        }
        Ok(removed)
    }

    /// Removes this run's own (empty) staging folders once its files are published.
    pub fn tidy(&self) {
        if let Some(dir) = self.pipeline_dir() {
            let run_dir = dir.join(&self.run_id);
            // Fails harmlessly when not empty (a file another task still writes) or absent.
            let _ = std::fs::remove_dir(&run_dir);
            let _ = std::fs::remove_dir(&dir);
            if let Some(parent) = dir.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }

    fn pipeline_dir(&self) -> Option<PathBuf> {
        if !self.output.is_local {
            return None;
        }
        Some(
            PathBuf::from(&self.output.display)
                .join(STAGING_DIR)
                .join(&self.pipeline),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage;

    #[tokio::test]
    async fn files_are_staged_under_an_underscore_folder_and_renamed_into_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = storage::open("out", dir.path()).expect("open");
        let staging = Staging::new(&out, "daily", "run-1");
        let final_key = out.key("cohort_id=c1/snapshot_date=2026-01-01/part-0.parquet");
        let staged = staging.key_for("c1", &final_key);
        assert!(
            staged.as_ref().starts_with("_staging/daily/run-1/"),
            "{staged}"
        );
        out.store
            .put(&staged, bytes::Bytes::from_static(b"PAR1").into())
            .await
            .expect("put");
        staging.publish(&staged, &final_key).await.expect("publish");
        assert!(out.store.head(&final_key).await.is_ok());
        staging.tidy();
        assert!(!dir.path().join("out/_staging").exists());
    }

    #[tokio::test]
    async fn a_discarded_file_leaves_no_staging_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = storage::open("out", dir.path()).expect("open");
        let staging = Staging::new(&out, "daily", "run-1");
        let final_key = out.key("cohort_id=c1/part-0.parquet");
        let staged = staging.key_for("c1", &final_key);
        out.store
            .put(&staged, bytes::Bytes::from_static(b"PAR1").into())
            .await
            .expect("put");
        staging.discard(&staged, &final_key).await;
        assert!(!dir.path().join("out/_staging").exists());
        assert!(
            out.store.head(&final_key).await.is_err(),
            "nothing published"
        );
    }

    #[tokio::test]
    async fn orphans_without_a_live_lease_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = storage::open("out", dir.path()).expect("open");
        for run in ["dead-run", "live-run", "me"] {
            let d = dir.path().join("out/_staging/p").join(run);
            std::fs::create_dir_all(&d).expect("mkdir");
            std::fs::write(d.join("c1.parquet#1"), b"partial").expect("write");
        }
        let staging = Staging::new(&out, "p", "me");
        let live = BTreeSet::from(["live-run".to_string()]);
        let removed = staging.remove_orphans(&live).expect("clean");
        assert_eq!(removed.len(), 1, "{removed:?}");
        assert!(removed[0].ends_with("dead-run"));
        assert!(dir.path().join("out/_staging/p/live-run").exists());
        assert!(dir.path().join("out/_staging/p/me").exists());
    }
}

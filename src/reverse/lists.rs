//! The full add / remove lists written next to a plan: one id per line, named by pipeline
//! and run id, so that `plan` and `--dry-run` can be reviewed (or fed to other tools).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use object_store::{ObjectStoreExt, PutPayload};

use super::idset::IdList;
use crate::config::StorageUrl;
use crate::runner::layout::sanitize;
use crate::storage;

/// Writes `ids` to `path`, one per line (parent directories are created).
pub fn write_list(path: &Path, ids: &IdList) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("tmp");
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
    for id in ids.iter() {
        w.write_all(id)?;
        w.write_all(b"\n")?;
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// `{dir}/{pipeline}-{run_id}-{what}.txt`, with the names made safe as file names.
pub fn list_path(dir: &Path, pipeline: &str, run_id: &str, what: &str) -> PathBuf {
    dir.join(file_name(pipeline, run_id, what))
}

fn file_name(pipeline: &str, run_id: &str, what: &str) -> String {
    format!(
        "{}-{}-{}.txt",
        sanitize(pipeline),
        sanitize(run_id),
        sanitize(what)
    )
}

/// Writes each `(what, ids)` list under `dir` (a local directory or `s3://`) as
/// `{pipeline}-{run_id}-{what}.txt`; returns `(what, where)` for each.
pub async fn write_lists(
    dir: &StorageUrl,
    base_dir: &Path,
    pipeline: &str,
    run_id: &str,
    lists: &[(&str, &IdList)],
) -> Result<Vec<(String, String)>, String> {
    let loc = storage::open(dir.as_str(), base_dir).map_err(|e| e.to_string())?;
    let mut written = Vec::new();
    for (what, ids) in lists {
        let mut bytes = Vec::with_capacity(ids.byte_len() + ids.len());
        for id in ids.iter() {
            bytes.extend_from_slice(id);
            bytes.push(b'\n');
        }
        let key = loc.key(&file_name(pipeline, run_id, what));
        loc.store
            .put(&key, PutPayload::from(bytes))
            .await
            .map_err(|e| format!("writing {}: {e}", loc.describe(&key)))?;
        written.push((what.to_string(), loc.describe(&key)));
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_id_per_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = list_path(&dir.path().join("lists"), "crm/sync", "r1", "add");
        assert!(
            path.ends_with("lists/crm_sync-r1-add.txt"),
            "{}",
            path.display()
        );
        let ids: IdList = ["a", "b c", "ü"].into_iter().collect();
        write_list(&path, &ids).expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "a\nb c\nü\n");
        write_list(&path, &IdList::new()).expect("write empty");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "");
    }
}

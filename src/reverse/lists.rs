//! The full add / remove lists written next to a plan: one id per line, named by pipeline
//! and run id, so that `plan` and `--dry-run` can be reviewed (or fed to other tools).
//! They hold people's ids: on local disk they are readable by their owner only (0600).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use object_store::{ObjectStoreExt, PutPayload};

use super::idset::IdList;
use crate::config::StorageUrl;
use crate::runner::layout::sanitize;
use crate::storage;

/// Writes `ids` to `path`, one per line (parent directories are created), readable by its
/// owner only.
pub fn write_list(path: &Path, ids: &IdList) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("tmp");
    let mut w = BufWriter::with_capacity(1 << 20, storage::create_private(&tmp)?);
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
        if let Some(local) = &loc.local_dir {
            // Through our own writer, so the file is created private (object_store's
            // local backend would leave it to the umask).
            let name = file_name(pipeline, run_id, what);
            let key = loc.key(&name);
            write_list(&local.join(&name), ids)
                .map_err(|e| format!("writing {}: {e}", loc.describe(&key)))?;
            written.push((what.to_string(), loc.describe(&key)));
            continue;
        }
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

/// Writes `bytes` under `dir` as `{pipeline}-{run_id}-{what}.{ext}` (private on local disk,
/// never half-written); answers where.
pub async fn write_file(
    dir: &StorageUrl,
    base_dir: &Path,
    pipeline: &str,
    run_id: &str,
    what: &str,
    ext: &str,
    bytes: Vec<u8>,
) -> Result<String, String> {
    let loc = storage::open(dir.as_str(), base_dir).map_err(|e| e.to_string())?;
    let name = format!(
        "{}-{}-{}.{ext}",
        sanitize(pipeline),
        sanitize(run_id),
        sanitize(what)
    );
    let key = loc.key(&name);
    if let Some(local) = &loc.local_dir {
        let path = local.join(&name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("writing {}: {e}", loc.describe(&key)))?;
        }
        storage::write_private(&path, &bytes)
            .map_err(|e| format!("writing {}: {e}", loc.describe(&key)))?;
    } else {
        loc.store
            .put(&key, PutPayload::from(bytes))
            .await
            .map_err(|e| format!("writing {}: {e}", loc.describe(&key)))?;
    }
    Ok(loc.describe(&key))
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

    #[cfg(unix)]
    #[tokio::test]
    async fn local_lists_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let url: StorageUrl = serde_json::from_value(serde_json::json!("lists")).expect("url");
        let ids: IdList = ["a", "b"].into_iter().collect();
        let written = write_lists(&url, dir.path(), "crm", "r1", &[("add", &ids)])
            .await
            .expect("write");
        assert_eq!(written.len(), 1);
        let path = dir.path().join("lists/crm-r1-add.txt");
        assert!(
            written[0].1.ends_with("lists/crm-r1-add.txt"),
            "{written:?}"
        );
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "a\nb\n");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

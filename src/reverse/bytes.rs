//! Where the bytes of a source list or a baseline come from: a local file or an object on
//! S3, named by a URL, read as a stream of byte chunks (the CSV reader gunzips them when
//! they start with the gzip magic, whatever the file is called).

use std::path::{Path as FsPath, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

use crate::storage;

/// A file named by a URL: `s3://bucket/key` (or `gs://`, `az://`, `abfss://`),
/// `file:///abs/path`, or a local path.
#[derive(Debug, Clone)]
pub enum FileRef {
    Local(PathBuf),
    Store {
        store: Arc<dyn ObjectStore>,
        key: Path,
        url: String,
    },
}

impl FileRef {
    /// Resolves `url`; relative local paths are taken relative to `base_dir`.
    pub fn parse(url: &str, base_dir: &FsPath) -> Result<FileRef, String> {
        storage::check_location(url)?;
        if let Some(split) = storage::split_object_url(url) {
            let (bucket, key) = split?;
            let loc = storage::open(&bucket, base_dir).map_err(|e| e.to_string())?;
            return Ok(FileRef::Store {
                store: loc.store,
                key: Path::from_iter(key.split('/').filter(|s| !s.is_empty())),
                url: url.to_string(),
            });
        }
        if url.contains("://") && !url.starts_with("file://") {
            return Err(format!(
                "{url}: unsupported URL scheme; use a local path, file://, s3://, gs://, az:// or abfss://"
            ));
        }
        let path = PathBuf::from(url.strip_prefix("file://").unwrap_or(url));
        Ok(FileRef::Local(if path.is_relative() {
            base_dir.join(path)
        } else {
            path
        }))
    }

    /// How the file is named in messages.
    pub fn label(&self) -> String {
        match self {
            FileRef::Local(p) => p.display().to_string(),
            FileRef::Store { url, .. } => url.clone(),
        }
    }

    /// The lowercase file name (for telling formats apart by extension).
    pub fn file_name(&self) -> String {
        match self {
            FileRef::Local(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().to_lowercase())
                .unwrap_or_default(),
            FileRef::Store { key, .. } => key.filename().unwrap_or_default().to_lowercase(),
        }
    }

    /// The first `n` bytes (fewer when the file is shorter).
    pub async fn head_bytes(&self, n: usize) -> std::io::Result<Vec<u8>> {
        match self {
            FileRef::Local(p) => {
                let mut f = tokio::fs::File::open(p).await?;
                let mut buf = vec![0u8; n];
                let mut got = 0;
                while got < n {
                    let k = tokio::io::AsyncReadExt::read(&mut f, &mut buf[got..]).await?;
                    if k == 0 {
                        break;
                    }
                    got += k;
                }
                buf.truncate(got);
                Ok(buf)
            }
            FileRef::Store { store, key, .. } => {
                let size = store.head(key).await.map_err(std::io::Error::other)?.size;
                let end = (n as u64).min(size);
                if end == 0 {
                    return Ok(Vec::new());
                }
                let b = store
                    .get_range(key, 0..end)
                    .await
                    .map_err(std::io::Error::other)?;
                Ok(b.to_vec())
            }
        }
    }

    /// The object's size, last modification time and entity tag (`head`; a local file
    /// through object_store's local backend, so both kinds answer alike).
    pub async fn head(&self) -> std::io::Result<ObjectMeta> {
        match self {
            FileRef::Local(p) => {
                let key = Path::from_filesystem_path(p).map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("{}: {e}", p.display()),
                    )
                })?;
                LocalFileSystem::new()
                    .head(&key)
                    .await
                    .map_err(not_found_as_io)
            }
            FileRef::Store { store, key, .. } => store.head(key).await.map_err(not_found_as_io),
        }
    }

    /// The raw bytes as a stream of chunks.
    pub async fn byte_stream(&self) -> std::io::Result<ByteStream> {
        match self {
            FileRef::Local(p) => {
                let f = tokio::fs::File::open(p).await?;
                if f.metadata().await?.is_dir() {
                    return Err(std::io::Error::other(format!(
                        "{} is a directory, not a file",
                        p.display()
                    )));
                }
                Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(
                    f, READ_CHUNK,
                )))
            }
            FileRef::Store { store, key, .. } => {
                let got = store.get(key).await.map_err(not_found_as_io)?;
                Ok(Box::pin(got.into_stream().map_err(std::io::Error::other)))
            }
        }
    }
}

/// A file's bytes, chunk by chunk.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// Bytes read from a local file at a time.
const READ_CHUNK: usize = 256 * 1024;

fn not_found_as_io(e: object_store::Error) -> std::io::Error {
    match e {
        object_store::Error::NotFound { .. } => {
            std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string())
        }
        other => std::io::Error::other(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_resolve() {
        let base = FsPath::new("/base");
        assert!(
            matches!(FileRef::parse("crm/list.csv", base), Ok(FileRef::Local(p)) if p == FsPath::new("/base/crm/list.csv"))
        );
        assert!(
            matches!(FileRef::parse("file:///x/y.csv", base), Ok(FileRef::Local(p)) if p == FsPath::new("/x/y.csv"))
        );
        let s3 = FileRef::parse("s3://bucket/a/b/list.CSV.gz", base).expect("s3");
        assert_eq!(s3.file_name(), "list.csv.gz");
        assert_eq!(s3.label(), "s3://bucket/a/b/list.CSV.gz");
        assert!(FileRef::parse("s3://bucket", base).is_err());
        assert!(FileRef::parse("gs://b/x", base).is_err());
    }

    #[tokio::test]
    async fn head_tells_a_changed_local_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("list.csv");
        std::fs::write(&path, "id\n1\n").expect("write");
        let file = FileRef::parse("list.csv", dir.path()).expect("parse");
        let first = file.head().await.expect("head");
        assert_eq!(first.size, 5);
        std::fs::write(&path, "id\n1\n2\n").expect("rewrite");
        let second = file.head().await.expect("head");
        assert_eq!(second.size, 7);
        assert_ne!(first.e_tag, second.e_tag);
        let missing = FileRef::parse("nope.csv", dir.path()).expect("parse");
        assert_eq!(
            missing.head().await.map(|_| ()).unwrap_err().kind(),
            std::io::ErrorKind::NotFound
        );
    }

    #[tokio::test]
    async fn local_files_and_directories_as_streams() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("list.csv"), "id\n1\n").expect("write");
        let file = FileRef::parse("list.csv", dir.path()).expect("parse");
        let chunks: Vec<Bytes> = file
            .byte_stream()
            .await
            .expect("open")
            .try_collect()
            .await
            .expect("read");
        assert_eq!(chunks.concat(), b"id\n1\n");
        let err = FileRef::Local(dir.path().to_path_buf())
            .byte_stream()
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
    }
}

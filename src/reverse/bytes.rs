//! Where the bytes of a source list or a baseline come from: a local file, an object on S3,
//! or an HTTP body, handed to the (blocking) parsers as one `std::io::Read`, gunzipped when
//! the bytes start with the gzip magic (whatever the file is called).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

use crate::storage;

/// A file named by a URL: `s3://bucket/key`, `file:///abs/path`, or a local path.
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
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, key) = rest
                .split_once('/')
                .filter(|(_, k)| !k.is_empty())
                .ok_or_else(|| format!("{url}: an s3:// source needs a key after the bucket"))?;
            let loc =
                storage::open(&format!("s3://{bucket}"), base_dir).map_err(|e| e.to_string())?;
            return Ok(FileRef::Store {
                store: loc.store,
                key: Path::from_iter(key.split('/').filter(|s| !s.is_empty())),
                url: url.to_string(),
            });
        }
        if url.contains("://") && !url.starts_with("file://") {
            return Err(format!(
                "{url}: unsupported URL scheme; use a local path, file:// or s3://"
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

    /// A blocking reader of the raw bytes (read it on a blocking thread).
    pub async fn reader(&self) -> std::io::Result<Box<dyn Read + Send>> {
        match self {
            FileRef::Local(p) => Ok(Box::new(std::fs::File::open(p)?)),
            FileRef::Store { store, key, .. } => {
                let got = store.get(key).await.map_err(not_found_as_io)?;
                Ok(Box::new(stream_reader(got.into_stream())))
            }
        }
    }
}

fn not_found_as_io(e: object_store::Error) -> std::io::Error {
    match e {
        object_store::Error::NotFound { .. } => {
            std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string())
        }
        other => std::io::Error::other(other),
    }
}

/// Turns an async stream of byte chunks into a blocking reader; the stream is driven by a
/// task on the current runtime and at most a few chunks are buffered between the two.
pub fn stream_reader<S, E>(stream: S) -> ChannelReader
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, String>>(8);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            let failed = item.is_err();
            if tx.send(item.map_err(|e| e.to_string())).await.is_err() || failed {
                break;
            }
        }
    });
    ChannelReader {
        rx,
        current: Bytes::new(),
    }
}

/// See [`stream_reader`].
pub struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, String>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// `reader`, gunzipped if its bytes start with the gzip magic.
pub fn maybe_gunzip(reader: impl Read + Send + 'static) -> std::io::Result<Box<dyn Read + Send>> {
    let mut buffered = BufReader::with_capacity(1 << 20, reader);
    let head = loop {
        match buffered.fill_buf() {
            Ok(h) => break h,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    };
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(buffered)))
    } else {
        Ok(Box::new(buffered))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

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

    #[test]
    fn gzip_is_detected_by_content() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"id\n1\n").expect("gzip");
        let bytes = gz.finish().expect("gzip");
        let mut out = String::new();
        maybe_gunzip(std::io::Cursor::new(bytes))
            .expect("open")
            .read_to_string(&mut out)
            .expect("read");
        assert_eq!(out, "id\n1\n");
        let mut out = String::new();
        maybe_gunzip(std::io::Cursor::new(b"id\n2\n".to_vec()))
            .expect("open")
            .read_to_string(&mut out)
            .expect("read");
        assert_eq!(out, "id\n2\n");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streams_become_blocking_readers() {
        let chunks: Vec<Result<Bytes, String>> = vec![
            Ok(Bytes::from_static(b"ab")),
            Ok(Bytes::new()),
            Ok(Bytes::from_static(b"cde")),
        ];
        let r = stream_reader(futures::stream::iter(chunks));
        let text = tokio::task::spawn_blocking(move || {
            let mut s = String::new();
            let mut r = r;
            r.read_to_string(&mut s).map(|_| s)
        })
        .await
        .expect("join")
        .expect("read");
        assert_eq!(text, "abcde");
        let failing: Vec<Result<Bytes, String>> =
            vec![Ok(Bytes::from_static(b"x")), Err("connection reset".into())];
        let mut r = stream_reader(futures::stream::iter(failing));
        let err = tokio::task::spawn_blocking(move || {
            let mut s = String::new();
            r.read_to_string(&mut s)
        })
        .await
        .expect("join")
        .unwrap_err();
        assert!(err.to_string().contains("connection reset"), "{err}");
    }
}

//! The uploader: writes the encoder's bytes to the destination key as a multipart upload
//! and completes it only when the encoder says the file is whole; on anything else the
//! upload is aborted, so nothing ever appears at the key half-written.
//!
//! On S3 the parts are invisible until `CompleteMultipartUpload`; a process killed
//! mid-way leaves an incomplete multipart upload (remove them with a bucket lifecycle
//! rule `AbortIncompleteMultipartUpload`). On a local directory object_store writes a
//! staging file `KEY#N` next to the key and renames it into place on completion; a killed
//! process leaves that staging file behind, never a partial file at the key.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::sink::PartMsg;

/// Size of each uploaded part (S3 needs at least 5 MiB for all parts but the last).
pub const PART_BYTES: usize = 5 * 1024 * 1024;

/// Part size on a local directory: parts are plain writes to the staging file, so they
/// can be small (less memory held).
pub const LOCAL_PART_BYTES: usize = 1024 * 1024;

/// Parts uploaded at the same time.
pub const PART_CONCURRENCY: usize = 2;

/// Why the upload did not complete.
#[derive(Debug)]
pub enum UploadError {
    /// The encoder stopped before the file was whole (its error explains why).
    EncoderStopped,
    Store(object_store::Error),
    /// The run is stopping (SIGTERM/SIGINT): the upload was aborted.
    Stopped,
}

/// Uploads what `rx` delivers to `key`; aborts when `stop` is cancelled.
pub async fn upload(
    store: Arc<dyn ObjectStore>,
    key: &Path,
    mut rx: mpsc::Receiver<PartMsg>,
    stop: Option<CancellationToken>,
) -> Result<(), UploadError> {
    let stop = stop.unwrap_or_default();
    let part_bytes = if is_local(store.as_ref()) {
        LOCAL_PART_BYTES
    } else {
        PART_BYTES
    };
    let multipart = store.put_multipart(key).await.map_err(UploadError::Store)?;
    let mut writer = WriteMultipart::new_with_chunk_size(multipart, part_bytes);
    loop {
        let msg = tokio::select! {
            msg = rx.recv() => msg,
            _ = stop.cancelled() => {
                abort(writer, key).await;
                return Err(UploadError::Stopped);
            }
        };
        match msg {
            Some(PartMsg::Bytes(bytes)) => {
                crate::crash::point("export.upload.part");
                if let Err(e) = writer.wait_for_capacity(PART_CONCURRENCY).await {
                    // `wait_for_capacity` failing means a part failed; abort the rest.
                    abort(writer, key).await;
                    return Err(UploadError::Store(e));
                }
                writer.put(bytes);
            }
            Some(PartMsg::Done) => {
                return writer
                    .finish()
                    .await
                    .map(|_| ())
                    .map_err(UploadError::Store);
            }
            None => {
                abort(writer, key).await;
                return Err(UploadError::EncoderStopped);
            }
        }
    }
}

/// Whether the store is object_store's local file system (it names itself so).
fn is_local(store: &dyn ObjectStore) -> bool {
    store.to_string().starts_with("LocalFileSystem")
}

async fn abort(writer: WriteMultipart, key: &Path) {
    if let Err(e) = writer.abort().await {
        tracing::warn!(%key, error = %e, "could not abort the multipart upload");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_stores_are_recognised() {
        let dir = tempfile::tempdir().expect("tempdir");
        let local =
            object_store::local::LocalFileSystem::new_with_prefix(dir.path()).expect("local store");
        assert!(is_local(&local));
        let s3 = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name("bucket")
            .with_region("us-east-1")
            .build()
            .expect("s3 store");
        assert!(!is_local(&s3));
    }
}

//! The body as bytes to parse: counts what arrived, sniffs or trusts gzip, decompresses
//! (multi-member gzip too, within the `max_gzip_ratio` limit), and keeps a download
//! failure distinguishable from a gzip failure so the caller knows whether asking for the
//! file again can help.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use async_compression::tokio::bufread::GzipDecoder;
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt, stream};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::io::StreamReader;

use super::error::ExportError;
use super::limits::{CsvLimits, GZIP_RATIO_GRACE_BYTES, Limit};
use super::options::GzipHint;

/// The first bytes of every gzip member.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Marks an I/O error that came from the body stream itself (not from decompression).
#[derive(Debug)]
struct DownloadFailure(String);

impl std::fmt::Display for DownloadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DownloadFailure {}

/// Marks the I/O error of a gzip body that expands more than `max_gzip_ratio` times.
#[derive(Debug)]
struct RatioExceeded {
    decompressed: u64,
    compressed: u64,
}

impl std::fmt::Display for RatioExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes decompressed from {} bytes of gzip",
            self.decompressed, self.compressed
        )
    }
}

impl std::error::Error for RatioExceeded {}

/// Counts the bytes a gzip decoder produces and fails once they pass `ratio` times the
/// compressed bytes received (after the first [`GZIP_RATIO_GRACE_BYTES`]).
struct RatioGuard<R> {
    inner: R,
    received: Arc<AtomicU64>,
    ratio: u64,
    decompressed: u64,
}

impl<R: AsyncRead + Unpin> AsyncRead for RatioGuard<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.decompressed += (buf.filled().len() - before) as u64;
            let compressed = self.received.load(Ordering::Relaxed);
            if self.decompressed > GZIP_RATIO_GRACE_BYTES
                && self.decompressed > compressed.saturating_mul(self.ratio)
            {
                return Poll::Ready(Err(io::Error::other(RatioExceeded {
                    decompressed: self.decompressed,
                    compressed,
                })));
            }
        }
        polled
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// A decoded body: bytes to parse plus what is needed to explain a failure.
pub struct DecodedBody {
    pub reader: Pin<Box<dyn AsyncRead + Send>>,
    pub info: BodyInfo,
}

/// What is known about the body besides its bytes.
#[derive(Clone)]
pub struct BodyInfo {
    /// Bytes received from the body stream so far (before decompression).
    pub received: Arc<AtomicU64>,
    pub gzip: bool,
    /// For the message of a passed gzip ratio.
    pub limits: CsvLimits,
}

impl BodyInfo {
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Turns an I/O error of `reader` into the export error it stands for.
    pub fn classify(&self, source_name: &str, err: io::Error) -> ExportError {
        let bytes = self.received();
        if let Some(r) = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<RatioExceeded>())
        {
            return self.limits.error(
                source_name,
                Limit::GzipRatio,
                "",
                &format!(
                    "the gzip body expands more than {} times ({r})",
                    self.limits.max_gzip_ratio
                ),
            );
        }
        if let Some(d) = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<DownloadFailure>())
        {
            return ExportError::Download {
                source_name: source_name.to_string(),
                bytes,
                message: d.0.clone(),
            };
        }
        if self.gzip && err.kind() == io::ErrorKind::UnexpectedEof {
            return ExportError::Truncated {
                source_name: source_name.to_string(),
                bytes,
                what: "the gzip stream is incomplete".into(),
            };
        }
        if self.gzip {
            return ExportError::Decompress {
                source_name: source_name.to_string(),
                message: err.to_string(),
            };
        }
        ExportError::Download {
            source_name: source_name.to_string(),
            bytes,
            message: err.to_string(),
        }
    }
}

/// Wraps `body`: decides on gzip from `hint` and the first two bytes, and returns a reader
/// of the decompressed bytes (failing once they pass `limits.max_gzip_ratio` times the
/// compressed bytes). Fails only when the stream fails before two bytes arrived.
pub async fn decode<S, E>(
    body: S,
    hint: GzipHint,
    source_name: &str,
    limits: &CsvLimits,
) -> Result<DecodedBody, ExportError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let mut body: ByteStream = Box::pin(body.map(move |item| match item {
        Ok(b) => {
            counter.fetch_add(b.len() as u64, Ordering::Relaxed);
            Ok(b)
        }
        Err(e) => Err(io::Error::other(DownloadFailure(error_chain(&e)))),
    }));
    // Collect at least two bytes (or the whole body, if shorter) to sniff the magic.
    let mut head: Vec<Bytes> = Vec::new();
    let mut head_len = 0;
    while head_len < 2 {
        match body.try_next().await {
            Ok(Some(b)) => {
                head_len += b.len();
                if !b.is_empty() {
                    head.push(b);
                }
            }
            Ok(None) => break,
            Err(e) => {
                let info = BodyInfo {
                    received,
                    gzip: false,
                    limits: *limits,
                };
                return Err(info.classify(source_name, e));
            }
        }
    }
    let first: Vec<u8> = head
        .iter()
        .flat_map(|b| b.iter().copied())
        .take(2)
        .collect();
    let magic = first.as_slice() == GZIP_MAGIC;
    let gzip = match hint {
        GzipHint::Plain => false,
        GzipHint::Encoded => true,
        GzipHint::Auto => magic,
    };
    let stream: ByteStream = Box::pin(stream::iter(head.into_iter().map(Ok)).chain(body));
    let reader = StreamReader::new(stream);
    let reader: Pin<Box<dyn AsyncRead + Send>> = if gzip {
        let mut dec = GzipDecoder::new(reader);
        dec.multiple_members(true);
        Box::pin(RatioGuard {
            inner: dec,
            received: received.clone(),
            ratio: limits.max_gzip_ratio,
            decompressed: 0,
        })
    } else {
        Box::pin(reader)
    };
    Ok(DecodedBody {
        reader,
        info: BodyInfo {
            received,
            gzip,
            limits: *limits,
        },
    })
}

/// An error and its sources on one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

//! The byte stream of a cohort file, plain or gzip-compressed on the fly, optionally paced
//! to a link's bandwidth (the presigned listener standing in for one S3 GET stream).

use std::io;

use async_compression::Level;
use async_compression::tokio::bufread::GzipEncoder;
use axum::body::Body;
use bytes::Bytes;
use futures::Stream;
use tokio_util::io::{ReaderStream, StreamReader};

use super::csv_body::CsvChunks;
use super::state::Job;

/// The job's file as a streaming body; gzip bytes when `gzip`; at most `bytes_per_sec`
/// on the wire when given.
pub fn file_body(job: &Job, gzip: bool, bytes_per_sec: Option<u64>) -> Body {
    let plain = futures::stream::iter(
        CsvChunks::new(&job.members, job.props.clone()).map(Ok::<Bytes, io::Error>),
    );
    let wire: futures::stream::BoxStream<'static, io::Result<Bytes>> = if gzip {
        Box::pin(gzip_stream(plain))
    } else {
        Box::pin(plain)
    };
    match bytes_per_sec {
        Some(rate) => Body::from_stream(paced(wire, rate)),
        None => Body::from_stream(wire),
    }
}

/// Largest piece a paced stream hands on at once: 10 ms at 6.5 MB/s, under 1 ms at
/// 100 MB/s, so the pace is smooth at any link speed worth emulating.
const PACED_PIECE: usize = 64 * 1024;

/// `stream` at `bytes_per_sec` on average from its first byte: each piece of at most
/// [`PACED_PIECE`] bytes is handed on once a link of that bandwidth would have carried
/// everything up to its end. Socket buffers still let the receiver see small bursts, as
/// on a real link.
fn paced(
    stream: impl Stream<Item = io::Result<Bytes>> + Send + 'static,
    bytes_per_sec: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    use futures::StreamExt;
    let rate = bytes_per_sec.max(1) as f64;
    let pieces = stream.flat_map(|item| {
        let split: Vec<io::Result<Bytes>> = match item {
            Ok(mut bytes) => {
                let mut out = Vec::with_capacity(bytes.len() / PACED_PIECE + 1);
                while bytes.len() > PACED_PIECE {
                    out.push(Ok(bytes.split_to(PACED_PIECE)));
                }
                out.push(Ok(bytes));
                out
            }
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(split)
    });
    let mut start: Option<tokio::time::Instant> = None;
    let mut carried = 0u64;
    pieces.then(move |item| {
        let began = *start.get_or_insert_with(tokio::time::Instant::now);
        if let Ok(bytes) = &item {
            carried += bytes.len() as u64;
        }
        let due = began + std::time::Duration::from_secs_f64(carried as f64 / rate);
        async move {
            tokio::time::sleep_until(due).await;
            item
        }
    })
}

fn gzip_stream(
    plain: impl Stream<Item = io::Result<Bytes>> + Send + 'static,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let encoder = GzipEncoder::with_quality(StreamReader::new(plain), Level::Fastest);
    ReaderStream::with_capacity(encoder, 64 * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    /// On tokio's paused clock the pace is exact: 1,000,000 bytes at 100,000 B/s end at
    /// 10 s, no piece is larger than [`PACED_PIECE`], and every byte arrives in order.
    #[tokio::test(start_paused = true)]
    async fn a_paced_stream_carries_its_bytes_at_the_rate() {
        let chunks: Vec<io::Result<Bytes>> = (0..4u8)
            .map(|i| Ok(Bytes::from(vec![i; 250_000])))
            .collect();
        let start = tokio::time::Instant::now();
        let mut stream = Box::pin(paced(futures::stream::iter(chunks), 100_000));
        let mut got = Vec::new();
        let mut at_half = None;
        while let Some(piece) = stream.next().await {
            let piece = piece.expect("no error");
            assert!(piece.len() <= PACED_PIECE);
            got.extend_from_slice(&piece);
            if at_half.is_none() && got.len() >= 500_000 {
                at_half = Some(start.elapsed());
            }
        }
        assert_eq!(got.len(), 1_000_000);
        assert!(got.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(start.elapsed(), std::time::Duration::from_secs(10));
        let half = at_half.expect("half way").as_secs_f64();
        assert!(
            (5.0..5.0 + PACED_PIECE as f64 / 100_000.0).contains(&half),
            "{half}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_passes_through_a_paced_stream() {
        let chunks: Vec<io::Result<Bytes>> =
            vec![Ok(Bytes::from_static(b"abc")), Err(io::Error::other("cut"))];
        let items: Vec<_> = paced(futures::stream::iter(chunks), 1_000).collect().await;
        assert_eq!(items.len(), 2);
        assert!(items[1].as_ref().is_err_and(|e| e.to_string() == "cut"));
    }
}

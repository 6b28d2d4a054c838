//! The byte stream of a cohort file, plain or gzip-compressed on the fly.

use std::io;

use async_compression::Level;
use async_compression::tokio::bufread::GzipEncoder;
use axum::body::Body;
use bytes::Bytes;
use futures::Stream;
use tokio_util::io::{ReaderStream, StreamReader};

use super::csv_body::CsvChunks;
use super::state::Job;

/// The job's file as a streaming body; gzip bytes when `gzip`.
pub fn file_body(job: &Job, gzip: bool) -> Body {
    let plain = futures::stream::iter(
        CsvChunks::new(&job.members, job.props.clone()).map(Ok::<Bytes, io::Error>),
    );
    if gzip {
        Body::from_stream(gzip_stream(plain))
    } else {
        Body::from_stream(plain)
    }
}

fn gzip_stream(
    plain: impl Stream<Item = io::Result<Bytes>> + Send + 'static,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let encoder = GzipEncoder::with_quality(StreamReader::new(plain), Level::Fastest);
    ReaderStream::with_capacity(encoder, 64 * 1024)
}

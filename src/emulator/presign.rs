//! The second listener, standing in for S3: serves a job's file at the presigned link
//! `/cohort-exports/{app_id}/{request_id}.csv?X-Amz-...&X-Amz-Signature=..` until the link
//! expires. Like S3 it refuses a request that also carries an `Authorization` header (400
//! `InvalidArgument`, "Only one auth mechanism allowed"), and serves gzip files as raw
//! bytes without `Content-Encoding`. Errors are S3 XML. With `presign_bytes_per_sec` set,
//! each download is paced to that bandwidth, like one GET stream from S3 over a real link.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::time::Instant;

use super::download::file_body;
use super::faults::FaultKind;
use super::log::{Facts, with_facts};
use super::query;
use super::state::Shared;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/cohort-exports/{app_id}/{file}", get(download))
        .fallback(|| async {
            s3_error(
                StatusCode::NOT_FOUND,
                "NoSuchKey",
                "The specified key does not exist.",
            )
        })
        .with_state(shared)
}

/// An S3-style XML error.
fn s3_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><RequestId>EMULATOR</RequestId></Error>"
    );
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    resp
}

async fn download(
    State(shared): State<Arc<Shared>>,
    Path((app_id, file)): Path<(u64, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let request_id = file.strip_suffix(".csv").unwrap_or(&file).to_string();
    let (resp, cohort_id) = serve(&shared, app_id, &request_id, raw.as_deref(), &headers);
    with_facts(resp, Facts::request(&request_id, cohort_id.as_deref()))
}

fn serve(
    shared: &Shared,
    app_id: u64,
    request_id: &str,
    raw_query: Option<&str>,
    headers: &HeaderMap,
) -> (Response, Option<String>) {
    // S3 answers 400 to a request signed twice (query string and header).
    if headers.contains_key(header::AUTHORIZATION) {
        let resp = s3_error(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, \
             Signature query string parameter or the Authorization header should be specified",
        );
        return (resp, None);
    }
    let pairs = query::pairs(raw_query);
    let signature = query::last(&pairs, "X-Amz-Signature").unwrap_or_default();
    let now = Instant::now();
    let world = shared.world();
    let link = world
        .links
        .get(&signature)
        .filter(|l| l.app_id == app_id && l.request_id == request_id)
        .cloned();
    let job = world
        .app(app_id)
        .and_then(|a| a.jobs.get(request_id))
        .cloned();
    drop(world);
    let cohort_id = job.as_ref().map(|j| j.cohort_id.clone());
    let Some(link) = link else {
        let resp = s3_error(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        );
        return (resp, cohort_id);
    };
    let path = format!("/cohort-exports/{app_id}/{request_id}.csv");
    if now >= link.expires_at
        || shared
            .faults
            .take(&[FaultKind::ExpiredLink], &path)
            .is_some()
    {
        return (
            s3_error(StatusCode::FORBIDDEN, "AccessDenied", "Request has expired"),
            cohort_id,
        );
    }
    let Some(job) = job else {
        return (
            s3_error(
                StatusCode::NOT_FOUND,
                "NoSuchKey",
                "The specified key does not exist.",
            ),
            cohort_id,
        );
    };
    let mut resp = file_body(
        &job,
        shared.config.gzip,
        shared.config.presign_bytes_per_sec,
    )
    .into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("binary/octet-stream"),
    );
    (resp, cohort_id)
}

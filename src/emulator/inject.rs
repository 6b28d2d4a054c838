//! The middleware that applies armed faults to API and presigned requests: answers a 5xx
//! or 429 instead of the handler, or cuts a 200 body short (`reset`: no length, connection
//! aborted; `truncate`: `Content-Length` of the whole body, fewer bytes, then closed).
//! A cut body is buffered first, so aim these faults at files of test size.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;

use super::errors::{api_error, rate_limited};
use super::faults::{FaultKind, FaultRule};
use super::state::Shared;

const CUTS: [FaultKind; 2] = [FaultKind::Reset, FaultKind::Truncate];
/// Time between the last bytes sent and the cut.
const FLUSH_PAUSE: Duration = Duration::from_millis(50);

pub async fn inject(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path.starts_with("/_emulator") {
        return next.run(req).await;
    }
    if let Some(rule) = shared
        .faults
        .take(&[FaultKind::ServerError, FaultKind::RateLimit], &path)
    {
        return refuse(&shared, &rule);
    }
    if !shared.faults.armed(&CUTS, &path) {
        return next.run(req).await;
    }
    let resp = next.run(req).await;
    if resp.status() != StatusCode::OK {
        return resp;
    }
    match shared.faults.take(&CUTS, &path) {
        Some(rule) => cut_body(resp, &rule).await,
        None => resp,
    }
}

fn refuse(shared: &Shared, rule: &FaultRule) -> Response {
    if rule.kind == FaultKind::RateLimit {
        let secs = rule.retry_after_secs.unwrap_or(1.0);
        let wait = shared.scaled(Duration::try_from_secs_f64(secs).unwrap_or(Duration::ZERO));
        return rate_limited(
            wait,
            shared.config.time_scale,
            "Too many requests (injected fault)",
        );
    }
    let status = rule
        .status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    api_error(
        status,
        "internal_server_error",
        "Internal server error (injected fault)",
        json!({}),
    )
}

async fn cut_body(resp: Response, rule: &FaultRule) -> Response {
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let len = bytes.len();
    let cut = match rule.after_bytes {
        Some(b) => usize::try_from(b)
            .unwrap_or(usize::MAX)
            .min(len.saturating_sub(1)),
        None => len / 2,
    };
    let head: Bytes = bytes.slice(..cut);
    if rule.kind == FaultKind::Truncate {
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    } else {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    let kind = rule.kind;
    let head_part = futures::stream::once(async move { Ok::<Bytes, io::Error>(head) });
    // The pause lets the server flush the head and the partial body before the cut.
    let cut_part = futures::stream::once(async move {
        tokio::time::sleep(FLUSH_PAUSE).await;
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            format!("injected {kind:?} fault"),
        ))
    });
    Response::from_parts(parts, Body::from_stream(head_part.chain(cut_part)))
}

//! The middlewares that apply armed faults to API and presigned requests.
//!
//! [`inject`] answers a 5xx, 4xx, 404 or 429 instead of the handler, replaces a 200 body
//! (`body`), cuts a 200 body short (`reset`: no length, connection aborted; `truncate`:
//! `Content-Length` of the whole body, fewer bytes, then closed), or sends it slowly
//! (`trickle`: pieces of `chunk_bytes` with a scaled pause of `delay_secs` before each).
//! A cut or trickled body is buffered first, so aim these faults at files of test size.
//!
//! [`stall`] wraps the request log: the request is handled (and logged with its status)
//! as usual, then the answer is held before it is sent, so a client that times out meets
//! a call whose effect happened.

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

use super::errors::{api_error, not_found, rate_limited};
use super::faults::{
    DEFAULT_BODY, DEFAULT_STALL_SECS, DEFAULT_TRICKLE_BYTES, DEFAULT_TRICKLE_SECS, FaultKind,
    FaultRule,
};
use super::state::Shared;

/// Faults answered instead of the handler.
const REFUSALS: [FaultKind; 4] = [
    FaultKind::ServerError,
    FaultKind::ClientError,
    FaultKind::NotFound,
    FaultKind::RateLimit,
];
/// Faults applied to a 200 answer of the handler.
const REWRITES: [FaultKind; 4] = [
    FaultKind::Reset,
    FaultKind::Truncate,
    FaultKind::Body,
    FaultKind::Trickle,
];
/// Time between the last bytes sent and the cut.
const FLUSH_PAUSE: Duration = Duration::from_millis(50);

pub async fn inject(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path.starts_with("/_emulator") {
        return next.run(req).await;
    }
    if let Some(rule) = shared.faults.take(&REFUSALS, &path) {
        return refuse(&shared, &rule);
    }
    if !shared.faults.armed(&REWRITES, &path) {
        return next.run(req).await;
    }
    let resp = next.run(req).await;
    if resp.status() != StatusCode::OK {
        return resp;
    }
    match shared.faults.take(&REWRITES, &path) {
        Some(rule) if rule.kind == FaultKind::Body => replace_body(resp, &rule),
        Some(rule) if rule.kind == FaultKind::Trickle => trickle_body(&shared, resp, &rule).await,
        Some(rule) => cut_body(resp, &rule).await,
        None => resp,
    }
}

/// Handles the request, then holds the answer (already logged) for the rule's delay.
/// Layered outside the request log so the log shows the request even when the client
/// gives up waiting and the connection is dropped during the delay.
pub async fn stall(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path.starts_with("/_emulator") {
        return next.run(req).await;
    }
    let Some(rule) = shared.faults.take(&[FaultKind::Stall], &path) else {
        return next.run(req).await;
    };
    let resp = next.run(req).await;
    tokio::time::sleep(stall_delay(&shared, &rule)).await;
    resp
}

/// The real time a `stall` rule holds its answer.
fn stall_delay(shared: &Shared, rule: &FaultRule) -> Duration {
    let secs = rule.delay_secs.unwrap_or(DEFAULT_STALL_SECS);
    shared.scaled(Duration::try_from_secs_f64(secs).unwrap_or(Duration::ZERO))
}

fn refuse(shared: &Shared, rule: &FaultRule) -> Response {
    match rule.kind {
        FaultKind::RateLimit => {
            let secs = rule.retry_after_secs.unwrap_or(1.0);
            let wait = shared.scaled(Duration::try_from_secs_f64(secs).unwrap_or(Duration::ZERO));
            rate_limited(
                wait,
                shared.config.time_scale,
                "Too many requests (injected fault)",
            )
        }
        FaultKind::NotFound => not_found("not_found", "Not found (injected fault)"),
        FaultKind::ClientError => client_error(status_or(rule.status, StatusCode::BAD_REQUEST)),
        _ => api_error(
            status_or(rule.status, StatusCode::INTERNAL_SERVER_ERROR),
            "internal_server_error",
            "Internal server error (injected fault)",
            json!({}),
        ),
    }
}

fn status_or(status: Option<u16>, default: StatusCode) -> StatusCode {
    status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(default)
}

/// A 4xx with Amplitude's error JSON, its type named after the status
/// (`payload_too_large` for 413).
fn client_error(status: StatusCode) -> Response {
    let reason = status.canonical_reason().unwrap_or("Client error");
    let kind = reason.to_ascii_lowercase().replace([' ', '-'], "_");
    api_error(
        status,
        &kind,
        format!("{reason} (injected fault)"),
        json!({}),
    )
}

/// The answer with its body replaced by the rule's text, sent as is: `Content-Length`
/// of the new body, no `Content-Encoding`, other headers kept.
fn replace_body(resp: Response, rule: &FaultRule) -> Response {
    let text = rule
        .body
        .clone()
        .unwrap_or_else(|| DEFAULT_BODY.to_string());
    let (mut parts, _old_body) = resp.into_parts();
    parts.headers.remove(header::CONTENT_ENCODING);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    Response::from_parts(parts, Body::from(text))
}

/// The answer's body sent in pieces of `chunk_bytes`, each after a pause of `delay_secs`
/// (scaled); headers kept (its `Content-Length` is honest: every byte is sent).
async fn trickle_body(shared: &Shared, resp: Response, rule: &FaultRule) -> Response {
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let piece = usize::try_from(rule.chunk_bytes.unwrap_or(DEFAULT_TRICKLE_BYTES))
        .unwrap_or(usize::MAX)
        .max(1);
    let secs = rule.delay_secs.unwrap_or(DEFAULT_TRICKLE_SECS);
    let pause = shared.scaled(Duration::try_from_secs_f64(secs).unwrap_or(Duration::ZERO));
    let pieces = futures::stream::unfold(0usize, move |at| {
        let bytes = bytes.clone();
        async move {
            if at >= bytes.len() {
                return None;
            }
            tokio::time::sleep(pause).await;
            let end = at.saturating_add(piece).min(bytes.len());
            Some((Ok::<Bytes, io::Error>(bytes.slice(at..end)), end))
        }
    });
    Response::from_parts(parts, Body::from_stream(pieces))
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

//! Amplitude-style error answers: `{"error": {"http_code", "type", "message", "metadata"}}`,
//! the real 403 for refused credentials, and 429s with a `Retry-After` in (scaled) seconds.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// An error answer with Amplitude's error JSON.
pub fn api_error(
    status: StatusCode,
    kind: &str,
    message: impl Into<String>,
    metadata: Value,
) -> Response {
    let body = json!({"error": {
        "http_code": status.as_u16(),
        "type": kind,
        "message": message.into(),
        "metadata": metadata,
    }});
    (status, Json(body)).into_response()
}

/// `metadata.details` of the 403 for an api key Amplitude does not know.
pub const INVALID_API_KEY: &str = "Invalid API Key";
/// `metadata.details` of the 403 for a known api key with the wrong secret key.
pub const INVALID_KEY_COMBINATION: &str = "Invalid API/Secret Key combination";

/// The 403 Amplitude answers to refused credentials, as public clients of the real
/// service record it: type `unspecified`, no `message`, the cause in `metadata.details`.
pub fn invalid_credentials(details: &str) -> Response {
    let body = json!({"error": {
        "http_code": 403,
        "type": "unspecified",
        "metadata": {"details": details},
    }});
    (StatusCode::FORBIDDEN, Json(body)).into_response()
}

pub fn not_found(kind: &str, message: impl Into<String>) -> Response {
    api_error(StatusCode::NOT_FOUND, kind, message, json!({}))
}

pub fn bad_request(kind: &str, message: impl Into<String>, metadata: Value) -> Response {
    api_error(StatusCode::BAD_REQUEST, kind, message, metadata)
}

/// 429 with `Retry-After` (see [`retry_after_value`]). The message must not mention a
/// monthly quota: clients tell the two 429s apart by it.
pub fn rate_limited(
    retry_after: Duration,
    time_scale: f64,
    message: impl Into<String>,
) -> Response {
    let value = retry_after_value(retry_after, time_scale);
    let mut resp = api_error(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_requests",
        message,
        json!({"retry_after_seconds": value}),
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// `Retry-After` in seconds of real (already scaled) time: whole seconds, at least 1, at
/// full speed; with `time_scale < 1` a decimal with millisecond precision, at least 0.001
/// (a whole second would dwarf the scaled windows). Rounded up, so waiting that long works.
pub fn retry_after_value(d: Duration, time_scale: f64) -> String {
    if time_scale >= 1.0 {
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        secs.max(1).to_string()
    } else {
        let ms = d.as_nanos().div_ceil(1_000_000).max(1);
        format!("{}.{:03}", ms / 1000, ms % 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_value(Duration::from_millis(1), 1.0), "1");
        assert_eq!(retry_after_value(Duration::from_millis(2_001), 1.0), "3");
        assert_eq!(retry_after_value(Duration::ZERO, 0.01), "0.001");
        assert_eq!(
            retry_after_value(Duration::from_micros(1_234_500), 0.01),
            "1.235"
        );
    }
}

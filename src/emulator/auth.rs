//! HTTP Basic authentication per app and the per-app in-flight gate of the API listener.
//! Refused credentials answer Amplitude's 403 (`metadata.details` "Invalid API Key" for a
//! missing or unknown api key, "Invalid API/Secret Key combination" for a wrong secret);
//! the sixth concurrent request of an app answers 429. A streamed body holds its slot
//! until it has been sent (or dropped).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use futures::StreamExt;

use super::errors::{INVALID_API_KEY, INVALID_KEY_COMBINATION, invalid_credentials, rate_limited};
use super::log::{Facts, with_facts};
use super::state::Shared;

/// The app whose credentials a request carried; set by [`authenticate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthedApp(pub u64);

/// `(api_key, secret_key)` from a Basic `Authorization` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::prelude::BASE64_STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (key, secret) = text.split_once(':')?;
    Some((key.to_string(), secret.to_string()))
}

/// Decrements the app's in-flight count when dropped.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub async fn authenticate(
    State(shared): State<Arc<Shared>>,
    mut req: Request,
    next: Next,
) -> Response {
    let found = match basic_credentials(req.headers()) {
        None => Err(INVALID_API_KEY),
        Some((key, secret)) => {
            let world = shared.world();
            match world.apps.iter().find(|a| a.api_key == key) {
                None => Err(INVALID_API_KEY),
                Some(a) if a.secret_key != secret => Err(INVALID_KEY_COMBINATION),
                Some(a) => Ok((a.app_id, Arc::clone(&a.in_flight))),
            }
        }
    };
    let (app_id, counter) = match found {
        Ok(app) => app,
        Err(details) => return invalid_credentials(details),
    };
    let facts = Facts {
        app_id: Some(app_id),
        ..Facts::default()
    };
    let max = shared.config.max_in_flight.max(1);
    if counter.fetch_add(1, Ordering::AcqRel) >= max {
        counter.fetch_sub(1, Ordering::AcqRel);
        let wait = shared.scaled(Duration::from_secs(1));
        let resp = rate_limited(
            wait,
            shared.config.time_scale,
            format!("Too many concurrent requests for app {app_id}: at most {max} at once"),
        );
        return with_facts(resp, facts);
    }
    let slot = InFlight(counter);
    req.extensions_mut().insert(AuthedApp(app_id));
    let resp = with_facts(next.run(req).await, facts);
    hold_until_body_ends(resp, slot)
}

/// Keeps `slot` alive until the response body has been fully sent or dropped, keeping
/// a known body length as `Content-Length`.
fn hold_until_body_ends(resp: Response, slot: InFlight) -> Response {
    let (mut parts, body) = resp.into_parts();
    if let Some(n) = body.size_hint().exact()
        && !parts.headers.contains_key(header::CONTENT_LENGTH)
    {
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    let stream = body.into_data_stream().map(move |chunk| {
        let _held = &slot;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_basic_credentials() {
        let mut h = HeaderMap::new();
        let enc = base64::prelude::BASE64_STANDARD.encode("k:s:x");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {enc}")).expect("header"),
        );
        assert_eq!(basic_credentials(&h), Some(("k".into(), "s:x".into())));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(basic_credentials(&h), None);
    }
}

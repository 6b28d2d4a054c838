//! The request log behind `GET /_emulator/requests`: every request either listener
//! received (admin calls excepted), in arrival order, with what the handlers learnt about
//! it (app, cohort, request id, membership operation).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::state::Shared;

/// Which listener a request reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Listener {
    Api,
    Presign,
}

/// One entry of `GET /_emulator/requests`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedRequest {
    pub seq: u64,
    /// Milliseconds since the emulator started (arrival).
    pub at_ms: u64,
    /// The emulator's clock at arrival (follows the test-only `COHORT_SYNC_NOW`).
    #[serde(default)]
    pub clock: Option<DateTime<Utc>>,
    pub listener: Listener,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// The app whose credentials were accepted; `None` without valid credentials.
    pub app_id: Option<u64>,
    pub status: u16,
    /// Whether an `Authorization` header was present.
    pub authorization: bool,
    pub cohort_id: Option<String>,
    pub request_id: Option<String>,
    /// Membership: `ADD`, `REMOVE` or `ADD,REMOVE`; upload: `UPLOAD`.
    pub operation: Option<String>,
    /// Ids in a membership or upload body.
    pub id_count: Option<u64>,
}

/// What a handler learnt about its request, carried to the log in response extensions.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub app_id: Option<u64>,
    pub cohort_id: Option<String>,
    pub request_id: Option<String>,
    pub operation: Option<String>,
    pub id_count: Option<u64>,
}

impl Facts {
    pub fn cohort(id: &str) -> Facts {
        Facts {
            cohort_id: Some(id.to_string()),
            ..Facts::default()
        }
    }

    pub fn request(request_id: &str, cohort_id: Option<&str>) -> Facts {
        Facts {
            request_id: Some(request_id.to_string()),
            cohort_id: cohort_id.map(str::to_string),
            ..Facts::default()
        }
    }
}

/// Adds facts to a response (merging with facts already there).
pub fn with_facts(mut resp: Response, facts: Facts) -> Response {
    let merged = match resp.extensions_mut().remove::<Facts>() {
        Some(old) => Facts {
            app_id: facts.app_id.or(old.app_id),
            cohort_id: facts.cohort_id.or(old.cohort_id),
            request_id: facts.request_id.or(old.request_id),
            operation: facts.operation.or(old.operation),
            id_count: facts.id_count.or(old.id_count),
        },
        None => facts,
    };
    resp.extensions_mut().insert(merged);
    resp
}

#[derive(Debug)]
pub struct RequestLog {
    started: Instant,
    next_seq: AtomicU64,
    entries: Mutex<Vec<LoggedRequest>>,
}

impl Default for RequestLog {
    fn default() -> Self {
        RequestLog::new()
    }
}

impl RequestLog {
    pub fn new() -> RequestLog {
        RequestLog {
            started: Instant::now(),
            next_seq: AtomicU64::new(1),
            entries: Mutex::new(Vec::new()),
        }
    }

    /// Entries with `seq > since`, in arrival order.
    pub fn since(&self, since: u64) -> Vec<LoggedRequest> {
        let mut out: Vec<LoggedRequest> = self
            .lock()
            .iter()
            .filter(|e| e.seq > since)
            .cloned()
            .collect();
        out.sort_by_key(|e| e.seq);
        out
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    fn push(&self, entry: LoggedRequest) {
        self.lock().push(entry);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<LoggedRequest>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Middleware recording every non-admin request once its response head is ready.
pub async fn record(
    State((shared, listener)): State<(Arc<Shared>, Listener)>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_string();
    if path.starts_with("/_emulator") {
        return next.run(req).await;
    }
    let seq = shared.log.next_seq.fetch_add(1, Ordering::Relaxed);
    let at_ms = shared.log.started.elapsed().as_millis() as u64;
    let clock = Some(shared.config.clock.now());
    let method = req.method().to_string();
    let query = req.uri().query().map(str::to_string);
    let authorization = req.headers().contains_key(header::AUTHORIZATION);
    let resp = next.run(req).await;
    let facts = resp
        .extensions()
        .get::<Facts>()
        .cloned()
        .unwrap_or_default();
    shared.log.push(LoggedRequest {
        seq,
        at_ms,
        clock,
        listener,
        method,
        path,
        query,
        app_id: facts.app_id,
        status: resp.status().as_u16(),
        authorization,
        cohort_id: facts.cohort_id,
        request_id: facts.request_id,
        operation: facts.operation,
        id_count: facts.id_count,
    });
    resp
}

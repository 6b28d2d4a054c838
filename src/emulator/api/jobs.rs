//! The asynchronous download: `GET /api/5/cohorts/request/:id` starts a job (spending one
//! monthly download, under the per-app request windows), `request-status/:request_id`
//! reports it, and `request/:request_id/file` serves the file in the body or as a 302 to
//! a presigned link on the second listener. The `slow_job`, `job_failed` and
//! `unknown_status` faults change what `request-status` reports; `expired_link` the link.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde_json::json;
use tokio::time::Instant;

use crate::emulator::auth::AuthedApp;
use crate::emulator::csv_body::PropColumns;
use crate::emulator::download::file_body;
use crate::emulator::errors::{api_error, bad_request, not_found, rate_limited};
use crate::emulator::faults::{DEFAULT_UNKNOWN_STATUS, FaultKind, FaultRule};
use crate::emulator::log::{Facts, with_facts};
use crate::emulator::query;
use crate::emulator::state::{Job, Link, Shared};

const JOB_IN_PROGRESS: &str = "JOB INPROGRESS";
const JOB_COMPLETED: &str = "JOB COMPLETED";
const JOB_FAILED: &str = "JOB FAILED";
/// Faults that change what `request-status` reports.
const STATUS_FAULTS: [FaultKind; 3] = [
    FaultKind::SlowJob,
    FaultKind::JobFailed,
    FaultKind::UnknownStatus,
];

/// `GET /api/5/cohorts/request/:id?props=0|1&propKeys=..`
pub async fn request(
    State(shared): State<Arc<Shared>>,
    Extension(AuthedApp(app_id)): Extension<AuthedApp>,
    Path(cohort_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let resp = start_job(&shared, app_id, &cohort_id, raw.as_deref());
    let facts = Facts::cohort(&cohort_id);
    with_facts(resp, facts)
}

fn start_job(shared: &Shared, app_id: u64, cohort_id: &str, raw_query: Option<&str>) -> Response {
    let pairs = query::pairs(raw_query);
    let props_on = matches!(query::last(&pairs, "props").as_deref(), Some("1" | "true"));
    let mut keys: Vec<String> = Vec::new();
    for k in query::values(&pairs, "propKeys") {
        if !k.is_empty() && !keys.contains(&k) {
            keys.push(k);
        }
    }
    let now = Instant::now();
    let config = &shared.config;
    let mut world = shared.world();
    let request_id = world.fresh_id(6);
    let Some(app) = world.app_mut(app_id) else {
        return not_found("app_not_found", format!("app {app_id} not found"));
    };
    let Some((members, default_props)) = app
        .cohort(cohort_id)
        .map(|c| (c.members.clone(), c.props.clone()))
    else {
        return not_found(
            "cohort_not_found",
            format!("Cohort {cohort_id} not found in app {app_id}"),
        );
    };
    if app.usage_used >= app.monthly_limit {
        return api_error(
            StatusCode::TOO_MANY_REQUESTS,
            "quota_exceeded",
            format!(
                "Monthly quota exceeded: {} of {} cohort download requests used this month",
                app.usage_used, app.monthly_limit
            ),
            json!({"usage": app.usage_used, "limit": app.monthly_limit}),
        );
    }
    let free_at = app
        .short_window
        .next_free(now)
        .max(app.long_window.next_free(now));
    if free_at > now {
        let (short_n, long_n) = (
            config.requests_per_short_window,
            config.requests_per_long_window,
        );
        return rate_limited(
            free_at - now,
            config.time_scale,
            format!(
                "Too many single cohort requests for app {app_id}: at most {short_n} per \
                 minute and {long_n} per 10 minutes"
            ),
        );
    }
    let props = if props_on {
        PropColumns(Some(if keys.is_empty() { default_props } else { keys }))
    } else {
        PropColumns(None)
    };
    let job = Job {
        cohort_id: cohort_id.to_string(),
        members,
        props,
        ready_at: now + config.scaled(config.job_duration),
        expires_at: now + config.scaled(config.request_ttl),
    };
    app.short_window.record(now);
    app.long_window.record(now);
    app.usage_used += 1;
    app.jobs.insert(request_id.clone(), job);
    let resp = (
        StatusCode::ACCEPTED,
        Json(json!({"request_id": request_id, "cohort_id": cohort_id})),
    )
        .into_response();
    with_facts(resp, Facts::request(&request_id, Some(cohort_id)))
}

/// A live (known, unexpired) job of the app.
fn live_job(shared: &Shared, app_id: u64, request_id: &str) -> Option<Job> {
    let now = Instant::now();
    let world = shared.world();
    world
        .app(app_id)
        .and_then(|a| a.jobs.get(request_id))
        .filter(|j| j.expires_at > now)
        .cloned()
}

/// The 404 Amplitude answers for an unknown or expired request id.
fn unknown_request(request_id: &str) -> Response {
    let resp = not_found(
        "request_not_found",
        format!("Request {request_id} not found or expired"),
    );
    with_facts(resp, Facts::request(request_id, None))
}

/// `GET /api/5/cohorts/request-status/:request_id`
pub async fn status(
    State(shared): State<Arc<Shared>>,
    Extension(AuthedApp(app_id)): Extension<AuthedApp>,
    Path(request_id): Path<String>,
) -> Response {
    let Some(job) = live_job(&shared, app_id, &request_id) else {
        return unknown_request(&request_id);
    };
    let path = format!("/api/5/cohorts/request-status/{request_id}");
    let fault = shared.faults.take(&STATUS_FAULTS, &path);
    let (code, status) = reported_status(&job, fault.as_ref());
    let body =
        json!({"request_id": request_id, "cohort_id": job.cohort_id, "async_status": status});
    with_facts(
        (code, Json(body)).into_response(),
        Facts::request(&request_id, Some(&job.cohort_id)),
    )
}

/// What `request-status` answers for `job`, or what a fired status fault makes it answer.
fn reported_status(job: &Job, fault: Option<&FaultRule>) -> (StatusCode, String) {
    match fault {
        Some(f) if f.kind == FaultKind::SlowJob => (StatusCode::ACCEPTED, JOB_IN_PROGRESS.into()),
        Some(f) if f.kind == FaultKind::JobFailed => (StatusCode::OK, JOB_FAILED.into()),
        Some(f) if f.kind == FaultKind::UnknownStatus => {
            let status = f.body.as_deref().unwrap_or(DEFAULT_UNKNOWN_STATUS);
            (StatusCode::OK, status.into())
        }
        _ if Instant::now() < job.ready_at => (StatusCode::ACCEPTED, JOB_IN_PROGRESS.into()),
        _ => (StatusCode::OK, JOB_COMPLETED.into()),
    }
}

/// `GET /api/5/cohorts/request/:request_id/file`
pub async fn file(
    State(shared): State<Arc<Shared>>,
    Extension(AuthedApp(app_id)): Extension<AuthedApp>,
    Path(request_id): Path<String>,
) -> Response {
    let Some(job) = live_job(&shared, app_id, &request_id) else {
        return unknown_request(&request_id);
    };
    let facts = Facts::request(&request_id, Some(&job.cohort_id));
    let now = Instant::now();
    if now < job.ready_at {
        let resp = bad_request(
            "job_in_progress",
            format!(
                "The job of request {request_id} has not completed (JOB INPROGRESS): poll \
                 request-status until JOB COMPLETED"
            ),
            json!({"async_status": JOB_IN_PROGRESS}),
        );
        return with_facts(resp, facts);
    }
    if job.members.len() > shared.config.redirect_threshold_rows {
        let path = format!("/api/5/cohorts/request/{request_id}/file");
        let expired = shared
            .faults
            .take(&[FaultKind::ExpiredLink], &path)
            .is_some();
        return with_facts(redirect(&shared, app_id, &request_id, expired), facts);
    }
    let mut resp = file_body(&job, shared.config.gzip, None).into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv"));
    if shared.config.gzip {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    with_facts(resp, facts)
}

/// 302 to a fresh presigned link (already expired when `expired`).
fn redirect(shared: &Shared, app_id: u64, request_id: &str, expired: bool) -> Response {
    let ttl = shared.scaled(shared.config.link_ttl);
    let now = Instant::now();
    let mut world = shared.world();
    let signature = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    world.links.insert(
        signature.clone(),
        Link {
            app_id,
            request_id: request_id.to_string(),
            expires_at: if expired { now } else { now + ttl },
        },
    );
    drop(world);
    let amz_date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let day = chrono::Utc::now().format("%Y%m%d");
    let expires = shared.config.link_ttl.max(Duration::from_secs(1)).as_secs();
    let location = format!(
        "{}/cohort-exports/{app_id}/{request_id}.csv?X-Amz-Algorithm=AWS4-HMAC-SHA256\
         &X-Amz-Credential=EMULATOR%2F{day}%2Fus-west-2%2Fs3%2Faws4_request\
         &X-Amz-Date={amz_date}&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host\
         &X-Amz-Signature={signature}",
        shared.presign_base
    );
    let mut resp = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

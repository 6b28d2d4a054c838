//! The Amplitude API routes of the first listener, behind Basic auth and the per-app
//! in-flight gate. Unknown paths answer 404 with Amplitude's error JSON. Request bodies
//! may be up to [`MAX_BODY_BYTES`]: axum's default of 2 MB is no Amplitude limit, and
//! 100,000 ids of ~55 characters already exceed it.

mod cohorts;
mod jobs;
mod membership;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};

use super::auth::authenticate;
use super::errors::not_found;
use super::state::Shared;

pub use cohorts::cohort_json;
pub use membership::MAX_IDS_PER_REQUEST;

/// The longest id the body limit plans for. Amplitude documents no maximum for upload and
/// membership ids; 1,024 bytes is far above any user id or Amplitude id seen.
pub const MAX_ID_BYTES: usize = 1_024;

/// Largest request body the API listener reads: [`MAX_IDS_PER_REQUEST`] ids of
/// [`MAX_ID_BYTES`] each, with their JSON quotes and commas, plus 1 MiB for the rest of
/// the body (about 104 MB). Over this axum answers 413.
pub const MAX_BODY_BYTES: usize = MAX_IDS_PER_REQUEST * (MAX_ID_BYTES + 3) + (1 << 20);

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/3/cohorts", get(cohorts::list))
        .route("/api/3/cohorts/usage", get(cohorts::usage))
        .route("/api/3/cohorts/upload", post(membership::upload))
        .route("/api/3/cohorts/membership", post(membership::membership))
        .route("/api/5/cohorts/request/{id}", get(jobs::request))
        .route(
            "/api/5/cohorts/request-status/{request_id}",
            get(jobs::status),
        )
        .route("/api/5/cohorts/request/{request_id}/file", get(jobs::file))
        .route_layer(from_fn_with_state(Arc::clone(&shared), authenticate))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .fallback(|| async { not_found("not_found", "No such endpoint") })
        .with_state(shared)
}

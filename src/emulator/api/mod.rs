//! The Amplitude API routes of the first listener, behind Basic auth and the per-app
//! in-flight gate. Unknown paths answer 404 with Amplitude's error JSON.

mod cohorts;
mod jobs;
mod membership;

use std::sync::Arc;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};

use super::auth::authenticate;
use super::errors::not_found;
use super::state::Shared;

pub use cohorts::cohort_json;
pub use membership::MAX_IDS_PER_REQUEST;

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
        .fallback(|| async { not_found("not_found", "No such endpoint") })
        .with_state(shared)
}

//! Inspection and control endpoints under `/_emulator` on the API listener (no auth, not
//! logged, never faulted):
//!
//! - `GET /_emulator/requests[?since=SEQ]`: JSON array of [`super::LoggedRequest`] in
//!   arrival order; `DELETE` clears it (204).
//! - `GET /_emulator/apps/{app_id}/usage` → `{"used", "limit"}`; `PUT` with
//!   `{"used": N}` and/or `{"limit": N}` sets them and answers the new values.
//! - `GET /_emulator/apps/{app_id}/cohorts/{cohort_id}/members` → `text/csv`, header
//!   `amplitude_id,user_id`, one current member per row sorted by amplitude_id.
//! - `POST /_emulator/apps/{app_id}/cohorts` with a [`super::CohortSpec`] (201, the cohort
//!   object; 409 if the id exists); `PATCH /_emulator/apps/{app_id}/cohorts/{cohort_id}`
//!   with any of `name`, `size`, `published`, `archived`, `last_computed_ms`, `owners`,
//!   `props`, `seed` (a new size or seed regenerates the members), `description`, and
//!   `add_members` / `remove_members` (amplitude ids: a change by someone else or a
//!   behavioral computation, which moves `lastComputed` like any membership change).
//! - `POST /_emulator/faults` with a [`super::FaultRule`] (201); `GET` lists the armed
//!   rules; `DELETE` disarms all (204).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, patch, post};
use serde::Deserialize;
use serde_json::json;

use super::api::cohort_json;
use super::config::CohortSpec;
use super::csv_body::Members;
use super::errors::{bad_request, not_found};
use super::faults::FaultRule;
use super::state::{CohortState, Shared};
use super::universe::{amplitude_id, number_for_amplitude_id, write_u64, write_user_id};

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/_emulator/requests", get(requests).delete(clear_requests))
        .route("/_emulator/apps/{app_id}/usage", get(usage).put(set_usage))
        .route("/_emulator/apps/{app_id}/cohorts", post(add_cohort))
        .route(
            "/_emulator/apps/{app_id}/cohorts/{cohort_id}",
            patch(change_cohort),
        )
        .route(
            "/_emulator/apps/{app_id}/cohorts/{cohort_id}/members",
            get(members),
        )
        .route(
            "/_emulator/faults",
            post(add_fault).delete(clear_faults).get(list_faults),
        )
        .with_state(shared)
}

#[derive(Deserialize)]
struct Since {
    since: Option<u64>,
}

async fn requests(State(shared): State<Arc<Shared>>, Query(q): Query<Since>) -> Response {
    Json(shared.log.since(q.since.unwrap_or(0))).into_response()
}

async fn clear_requests(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.log.clear();
    StatusCode::NO_CONTENT
}

fn no_app(app_id: u64) -> Response {
    not_found("app_not_found", format!("app {app_id} not found"))
}

async fn usage(State(shared): State<Arc<Shared>>, Path(app_id): Path<u64>) -> Response {
    match shared.world().app(app_id) {
        Some(a) => Json(json!({"used": a.usage_used, "limit": a.monthly_limit})).into_response(),
        None => no_app(app_id),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageChange {
    used: Option<u32>,
    limit: Option<u32>,
}

async fn set_usage(
    State(shared): State<Arc<Shared>>,
    Path(app_id): Path<u64>,
    Json(change): Json<UsageChange>,
) -> Response {
    let mut world = shared.world();
    let Some(a) = world.app_mut(app_id) else {
        return no_app(app_id);
    };
    if let Some(u) = change.used {
        a.usage_used = u;
    }
    if let Some(l) = change.limit {
        a.monthly_limit = l;
    }
    Json(json!({"used": a.usage_used, "limit": a.monthly_limit})).into_response()
}

/// `text/csv`: `amplitude_id,user_id`, one current member per row, sorted by amplitude_id.
async fn members(
    State(shared): State<Arc<Shared>>,
    Path((app_id, cohort_id)): Path<(u64, String)>,
) -> Response {
    let current = match shared.world().app(app_id) {
        None => return no_app(app_id),
        Some(a) => match a.cohort(&cohort_id) {
            Some(c) => c.members.clone(),
            None => return not_found("cohort_not_found", format!("Cohort {cohort_id} not found")),
        },
    };
    let mut numbers: Vec<u64> = current.numbers().collect();
    numbers.sort_unstable();
    let mut out = Vec::with_capacity(numbers.len() * 40 + 32);
    out.extend_from_slice(b"amplitude_id,user_id\n");
    for n in numbers {
        write_u64(amplitude_id(n) as u64, &mut out);
        out.push(b',');
        write_user_id(n, &mut out);
        out.push(b'\n');
    }
    let mut resp = out.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv"));
    resp
}

async fn add_cohort(
    State(shared): State<Arc<Shared>>,
    Path(app_id): Path<u64>,
    Json(spec): Json<CohortSpec>,
) -> Response {
    if let Err(e) = spec.validate() {
        return bad_request("invalid_cohort", e, json!({}));
    }
    let mut world = shared.world();
    let Some(app) = world.app_mut(app_id) else {
        return no_app(app_id);
    };
    if app.cohort(&spec.id).is_some() {
        return super::errors::api_error(
            StatusCode::CONFLICT,
            "cohort_exists",
            format!("Cohort {} already exists", spec.id),
            json!({}),
        );
    }
    let cohort = CohortState::from_spec(&spec);
    let body = cohort_json(app_id, &cohort, false);
    app.cohorts.push(cohort);
    (StatusCode::CREATED, Json(body)).into_response()
}

/// Fields `PATCH` may change; absent ones stay as they are.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CohortChange {
    name: Option<String>,
    size: Option<u64>,
    published: Option<bool>,
    archived: Option<bool>,
    last_computed_ms: Option<i64>,
    owners: Option<Vec<String>>,
    props: Option<Vec<String>>,
    seed: Option<u64>,
    /// The list's `description` (`null` until set).
    description: Option<String>,
    /// Amplitude ids put into / taken out of the cohort by "someone else".
    add_members: Option<Vec<i64>>,
    remove_members: Option<Vec<i64>>,
}

async fn change_cohort(
    State(shared): State<Arc<Shared>>,
    Path((app_id, cohort_id)): Path<(u64, String)>,
    Json(change): Json<CohortChange>,
) -> Response {
    if change
        .size
        .is_some_and(|s| s > super::config::MAX_COHORT_SIZE)
    {
        return bad_request(
            "invalid_cohort",
            format!("size exceeds {}", super::config::MAX_COHORT_SIZE),
            json!({}),
        );
    }
    let mut world = shared.world();
    let now = world.now_ms;
    let Some(app) = world.app_mut(app_id) else {
        return no_app(app_id);
    };
    let Some(c) = app.cohort_mut(&cohort_id) else {
        return not_found("cohort_not_found", format!("Cohort {cohort_id} not found"));
    };
    if let Some(v) = change.name {
        c.name = v;
    }
    if let Some(v) = change.published {
        c.published = v;
    }
    if let Some(v) = change.archived {
        c.archived = v;
    }
    if let Some(v) = change.owners {
        c.owners = v;
    }
    if let Some(v) = change.props {
        c.props = v;
    }
    if let Some(v) = change.seed {
        c.seed = v;
    }
    if let Some(v) = change.description {
        c.description = Some(v);
    }
    // A new size or seed regenerates the members from the universe.
    if change.size.is_some() || change.seed.is_some() {
        let size = change.size.unwrap_or_else(|| c.size());
        c.members = Members::Generated {
            seed: c.seed,
            cohort_id: c.id.clone(),
            size,
        };
    }
    if change.add_members.is_some() || change.remove_members.is_some() {
        let mut set: std::collections::BTreeSet<u64> = c.members.numbers().collect();
        for id in change.add_members.unwrap_or_default() {
            match number_for_amplitude_id(id) {
                Some(n) => {
                    set.insert(n);
                }
                None => {
                    return bad_request(
                        "invalid_ids",
                        format!("{id} is not an amplitude id of the universe"),
                        json!({}),
                    );
                }
            }
        }
        for id in change.remove_members.unwrap_or_default() {
            if let Some(n) = number_for_amplitude_id(id) {
                set.remove(&n);
            }
        }
        c.set_members(Members::Explicit(Arc::new(set.into_iter().collect())), now);
    }
    if let Some(v) = change.last_computed_ms {
        c.last_computed_ms = v;
        c.last_mod_ms = v;
    }
    Json(cohort_json(app_id, c, false)).into_response()
}

async fn add_fault(State(shared): State<Arc<Shared>>, Json(rule): Json<FaultRule>) -> Response {
    if let Err(e) = rule.validate() {
        return bad_request("invalid_fault", e, json!({}));
    }
    shared.faults.add(rule.clone());
    (StatusCode::CREATED, Json(rule)).into_response()
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.faults.clear();
    StatusCode::NO_CONTENT
}

async fn list_faults(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.faults.list()).into_response()
}

//! `GET /api/3/cohorts` (the cohort list) and `GET /api/3/cohorts/usage` (monthly usage).

use std::sync::Arc;

use axum::extract::{Extension, RawQuery, State};
use axum::response::{IntoResponse, Json, Response};
use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde_json::{Value, json};

use crate::emulator::auth::AuthedApp;
use crate::emulator::errors::not_found;
use crate::emulator::query;
use crate::emulator::state::{CohortState, Shared};

/// A cohort as the list endpoint shows it (COHORT_OBJECT), shaped like Amplitude's
/// published samples (Postman collection; `tests/answers/list-published-sample.json`)
/// rather than the reference's schema: `definition.countGroup` is the string `"User"`,
/// `description` is `null` until set, there is no `viewers`, and `type` is
/// `manual_upload` for uploaded cohorts (`redshift` for the others). Timestamps in epoch
/// seconds.
pub fn cohort_json(app_id: u64, c: &CohortState, sync_info: bool) -> Value {
    let mut v = json!({
        "appId": app_id,
        "archived": c.archived,
        "definition": {
            "version": 3,
            "countGroup": "User",
            "cohortType": "UNIQUES",
            "andClauses": [],
            "referenceFrameTimeParams": {}
        },
        "description": c.description,
        "finished": true,
        "id": c.id,
        "name": c.name,
        "owners": c.owners,
        "published": c.published,
        "size": c.size(),
        "type": if c.uploaded { "manual_upload" } else { "redshift" },
        "lastMod": c.last_mod_ms.div_euclid(1000),
        "createdAt": c.created_ms.div_euclid(1000),
        "lastComputed": c.last_computed_ms.div_euclid(1000),
        "hidden": false,
        "metadata": null,
        "view_count": null,
        "popularity": null,
        "last_viewed": null,
        "chart_id": null,
        "edit_id": null,
        "is_predictive": false,
        "is_official_content": false,
        "location_id": null,
        "shortcut_ids": [],
    });
    if sync_info && let Some(obj) = v.as_object_mut() {
        obj.insert("syncMetadata".into(), json!([]));
    }
    v
}

pub async fn list(
    State(shared): State<Arc<Shared>>,
    Extension(AuthedApp(app_id)): Extension<AuthedApp>,
    RawQuery(raw): RawQuery,
) -> Response {
    let pairs = query::pairs(raw.as_deref());
    let sync_info = query::last(&pairs, "includeSyncInfo").is_some_and(|v| v == "true");
    let world = shared.world();
    let Some(app) = world.app(app_id) else {
        return not_found("app_not_found", format!("app {app_id} not found"));
    };
    let cohorts: Vec<Value> = app
        .cohorts
        .iter()
        .map(|c| cohort_json(app_id, c, sync_info))
        .collect();
    Json(json!({ "cohorts": cohorts })).into_response()
}

pub async fn usage(
    State(shared): State<Arc<Shared>>,
    Extension(AuthedApp(app_id)): Extension<AuthedApp>,
) -> Response {
    let world = shared.world();
    let Some(app) = world.app(app_id) else {
        return not_found("app_not_found", format!("app {app_id} not found"));
    };
    Json(json!({"rest_download": {
        "limit": app.monthly_limit,
        "usage": app.usage_used,
        "resets_at": next_month_start(shared.config.clock.now()),
    }}))
    .into_response()
}

/// The first instant of next month (UTC) as `YYYY-MM-DDTHH:MM:SS`.
fn next_month_start(now: DateTime<Utc>) -> String {
    let (y, m) = if now.month() == 12 {
        (now.year() + 1, 1)
    } else {
        (now.year(), now.month() + 1)
    };
    Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0)
        .single()
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S").to_string())
        .unwrap_or_default()
}

//! `POST /api/3/cohorts/upload` (create or replace a cohort) and
//! `POST /api/3/cohorts/membership` (add / remove ids). Ids outside the universe are
//! invalid (upload) or skipped (membership); an upload with no valid id answers 400; at
//! most 100,000 ids per call; a call that touches a cohort another call is still working
//! on answers 429. A change makes the cohort's members an explicit set and moves its
//! `lastComputed` to now. The upload answer carries `cohortId`, `metadata` and
//! `cohortsById` (the cohort object, `type: "manual_upload"` when the upload made it).

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Json, Response};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::amplitude::types::{
    MembershipIdType, MembershipOperation, MembershipRequest, UploadIdType, UploadRequest,
};
use crate::emulator::api::cohort_json;
use crate::emulator::auth::AuthedApp;
use crate::emulator::csv_body::Members;
use crate::emulator::errors::{bad_request, not_found, rate_limited};
use crate::emulator::log::{Facts, with_facts};
use crate::emulator::state::{CohortState, Shared};
use crate::emulator::universe::{number_for_amplitude_id, number_for_user_id};

/// Most ids one upload or membership call may carry.
pub const MAX_IDS_PER_REQUEST: usize = 100_000;
/// Invalid ids quoted back in `invalid_ids_sample` / error metadata.
const SAMPLE: usize = 10;

/// Marks a cohort as being modified; released when dropped.
struct CohortLock {
    shared: Arc<Shared>,
    app_id: u64,
    cohort_id: String,
}

impl CohortLock {
    /// `None` when another call holds the cohort.
    fn take(shared: &Arc<Shared>, app_id: u64, cohort_id: &str) -> Option<CohortLock> {
        let mut world = shared.world();
        let app = world.app_mut(app_id)?;
        app.busy_cohorts
            .insert(cohort_id.to_string())
            .then(|| CohortLock {
                shared: Arc::clone(shared),
                app_id,
                cohort_id: cohort_id.to_string(),
            })
    }
}

impl Drop for CohortLock {
    fn drop(&mut self) {
        if let Some(app) = self.shared.world().app_mut(self.app_id) {
            app.busy_cohorts.remove(&self.cohort_id);
        }
    }
}

fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("Invalid request body: {e}"))
}

fn unparsable(message: String) -> Response {
    bad_request("invalid_request", message, json!({}))
}

fn busy(shared: &Shared, cohort_id: &str) -> Response {
    rate_limited(
        shared.scaled(shared.config.membership_processing),
        shared.config.time_scale,
        format!("Cohort {cohort_id} is being modified by another request; try again later"),
    )
}

fn too_many_ids(count: usize) -> Response {
    bad_request(
        "too_many_ids",
        format!("Too many ids: {count} (at most {MAX_IDS_PER_REQUEST} per request)"),
        json!({"id_count": count, "limit": MAX_IDS_PER_REQUEST}),
    )
}

fn invalid_ids(invalid: &[String]) -> Response {
    bad_request(
        "invalid_ids",
        format!(
            "{} invalid ids and skip_invalid_ids is false",
            invalid.len()
        ),
        json!({"invalid_ids": &invalid[..invalid.len().min(SAMPLE)], "invalid_count": invalid.len()}),
    )
}

/// An upload with no valid id: Amplitude creates no empty cohort (nor empties one by
/// replacing it); a create needs at least one known id.
fn no_valid_ids(metadata: serde_json::Value) -> Response {
    bad_request(
        "no_valid_ids",
        "The upload holds no valid id: a cohort upload needs at least one known user or \
         Amplitude id",
        metadata,
    )
}

/// Simulates Amplitude's processing time while the cohort is held.
async fn process(shared: &Shared) {
    tokio::time::sleep(shared.scaled(shared.config.membership_processing)).await;
}

pub async fn upload(
    State(shared): State<Arc<Shared>>,
    Extension(AuthedApp(app_id)): Extension<AuthedApp>,
    body: Bytes,
) -> Response {
    let req: UploadRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(message) => return unparsable(message),
    };
    // A `skip_save` upload only validates: logged as such, so tests tell it from a change.
    let operation = if req.skip_save.unwrap_or(false) {
        "VALIDATE"
    } else {
        "UPLOAD"
    };
    let facts = Facts {
        cohort_id: req.existing_cohort_id.clone(),
        operation: Some(operation.into()),
        id_count: Some(req.ids.len() as u64),
        ..Facts::default()
    };
    let (resp, cohort_id) = do_upload(&shared, app_id, req).await;
    with_facts(
        resp,
        Facts {
            cohort_id: cohort_id.or(facts.cohort_id.clone()),
            ..facts
        },
    )
}

async fn do_upload(
    shared: &Arc<Shared>,
    app_id: u64,
    req: UploadRequest,
) -> (Response, Option<String>) {
    if req.app_id != app_id as i64 {
        let resp = bad_request(
            "invalid_app_id",
            format!(
                "app_id {} does not match the project of the API key",
                req.app_id
            ),
            json!({}),
        );
        return (resp, None);
    }
    if req.name.trim().is_empty() {
        return (
            bad_request("invalid_request", "name is required", json!({})),
            None,
        );
    }
    if req.ids.len() > MAX_IDS_PER_REQUEST {
        return (too_many_ids(req.ids.len()), None);
    }
    let mut valid = Vec::with_capacity(req.ids.len());
    let mut invalid = Vec::new();
    for id in &req.ids {
        let n = match req.id_type {
            UploadIdType::ByAmpId => id.trim().parse().ok().and_then(number_for_amplitude_id),
            UploadIdType::ByUserId => number_for_user_id(id),
        };
        match n {
            Some(n) => valid.push(n),
            None => invalid.push(id.clone()),
        }
    }
    if !req.skip_invalid_ids.unwrap_or(true) && !invalid.is_empty() {
        return (invalid_ids(&invalid), req.existing_cohort_id.clone());
    }
    let metadata = json!({
        "matched": valid.len(),
        "totals": req.ids.len(),
        "invalid_ids_sample": &invalid[..invalid.len().min(SAMPLE)],
    });
    if valid.is_empty() {
        return (no_valid_ids(metadata), req.existing_cohort_id.clone());
    }
    let cohort_id = match &req.existing_cohort_id {
        Some(id) => {
            let exists = shared
                .world()
                .app(app_id)
                .is_some_and(|a| a.cohort(id).is_some());
            if !exists {
                let resp = not_found("cohort_not_found", format!("Cohort {id} not found"));
                return (resp, Some(id.clone()));
            }
            id.clone()
        }
        None => shared.world().fresh_id(7),
    };
    if req.skip_save.unwrap_or(false) {
        let answer = json!({"cohortId": cohort_id, "metadata": metadata});
        return (Json(answer).into_response(), Some(cohort_id));
    }
    let Some(_lock) = CohortLock::take(shared, app_id, &cohort_id) else {
        return (busy(shared, &cohort_id), Some(cohort_id));
    };
    process(shared).await;
    valid.sort_unstable();
    valid.dedup();
    let members = Members::Explicit(Arc::new(valid));
    let mut world = shared.world();
    let now = world.now_ms;
    let Some(app) = world.app_mut(app_id) else {
        return (not_found("app_not_found", "app not found"), Some(cohort_id));
    };
    match app.cohort_mut(&cohort_id) {
        Some(c) => c.set_members(members, now),
        None => {
            app.cohorts.push(CohortState {
                id: cohort_id.clone(),
                name: req.name.clone(),
                published: req.published,
                archived: false,
                last_computed_ms: now,
                created_ms: now,
                last_mod_ms: now,
                owners: vec![req.owner.clone()],
                props: Vec::new(),
                seed: 0,
                recompute_ms: 0,
                members,
                description: None,
                uploaded: true,
            });
        }
    }
    // The reference's `cohortId` + `metadata`, and the published sample's `cohortsById`.
    let mut answer = json!({"cohortId": cohort_id, "metadata": metadata});
    if let Some(c) = app.cohort(&cohort_id) {
        answer["cohortsById"] = json!({ cohort_id.as_str(): cohort_json(app_id, c, false) });
    }
    (Json(answer).into_response(), Some(cohort_id))
}

pub async fn membership(
    State(shared): State<Arc<Shared>>,
    Extension(AuthedApp(app_id)): Extension<AuthedApp>,
    body: Bytes,
) -> Response {
    let req: MembershipRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(message) => return unparsable(message),
    };
    let mut ops: Vec<&str> = Vec::new();
    for m in &req.memberships {
        let op = match m.operation {
            MembershipOperation::Add => "ADD",
            MembershipOperation::Remove => "REMOVE",
        };
        if !ops.contains(&op) {
            ops.push(op);
        }
    }
    let total: usize = req.memberships.iter().map(|m| m.ids.len()).sum();
    let facts = Facts {
        cohort_id: Some(req.cohort_id.clone()),
        operation: Some(ops.join(",")),
        id_count: Some(total as u64),
        ..Facts::default()
    };
    let resp = if total > MAX_IDS_PER_REQUEST {
        too_many_ids(total)
    } else {
        apply_membership(&shared, app_id, &req).await
    };
    with_facts(resp, facts)
}

async fn apply_membership(shared: &Arc<Shared>, app_id: u64, req: &MembershipRequest) -> Response {
    if let Some(cg) = &req.count_group
        && cg != "User"
    {
        return bad_request(
            "invalid_count_group",
            format!("count_group {cg:?} does not match the cohort's count group User"),
            json!({}),
        );
    }
    let exists = shared
        .world()
        .app(app_id)
        .is_some_and(|a| a.cohort(&req.cohort_id).is_some());
    if !exists {
        return not_found(
            "cohort_not_found",
            format!("Cohort {} not found", req.cohort_id),
        );
    }
    // Resolve every id first: (operation, valid numbers, skipped ids) per entry.
    let mut resolved = Vec::with_capacity(req.memberships.len());
    let mut all_skipped = Vec::new();
    for m in &req.memberships {
        let mut numbers = Vec::with_capacity(m.ids.len());
        let mut skipped = Vec::new();
        for id in &m.ids {
            let n = match m.id_type {
                MembershipIdType::ById => id.trim().parse().ok().and_then(number_for_amplitude_id),
                MembershipIdType::ByName => number_for_user_id(id),
            };
            match n {
                Some(n) => numbers.push(n),
                None => skipped.push(id.clone()),
            }
        }
        all_skipped.extend(skipped.iter().cloned());
        resolved.push((m, numbers, skipped));
    }
    if !req.skip_invalid_ids.unwrap_or(true) && !all_skipped.is_empty() {
        return invalid_ids(&all_skipped);
    }
    let Some(_lock) = CohortLock::take(shared, app_id, &req.cohort_id) else {
        return busy(shared, &req.cohort_id);
    };
    process(shared).await;
    let current = match shared
        .world()
        .app(app_id)
        .and_then(|a| a.cohort(&req.cohort_id))
    {
        Some(c) => c.members.clone(),
        None => {
            return not_found(
                "cohort_not_found",
                format!("Cohort {} not found", req.cohort_id),
            );
        }
    };
    let mut set: BTreeSet<u64> = current.numbers().collect();
    for (m, numbers, _) in &resolved {
        match m.operation {
            MembershipOperation::Add => set.extend(numbers.iter().copied()),
            MembershipOperation::Remove => {
                for n in numbers {
                    set.remove(n);
                }
            }
        }
    }
    let members = Members::Explicit(Arc::new(set.into_iter().collect()));
    let mut world = shared.world();
    let now = world.now_ms;
    if let Some(c) = world
        .app_mut(app_id)
        .and_then(|a| a.cohort_mut(&req.cohort_id))
    {
        c.set_members(members, now);
    }
    drop(world);
    let results: Vec<_> = resolved
        .iter()
        .map(|(m, _, skipped)| {
            json!({"skipped_ids": skipped, "id_type": m.id_type, "operation": m.operation})
        })
        .collect();
    Json(json!({"cohort_id": req.cohort_id, "memberships_result": results})).into_response()
}

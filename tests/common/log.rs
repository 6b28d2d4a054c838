//! What the tests count in the emulator's request log — each thing defined once, here.

use std::collections::BTreeMap;

use cohort_sync::emulator::{Listener, LoggedRequest};

/// Prefix of the single-cohort request, the one call that counts towards the month.
pub const COHORT_REQUEST: &str = "/api/5/cohorts/request/";
/// Prefix of a request's status.
pub const REQUEST_STATUS: &str = "/api/5/cohorts/request-status/";
pub const LIST: &str = "/api/3/cohorts";
pub const USAGE: &str = "/api/3/cohorts/usage";
pub const MEMBERSHIP: &str = "/api/3/cohorts/membership";
pub const UPLOAD: &str = "/api/3/cohorts/upload";

/// A call asking Amplitude for a cohort's file (`GET /api/5/cohorts/request/{cohort}`),
/// whatever its answer.
pub fn is_cohort_request(r: &LoggedRequest) -> bool {
    r.listener == Listener::Api && r.path.starts_with(COHORT_REQUEST) && !r.path.ends_with("/file")
}

/// Every cohort request sent, whatever the answer (refused ones included).
pub fn cohort_request_attempts(log: &[LoggedRequest]) -> Vec<&LoggedRequest> {
    log.iter().filter(|r| is_cohort_request(r)).collect()
}

/// The cohort requests the emulator accepted (2xx): each spent one of the month's downloads.
pub fn spent_requests(log: &[LoggedRequest]) -> Vec<&LoggedRequest> {
    log.iter()
        .filter(|r| is_cohort_request(r) && r.status < 300)
        .collect()
}

/// Spent requests per cohort id.
pub fn spent_by_cohort(log: &[LoggedRequest]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in spent_requests(log) {
        *out.entry(r.cohort_id.clone().unwrap_or_default())
            .or_default() += 1;
    }
    out
}

/// The cohort ids of the spent requests, sorted.
pub fn spent_cohorts(log: &[LoggedRequest]) -> Vec<String> {
    spent_by_cohort(log).into_keys().collect()
}

/// The request id the emulator issued for `cohort_id` (its only spent request).
pub fn request_id_of(log: &[LoggedRequest], cohort_id: &str) -> String {
    let issued: Vec<&str> = spent_requests(log)
        .into_iter()
        .filter(|r| r.cohort_id.as_deref() == Some(cohort_id))
        .filter_map(|r| r.request_id.as_deref())
        .collect();
    assert_eq!(
        issued.len(),
        1,
        "requests issued for {cohort_id}: {issued:?}"
    );
    issued[0].to_string()
}

/// `/file` calls on the API listener (any answer), optionally of one request id.
pub fn file_calls<'a>(
    log: &'a [LoggedRequest],
    request_id: Option<&str>,
) -> Vec<&'a LoggedRequest> {
    log.iter()
        .filter(|r| r.listener == Listener::Api && r.path.ends_with("/file"))
        .filter(|r| request_id.is_none_or(|id| r.path.contains(id)))
        .collect()
}

/// Calls on the presigned-link listener (the "S3" host).
pub fn presigned(log: &[LoggedRequest]) -> Vec<&LoggedRequest> {
    log.iter()
        .filter(|r| r.listener == Listener::Presign)
        .collect()
}

/// Membership and upload calls sent, whatever their answer.
pub fn change_calls(log: &[LoggedRequest]) -> Vec<&LoggedRequest> {
    log.iter()
        .filter(|r| r.path == MEMBERSHIP || r.path == UPLOAD)
        .collect()
}

/// `(operation, ids)` of every membership / upload call Amplitude applied (200), in order:
/// what changed the cohorts (a `skip_save` upload, logged `VALIDATE`, only checks ids).
pub fn changes(log: &[LoggedRequest]) -> Vec<(String, u64)> {
    change_calls(log)
        .into_iter()
        .filter(|r| r.status == 200)
        .filter(|r| r.operation.as_deref() != Some("VALIDATE"))
        .map(|r| {
            (
                r.operation.clone().unwrap_or_default(),
                r.id_count.unwrap_or_default(),
            )
        })
        .collect()
}

/// `[(op, n), ...]` as owned pairs, to compare with [`changes`].
pub fn ops(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(o, n)| (o.to_string(), *n)).collect()
}

/// Requests answered `status`.
pub fn status_count(log: &[LoggedRequest], status: u16) -> usize {
    log.iter().filter(|r| r.status == status).count()
}

/// Requests whose path contains `needle`.
pub fn matching<'a>(log: &'a [LoggedRequest], needle: &str) -> Vec<&'a LoggedRequest> {
    log.iter().filter(|r| r.path.contains(needle)).collect()
}

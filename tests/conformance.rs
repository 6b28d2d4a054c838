//! Conformance of the typed client to recorded answers of the real service.
//!
//! Every test elsewhere talks to the project's own emulator, so where the emulator and
//! Amplitude differ no test can notice. Here each file of `tests/answers/` records one
//! answer as Amplitude (or S3) gives it — endpoint, status, headers, body — with a `source`
//! naming where the shape comes from (the API reference, Amplitude's published Postman
//! samples, docs before October 2024, public clients such as Segment's Amplitude Cohorts
//! destination, DESIGN.md's notes). The test serves each answer from a tiny axum server on
//! 127.0.0.1 (a real socket), makes the matching call with [`AmplitudeClient`], and checks
//! what the client makes of it: the parsed value, or the typed error and its message.
//! Adding a file adds a case.
//!
//! File format (unknown keys are refused):
//!
//! ```json
//! {
//!   "source": "where the shape comes from",
//!   "call": "list_cohorts | request_cohort | request_status | download_file | usage | upload | update_membership",
//!   "endpoint": "GET /api/5/cohorts/request/26umsb5",
//!   "status": 202,
//!   "headers": {"Retry-After": "30"},
//!   "body": {"json": "answer"},              // or "body_text": "answer as text"
//!   "presigned": {"endpoint": "GET /p/x.csv", "status": 200, "body_text": "..."},
//!   "expect": {"ok": {"subset": "of the parsed value"}}
//!          or {"error": "Auth", "status": 403, "message_contains": ["..."], "retry_after_secs": 30}
//! }
//! ```
//!
//! `{base}` in a header value is replaced by the server's `http://127.0.0.1:PORT` (for a
//! 302's `Location`). `ok` is matched as a subset: every key it names must be there with
//! an equal value (arrays element by element, same length; `null` also matches a missing
//! key). What `ok` is matched against, per call: the serialized answer type, plus
//! `count_group` and `last_computed_seconds` per cohort (list), `cohort` (upload: the
//! parsed `cohortsById` entry), `remaining` (usage), `{"state"}` (status), and
//! `{"redirected", "content_encoding", "body"}` (file). The API path must be asked with
//! Basic credentials, a presigned path without them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use cohort_sync::amplitude::types::{
    IdKind, Membership, MembershipOperation, MembershipRequest, UploadRequest,
};
use cohort_sync::amplitude::{AmplitudeClient, ApiError, ClientOptions, Credentials, JobState};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Call {
    ListCohorts,
    RequestCohort,
    RequestStatus,
    DownloadFile,
    Usage,
    Upload,
    UpdateMembership,
}

/// One recorded answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerFile {
    source: String,
    /// Anything a reader should know about the recording.
    #[serde(default)]
    note: Option<String>,
    call: Call,
    /// `METHOD /path` (no query string).
    endpoint: String,
    status: u16,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    body_text: Option<String>,
    /// What the presigned link of a 302 answers.
    #[serde(default)]
    presigned: Option<Served>,
    expect: Expect,
}

impl AnswerFile {
    /// The recorded answer of the API endpoint.
    fn answer(&self) -> Served {
        Served {
            endpoint: self.endpoint.clone(),
            status: self.status,
            headers: self.headers.clone(),
            body: self.body.clone(),
            body_text: self.body_text.clone(),
        }
    }
}

/// What the server answers on one endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Served {
    /// `METHOD /path` (no query string).
    endpoint: String,
    status: u16,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    body_text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    #[serde(default)]
    ok: Option<Value>,
    /// The [`ApiError`] variant's name.
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    message_contains: Vec<String>,
    #[serde(default)]
    retry_after_secs: Option<f64>,
}

/// A request the recording server saw.
#[derive(Debug, Clone)]
struct Seen {
    endpoint: String,
    authorization: bool,
}

struct Recording {
    base: String,
    served: Vec<Served>,
    seen: Mutex<Vec<Seen>>,
}

impl Recording {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

async fn answer(State(rec): State<Arc<Recording>>, req: Request) -> Response {
    let endpoint = format!("{} {}", req.method(), req.uri().path());
    let authorization = req.headers().contains_key(header::AUTHORIZATION);
    rec.seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Seen {
            endpoint: endpoint.clone(),
            authorization,
        });
    let Some(served) = rec.served.iter().find(|s| s.endpoint == endpoint) else {
        let mut resp = Response::new(Body::from(format!("not recorded: {endpoint}")));
        *resp.status_mut() = StatusCode::IM_A_TEAPOT;
        return resp;
    };
    let (text, content_type) = match (&served.body, &served.body_text) {
        (Some(v), _) => (v.to_string(), Some("application/json")),
        (None, Some(t)) => (t.clone(), Some("text/plain; charset=utf-8")),
        (None, None) => (String::new(), None),
    };
    let mut resp = Response::new(Body::from(text));
    *resp.status_mut() = StatusCode::from_u16(served.status).unwrap_or(StatusCode::IM_A_TEAPOT);
    let headers = resp.headers_mut();
    if let Some(ct) = content_type {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    for (name, value) in &served.headers {
        let value = value.replace("{base}", &rec.base);
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.insert(n, v);
        }
    }
    resp
}

/// Serves `served` on a fresh loopback port until the returned task is dropped.
async fn serve(served: Vec<Served>) -> (Arc<Recording>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let rec = Arc::new(Recording {
        base: format!("http://{addr}"),
        served,
        seen: Mutex::new(Vec::new()),
    });
    let app = Router::new().fallback(answer).with_state(Arc::clone(&rec));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (rec, task)
}

/// The last segment of a path, or the one before `/file`.
fn path_id(endpoint: &str, prefix: &str, suffix: &str) -> Result<String, String> {
    let path = endpoint
        .strip_prefix(prefix)
        .and_then(|p| p.strip_suffix(suffix))
        .filter(|id| !id.is_empty() && !id.contains('/'))
        .ok_or_else(|| format!("endpoint {endpoint:?} is not `{prefix}ID{suffix}`"))?;
    Ok(path.to_string())
}

fn upload_request() -> UploadRequest {
    UploadRequest {
        name: "Conformance".into(),
        app_id: 153_957,
        id_type: IdKind::AmplitudeId.upload_id_type(),
        cg: None,
        ids: vec!["10101010101010".into(), "20202020202020".into()],
        owner: "owner@example.com".into(),
        published: true,
        skip_save: None,
        skip_invalid_ids: Some(true),
        existing_cohort_id: None,
    }
}

fn membership_request() -> MembershipRequest {
    MembershipRequest {
        cohort_id: "1a2bc3d".into(),
        count_group: None,
        memberships: vec![Membership {
            ids: vec!["111".into(), "222".into()],
            id_type: IdKind::AmplitudeId.membership_id_type(),
            operation: MembershipOperation::Add,
        }],
        skip_invalid_ids: Some(true),
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_else(|e| json!({"unserializable": e.to_string()}))
}

/// Makes the file's call and turns a success into the JSON `expect.ok` is matched against.
async fn call(
    client: &AmplitudeClient,
    file: &AnswerFile,
) -> Result<Result<Value, ApiError>, String> {
    let endpoint = file.endpoint.as_str();
    Ok(match file.call {
        Call::ListCohorts => client.list_cohorts(false).await.map(|list| {
            let mut v = to_json(&list);
            if let Some(items) = v["cohorts"].as_array_mut() {
                for (item, cohort) in items.iter_mut().zip(&list.cohorts) {
                    item["count_group"] = json!(cohort.count_group());
                    item["last_computed_seconds"] = json!(
                        cohort
                            .last_computed
                            .as_ref()
                            .and_then(|t| t.epoch_seconds())
                    );
                }
            }
            v
        }),
        Call::RequestCohort => {
            let id = path_id(endpoint, "GET /api/5/cohorts/request/", "")?;
            client
                .request_cohort(&id, false, &[])
                .await
                .map(|r| to_json(&r))
        }
        Call::RequestStatus => {
            let id = path_id(endpoint, "GET /api/5/cohorts/request-status/", "")?;
            client.request_status(&id).await.map(|s| {
                json!({"state": match s {
                    JobState::InProgress => "InProgress",
                    JobState::Completed => "Completed",
                }})
            })
        }
        Call::DownloadFile => {
            let id = path_id(endpoint, "GET /api/5/cohorts/request/", "/file")?;
            match client.download_file(&id).await {
                Ok(d) => {
                    let (redirected, encoding) = (d.redirected, d.content_encoding.clone());
                    let mut bytes = Vec::new();
                    let mut body = d.body;
                    let mut failed = None;
                    while let Some(chunk) = body.next().await {
                        match chunk {
                            Ok(c) => bytes.extend_from_slice(&c),
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                    match failed {
                        Some(e) => Err(e),
                        None => Ok(json!({
                            "redirected": redirected,
                            "content_encoding": encoding,
                            "body": String::from_utf8_lossy(&bytes),
                        })),
                    }
                }
                Err(e) => Err(e),
            }
        }
        Call::Usage => client.usage().await.map(|u| {
            let mut v = to_json(&u);
            v["remaining"] = json!(u.remaining());
            v
        }),
        Call::Upload => client.upload(&upload_request()).await.map(|r| {
            let mut v = to_json(&r);
            v["cohort"] = to_json(&r.cohort());
            v
        }),
        Call::UpdateMembership => client
            .update_membership(&membership_request())
            .await
            .map(|r| to_json(&r)),
    })
}

/// Where the call goes, as `METHOD /path`.
fn expected_endpoint_prefix(call: Call) -> &'static str {
    match call {
        Call::ListCohorts => "GET /api/3/cohorts",
        Call::RequestCohort => "GET /api/5/cohorts/request/",
        Call::RequestStatus => "GET /api/5/cohorts/request-status/",
        Call::DownloadFile => "GET /api/5/cohorts/request/",
        Call::Usage => "GET /api/3/cohorts/usage",
        Call::Upload => "POST /api/3/cohorts/upload",
        Call::UpdateMembership => "POST /api/3/cohorts/membership",
    }
}

/// `Err(where and why)` unless `actual` holds everything `expected` names.
fn contains(actual: Option<&Value>, expected: &Value, at: &str) -> Result<(), String> {
    match (actual, expected) {
        (None, Value::Null) => Ok(()),
        (None, _) => Err(format!("{at}: missing, expected {expected}")),
        (Some(Value::Object(a)), Value::Object(e)) => {
            for (k, v) in e {
                contains(a.get(k), v, &format!("{at}.{k}"))?;
            }
            Ok(())
        }
        (Some(Value::Array(a)), Value::Array(e)) => {
            if a.len() != e.len() {
                return Err(format!("{at}: {} elements, expected {}", a.len(), e.len()));
            }
            for (i, (av, ev)) in a.iter().zip(e).enumerate() {
                contains(Some(av), ev, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        (Some(a), e) if numbers_equal(a, e) || a == e => Ok(()),
        (Some(a), e) => Err(format!("{at}: got {a}, expected {e}")),
    }
}

/// `2` and `2.0` are the same expectation.
fn numbers_equal(a: &Value, e: &Value) -> bool {
    matches!((a.as_f64(), e.as_f64()), (Some(x), Some(y)) if x == y)
}

fn kind(e: &ApiError) -> &'static str {
    match e {
        ApiError::Auth { .. } => "Auth",
        ApiError::NotFound { .. } => "NotFound",
        ApiError::RateLimited { .. } => "RateLimited",
        ApiError::QuotaExhausted { .. } => "QuotaExhausted",
        ApiError::InvalidRequest { .. } => "InvalidRequest",
        ApiError::Server { .. } => "Server",
        ApiError::Unexpected { .. } => "Unexpected",
        ApiError::LinkExpired { .. } => "LinkExpired",
        ApiError::Transport { .. } => "Transport",
        ApiError::Stopped => "Stopped",
        ApiError::RetryAfterTooLong { .. } => "RetryAfterTooLong",
        ApiError::UnsafeRedirect { .. } => "UnsafeRedirect",
        ApiError::BadId { .. } => "BadId",
        ApiError::TooSlow { .. } => "TooSlow",
    }
}

fn error_status(e: &ApiError) -> Option<u16> {
    match e {
        ApiError::Auth { status, .. }
        | ApiError::InvalidRequest { status, .. }
        | ApiError::Server { status, .. }
        | ApiError::Unexpected { status, .. }
        | ApiError::LinkExpired { status } => Some(*status),
        ApiError::NotFound { .. } => Some(404),
        ApiError::RateLimited { .. } | ApiError::QuotaExhausted { .. } => Some(429),
        ApiError::RetryAfterTooLong { status, .. } => Some(*status),
        ApiError::Transport { .. }
        | ApiError::Stopped
        | ApiError::UnsafeRedirect { .. }
        | ApiError::BadId { .. }
        | ApiError::TooSlow { .. } => None,
    }
}

fn check_error(e: &ApiError, expect: &Expect) -> Result<(), String> {
    let text = e.to_string();
    let want = expect
        .error
        .as_deref()
        .ok_or_else(|| format!("expected success, got {} error: {text}", kind(e)))?;
    if kind(e) != want {
        return Err(format!("expected a {want} error, got {}: {text}", kind(e)));
    }
    if let Some(s) = expect.status
        && error_status(e) != Some(s)
    {
        return Err(format!(
            "expected status {s}, got {:?}: {text}",
            error_status(e)
        ));
    }
    for part in &expect.message_contains {
        if !text.contains(part.as_str()) {
            return Err(format!("message lacks {part:?}: {text}"));
        }
    }
    if let Some(secs) = expect.retry_after_secs {
        let got = match e {
            ApiError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        };
        if got != Some(Duration::from_secs_f64(secs)) {
            return Err(format!("expected Retry-After {secs}s, got {got:?}"));
        }
    }
    Ok(())
}

/// Runs one recorded answer; `Err` says what differs.
async fn run_case(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let file: AnswerFile =
        serde_json::from_str(&text).map_err(|e| format!("not an answer file: {e}"))?;
    if file.source.trim().len() < 10 {
        return Err("`source` must say where the shape comes from".into());
    }
    let _ = &file.note;
    let prefix = expected_endpoint_prefix(file.call);
    if !file.endpoint.starts_with(prefix) {
        return Err(format!(
            "{:?} calls {prefix}..., the file records {}",
            file.call, file.endpoint
        ));
    }
    if file.body.is_some() && file.body_text.is_some() {
        return Err("give `body` or `body_text`, not both".into());
    }
    if file.expect.ok.is_some() == file.expect.error.is_some() {
        return Err("`expect` needs exactly one of `ok` and `error`".into());
    }
    let mut served = vec![file.answer()];
    served.extend(file.presigned.clone());
    let (rec, task) = serve(served).await;
    let client = AmplitudeClient::new(ClientOptions::new(
        rec.base.clone(),
        Credentials::new("conformance-key", "conformance-secret"),
    ))
    .map_err(|e| format!("client: {e}"))?;
    let outcome = call(&client, &file).await?;
    let seen = rec.seen();
    task.abort();

    match (&outcome, &file.expect.ok) {
        (Ok(value), Some(want)) => {
            contains(Some(value), want, "answer").map_err(|e| format!("{e}\n  parsed: {value}"))?
        }
        (Ok(value), None) => return Err(format!("expected an error, got {value}")),
        (Err(e), _) => check_error(e, &file.expect)?,
    }
    let mut expected_seen = vec![file.endpoint.clone()];
    if file.status / 100 == 3 {
        expected_seen.extend(file.presigned.iter().map(|p| p.endpoint.clone()));
    }
    let got: Vec<&str> = seen.iter().map(|s| s.endpoint.as_str()).collect();
    if got != expected_seen {
        return Err(format!("requests {got:?}, expected {expected_seen:?}"));
    }
    if !seen[0].authorization {
        return Err("the API call carried no credentials".into());
    }
    if seen.iter().skip(1).any(|s| s.authorization) {
        return Err("Amplitude credentials reached the presigned host".into());
    }
    Ok(())
}

fn answer_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/answers");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/answers exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn the_client_understands_every_recorded_answer() {
    let files = answer_files();
    assert!(files.len() >= 20, "only {} recorded answers", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        match run_case(path).await {
            Ok(()) => println!("ok   {name}"),
            Err(why) => {
                println!("FAIL {name}: {why}");
                failures.push(format!("{name}: {why}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} recorded answers:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

/// Every call of the client has at least one recorded answer, a success and an error.
#[test]
fn every_call_is_recorded() {
    let mut calls: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for path in answer_files() {
        let text = std::fs::read_to_string(&path).expect("readable");
        let v: Value = serde_json::from_str(&text).expect("JSON");
        let entry = calls
            .entry(v["call"].as_str().unwrap_or_default().to_string())
            .or_default();
        if v["expect"].get("ok").is_some() {
            entry.0 = true;
        } else {
            entry.1 = true;
        }
    }
    for call in [
        "list_cohorts",
        "request_cohort",
        "request_status",
        "download_file",
        "usage",
        "upload",
        "update_membership",
    ] {
        let (ok, _) = calls.get(call).copied().unwrap_or_default();
        assert!(ok, "no successful answer recorded for {call}");
    }
    let errors = calls.values().filter(|(_, err)| *err).count();
    assert!(errors >= 4, "{calls:?}");
}

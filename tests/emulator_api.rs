//! The emulator driven over real loopback HTTP by the crate's own Amplitude client: every
//! endpoint, every error kind, the presigned redirect, gzip, faults and the admin API.

mod common;

use std::time::Duration;

use cohort_sync::amplitude::types::{
    IdKind, Membership, MembershipOperation, MembershipRequest, UploadRequest,
};
use cohort_sync::amplitude::{AmplitudeClient, ApiError, FileDownload, JobState};
use cohort_sync::emulator::universe::{amplitude_id, member_numbers, property_value, user_id};
use cohort_sync::emulator::{CohortSpec, EmulatorConfig, FaultKind, FaultRule, Listener};
use common::emulator::*;
use futures::StreamExt;

const APP: u64 = 4242;

fn props_cohort() -> CohortSpec {
    CohortSpec {
        props: vec!["plan".into(), "note".into()],
        ..cohort("props1", 300).seed(11)
    }
}

fn base_config() -> EmulatorConfig {
    fast_config(vec![app(
        APP,
        vec![
            cohort("small1", 120).seed(5),
            props_cohort(),
            cohort("big1", 1_500).seed(9),
        ],
    )])
}

/// Polls until the job completes (an event; fails after the deadline).
async fn wait_done(client: &AmplitudeClient, request_id: &str) {
    let deadline = std::time::Instant::now() + EVENT_DEADLINE;
    while client.request_status(request_id).await.expect("status") != JobState::Completed {
        assert!(
            std::time::Instant::now() < deadline,
            "job {request_id} never completed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn body_bytes(download: FileDownload) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    let mut body = download.body;
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// Plain bytes of a body that may be gzip (sniffed by magic bytes, as the export does).
fn gunzip_if_needed(bytes: Vec<u8>) -> Vec<u8> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut out)
            .expect("valid gzip");
        out
    } else {
        bytes
    }
}

async fn parse_csv(bytes: &[u8]) -> Vec<Vec<String>> {
    let mut reader = csv_async::AsyncReaderBuilder::new()
        .has_headers(false)
        .create_reader(bytes);
    let mut rows = Vec::new();
    let mut records = reader.records();
    while let Some(r) = records.next().await {
        rows.push(r.expect("csv record").iter().map(str::to_string).collect());
    }
    rows
}

/// The rows a download of a generated cohort must contain.
fn expected_rows(seed: u64, id: &str, size: u64, props: Option<&[&str]>) -> Vec<Vec<String>> {
    let mut header = vec!["amplitude_id".to_string(), "user_id".to_string()];
    if let Some(p) = props {
        header.extend(p.iter().map(|s| s.to_string()));
        header.push("amplitude_id".into());
    }
    let mut rows = vec![header];
    for n in member_numbers(seed, id, size) {
        let amp = amplitude_id(n).to_string();
        let mut row = vec![amp.clone(), user_id(n).unwrap_or_default()];
        if let Some(p) = props {
            row.extend(p.iter().map(|k| property_value(n, k).unwrap_or_default()));
            row.push(amp);
        }
        rows.push(row);
    }
    rows
}

async fn download_rows(client: &AmplitudeClient, request_id: &str) -> (bool, Vec<Vec<String>>) {
    let d = client.download_file(request_id).await.expect("download");
    let redirected = d.redirected;
    let bytes = gunzip_if_needed(body_bytes(d).await.expect("whole body"));
    (redirected, parse_csv(&bytes).await)
}

#[tokio::test]
async fn lists_cohorts_and_usage() {
    let emu = start(base_config()).await;
    let client = app_client(&emu, APP);
    let list = client.list_cohorts(true).await.expect("list");
    let ids: Vec<&str> = list.cohorts.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["small1", "props1", "big1"]);
    let small = &list.cohorts[0];
    assert_eq!(small.size, Some(120));
    assert_eq!(small.app_id, Some(APP as i64));
    assert!(small.published && !small.archived);
    assert!(small.sync_metadata.is_some());
    let usage = client.usage().await.expect("usage");
    assert_eq!((usage.usage, usage.limit), (0, 500));
    assert!(usage.resets_at.is_some_and(|r| r.ends_with("-01T00:00:00")));
}

/// The list follows Amplitude's published sample (Postman collection), not only the
/// reference's schema: `description` null, `countGroup` a string, no `viewers`.
#[tokio::test]
async fn list_objects_look_like_the_published_sample() {
    let emu = start(base_config()).await;
    let (status, _, text) = raw_get(&emu, "/api/3/cohorts").await;
    assert_eq!(status, 200);
    let body: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let small = &body["cohorts"][0];
    assert_eq!(small["id"], "small1");
    assert_eq!(small["description"], serde_json::Value::Null);
    assert_eq!(small["definition"]["countGroup"], "User");
    assert_eq!(small["type"], "redshift");
    assert!(small.get("viewers").is_none(), "{small}");
    assert_eq!(small["lastComputed"], 1_704_067_200);
    patch_cohort(
        &emu.base_url,
        APP,
        "small1",
        serde_json::json!({"description": "set by the admin API"}),
    )
    .await;
    let client = app_client(&emu, APP);
    let list = client.list_cohorts(false).await.expect("list");
    let small = &list.cohorts[0];
    assert_eq!(small.description.as_deref(), Some("set by the admin API"));
    assert_eq!(small.count_group(), Some("User"));
    assert!(small.viewers.is_empty());
}

#[tokio::test]
async fn wrong_credentials_are_refused_with_amplitudes_403() {
    let emu = start(base_config()).await;
    let bad = client(&emu, &format!("key-{APP}"), "wrong-secret");
    let unknown = client(&emu, "no-such-key", &format!("secret-{APP}"));
    for (c, details) in [
        (&bad, "Invalid API/Secret Key combination"),
        (&unknown, "Invalid API Key"),
    ] {
        match c.list_cohorts(false).await {
            Err(e @ ApiError::Auth { status: 403, .. }) => {
                let ApiError::Auth { body, .. } = &e else {
                    unreachable!()
                };
                let body = body.as_ref().expect("error JSON");
                assert_eq!(body.http_code, Some(403));
                assert_eq!(body.error_type.as_deref(), Some("unspecified"));
                assert_eq!(body.details(), Some(details));
                let text = e.to_string();
                assert!(text.contains(details), "{text}");
                assert!(text.contains("check AMPLITUDE_API_KEY"), "{text}");
            }
            other => panic!("expected 403, got {other:?}"),
        }
    }
    let (status, _, text) = raw_request(&emu, "/api/3/cohorts", None).await;
    let body: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        (status, body),
        (
            403,
            serde_json::json!({"error": {"http_code": 403, "type": "unspecified",
                "metadata": {"details": "Invalid API Key"}}})
        ),
        "no credentials at all"
    );
    let log = requests(&emu.base_url).await;
    let seen: Vec<_> = log
        .iter()
        .map(|e| (e.status, e.app_id, e.authorization))
        .collect();
    assert_eq!(
        seen,
        [(403, None, true), (403, None, true), (403, None, false)]
    );
}

#[tokio::test]
async fn small_cohort_downloads_in_the_body() {
    let emu = start(base_config()).await;
    let client = app_client(&emu, APP);
    let req = client
        .request_cohort("small1", false, &[])
        .await
        .expect("request");
    assert_eq!(req.cohort_id.as_deref(), Some("small1"));
    wait_done(&client, &req.request_id).await;
    let (redirected, rows) = download_rows(&client, &req.request_id).await;
    assert!(!redirected);
    assert_eq!(rows, expected_rows(5, "small1", 120, None));
    assert_eq!(usage(&emu.base_url, APP).await, (1, 500));

    let log = requests(&emu.base_url).await;
    let request = log
        .iter()
        .find(|e| e.path == "/api/5/cohorts/request/small1")
        .expect("logged");
    assert_eq!(request.status, 202);
    assert_eq!(request.app_id, Some(APP));
    assert_eq!(request.cohort_id.as_deref(), Some("small1"));
    assert_eq!(request.request_id.as_deref(), Some(req.request_id.as_str()));
    let file = log
        .iter()
        .find(|e| e.path.ends_with("/file"))
        .expect("file logged");
    assert_eq!((file.status, file.listener), (200, Listener::Api));
}

#[tokio::test]
async fn props_download_has_every_property_value_and_a_trailing_amplitude_id() {
    let emu = start(base_config()).await;
    let client = app_client(&emu, APP);
    let all = client
        .request_cohort("props1", true, &[])
        .await
        .expect("request");
    let some = client
        .request_cohort("props1", true, &["note".to_string()])
        .await
        .expect("request with keys");
    wait_done(&client, &all.request_id).await;
    wait_done(&client, &some.request_id).await;
    let (_, rows) = download_rows(&client, &all.request_id).await;
    assert_eq!(
        rows,
        expected_rows(11, "props1", 300, Some(&["plan", "note"]))
    );
    let (_, rows) = download_rows(&client, &some.request_id).await;
    assert_eq!(rows, expected_rows(11, "props1", 300, Some(&["note"])));
    let log = requests(&emu.base_url).await;
    assert!(
        log.iter()
            .any(|e| e.query.as_deref() == Some("props=1&propKeys=note"))
    );
}

/// The bytes of a download, written out by hand (not derived from the generator the
/// emulator uses): Amplitude's CSV shape — every field quoted, a header, `props=1`'s
/// property columns then a trailing `amplitude_id`, an unset property as `""` — and the
/// members the universe's formulas give for this seed, fixed here once and for all.
#[tokio::test]
async fn a_small_download_is_exactly_these_bytes() {
    let emu = start(fast_config(vec![app(
        APP,
        vec![cohort("tiny", 5).seed(0).props(&["plan"])],
    )]))
    .await;
    let client = app_client(&emu, APP);
    let plain = completed_job_with(&client, "tiny", false).await;
    let (_, bytes) = download_bytes(&client, &plain).await;
    assert_eq!(String::from_utf8_lossy(&bytes), TINY_PLAIN);
    let props = completed_job_with(&client, "tiny", true).await;
    let (_, bytes) = download_bytes(&client, &props).await;
    assert_eq!(String::from_utf8_lossy(&bytes), TINY_PROPS);
}

const TINY_PLAIN: &str = r#""amplitude_id","user_id"
"106509526999","user-6509526999@example.com"
"120425481176",""
"134341435353","ünï-34341435353"
"148257389530","48257389530"
"162173343707","user-62173343707@example.com"
"#;

const TINY_PROPS: &str = r#""amplitude_id","user_id","plan","amplitude_id"
"106509526999","user-6509526999@example.com","plan-58","106509526999"
"120425481176","","He said ""hi"" #20425481176","120425481176"
"134341435353","ünï-34341435353","plan-32","134341435353"
"148257389530","48257389530","plan-40","148257389530"
"162173343707","user-62173343707@example.com","","162173343707"
"#;

async fn completed_job_with(client: &AmplitudeClient, cohort_id: &str, props: bool) -> String {
    let req = client
        .request_cohort(cohort_id, props, &[])
        .await
        .expect("request");
    wait_done(client, &req.request_id).await;
    req.request_id
}

async fn download_bytes(client: &AmplitudeClient, request_id: &str) -> (bool, Vec<u8>) {
    let d = client.download_file(request_id).await.expect("download");
    let redirected = d.redirected;
    (
        redirected,
        gunzip_if_needed(body_bytes(d).await.expect("whole body")),
    )
}

#[tokio::test]
async fn large_cohort_redirects_to_the_presign_listener_without_credentials() {
    let cfg = EmulatorConfig {
        redirect_threshold_rows: 1_000,
        ..base_config()
    };
    let emu = start(cfg).await;
    let client = app_client(&emu, APP);
    let req = client
        .request_cohort("big1", false, &[])
        .await
        .expect("request");
    wait_done(&client, &req.request_id).await;
    let (redirected, rows) = download_rows(&client, &req.request_id).await;
    assert!(redirected);
    assert_eq!(rows, expected_rows(9, "big1", 1_500, None));
    let log = requests(&emu.base_url).await;
    let file = log
        .iter()
        .find(|e| e.path.ends_with("/file"))
        .expect("file");
    assert_eq!(file.status, 302);
    let presigned: Vec<_> = log
        .iter()
        .filter(|e| e.listener == Listener::Presign)
        .collect();
    assert_eq!(presigned.len(), 1);
    assert_eq!(presigned[0].status, 200);
    assert!(
        !presigned[0].authorization,
        "credentials reached the presigned host"
    );
    assert_eq!(
        presigned[0].request_id.as_deref(),
        Some(req.request_id.as_str())
    );
    assert!(
        presigned[0]
            .query
            .as_deref()
            .is_some_and(|q| q.contains("X-Amz-Signature="))
    );
}

#[tokio::test]
async fn presign_listener_refuses_an_authorization_header() {
    let cfg = EmulatorConfig {
        redirect_threshold_rows: 1_000,
        ..base_config()
    };
    let emu = start(cfg).await;
    let client = app_client(&emu, APP);
    let req = client
        .request_cohort("big1", false, &[])
        .await
        .expect("request");
    wait_done(&client, &req.request_id).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let resp = http
        .get(format!(
            "{}/api/5/cohorts/request/{}/file",
            emu.base_url, req.request_id
        ))
        .basic_auth(format!("key-{APP}"), Some(format!("secret-{APP}")))
        .send()
        .await
        .expect("file");
    assert_eq!(resp.status(), 302);
    let location = resp.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    assert!(location.starts_with(&emu.presign_base_url));
    let leaked = http
        .get(&location)
        .basic_auth(format!("key-{APP}"), Some(format!("secret-{APP}")))
        .send()
        .await
        .expect("presigned");
    assert_eq!(leaked.status(), 400, "S3's answer to two auth mechanisms");
    let text = leaked.text().await.expect("xml");
    assert!(text.contains("<Code>InvalidArgument</Code>"), "{text}");
    assert!(text.contains("Only one auth mechanism allowed"), "{text}");
    let fine = http.get(&location).send().await.expect("presigned");
    assert_eq!(fine.status(), 200);
}

#[tokio::test]
async fn admin_members_usage_and_log_filter() {
    let emu = start(base_config()).await;
    let got = members(&emu.base_url, APP, "small1").await;
    let mut want: Vec<(i64, Option<String>)> = member_numbers(5, "small1", 120)
        .map(|n| (amplitude_id(n), user_id(n)))
        .collect();
    want.sort();
    assert_eq!(got, want);
    set_usage(&emu.base_url, APP, 499).await;
    let client = app_client(&emu, APP);
    assert_eq!(client.usage().await.expect("usage").usage, 499);
    let first = requests(&emu.base_url).await;
    let last_seq = first.last().expect("one entry").seq;
    client.list_cohorts(false).await.expect("list");
    let newer = requests_since(&emu.base_url, last_seq).await;
    assert_eq!(newer.len(), 1);
    assert_eq!(newer[0].path, "/api/3/cohorts");
    clear_requests(&emu.base_url).await;
    assert!(requests(&emu.base_url).await.is_empty());
}

fn config_with(f: impl FnOnce(&mut EmulatorConfig)) -> EmulatorConfig {
    let mut cfg = base_config();
    f(&mut cfg);
    cfg
}

#[tokio::test]
async fn unknown_cohort_and_request_ids_are_not_found() {
    let emu = start(base_config()).await;
    let client = app_client(&emu, APP);
    match client.request_cohort("nope", false, &[]).await {
        Err(ApiError::NotFound { body: Some(b), .. }) => assert_eq!(b.http_code, Some(404)),
        other => panic!("expected 404, got {other:?}"),
    }
    assert!(matches!(
        client.request_status("missing").await,
        Err(ApiError::NotFound { .. })
    ));
    assert!(matches!(
        client.download_file("missing").await,
        Err(ApiError::NotFound { .. })
    ));
    assert_eq!(usage(&emu.base_url, APP).await.0, 0, "a 404 spends nothing");
}

#[tokio::test]
async fn file_before_completion_is_an_invalid_request() {
    let emu = start(config_with(|c| c.job_duration = Duration::from_secs(3_600))).await;
    let client = app_client(&emu, APP);
    let req = client
        .request_cohort("small1", false, &[])
        .await
        .expect("request");
    assert_eq!(
        client
            .request_status(&req.request_id)
            .await
            .expect("status"),
        JobState::InProgress
    );
    match client.download_file(&req.request_id).await {
        Err(ApiError::InvalidRequest {
            status: 400,
            body: Some(b),
        }) => {
            assert_eq!(b.error_type.as_deref(), Some("job_in_progress"));
        }
        other => panic!("expected 400, got {other:?}"),
    }
}

#[tokio::test]
async fn request_ids_expire() {
    let emu = start(config_with(|c| c.request_ttl = Duration::from_secs(5))).await;
    let client = app_client(&emu, APP);
    let req = client
        .request_cohort("small1", false, &[])
        .await
        .expect("request");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(matches!(
        client.download_file(&req.request_id).await,
        Err(ApiError::NotFound { .. })
    ));
}

#[tokio::test]
async fn monthly_quota_exhausted() {
    let emu = start(base_config()).await;
    set_usage(&emu.base_url, APP, 500).await;
    let client = app_client(&emu, APP);
    match client.request_cohort("small1", false, &[]).await {
        Err(ApiError::QuotaExhausted { body: Some(b) }) => {
            assert_eq!(b.http_code, Some(429));
            assert!(b.message.unwrap_or_default().contains("Monthly quota"));
        }
        other => panic!("expected quota exhausted, got {other:?}"),
    }
    assert_eq!(usage(&emu.base_url, APP).await, (500, 500));
}

#[tokio::test]
async fn four_requests_per_minute_then_429_with_retry_after() {
    let emu = start(base_config()).await;
    let client = app_client(&emu, APP);
    for _ in 0..4 {
        client
            .request_cohort("small1", false, &[])
            .await
            .expect("within the window");
    }
    let wait = match client.request_cohort("small1", false, &[]).await {
        Err(ApiError::RateLimited {
            retry_after: Some(d),
            body: Some(b),
        }) => {
            assert_eq!(b.http_code, Some(429));
            d
        }
        other => panic!("expected 429, got {other:?}"),
    };
    // Refused requests spend nothing; after Retry-After the window has room again.
    assert_eq!(usage(&emu.base_url, APP).await.0, 4);
    tokio::time::sleep(wait + Duration::from_millis(20)).await;
    client
        .request_cohort("small1", false, &[])
        .await
        .expect("after Retry-After");
    let log = requests(&emu.base_url).await;
    let statuses: Vec<u16> = log.iter().map(|e| e.status).collect();
    assert_eq!(statuses, [202, 202, 202, 202, 429, 202]);
}

#[tokio::test]
async fn long_window_limits_requests_too() {
    let emu = start(config_with(|c| {
        c.requests_per_short_window = 100;
        c.requests_per_long_window = 3;
    }))
    .await;
    let client = app_client(&emu, APP);
    for _ in 0..3 {
        client
            .request_cohort("small1", false, &[])
            .await
            .expect("within the window");
    }
    assert!(matches!(
        client.request_cohort("small1", false, &[]).await,
        Err(ApiError::RateLimited {
            retry_after: Some(_),
            ..
        })
    ));
}

#[tokio::test]
async fn five_requests_in_flight_then_429() {
    // Five requests for one cohort are this test's setup, not what it checks: the rate
    // windows are opened wide so that no request waits on a window (no timing involved).
    let emu = start(config_with(|c| {
        c.apps[0].cohorts.push(cohort("huge", 500_000).seed(3));
        c.redirect_threshold_rows = 1_000_000;
        c.requests_per_short_window = 100;
    }))
    .await;
    let client = app_client(&emu, APP);
    let mut request_ids = Vec::new();
    for _ in 0..5 {
        request_ids.push(
            client
                .request_cohort("huge", false, &[])
                .await
                .expect("request")
                .request_id,
        );
    }
    for id in &request_ids {
        wait_done(&client, id).await;
    }
    // Five bodies far larger than the socket buffers, none read: five requests in flight.
    let mut open = Vec::new();
    for id in &request_ids {
        open.push(client.download_file(id).await.expect("download starts"));
    }
    match client.list_cohorts(false).await {
        Err(ApiError::RateLimited {
            retry_after: Some(_),
            ..
        }) => {}
        other => panic!("expected 429 for the sixth request, got {other:?}"),
    }
    drop(open);
    // Once the server has noticed the dropped downloads (an event it does not log: the
    // call is retried until it passes, within a deadline), calls go through again.
    let deadline = std::time::Instant::now() + EVENT_DEADLINE;
    while client.list_cohorts(false).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "slots were never released"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn server_error_and_rate_limit_faults_fire_count_times() {
    let emu = start(base_config()).await;
    let client = app_client(&emu, APP);
    fault(&emu.base_url, FaultKind::ServerError, "/api/3/cohorts", 1).await;
    match client.list_cohorts(false).await {
        Err(ApiError::Server { status: 500, .. }) => {}
        other => panic!("expected 500, got {other:?}"),
    }
    client.list_cohorts(false).await.expect("fault disarmed");
    add_fault(
        &emu.base_url,
        &FaultRule {
            retry_after_secs: Some(200.0),
            ..FaultRule::new(FaultKind::RateLimit, "usage", 2)
        },
    )
    .await;
    for _ in 0..2 {
        match client.usage().await {
            // 200 s of Amplitude time at a time scale of 0.01.
            Err(ApiError::RateLimited {
                retry_after: Some(d),
                ..
            }) => {
                assert_eq!(d, Duration::from_secs(2))
            }
            other => panic!("expected 429, got {other:?}"),
        }
    }
    client.usage().await.expect("fault disarmed");
}

#[tokio::test]
async fn reset_mid_body_is_a_transport_error_and_file_can_be_asked_again() {
    let emu = start(base_config()).await;
    let client = app_client(&emu, APP);
    let req = client
        .request_cohort("props1", true, &[])
        .await
        .expect("request");
    wait_done(&client, &req.request_id).await;
    fault(&emu.base_url, FaultKind::Reset, "/file", 1).await;
    let d = client
        .download_file(&req.request_id)
        .await
        .expect("head arrives");
    assert_eq!(d.content_length, None);
    match body_bytes(d).await {
        Err(ApiError::Transport { .. }) => {}
        other => panic!(
            "expected a transport error, got {:?}",
            other.map(|b| b.len())
        ),
    }
    let (_, rows) = download_rows(&client, &req.request_id).await;
    assert_eq!(
        rows,
        expected_rows(11, "props1", 300, Some(&["plan", "note"]))
    );
    assert_eq!(usage(&emu.base_url, APP).await.0, 1);
}

#[tokio::test]
async fn truncated_body_promises_more_than_it_sends() {
    let emu = start(base_config()).await;
    let client = app_client(&emu, APP);
    let req = client
        .request_cohort("small1", false, &[])
        .await
        .expect("request");
    wait_done(&client, &req.request_id).await;
    add_fault(
        &emu.base_url,
        &FaultRule {
            after_bytes: Some(100),
            ..FaultRule::new(FaultKind::Truncate, "/file", 1)
        },
    )
    .await;
    let d = client
        .download_file(&req.request_id)
        .await
        .expect("head arrives");
    let promised = d.content_length.expect("Content-Length");
    assert!(promised > 100);
    assert!(matches!(
        body_bytes(d).await,
        Err(ApiError::Transport { .. })
    ));
}

#[tokio::test]
async fn gzip_by_header_on_the_body_and_by_magic_bytes_on_presigned_links() {
    let emu = start(config_with(|c| {
        c.gzip = true;
        c.redirect_threshold_rows = 1_000;
    }))
    .await;
    let client = app_client(&emu, APP);
    let small = client
        .request_cohort("small1", false, &[])
        .await
        .expect("request");
    let big = client
        .request_cohort("big1", false, &[])
        .await
        .expect("request");
    wait_done(&client, &small.request_id).await;
    wait_done(&client, &big.request_id).await;

    let d = client
        .download_file(&small.request_id)
        .await
        .expect("download");
    assert_eq!(d.content_encoding.as_deref(), Some("gzip"));
    assert!(!d.redirected);
    let bytes = body_bytes(d).await.expect("body");
    assert!(bytes.starts_with(&[0x1f, 0x8b]));
    assert_eq!(
        parse_csv(&gunzip_if_needed(bytes)).await,
        expected_rows(5, "small1", 120, None)
    );

    let d = client
        .download_file(&big.request_id)
        .await
        .expect("download");
    assert_eq!(
        d.content_encoding, None,
        "S3 objects carry no Content-Encoding"
    );
    assert!(d.redirected);
    let bytes = body_bytes(d).await.expect("body");
    assert!(bytes.starts_with(&[0x1f, 0x8b]));
    assert_eq!(
        parse_csv(&gunzip_if_needed(bytes)).await,
        expected_rows(9, "big1", 1_500, None)
    );
}

#[tokio::test]
async fn expired_link_is_answered_by_asking_file_again() {
    let emu = start(config_with(|c| c.redirect_threshold_rows = 1_000)).await;
    let client = app_client(&emu, APP);
    let req = client
        .request_cohort("big1", false, &[])
        .await
        .expect("request");
    wait_done(&client, &req.request_id).await;
    fault(&emu.base_url, FaultKind::ExpiredLink, "/file", 1).await;
    match client.download_file(&req.request_id).await {
        Err(ApiError::LinkExpired { status: 403 }) => {}
        other => panic!("expected an expired link, got {other:?}"),
    }
    let (redirected, rows) = download_rows(&client, &req.request_id).await;
    assert!(redirected);
    assert_eq!(rows, expected_rows(9, "big1", 1_500, None));
    let presigned: Vec<u16> = requests(&emu.base_url)
        .await
        .iter()
        .filter(|e| e.listener == Listener::Presign)
        .map(|e| e.status)
        .collect();
    assert_eq!(presigned, [403, 200]);
}

#[tokio::test]
async fn links_expire_after_their_ttl() {
    let emu = start(config_with(|c| {
        c.redirect_threshold_rows = 1_000;
        c.link_ttl = Duration::from_secs(1);
    }))
    .await;
    let client = app_client(&emu, APP);
    let req = client
        .request_cohort("big1", false, &[])
        .await
        .expect("request");
    wait_done(&client, &req.request_id).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let resp = http
        .get(format!(
            "{}/api/5/cohorts/request/{}/file",
            emu.base_url, req.request_id
        ))
        .basic_auth(format!("key-{APP}"), Some(format!("secret-{APP}")))
        .send()
        .await
        .expect("file");
    let location = resp.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let late = http.get(&location).send().await.expect("presigned");
    assert_eq!(late.status(), 403);
    assert!(
        late.text()
            .await
            .expect("xml")
            .contains("Request has expired")
    );
}

#[tokio::test]
async fn slow_job_fault_keeps_the_job_in_progress() {
    let emu = start(base_config()).await;
    let client = app_client(&emu, APP);
    let req = client
        .request_cohort("small1", false, &[])
        .await
        .expect("request");
    wait_done(&client, &req.request_id).await;
    fault(&emu.base_url, FaultKind::SlowJob, "request-status", 2).await;
    for _ in 0..2 {
        assert_eq!(
            client
                .request_status(&req.request_id)
                .await
                .expect("status"),
            JobState::InProgress
        );
    }
    assert_eq!(
        client
            .request_status(&req.request_id)
            .await
            .expect("status"),
        JobState::Completed
    );
}

/// `GET` on the API listener with the app's credentials: (status, headers, body text).
async fn raw_get(
    emu: &cohort_sync::emulator::RunningEmulator,
    path: &str,
) -> (u16, reqwest::header::HeaderMap, String) {
    raw_request(
        emu,
        path,
        Some((&format!("key-{APP}"), &format!("secret-{APP}"))),
    )
    .await
}

/// `GET` on the API listener with the given Basic credentials, or none.
async fn raw_request(
    emu: &cohort_sync::emulator::RunningEmulator,
    path: &str,
    credentials: Option<(&str, &str)>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut rb = reqwest::Client::new().get(format!("{}{path}", emu.base_url));
    if let Some((key, secret)) = credentials {
        rb = rb.basic_auth(key, Some(secret));
    }
    let resp = rb.send().await.expect("answered");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.expect("body"))
}

/// A completed job of `cohort_id`.
async fn completed_job(client: &AmplitudeClient, cohort_id: &str) -> String {
    let req = client
        .request_cohort(cohort_id, false, &[])
        .await
        .expect("request");
    wait_done(client, &req.request_id).await;
    req.request_id
}

#[tokio::test]
async fn body_fault_replaces_a_200_body_on_file_and_on_presigned_links() {
    let emu = start(config_with(|c| {
        c.gzip = true;
        c.redirect_threshold_rows = 1_000;
    }))
    .await;
    let client = app_client(&emu, APP);
    let small = completed_job(&client, "small1").await;
    let big = completed_job(&client, "big1").await;

    fault(&emu.base_url, FaultKind::Body, "/file", 2).await;
    for _ in 0..2 {
        let file = format!("/api/5/cohorts/request/{small}/file");
        let (status, headers, text) = raw_get(&emu, &file).await;
        assert_eq!(status, 200);
        assert_eq!(text, "<html><body>Error</body></html>");
        assert_eq!(headers["content-length"], text.len().to_string().as_str());
        assert!(!headers.contains_key("content-encoding"));
    }
    let (redirected, rows) = download_rows(&client, &small).await;
    assert!(!redirected);
    assert_eq!(
        rows,
        expected_rows(5, "small1", 120, None),
        "fault disarmed"
    );

    let wrong_header = "\"foo\",\"bar\"\n\"1\",\"2\"\n";
    add_fault(
        &emu.base_url,
        &FaultRule {
            body: Some(wrong_header.into()),
            ..FaultRule::new(FaultKind::Body, "/cohort-exports/", 1)
        },
    )
    .await;
    let d = client.download_file(&big).await.expect("download");
    assert!(d.redirected);
    assert_eq!(d.content_length, Some(wrong_header.len() as u64));
    assert_eq!(body_bytes(d).await.expect("body"), wrong_header.as_bytes());
    let (redirected, rows) = download_rows(&client, &big).await;
    assert!(redirected);
    assert_eq!(
        rows,
        expected_rows(9, "big1", 1_500, None),
        "fault disarmed"
    );
    let presigned: Vec<u16> = requests(&emu.base_url)
        .await
        .iter()
        .filter(|e| e.listener == Listener::Presign)
        .map(|e| e.status)
        .collect();
    assert_eq!(presigned, [200, 200]);
}

#[tokio::test]
async fn job_failed_fault_reports_job_failed_with_200() {
    let emu = start(base_config()).await;
    let client = app_client(&emu, APP);
    let id = completed_job(&client, "small1").await;
    fault(&emu.base_url, FaultKind::JobFailed, "request-status", 2).await;
    let path = format!("/api/5/cohorts/request-status/{id}");
    let (status, _, text) = raw_get(&emu, &path).await;
    assert_eq!(status, 200);
    let body: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        body,
        serde_json::json!({"request_id": id, "cohort_id": "small1", "async_status": "JOB FAILED"})
    );
    match client.request_status(&id).await {
        Err(ApiError::Unexpected {
            status: 200, text, ..
        }) => {
            assert!(text.contains("JOB FAILED"), "{text}")
        }
        other => panic!("expected an unexpected status, got {other:?}"),
    }
    assert_eq!(
        client.request_status(&id).await.expect("status"),
        JobState::Completed,
        "fault disarmed"
    );
}

#[tokio::test]
async fn unknown_status_fault_reports_the_rules_status_or_job_cancelled() {
    let emu = start(base_config()).await;
    let client = app_client(&emu, APP);
    let id = completed_job(&client, "small1").await;
    let path = format!("/api/5/cohorts/request-status/{id}");
    let async_status = |text: &str| {
        let v: serde_json::Value = serde_json::from_str(text).expect("JSON");
        v["async_status"]
            .as_str()
            .expect("async_status")
            .to_string()
    };
    fault(&emu.base_url, FaultKind::UnknownStatus, "request-status", 1).await;
    let (status, _, text) = raw_get(&emu, &path).await;
    assert_eq!(
        (status, async_status(&text).as_str()),
        (200, "JOB CANCELLED")
    );
    add_fault(
        &emu.base_url,
        &FaultRule {
            body: Some("JOB PAUSED".into()),
            ..FaultRule::new(FaultKind::UnknownStatus, "request-status", 1)
        },
    )
    .await;
    match client.request_status(&id).await {
        Err(ApiError::Unexpected {
            status: 200, text, ..
        }) => {
            assert!(text.contains("JOB PAUSED"), "{text}")
        }
        other => panic!("expected an unexpected status, got {other:?}"),
    }
    let (status, _, text) = raw_get(&emu, &path).await;
    assert_eq!(
        (status, async_status(&text).as_str()),
        (200, "JOB COMPLETED"),
        "fault disarmed"
    );
}

#[tokio::test]
async fn not_found_fault_answers_404_error_json_for_a_known_request() {
    let emu = start(base_config()).await;
    let client = app_client(&emu, APP);
    let id = completed_job(&client, "small1").await;
    fault(&emu.base_url, FaultKind::NotFound, &id, 2).await;
    match client.request_status(&id).await {
        Err(ApiError::NotFound { body: Some(b), .. }) => {
            assert_eq!(b.http_code, Some(404));
            assert_eq!(b.error_type.as_deref(), Some("not_found"));
        }
        other => panic!("expected 404, got {other:?}"),
    }
    assert!(matches!(
        client.download_file(&id).await,
        Err(ApiError::NotFound { .. })
    ));
    let (_, rows) = download_rows(&client, &id).await;
    assert_eq!(
        rows,
        expected_rows(5, "small1", 120, None),
        "fault disarmed"
    );
    let statuses: Vec<u16> = requests(&emu.base_url)
        .await
        .iter()
        .filter(|e| e.path.contains(&id))
        .map(|e| e.status)
        .collect();
    assert_eq!(
        statuses.iter().rev().take(3).collect::<Vec<_>>(),
        [&200, &404, &404]
    );
}

#[tokio::test]
async fn client_error_fault_answers_its_4xx_and_changes_nothing() {
    let emu = start(base_config()).await;
    let client = app_client(&emu, APP);
    let before = members(&emu.base_url, APP, "small1").await;
    let gone = member_numbers(5, "small1", 120).next().expect("a member");
    let body = MembershipRequest {
        cohort_id: "small1".into(),
        count_group: None,
        memberships: vec![membership(
            MembershipOperation::Remove,
            IdKind::AmplitudeId,
            vec![amplitude_id(gone).to_string()],
        )],
        skip_invalid_ids: Some(true),
    };
    add_fault(
        &emu.base_url,
        &FaultRule {
            status: Some(413),
            ..FaultRule::new(FaultKind::ClientError, "/api/3/cohorts/membership", 1)
        },
    )
    .await;
    fault(
        &emu.base_url,
        FaultKind::ClientError,
        "/api/3/cohorts/membership",
        1,
    )
    .await;
    for want in [413, 400] {
        match client.update_membership(&body).await {
            Err(ApiError::InvalidRequest {
                status,
                body: Some(b),
            }) => {
                assert_eq!((status, b.http_code), (want, Some(want)));
                let kind = if want == 413 {
                    "payload_too_large"
                } else {
                    "bad_request"
                };
                assert_eq!(b.error_type.as_deref(), Some(kind));
            }
            other => panic!("expected {want}, got {other:?}"),
        }
    }
    assert_eq!(members(&emu.base_url, APP, "small1").await, before);
    client
        .update_membership(&body)
        .await
        .expect("fault disarmed");
    assert_eq!(members(&emu.base_url, APP, "small1").await.len(), 119);

    let refused = reqwest::Client::new()
        .post(format!("{}/_emulator/faults", emu.base_url))
        .json(&FaultRule {
            status: Some(503),
            ..FaultRule::new(FaultKind::ClientError, "", 1)
        })
        .send()
        .await
        .expect("answered");
    assert_eq!(refused.status(), 400, "a client_error needs a 4xx");
}

#[tokio::test]
async fn stall_fault_holds_an_answer_whose_effect_happened() {
    let emu = start(base_config()).await;
    // 50 s of Amplitude time: 0.5 s at a time scale of 0.01.
    let stall = FaultRule {
        delay_secs: Some(50.0),
        ..FaultRule::new(FaultKind::Stall, "/api/5/cohorts/request/", 1)
    };
    // A patient client gets the answer, late.
    add_fault(&emu.base_url, &stall).await;
    let client = app_client(&emu, APP);
    let started = std::time::Instant::now();
    client
        .request_cohort("small1", false, &[])
        .await
        .expect("late answer");
    assert!(started.elapsed() >= Duration::from_millis(500));

    // An impatient one times out, yet the job started and spent quota.
    add_fault(&emu.base_url, &stall).await;
    let impatient = AmplitudeClient::new(cohort_sync::amplitude::ClientOptions {
        read_timeout: Duration::from_millis(150),
        ..cohort_sync::amplitude::ClientOptions::new(
            emu.base_url.clone(),
            cohort_sync::amplitude::Credentials::new(format!("key-{APP}"), format!("secret-{APP}")),
        )
    })
    .expect("client");
    match impatient.request_cohort("props1", false, &[]).await {
        Err(ApiError::Transport { .. }) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(usage(&emu.base_url, APP).await.0, 2);
    let log = requests(&emu.base_url).await;
    let entry = log
        .iter()
        .find(|e| e.path == "/api/5/cohorts/request/props1")
        .expect("logged");
    assert_eq!(entry.status, 202);
    let id = entry.request_id.clone().expect("request id logged");
    wait_done(&impatient, &id).await;

    let started = std::time::Instant::now();
    impatient
        .request_cohort("small1", false, &[])
        .await
        .expect("fault disarmed");
    assert!(started.elapsed() < Duration::from_millis(500));
}

fn membership(op: MembershipOperation, kind: IdKind, ids: Vec<String>) -> Membership {
    Membership {
        ids,
        id_type: kind.membership_id_type(),
        operation: op,
    }
}

#[tokio::test]
async fn membership_adds_and_removes_by_id_and_by_name() {
    let emu = start(base_config()).await;
    let client = app_client(&emu, APP);
    let before = client.list_cohorts(false).await.expect("list");
    let old_computed = before.cohorts[0].last_computed.clone();
    let current: Vec<u64> = member_numbers(5, "small1", 120).collect();
    let newcomers: Vec<u64> = member_numbers(77, "elsewhere", 40)
        .filter(|n| user_id(*n).is_some())
        .take(3)
        .collect();
    let body = MembershipRequest {
        cohort_id: "small1".into(),
        count_group: None,
        memberships: vec![
            membership(
                MembershipOperation::Add,
                IdKind::AmplitudeId,
                vec![
                    amplitude_id(newcomers[0]).to_string(),
                    "not-a-number".into(),
                ],
            ),
            membership(
                MembershipOperation::Add,
                IdKind::UserId,
                vec![
                    user_id(newcomers[1]).expect("user id"),
                    "nobody-at-all".into(),
                ],
            ),
            membership(
                MembershipOperation::Remove,
                IdKind::AmplitudeId,
                vec![
                    amplitude_id(current[0]).to_string(),
                    amplitude_id(current[1]).to_string(),
                ],
            ),
        ],
        skip_invalid_ids: Some(true),
    };
    let answer = client.update_membership(&body).await.expect("membership");
    assert_eq!(answer.cohort_id.as_deref(), Some("small1"));
    let skipped: Vec<Vec<String>> = answer
        .memberships_result
        .iter()
        .map(|r| r.skipped_ids.clone())
        .collect();
    assert_eq!(
        skipped,
        vec![
            vec!["not-a-number".to_string()],
            vec!["nobody-at-all".to_string()],
            vec![]
        ]
    );
    assert_eq!(
        answer.memberships_result[2].operation,
        Some(MembershipOperation::Remove)
    );

    let mut want: Vec<u64> = current[2..].to_vec();
    want.extend(&newcomers[..2]);
    let mut want: Vec<(i64, Option<String>)> = want
        .into_iter()
        .map(|n| (amplitude_id(n), user_id(n)))
        .collect();
    want.sort();
    assert_eq!(members(&emu.base_url, APP, "small1").await, want);

    let after = client.list_cohorts(false).await.expect("list");
    assert_eq!(after.cohorts[0].size, Some(120));
    let secs = |t: &Option<cohort_sync::amplitude::types::Timestamp>| {
        t.as_ref()
            .and_then(|t| t.epoch_seconds())
            .expect("lastComputed")
    };
    assert!(secs(&after.cohorts[0].last_computed) > secs(&old_computed));

    let log = requests(&emu.base_url).await;
    let entry = log
        .iter()
        .find(|e| e.path == "/api/3/cohorts/membership")
        .expect("logged");
    assert_eq!(entry.operation.as_deref(), Some("ADD,REMOVE"));
    assert_eq!(entry.id_count, Some(6));
    assert_eq!(entry.cohort_id.as_deref(), Some("small1"));
}

#[tokio::test]
async fn membership_refuses_invalid_ids_when_asked_and_unknown_cohorts() {
    let emu = start(base_config()).await;
    let client = app_client(&emu, APP);
    let body = MembershipRequest {
        cohort_id: "small1".into(),
        count_group: None,
        memberships: vec![membership(
            MembershipOperation::Add,
            IdKind::UserId,
            vec!["ghost".into()],
        )],
        skip_invalid_ids: Some(false),
    };
    match client.update_membership(&body).await {
        Err(ApiError::InvalidRequest {
            status: 400,
            body: Some(b),
        }) => {
            assert_eq!(b.error_type.as_deref(), Some("invalid_ids"));
            assert_eq!(b.metadata.expect("metadata")["invalid_ids"][0], "ghost");
        }
        other => panic!("expected 400, got {other:?}"),
    }
    let unknown = MembershipRequest {
        cohort_id: "nope".into(),
        ..body
    };
    assert!(matches!(
        client.update_membership(&unknown).await,
        Err(ApiError::NotFound { .. })
    ));
}

#[tokio::test]
async fn more_than_100k_ids_is_an_invalid_request() {
    let emu = start(base_config()).await;
    let client = app_client(&emu, APP);
    let ids: Vec<String> = member_numbers(1, "x", 100_001)
        .map(|n| amplitude_id(n).to_string())
        .collect();
    let body = MembershipRequest {
        cohort_id: "small1".into(),
        count_group: None,
        memberships: vec![membership(
            MembershipOperation::Add,
            IdKind::AmplitudeId,
            ids.clone(),
        )],
        skip_invalid_ids: None,
    };
    match client.update_membership(&body).await {
        Err(ApiError::InvalidRequest {
            status: 400,
            body: Some(b),
        }) => {
            assert_eq!(b.http_code, Some(400));
            assert_eq!(b.error_type.as_deref(), Some("too_many_ids"));
            assert_eq!(b.metadata.expect("metadata")["limit"], 100_000);
        }
        other => panic!("expected 400, got {other:?}"),
    }
    let upload = UploadRequest {
        name: "Too big".into(),
        app_id: APP as i64,
        id_type: IdKind::AmplitudeId.upload_id_type(),
        cg: None,
        ids,
        owner: "o@example.com".into(),
        published: true,
        skip_save: None,
        skip_invalid_ids: None,
        existing_cohort_id: None,
    };
    assert!(matches!(
        client.upload(&upload).await,
        Err(ApiError::InvalidRequest { status: 400, .. })
    ));
}

#[tokio::test]
async fn upload_creates_and_replaces_cohorts() {
    let emu = start(base_config()).await;
    let client = app_client(&emu, APP);
    let wanted: Vec<u64> = member_numbers(31, "crm", 50)
        .filter(|n| user_id(*n).is_some())
        .collect();
    let mut ids: Vec<String> = wanted
        .iter()
        .map(|n| user_id(*n).unwrap_or_default())
        .collect();
    ids.push("stranger@nowhere".into());
    let create = UploadRequest {
        name: "CRM list".into(),
        app_id: APP as i64,
        id_type: IdKind::UserId.upload_id_type(),
        cg: None,
        ids,
        owner: "crm@example.com".into(),
        published: false,
        skip_save: None,
        skip_invalid_ids: Some(true),
        existing_cohort_id: None,
    };
    let made = client.upload(&create).await.expect("upload");
    let meta = made.metadata.expect("metadata");
    assert_eq!(meta.matched, Some(wanted.len() as i64));
    assert_eq!(meta.totals, Some(wanted.len() as i64 + 1));
    assert_eq!(meta.invalid_ids_sample, ["stranger@nowhere"]);
    let list = client.list_cohorts(false).await.expect("list");
    let new = list
        .cohorts
        .iter()
        .find(|c| c.id == made.cohort_id)
        .expect("listed");
    assert_eq!(
        (new.name.as_str(), new.size, new.published),
        ("CRM list", Some(wanted.len() as i64), false)
    );
    assert_eq!(new.owners, ["crm@example.com"]);
    let mut want: Vec<(i64, Option<String>)> = wanted
        .iter()
        .map(|n| (amplitude_id(*n), user_id(*n)))
        .collect();
    want.sort();
    assert_eq!(members(&emu.base_url, APP, &made.cohort_id).await, want);

    let replace = UploadRequest {
        id_type: IdKind::AmplitudeId.upload_id_type(),
        ids: vec![amplitude_id(7).to_string()],
        existing_cohort_id: Some("small1".into()),
        ..create.clone()
    };
    let replaced = client.upload(&replace).await.expect("replace");
    assert_eq!(replaced.cohort_id, "small1");
    assert_eq!(
        members(&emu.base_url, APP, "small1").await,
        vec![(amplitude_id(7), user_id(7))]
    );

    let strict = UploadRequest {
        skip_invalid_ids: Some(false),
        ..create
    };
    match client.upload(&strict).await {
        Err(ApiError::InvalidRequest {
            status: 400,
            body: Some(b),
        }) => {
            assert_eq!(b.error_type.as_deref(), Some("invalid_ids"));
        }
        other => panic!("expected 400, got {other:?}"),
    }
    let log = requests(&emu.base_url).await;
    let uploads: Vec<_> = log
        .iter()
        .filter(|e| e.path == "/api/3/cohorts/upload")
        .collect();
    assert_eq!(uploads.len(), 3);
    assert_eq!(uploads[1].cohort_id.as_deref(), Some("small1"));
    assert_eq!(
        (uploads[0].operation.as_deref(), uploads[0].id_count),
        (Some("UPLOAD"), Some(wanted.len() as u64 + 1))
    );
}

/// What `upload` answers: the reference's `cohortId` + `metadata` and the published
/// sample's `cohortsById`, the new cohort typed `manual_upload`.
#[tokio::test]
async fn upload_answer_carries_cohorts_by_id_and_the_list_types_it_manual_upload() {
    let emu = start(base_config()).await;
    let ids: Vec<String> = member_numbers(3, "crm", 5)
        .map(|n| amplitude_id(n).to_string())
        .collect();
    let body = serde_json::json!({"name": "Uploaded", "app_id": APP, "id_type": "BY_AMP_ID",
        "ids": ids, "owner": "o@example.com", "published": true});
    let resp = reqwest::Client::new()
        .post(format!("{}/api/3/cohorts/upload", emu.base_url))
        .basic_auth(format!("key-{APP}"), Some(format!("secret-{APP}")))
        .json(&body)
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status(), 200);
    let answer: serde_json::Value = resp.json().await.expect("JSON");
    let id = answer["cohortId"].as_str().expect("cohortId").to_string();
    assert_eq!(answer["metadata"]["matched"], 5);
    let made = &answer["cohortsById"][&id];
    assert_eq!(
        (&made["id"], &made["name"], &made["type"], &made["size"]),
        (
            &serde_json::json!(id),
            &serde_json::json!("Uploaded"),
            &serde_json::json!("manual_upload"),
            &serde_json::json!(5)
        )
    );
    let client = app_client(&emu, APP);
    let listed = client.list_cohorts(false).await.expect("list");
    let listed = listed.cohorts.iter().find(|c| c.id == id).expect("listed");
    assert_eq!(listed.cohort_type.as_deref(), Some("manual_upload"));
    let parsed: cohort_sync::amplitude::types::UploadResponse =
        serde_json::from_value(answer).expect("typed");
    assert_eq!(parsed.cohort().map(|c| c.size), Some(Some(5)));
}

#[tokio::test]
async fn an_upload_without_a_valid_id_is_refused_and_creates_nothing() {
    let emu = start(base_config()).await;
    let client = app_client(&emu, APP);
    let upload = |ids: Vec<String>, existing: Option<&str>| UploadRequest {
        name: "Nobody".into(),
        app_id: APP as i64,
        id_type: IdKind::UserId.upload_id_type(),
        cg: None,
        ids,
        owner: "o@example.com".into(),
        published: true,
        skip_save: None,
        skip_invalid_ids: Some(true),
        existing_cohort_id: existing.map(str::to_string),
    };
    let before = members(&emu.base_url, APP, "small1").await;
    for (ids, existing) in [
        (vec![], None),
        (vec!["ghost@nowhere".to_string(), "".to_string()], None),
        (vec![], Some("small1")),
        (vec!["ghost@nowhere".to_string()], Some("small1")),
    ] {
        match client.upload(&upload(ids.clone(), existing)).await {
            Err(ApiError::InvalidRequest {
                status: 400,
                body: Some(b),
            }) => {
                assert_eq!(b.error_type.as_deref(), Some("no_valid_ids"), "{ids:?}");
                let meta = b.metadata.expect("metadata");
                assert_eq!(
                    (meta["matched"].clone(), meta["totals"].clone()),
                    (0.into(), ids.len().into())
                );
            }
            other => panic!("expected 400 for {ids:?}, got {other:?}"),
        }
    }
    let list = client.list_cohorts(false).await.expect("list");
    assert_eq!(list.cohorts.len(), 3, "no cohort was created");
    assert_eq!(members(&emu.base_url, APP, "small1").await, before);
}

/// axum's 2 MB default is no Amplitude limit: 100,000 ids of 55 characters (5.7 MB) are
/// answered, not refused with 413.
#[tokio::test]
async fn a_membership_call_of_100k_long_ids_is_read_whole() {
    let emu = start(base_config()).await;
    let client = app_client(&emu, APP);
    let ids: Vec<String> = (0..100_000)
        .map(|i| format!("crm-export-2024-q4-customer-{i:06}@example-long-domain.com"))
        .collect();
    assert!(ids.iter().all(|id| id.len() >= 55));
    let body = MembershipRequest {
        cohort_id: "small1".into(),
        count_group: None,
        memberships: vec![membership(MembershipOperation::Add, IdKind::UserId, ids)],
        skip_invalid_ids: Some(true),
    };
    let answer = client.update_membership(&body).await.expect("answered");
    assert_eq!(answer.memberships_result[0].skipped_ids.len(), 100_000);
    let log = requests(&emu.base_url).await;
    assert_eq!((log[0].status, log[0].id_count), (200, Some(100_000)));
}

#[tokio::test]
async fn concurrent_calls_on_one_cohort_answer_429() {
    // Each call holds the cohort for 100 s of Amplitude time (1 s here).
    let emu = start(config_with(|c| {
        c.membership_processing = Duration::from_secs(100)
    }))
    .await;
    let client = app_client(&emu, APP);
    let call = |n: u64| {
        let client = client.clone();
        async move {
            let body = MembershipRequest {
                cohort_id: "small1".into(),
                count_group: None,
                memberships: vec![membership(
                    MembershipOperation::Add,
                    IdKind::AmplitudeId,
                    vec![amplitude_id(n).to_string()],
                )],
                skip_invalid_ids: None,
            };
            client.update_membership(&body).await
        }
    };
    let (a, b) = tokio::join!(call(1), call(2));
    let limited = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Err(ApiError::RateLimited { .. })))
        .count();
    let ok = [&a, &b].iter().filter(|r| r.is_ok()).count();
    assert_eq!((ok, limited), (1, 1), "{a:?} {b:?}");
}

#[tokio::test]
async fn admin_adds_and_changes_cohorts() {
    let emu = start(base_config()).await;
    let client = app_client(&emu, APP);
    add_cohort(&emu.base_url, APP, &cohort("added", 40).seed(8)).await;
    let changed = patch_cohort(
        &emu.base_url,
        APP,
        "added",
        serde_json::json!({"archived": true, "last_computed_ms": 1_800_000_000_000i64, "name": "Renamed"}),
    )
    .await;
    assert_eq!(changed["lastComputed"], 1_800_000_000);
    let list = client.list_cohorts(false).await.expect("list");
    let c = list
        .cohorts
        .iter()
        .find(|c| c.id == "added")
        .expect("listed");
    assert!(c.archived);
    assert_eq!((c.name.as_str(), c.size), ("Renamed", Some(40)));
    let req = client
        .request_cohort("added", false, &[])
        .await
        .expect("request");
    wait_done(&client, &req.request_id).await;
    let (_, rows) = download_rows(&client, &req.request_id).await;
    assert_eq!(rows, expected_rows(8, "added", 40, None));
}

/// The real binary: `cohort-sync emulate` prints its two addresses, serves the fixture,
/// applies flags over it, and stops on SIGTERM.
#[tokio::test]
async fn emulate_command_serves_the_demo_fixture_and_stops_on_sigterm() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cohort-sync"))
        .args([
            "emulate",
            "--port",
            "0",
            "--fixture",
            "pipelines/emulator-demo.toml",
        ])
        .args([
            "--monthly-limit",
            "7",
            "--usage-used",
            "3",
            "--fault",
            "server_error:/api/3/cohorts/usage:1",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next_line().await.expect("read").expect("first line");
    let second = lines.next_line().await.expect("read").expect("second line");
    let base = first
        .strip_prefix("listening on ")
        .expect("first line format")
        .to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{first}");
    assert!(
        second.starts_with("presigned links on http://127.0.0.1:"),
        "{second}"
    );

    let client = AmplitudeClient::new(cohort_sync::amplitude::ClientOptions::new(
        base.clone(),
        cohort_sync::amplitude::Credentials::new("demo-key", "demo-secret"),
    ))
    .expect("client");
    let list = client.list_cohorts(false).await.expect("list");
    assert_eq!(list.cohorts.len(), 6);
    assert!(list.cohorts.iter().any(|c| c.archived));
    assert!(list.cohorts.iter().any(|c| !c.published));
    assert!(list.cohorts.iter().any(|c| c.size == Some(300_000)));
    assert!(matches!(
        client.usage().await,
        Err(ApiError::Server { status: 500, .. })
    ));
    let usage = client.usage().await.expect("usage after the fault");
    assert_eq!((usage.usage, usage.limit), (3, 7));

    let pid = child.id().expect("pid").to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill runs");
    assert!(killed.success());
    let status = child.wait().await.expect("exits");
    assert_eq!(status.code(), Some(0));
}

/// The real binary follows the test-only `COHORT_SYNC_NOW=@FILE` clock: a cohort with
/// `recompute_secs` shows the start of its latest period as `lastComputed`, `resets_at` is
/// the 1st after the simulated now, and usage resets when the file moves into a new month.
#[tokio::test]
async fn emulate_command_follows_the_simulated_clock() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = dir.path().join("now");
    std::fs::write(&clock, "2026-11-30T22:30:00Z").expect("clock");
    let fixture = dir.path().join("fixture.toml");
    std::fs::write(
        &fixture,
        "monthly_limit = 5\n[[apps]]\napp_id = 1\napi_key = \"k\"\nsecret_key = \"s\"\nusage_used = 3\n\n[[apps.cohorts]]\nid = \"hourly\"\nsize = 2\nrecompute_secs = 3600\n",
    )
    .expect("fixture");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cohort-sync"))
        .args(["emulate", "--port", "0", "--fixture"])
        .arg(&fixture)
        .env("COHORT_SYNC_NOW", format!("@{}", clock.display()))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next_line().await.expect("read").expect("first line");
    lines.next_line().await.expect("read").expect("second line");
    let base = first
        .strip_prefix("listening on ")
        .expect("first line format")
        .to_string();
    let client = AmplitudeClient::new(cohort_sync::amplitude::ClientOptions::new(
        base,
        cohort_sync::amplitude::Credentials::new("k", "s"),
    ))
    .expect("client");
    let epoch = |t: &str| {
        t.parse::<chrono::DateTime<chrono::Utc>>()
            .expect("time")
            .timestamp()
    };
    let last_computed = |list: &cohort_sync::amplitude::types::CohortList| {
        list.cohorts[0]
            .last_computed
            .as_ref()
            .and_then(|t| t.epoch_seconds())
    };
    let list = client.list_cohorts(false).await.expect("list");
    assert_eq!(last_computed(&list), Some(epoch("2026-11-30T22:00:00Z")));
    client
        .request_cohort("hourly", false, &[])
        .await
        .expect("request");
    let usage = client.usage().await.expect("usage");
    assert_eq!((usage.usage, usage.limit), (4, 5));
    assert_eq!(usage.resets_at.as_deref(), Some("2026-12-01T00:00:00"));

    std::fs::write(&clock, "2026-12-01T00:10:00Z").expect("clock");
    let usage = client.usage().await.expect("usage");
    assert_eq!(
        usage.usage, 0,
        "usage resets on the 1st of the simulated month"
    );
    assert_eq!(usage.resets_at.as_deref(), Some("2027-01-01T00:00:00"));
    let list = client.list_cohorts(false).await.expect("list");
    assert_eq!(last_computed(&list), Some(epoch("2026-12-01T00:00:00Z")));
}

#[tokio::test]
async fn emulate_command_reports_fixture_errors_with_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[apps]]\napp_id = 1\napi_key = \"k\"\nsecret_key = \"s\"\n\n[[apps.cohorts]]\nid = \"c\"\nsize = -5\n",
    )
    .expect("write fixture");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cohort-sync"))
        .args(["emulate", "--fixture"])
        .arg(&path)
        .output()
        .await
        .expect("binary runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("{}:8:8: ", path.display())),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    let bad_flag = tokio::process::Command::new(env!("CARGO_BIN_EXE_cohort-sync"))
        .args(["emulate", "--fault", "explode:/x:1"])
        .output()
        .await
        .expect("binary runs");
    assert_eq!(bad_flag.status.code(), Some(2));
}

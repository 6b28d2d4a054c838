//! The emulator driven over real loopback HTTP by the crate's own Amplitude client: every
//! endpoint, every error kind, the presigned redirect, gzip, faults and the admin API.

mod common;

use std::time::Duration;

use cohort_sync::amplitude::{AmplitudeClient, ApiError, FileDownload, JobState};
use cohort_sync::emulator::universe::{amplitude_id, member_numbers, property_value, user_id};
use cohort_sync::emulator::{CohortSpec, EmulatorConfig, Listener};
use common::emulator::*;
use futures::StreamExt;

const APP: u64 = 4242;

fn props_cohort() -> CohortSpec {
    CohortSpec {
        props: vec!["plan".into(), "note".into()],
        ..cohort("props1", 300, 11)
    }
}

fn base_config() -> EmulatorConfig {
    fast_config(vec![app(
        APP,
        vec![
            cohort("small1", 120, 5),
            props_cohort(),
            cohort("big1", 1_500, 9),
        ],
    )])
}

/// Polls until the job completes (bounded).
async fn wait_done(client: &AmplitudeClient, request_id: &str) {
    for _ in 0..500 {
        if client.request_status(request_id).await.expect("status") == JobState::Completed {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("job {request_id} never completed");
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
    let emu = start_emulator(base_config()).await;
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

#[tokio::test]
async fn wrong_credentials_are_refused_with_error_json() {
    let emu = start_emulator(base_config()).await;
    let bad = client(&emu, &format!("key-{APP}"), "wrong-secret");
    match bad.list_cohorts(false).await {
        Err(ApiError::Auth { status: 401, body }) => {
            let body = body.expect("error JSON");
            assert_eq!(body.http_code, Some(401));
            assert!(body.message.is_some());
        }
        other => panic!("expected 401, got {other:?}"),
    }
    let log = requests(&emu.base_url).await;
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].status, log[0].app_id, log[0].authorization),
        (401, None, true)
    );
}

#[tokio::test]
async fn small_cohort_downloads_in_the_body() {
    let emu = start_emulator(base_config()).await;
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
    let emu = start_emulator(base_config()).await;
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

#[tokio::test]
async fn large_cohort_redirects_to_the_presign_listener_without_credentials() {
    let cfg = EmulatorConfig {
        redirect_threshold_rows: 1_000,
        ..base_config()
    };
    let emu = start_emulator(cfg).await;
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
    let emu = start_emulator(cfg).await;
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
    assert_eq!(leaked.status(), 403);
    let text = leaked.text().await.expect("xml");
    assert!(text.contains("<Code>InvalidArgument</Code>"), "{text}");
    let fine = http.get(&location).send().await.expect("presigned");
    assert_eq!(fine.status(), 200);
}

#[tokio::test]
async fn admin_members_usage_and_log_filter() {
    let emu = start_emulator(base_config()).await;
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

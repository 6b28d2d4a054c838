//! Starting an in-process emulator and reading its `/_emulator` inspection API: small typed
//! helpers over real HTTP (reqwest) that every integration test can use.
#![allow(dead_code)]

use cohort_sync::amplitude::{AmplitudeClient, ClientOptions, Credentials};
use cohort_sync::emulator::{
    self, AppSpec, CohortSpec, EmulatorConfig, FaultKind, FaultRule, LoggedRequest, RunningEmulator,
};
use serde_json::{Value, json};

/// Starts an emulator on free loopback ports; panics when it cannot.
pub async fn start_emulator(cfg: EmulatorConfig) -> RunningEmulator {
    emulator::start(cfg).await.expect("emulator starts")
}

/// A config with the given apps, fast jobs and a time scale of 0.01.
pub fn fast_config(apps: Vec<AppSpec>) -> EmulatorConfig {
    EmulatorConfig {
        time_scale: 0.01,
        apps,
        ..EmulatorConfig::default()
    }
}

/// An app with the given cohorts and `key-{app_id}` / `secret-{app_id}` credentials.
pub fn app(app_id: u64, cohorts: Vec<CohortSpec>) -> AppSpec {
    AppSpec {
        app_id,
        api_key: format!("key-{app_id}"),
        secret_key: format!("secret-{app_id}"),
        usage_used: 0,
        cohorts,
    }
}

/// A published cohort of `size` generated members.
pub fn cohort(id: &str, size: u64, seed: u64) -> CohortSpec {
    CohortSpec {
        id: id.into(),
        name: format!("Cohort {id}"),
        size,
        seed,
        ..CohortSpec::default()
    }
}

/// A client of the existing Amplitude client type pointed at the emulator.
pub fn client(emu: &RunningEmulator, api_key: &str, secret_key: &str) -> AmplitudeClient {
    AmplitudeClient::new(ClientOptions::new(
        emu.base_url.clone(),
        Credentials::new(api_key, secret_key),
    ))
    .expect("client builds")
}

/// The client of an app made by [`app`].
pub fn app_client(emu: &RunningEmulator, app_id: u64) -> AmplitudeClient {
    client(emu, &format!("key-{app_id}"), &format!("secret-{app_id}"))
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn ok(resp: reqwest::Response) -> reqwest::Response {
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        panic!("emulator admin call failed: {status} {text}");
    }
    resp
}

/// Every logged request (`GET /_emulator/requests`).
pub async fn requests(base: &str) -> Vec<LoggedRequest> {
    requests_since(base, 0).await
}

/// Logged requests with `seq > since`.
pub async fn requests_since(base: &str, since: u64) -> Vec<LoggedRequest> {
    let resp = http()
        .get(format!("{base}/_emulator/requests?since={since}"))
        .send()
        .await
        .expect("request log");
    ok(resp).await.json().await.expect("request log JSON")
}

pub async fn clear_requests(base: &str) {
    let resp = http()
        .delete(format!("{base}/_emulator/requests"))
        .send()
        .await
        .expect("clear log");
    ok(resp).await;
}

/// Current members of a cohort, sorted by amplitude id.
pub async fn members(base: &str, app_id: u64, cohort_id: &str) -> Vec<(i64, Option<String>)> {
    let resp = http()
        .get(format!(
            "{base}/_emulator/apps/{app_id}/cohorts/{cohort_id}/members"
        ))
        .send()
        .await
        .expect("members");
    let text = ok(resp).await.text().await.expect("members text");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("amplitude_id,user_id"));
    lines
        .map(|l| {
            let (amp, user) = l.split_once(',').expect("two columns");
            let amp = amp.parse().expect("numeric amplitude id");
            (amp, (!user.is_empty()).then(|| user.to_string()))
        })
        .collect()
}

/// `(used, limit)` of an app's monthly downloads.
pub async fn usage(base: &str, app_id: u64) -> (u32, u32) {
    let resp = http()
        .get(format!("{base}/_emulator/apps/{app_id}/usage"))
        .send()
        .await
        .expect("usage");
    let v: Value = ok(resp).await.json().await.expect("usage JSON");
    (
        v["used"].as_u64().expect("used") as u32,
        v["limit"].as_u64().expect("limit") as u32,
    )
}

pub async fn set_usage(base: &str, app_id: u64, used: u32) {
    let resp = http()
        .put(format!("{base}/_emulator/apps/{app_id}/usage"))
        .json(&json!({ "used": used }))
        .send()
        .await
        .expect("set usage");
    ok(resp).await;
}

pub async fn add_fault(base: &str, rule: &FaultRule) {
    let resp = http()
        .post(format!("{base}/_emulator/faults"))
        .json(rule)
        .send()
        .await
        .expect("add fault");
    ok(resp).await;
}

/// Arms `count` faults of `kind` on paths containing `path`.
pub async fn fault(base: &str, kind: FaultKind, path: &str, count: u32) {
    add_fault(base, &FaultRule::new(kind, path, count)).await;
}

pub async fn clear_faults(base: &str) {
    let resp = http()
        .delete(format!("{base}/_emulator/faults"))
        .send()
        .await
        .expect("clear faults");
    ok(resp).await;
}

pub async fn add_cohort(base: &str, app_id: u64, spec: &CohortSpec) {
    let resp = http()
        .post(format!("{base}/_emulator/apps/{app_id}/cohorts"))
        .json(spec)
        .send()
        .await
        .expect("add cohort");
    ok(resp).await;
}

/// Changes cohort fields (`name`, `size`, `published`, `archived`, `last_computed_ms`,
/// `owners`, `props`, `seed`); returns the cohort object.
pub async fn patch_cohort(base: &str, app_id: u64, cohort_id: &str, change: Value) -> Value {
    let resp = http()
        .patch(format!(
            "{base}/_emulator/apps/{app_id}/cohorts/{cohort_id}"
        ))
        .json(&change)
        .send()
        .await
        .expect("patch cohort");
    ok(resp).await.json().await.expect("cohort JSON")
}

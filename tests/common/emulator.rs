//! The in-process emulator: the apps and cohorts a test starts it with, the crate's own
//! client pointed at it, and its `/_emulator` admin API over real HTTP (request log,
//! members, usage, faults, cohort changes).

use std::time::{Duration, Instant};

use cohort_sync::amplitude::{AmplitudeClient, ClientOptions, Credentials};
use cohort_sync::emulator::{
    self, AppSpec, CohortSpec, EmulatorConfig, FaultKind, FaultRule, LoggedRequest, RunningEmulator,
};
use serde_json::{Value, json};

/// The app of [`config`] (and of every [`super::harness::Harness`]).
pub const APP_ID: u64 = 4242;
/// Quota windows, job times and `Retry-After` of the emulator and the binary run 100x faster.
pub const TIME_SCALE: f64 = 0.01;
/// How long a test waits for an event (a log line, a process state) before failing.
pub const EVENT_DEADLINE: Duration = Duration::from_secs(60);

/// The API key of an app made by [`app`].
pub fn api_key(app_id: u64) -> String {
    format!("key-{app_id}")
}

/// The secret key of an app made by [`app`].
pub fn secret_key(app_id: u64) -> String {
    format!("secret-{app_id}")
}

/// A published cohort `Cohort {id}` of `size` generated members (seed 7, no properties,
/// the emulator's default `lastComputed`); change it with [`CohortSpecExt`].
pub fn cohort(id: &str, size: u64) -> CohortSpec {
    CohortSpec {
        id: id.into(),
        name: format!("Cohort {id}"),
        size,
        seed: 7,
        ..CohortSpec::default()
    }
}

/// Builder-style changes to a [`cohort`].
pub trait CohortSpecExt {
    fn seed(self, seed: u64) -> Self;
    fn props(self, props: &[&str]) -> Self;
    fn named(self, name: &str) -> Self;
    fn last_computed_ms(self, ms: i64) -> Self;
}

impl CohortSpecExt for CohortSpec {
    fn seed(self, seed: u64) -> Self {
        CohortSpec { seed, ..self }
    }

    fn props(self, props: &[&str]) -> Self {
        CohortSpec {
            props: props.iter().map(|p| p.to_string()).collect(),
            ..self
        }
    }

    fn named(self, name: &str) -> Self {
        CohortSpec {
            name: name.into(),
            ..self
        }
    }

    fn last_computed_ms(self, last_computed_ms: i64) -> Self {
        CohortSpec {
            last_computed_ms,
            ..self
        }
    }
}

/// An app with the given cohorts and [`api_key`] / [`secret_key`] credentials.
pub fn app(app_id: u64, cohorts: Vec<CohortSpec>) -> AppSpec {
    AppSpec {
        app_id,
        api_key: api_key(app_id),
        secret_key: secret_key(app_id),
        usage_used: 0,
        cohorts,
    }
}

/// A config with the given apps at [`TIME_SCALE`].
pub fn fast_config(apps: Vec<AppSpec>) -> EmulatorConfig {
    EmulatorConfig {
        time_scale: TIME_SCALE,
        apps,
        ..EmulatorConfig::default()
    }
}

/// A config with app [`APP_ID`] holding `cohorts`, at [`TIME_SCALE`].
pub fn config(cohorts: Vec<CohortSpec>) -> EmulatorConfig {
    fast_config(vec![app(APP_ID, cohorts)])
}

/// Starts an emulator on free loopback ports (bound port 0); panics when it cannot.
pub async fn start(cfg: EmulatorConfig) -> RunningEmulator {
    emulator::start(cfg).await.expect("emulator starts")
}

/// The crate's Amplitude client pointed at the emulator.
pub fn client(emu: &RunningEmulator, api_key: &str, secret_key: &str) -> AmplitudeClient {
    AmplitudeClient::new(ClientOptions::new(
        emu.base_url.clone(),
        Credentials::new(api_key, secret_key),
    ))
    .expect("client builds")
}

/// The client of an app made by [`app`].
pub fn app_client(emu: &RunningEmulator, app_id: u64) -> AmplitudeClient {
    client(emu, &api_key(app_id), &secret_key(app_id))
}

// ---- the admin API --------------------------------------------------------------------

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

/// Every logged request (`GET /_emulator/requests`), in arrival order.
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

/// The `seq` of the last logged request (0 when none): what a later `requests_since`
/// starts after.
pub async fn last_seq(base: &str) -> u64 {
    requests(base).await.last().map_or(0, |r| r.seq)
}

pub async fn clear_requests(base: &str) {
    let resp = http()
        .delete(format!("{base}/_emulator/requests"))
        .send()
        .await
        .expect("clear log");
    ok(resp).await;
}

/// Waits until the request log holds an entry matching `pred` (an event, not a time);
/// fails after [`EVENT_DEADLINE`] naming `what`.
pub async fn wait_for_request(
    base: &str,
    what: &str,
    pred: impl Fn(&LoggedRequest) -> bool,
) -> LoggedRequest {
    let deadline = Instant::now() + EVENT_DEADLINE;
    loop {
        if let Some(r) = requests(base).await.into_iter().find(&pred) {
            return r;
        }
        assert!(Instant::now() < deadline, "the emulator never saw {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
/// `owners`, `props`, `seed`, `description`); returns the cohort object.
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

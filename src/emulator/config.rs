//! The emulator's settings: listeners, time scale, job and link durations, quotas, and the
//! apps with their cohorts. Every duration is in Amplitude time and is multiplied by
//! `time_scale` when the emulator uses it (0.01 turns a 10-minute window into 6 s).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::faults::FaultRule;
use crate::clock::Clock;

/// Amplitude's largest cohort.
pub const MAX_COHORT_SIZE: u64 = 2_000_000;

/// Everything `start` needs. `Default` is a loopback emulator on free ports with one
/// small app (see [`AppSpec::default`]).
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// API listener (`127.0.0.1:0` picks a free port).
    pub bind: SocketAddr,
    /// Listener serving presigned download links (the "S3" host).
    pub presign_bind: SocketAddr,
    /// Multiplies every window, duration and `Retry-After` (1.0 = real time).
    pub time_scale: f64,
    /// How long a cohort job stays `JOB INPROGRESS`.
    pub job_duration: Duration,
    /// How long a request id can be used for `/file` (7 days at Amplitude).
    pub request_ttl: Duration,
    /// Cohorts with more members than this are served as a 302 to a presigned link.
    pub redirect_threshold_rows: u64,
    /// How long a presigned link is valid (one minute at Amplitude).
    pub link_ttl: Duration,
    /// Serve files gzip-compressed: with `Content-Encoding: gzip` on the body path, as
    /// raw gzip bytes without that header on the presigned path.
    pub gzip: bool,
    /// Bandwidth of each download from the presigned listener, in bytes per second (`None`:
    /// as fast as the loopback goes). S3 gives one GET stream 50–150 MB/s.
    pub presign_bytes_per_sec: Option<u64>,
    /// Monthly "get one cohort" limit of every app.
    pub monthly_limit: u32,
    /// Single-cohort requests allowed per long window (60 per 10 minutes).
    pub requests_per_long_window: usize,
    pub long_window: Duration,
    /// Single-cohort requests allowed per short window (4 per minute).
    pub requests_per_short_window: usize,
    pub short_window: Duration,
    /// Requests in flight at once per app on the API listener (5).
    pub max_in_flight: usize,
    /// Time a membership or upload call holds its cohort (concurrent calls answer 429).
    pub membership_processing: Duration,
    /// Faults armed from the start.
    pub faults: Vec<FaultRule>,
    pub apps: Vec<AppSpec>,
    /// The emulator's calendar clock (`lastComputed` of changes, monthly usage reset,
    /// `resets_at`, the request log's `clock`): the test-only `COHORT_SYNC_NOW` when set,
    /// like the runner's, else the system clock.
    pub clock: Clock,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        EmulatorConfig {
            bind: loopback,
            presign_bind: loopback,
            time_scale: 1.0,
            job_duration: Duration::from_secs(1),
            request_ttl: Duration::from_secs(7 * 24 * 3600),
            redirect_threshold_rows: 100_000,
            link_ttl: Duration::from_secs(60),
            gzip: false,
            presign_bytes_per_sec: None,
            monthly_limit: 500,
            requests_per_long_window: 60,
            long_window: Duration::from_secs(600),
            requests_per_short_window: 4,
            short_window: Duration::from_secs(60),
            max_in_flight: 5,
            membership_processing: Duration::from_millis(200),
            faults: Vec::new(),
            apps: vec![AppSpec::default()],
            clock: Clock::from_env(),
        }
    }
}

impl EmulatorConfig {
    /// `d` in real time under this config's time scale.
    pub fn scaled(&self, d: Duration) -> Duration {
        scale(d, self.time_scale)
    }
}

/// Longest duration a fixture or flag may give (in Amplitude seconds): a year.
pub const MAX_SETTING_SECS: f64 = 31_536_000.0;
/// Largest time scale accepted.
pub const MAX_TIME_SCALE: f64 = 1_000.0;

/// A duration setting in seconds, `0..=MAX_SETTING_SECS`; the error says the range.
pub fn setting_secs(value: f64) -> Result<Duration, String> {
    if !(value.is_finite() && (0.0..=MAX_SETTING_SECS).contains(&value)) {
        return Err(format!(
            "must be a number of seconds in 0..={MAX_SETTING_SECS}, not {value}"
        ));
    }
    Duration::try_from_secs_f64(value).map_err(|e| e.to_string())
}

/// A link bandwidth setting in MB/s (10^6 bytes) as bytes per second: a finite number in
/// 0.001..=100000.
pub fn setting_mb_per_sec(value: f64) -> Result<u64, String> {
    if !(value.is_finite() && (0.001..=100_000.0).contains(&value)) {
        return Err(format!(
            "must be a bandwidth in MB/s in 0.001..=100000, not {value}"
        ));
    }
    Ok((value * 1e6).round() as u64)
}

/// Longest scaled duration: a hundred years, so that `now + d` never leaves the clock's
/// range whatever a fixture or flag says.
pub const MAX_SCALED: Duration = Duration::from_secs(100 * 365 * 86_400);

/// `d * factor`, saturating at [`MAX_SCALED`], with a non-positive or invalid factor
/// treated as 1.
pub fn scale(d: Duration, factor: f64) -> Duration {
    let factor = if factor.is_finite() && factor > 0.0 {
        factor
    } else {
        1.0
    };
    Duration::try_from_secs_f64(d.as_secs_f64() * factor)
        .unwrap_or(MAX_SCALED)
        .min(MAX_SCALED)
}

/// One Amplitude project: its credentials, usage so far this month, and cohorts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    pub app_id: u64,
    pub api_key: String,
    pub secret_key: String,
    /// Downloads already spent this month.
    #[serde(default)]
    pub usage_used: u32,
    #[serde(default)]
    pub cohorts: Vec<CohortSpec>,
}

impl Default for AppSpec {
    /// App 100001 (`demo-key` / `demo-secret`) with three small cohorts: `small01`
    /// (100 members), `props01` (250 members, properties `plan`, `city`, `note`) and
    /// `empty01` (no members).
    fn default() -> Self {
        AppSpec {
            app_id: 100_001,
            api_key: "demo-key".into(),
            secret_key: "demo-secret".into(),
            usage_used: 0,
            cohorts: vec![
                CohortSpec {
                    id: "small01".into(),
                    name: "Small cohort".into(),
                    size: 100,
                    seed: 1,
                    ..CohortSpec::default()
                },
                CohortSpec {
                    id: "props01".into(),
                    name: "Cohort with properties".into(),
                    size: 250,
                    props: vec!["plan".into(), "city".into(), "note".into()],
                    seed: 2,
                    ..CohortSpec::default()
                },
                CohortSpec {
                    id: "empty01".into(),
                    name: "Empty cohort".into(),
                    size: 0,
                    seed: 3,
                    ..CohortSpec::default()
                },
            ],
        }
    }
}

/// One cohort. Its members are [`super::universe::member_numbers`]`(seed, id, size)`
/// until a membership change or upload replaces them with an explicit set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CohortSpec {
    pub id: String,
    pub name: String,
    pub size: u64,
    pub published: bool,
    pub archived: bool,
    /// `lastComputed`, epoch milliseconds (the API reports epoch seconds).
    pub last_computed_ms: i64,
    pub owners: Vec<String>,
    /// Property columns of a `props=1` download without `propKeys`.
    pub props: Vec<String>,
    pub seed: u64,
    /// Amplitude recomputes the cohort every this many seconds (0: never): its
    /// `lastComputed` is the start of the latest period on the emulator's clock.
    pub recompute_secs: u64,
}

/// 2024-01-01T00:00:00Z, the `lastComputed` of cohorts that do not set one.
pub const DEFAULT_LAST_COMPUTED_MS: i64 = 1_704_067_200_000;

impl Default for CohortSpec {
    fn default() -> Self {
        CohortSpec {
            id: String::new(),
            name: String::new(),
            size: 0,
            published: true,
            archived: false,
            last_computed_ms: DEFAULT_LAST_COMPUTED_MS,
            owners: vec!["owner@example.com".into()],
            props: Vec::new(),
            seed: 0,
            recompute_secs: 0,
        }
    }
}

impl CohortSpec {
    /// Checks what serde cannot: a usable id and a size Amplitude allows.
    pub fn validate(&self) -> Result<(), String> {
        if self.id.trim().is_empty() || self.id.contains('/') {
            return Err(format!(
                "cohort id {:?} must be non-empty and contain no '/'",
                self.id
            ));
        }
        if self.size > MAX_COHORT_SIZE {
            return Err(format!(
                "cohort {} has size {} but Amplitude cohorts hold at most {MAX_COHORT_SIZE} members",
                self.id, self.size
            ));
        }
        Ok(())
    }
}

//! The emulator's mutable world: per-app cohorts, jobs, usage and rate-limit windows, the
//! presigned links handed out, the request log and the armed faults. One lock guards the
//! apps; every operation under it is short.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::config::{AppSpec, CohortSpec, EmulatorConfig};
use super::csv_body::{Members, PropColumns};
use super::faults::Faults;
use super::log::RequestLog;
use crate::quota::SlidingWindow;

/// State shared by every handler of both listeners.
#[derive(Debug)]
pub struct Shared {
    pub config: EmulatorConfig,
    /// Base URL of the presigned listener (`http://127.0.0.1:PORT`).
    pub presign_base: String,
    pub world: Mutex<World>,
    pub log: RequestLog,
    pub faults: Faults,
}

impl Shared {
    pub fn new(config: EmulatorConfig, presign_base: String) -> Shared {
        let world = World::new(&config);
        let faults = Faults::new(config.faults.clone());
        Shared {
            config,
            presign_base,
            world: Mutex::new(world),
            log: RequestLog::new(),
            faults,
        }
    }

    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `d` (Amplitude time) in real time.
    pub fn scaled(&self, d: Duration) -> Duration {
        self.config.scaled(d)
    }
}

#[derive(Debug)]
pub struct World {
    pub apps: Vec<AppState>,
    /// Presigned link signature → link.
    pub links: HashMap<String, Link>,
    /// Numbers new request ids and cohort ids.
    pub next_id: u64,
}

impl World {
    fn new(config: &EmulatorConfig) -> World {
        let apps = config
            .apps
            .iter()
            .map(|a| AppState::new(a, config))
            .collect();
        World {
            apps,
            links: HashMap::new(),
            next_id: 1,
        }
    }

    pub fn app(&self, app_id: u64) -> Option<&AppState> {
        self.apps.iter().find(|a| a.app_id == app_id)
    }

    pub fn app_mut(&mut self, app_id: u64) -> Option<&mut AppState> {
        self.apps.iter_mut().find(|a| a.app_id == app_id)
    }

    /// A fresh id of `len` lowercase letters and digits (unique in this emulator).
    pub fn fresh_id(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        self.next_id += 1;
        let mut x = self.next_id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ fastrand::u64(..);
        let mut out = String::with_capacity(len + 4);
        for _ in 0..len {
            out.push(ALPHABET[(x % ALPHABET.len() as u64) as usize] as char);
            x /= ALPHABET.len() as u64;
            if x == 0 {
                x = fastrand::u64(..) | 1;
            }
        }
        // The counter suffix makes collisions impossible.
        out.push_str(&self.next_id.to_string());
        out
    }
}

/// One app at run time.
#[derive(Debug)]
pub struct AppState {
    pub app_id: u64,
    pub api_key: String,
    pub secret_key: String,
    pub usage_used: u32,
    pub monthly_limit: u32,
    pub cohorts: Vec<CohortState>,
    pub jobs: HashMap<String, Job>,
    pub long_window: SlidingWindow,
    pub short_window: SlidingWindow,
    /// Requests currently in flight on the API listener.
    pub in_flight: Arc<AtomicUsize>,
    /// Cohorts a membership/upload call is working on.
    pub busy_cohorts: HashSet<String>,
}

impl AppState {
    fn new(spec: &AppSpec, config: &EmulatorConfig) -> AppState {
        AppState {
            app_id: spec.app_id,
            api_key: spec.api_key.clone(),
            secret_key: spec.secret_key.clone(),
            usage_used: spec.usage_used,
            monthly_limit: config.monthly_limit,
            cohorts: spec.cohorts.iter().map(CohortState::from_spec).collect(),
            jobs: HashMap::new(),
            long_window: SlidingWindow::new(
                config.requests_per_long_window,
                config.scaled(config.long_window),
            ),
            short_window: SlidingWindow::new(
                config.requests_per_short_window,
                config.scaled(config.short_window),
            ),
            in_flight: Arc::new(AtomicUsize::new(0)),
            busy_cohorts: HashSet::new(),
        }
    }

    pub fn cohort(&self, id: &str) -> Option<&CohortState> {
        self.cohorts.iter().find(|c| c.id == id)
    }

    pub fn cohort_mut(&mut self, id: &str) -> Option<&mut CohortState> {
        self.cohorts.iter_mut().find(|c| c.id == id)
    }
}

/// One cohort at run time.
#[derive(Debug, Clone)]
pub struct CohortState {
    pub id: String,
    pub name: String,
    pub published: bool,
    pub archived: bool,
    pub last_computed_ms: i64,
    pub created_ms: i64,
    pub last_mod_ms: i64,
    pub owners: Vec<String>,
    pub props: Vec<String>,
    pub seed: u64,
    pub members: Members,
    /// `null` in the list until set through the admin API (as in Amplitude's samples).
    pub description: Option<String>,
    /// Made by `POST /api/3/cohorts/upload`: listed with `type: "manual_upload"`.
    pub uploaded: bool,
}

impl CohortState {
    pub fn from_spec(spec: &CohortSpec) -> CohortState {
        CohortState {
            id: spec.id.clone(),
            name: spec.name.clone(),
            published: spec.published,
            archived: spec.archived,
            last_computed_ms: spec.last_computed_ms,
            created_ms: spec.last_computed_ms,
            last_mod_ms: spec.last_computed_ms,
            owners: spec.owners.clone(),
            props: spec.props.clone(),
            seed: spec.seed,
            members: Members::Generated {
                seed: spec.seed,
                cohort_id: spec.id.clone(),
                size: spec.size,
            },
            description: None,
            uploaded: false,
        }
    }

    pub fn size(&self) -> u64 {
        self.members.len()
    }

    /// Replaces the members and marks the cohort recomputed now; `lastComputed` (reported
    /// in seconds) always moves forward by at least one second so a change is visible.
    pub fn set_members(&mut self, members: Members) {
        self.members = members;
        let now = now_ms();
        let next_second = (self.last_computed_ms.div_euclid(1000) + 1) * 1000;
        self.last_computed_ms = now.max(next_second);
        self.last_mod_ms = self.last_computed_ms;
    }
}

/// An export job started by `GET /api/5/cohorts/request/:id`.
#[derive(Debug, Clone)]
pub struct Job {
    pub cohort_id: String,
    /// Membership when the job was requested.
    pub members: Members,
    pub props: PropColumns,
    pub ready_at: Instant,
    /// After this the request id is unknown (7 days at Amplitude).
    pub expires_at: Instant,
}

/// A presigned link handed out by `/file`.
#[derive(Debug, Clone)]
pub struct Link {
    pub app_id: u64,
    pub request_id: String,
    pub expires_at: Instant,
}

/// Wall-clock epoch milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

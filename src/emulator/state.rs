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

    /// The world, brought up to the emulator's clock: a new month resets every app's
    /// usage, and cohorts with `recompute_secs` show their latest recomputation.
    pub fn world(&self) -> MutexGuard<'_, World> {
        let mut world = self.world.lock().unwrap_or_else(|p| p.into_inner());
        world.advance(self.config.clock.now());
        world
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
    /// The emulator's clock (epoch milliseconds) when the world was last locked.
    pub now_ms: i64,
}

impl World {
    fn new(config: &EmulatorConfig) -> World {
        let apps = config
            .apps
            .iter()
            .map(|a| AppState::new(a, config))
            .collect();
        let now = config.clock.now();
        let mut world = World {
            apps,
            links: HashMap::new(),
            next_id: 1,
            now_ms: now.timestamp_millis(),
        };
        for app in &mut world.apps {
            app.usage_month = month_of(now);
        }
        world.advance(now);
        world
    }

    /// Moves the world to `now`: usage resets on the 1st (UTC), as Amplitude's does, and
    /// periodically recomputed cohorts get the `lastComputed` of their latest period.
    fn advance(&mut self, now: chrono::DateTime<chrono::Utc>) {
        self.now_ms = now.timestamp_millis();
        let month = month_of(now);
        for app in &mut self.apps {
            if app.usage_month != month {
                app.usage_month = month;
                app.usage_used = 0;
            }
            for c in &mut app.cohorts {
                c.recompute_until(self.now_ms);
            }
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
    /// The (year, month) `usage_used` counts, on the emulator's clock.
    pub usage_month: (i32, u32),
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
            usage_month: month_of(config.clock.now()),
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
    /// Recomputed every this many milliseconds on the emulator's clock (0: never).
    pub recompute_ms: i64,
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
            recompute_ms: (spec.recompute_secs.min(i64::MAX as u64 / 1000) * 1000) as i64,
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

    /// A periodically recomputed cohort takes the start of its latest period at `now_ms`
    /// as its `lastComputed` (never moving back).
    fn recompute_until(&mut self, now_ms: i64) {
        if self.recompute_ms > 0 {
            let latest = now_ms - now_ms.rem_euclid(self.recompute_ms);
            if latest > self.last_computed_ms {
                self.last_computed_ms = latest;
                self.last_mod_ms = latest;
            }
        }
    }

    /// Replaces the members and marks the cohort recomputed at `now` (epoch ms, the
    /// emulator's clock); `lastComputed` (reported in seconds) always moves forward by at
    /// least one second so a change is visible.
    pub fn set_members(&mut self, members: Members, now: i64) {
        self.members = members;
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

/// The (year, month) of an instant, UTC.
pub fn month_of(t: chrono::DateTime<chrono::Utc>) -> (i32, u32) {
    use chrono::Datelike;
    (t.year(), t.month())
}

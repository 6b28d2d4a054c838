//! What every pipeline execution of one `cohort-sync` invocation shares: the run id, the
//! mode (plan / dry run / apply), `--force`, the per-app rate limits (one set per app, shared
//! by every pipeline that talks to it), the time scale used against the emulator, the
//! stop token that SIGTERM/SIGINT cancel, the requests issued so far (so a cohort
//! selected by two pipelines of one run is requested once), and the progress display.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::amplitude::{AmplitudeClient, ApiError, ClientOptions};
use crate::quota::{LimitSettings, LimitsRegistry, RetryPolicy};
use crate::state::Holder;

use super::progress::Progress;
use super::shared_requests::SharedRequests;

/// What a command asks a pipeline to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// `cohort-sync plan`: decide and report; spend no quota, change nothing.
    Plan,
    /// `cohort-sync run --dry-run`: like plan, and write the full lists a run would apply.
    DryRun,
    /// `cohort-sync run`: do it.
    Apply,
}

impl RunMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RunMode::Plan => "plan",
            RunMode::DryRun => "dry_run",
            RunMode::Apply => "run",
        }
    }

    /// Whether this mode may spend quota or change anything remote or in the state.
    pub fn applies(self) -> bool {
        self == RunMode::Apply
    }
}

/// Shared by every pipeline of one invocation.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub run_id: String,
    pub started_at: DateTime<Utc>,
    pub mode: RunMode,
    /// `--force`: download unchanged cohorts, apply reverse plans the guard refused.
    pub force: bool,
    /// `--retry-rejected`: reverse runs send ids Amplitude rejected before.
    pub retry_rejected: bool,
    /// Multiplies every quota window and backoff (1.0 against the real API).
    pub time_scale: f64,
    /// Relative output, state and source paths resolve against this directory.
    pub base_dir: PathBuf,
    pub limits: Arc<LimitsRegistry>,
    /// Cancelled by SIGTERM/SIGINT: no new work starts, uploads in progress are aborted,
    /// leases are released, the report is written.
    pub stop: CancellationToken,
    /// The signal that cancelled `stop` (0 while none did).
    stop_signal: Arc<AtomicI32>,
    /// This process as a lease holder.
    pub holder: Holder,
    /// Requests issued by this run, by cohort and columns (shared across its pipelines).
    pub shared_requests: Arc<SharedRequests>,
    /// HTTP 429 answers seen by every client of the run.
    pub answers_429: Arc<AtomicU64>,
    /// `plan --month`: add the month's forecast to each export pipeline's report.
    pub forecast: bool,
    /// The live display of what the run does (off unless `run` is on a terminal).
    pub progress: Progress,
}

impl RunContext {
    pub fn new(mode: RunMode, force: bool, time_scale: f64, base_dir: PathBuf) -> Self {
        let started_at = crate::clock::now();
        let run_id = format!(
            "{}-{:04x}",
            started_at.format("%Y%m%dT%H%M%SZ"),
            fastrand::u16(..)
        );
        RunContext {
            holder: Holder::this_process(&run_id),
            run_id,
            started_at,
            mode,
            force,
            retry_rejected: false,
            time_scale,
            base_dir,
            limits: Arc::new(LimitsRegistry::default()),
            stop: CancellationToken::new(),
            stop_signal: Arc::new(AtomicI32::new(0)),
            shared_requests: Arc::new(SharedRequests::default()),
            answers_429: Arc::new(AtomicU64::new(0)),
            forecast: false,
            progress: Progress::off(),
        }
    }

    /// Asks every pipeline of the run to stop (a signal arrived).
    pub fn request_stop(&self, signal: i32) {
        let _ = self
            .stop_signal
            .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
        self.stop.cancel();
    }

    /// The signal that stopped the run, if one did.
    pub fn stopped_by(&self) -> Option<i32> {
        match self.stop_signal.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }

    /// Whether a stop was requested.
    pub fn stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// The rate-limit settings for this run's time scale.
    pub fn limit_settings(&self) -> LimitSettings {
        LimitSettings::scaled(self.time_scale)
    }

    /// A client for one app whose calls share that app's limits with every other pipeline
    /// of this run, and retry 429s (and transient errors of idempotent calls) with backoff.
    /// `app_key` identifies the app (its app id, or its api key when no id is given).
    pub fn client(
        &self,
        options: ClientOptions,
        app_key: &str,
    ) -> Result<AmplitudeClient, ApiError> {
        let limits = self.limits.for_app(app_key, &self.limit_settings());
        Ok(AmplitudeClient::new(options)?
            .with_limits(limits)
            .with_retry(RetryPolicy::scaled(self.time_scale))
            .with_stop(self.stop.clone())
            .with_429_counter(Arc::clone(&self.answers_429)))
    }
}

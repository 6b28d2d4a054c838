//! The built-in Amplitude API emulator (`cohort-sync emulate`): a real HTTP server with
//! Amplitude's endpoints, auth, quotas, async jobs, presigned redirects to a second
//! listener, membership changes, fault injection and inspection endpoints for tests.
//!
//! Behaviour in short (durations are Amplitude time, multiplied by `time_scale`):
//! - Basic auth per app on every `/api` route; refused credentials answer Amplitude's 403
//!   (`{"error": {"http_code": 403, "type": "unspecified", "metadata": {"details":
//!   "Invalid API Key" | "Invalid API/Secret Key combination"}}}`). Other errors are
//!   `{"error": {"http_code", "type", "message", "metadata"}}`.
//! - Answers follow Amplitude's published samples where they differ from the reference's
//!   schema (see `api::cohort_json`); an upload with no valid id answers 400; request
//!   bodies up to `api::MAX_BODY_BYTES` (100,000 ids of 1 KB) are read.
//! - 5 requests in flight per app (a streamed body counts until it ends), 4 single-cohort
//!   requests per minute and 60 per 10 minutes (sliding), a monthly limit (429 whose
//!   message names the monthly quota). Rate 429s carry `Retry-After`: whole seconds (at
//!   least 1) at `time_scale >= 1`, else decimal seconds with millisecond precision.
//! - Jobs stay `JOB INPROGRESS` (202) for `job_duration`, then `JOB COMPLETED` (200);
//!   request ids live `request_ttl` (7 days), then 404; `/file` before completion is a 400
//!   `job_in_progress`. Files above `redirect_threshold_rows` are a 302 to
//!   `/cohort-exports/{app}/{request_id}.csv?X-Amz-...` on the presign listener, valid
//!   `link_ttl`, refused with S3's XML errors: 403 when expired, 400 when sent with an
//!   `Authorization` header.
//!
//! Modules, one concern each: `config` (settings), `fixture` (TOML fixtures), `universe`
//! (deterministic members), `csv_body`/`download` (file bodies), `state` (the mutable
//! world), `auth` (Basic auth and in-flight gate), `api` (Amplitude routes), `presign`
//! (the "S3" listener), `admin` (`/_emulator`), `faults`/`inject` (fault rules and their
//! middlewares), `log` (request log), `errors`, `query`.

mod admin;
mod api;
mod auth;
pub mod config;
mod csv_body;
mod download;
mod errors;
pub mod faults;
pub mod fixture;
mod inject;
pub mod log;
mod presign;
mod query;
mod state;
pub mod universe;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::middleware::from_fn_with_state;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use api::MAX_IDS_PER_REQUEST;
pub use config::{AppSpec, CohortSpec, EmulatorConfig, MAX_COHORT_SIZE};
pub use faults::{FaultKind, FaultRule};
pub use log::{Listener, LoggedRequest};

use state::Shared;

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid emulator configuration: {0}")]
    Config(String),
}

/// A started emulator. Dropping it stops both listeners; [`RunningEmulator::shutdown`]
/// also waits for them to finish.
#[derive(Debug)]
pub struct RunningEmulator {
    /// `http://127.0.0.1:PORT` of the API listener.
    pub base_url: String,
    /// `http://127.0.0.1:PORT` of the presigned-link listener.
    pub presign_base_url: String,
    pub addr: SocketAddr,
    pub presign_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningEmulator {
    /// Stops accepting, lets requests in progress finish, and waits for both servers.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn validate(config: &EmulatorConfig) -> Result<(), EmulatorError> {
    if !(config.time_scale.is_finite()
        && config.time_scale > 0.0
        && config.time_scale <= config::MAX_TIME_SCALE)
    {
        return Err(EmulatorError::Config(format!(
            "time_scale must be a positive number up to {}, got {}",
            config::MAX_TIME_SCALE,
            config.time_scale
        )));
    }
    let mut app_ids = std::collections::HashSet::new();
    let mut keys = std::collections::HashSet::new();
    for app in &config.apps {
        if !app_ids.insert(app.app_id) {
            return Err(EmulatorError::Config(format!(
                "app {} appears twice",
                app.app_id
            )));
        }
        if !keys.insert(app.api_key.as_str()) {
            return Err(EmulatorError::Config(format!(
                "app {} reuses another app's api key",
                app.app_id
            )));
        }
        let mut ids = std::collections::HashSet::new();
        for c in &app.cohorts {
            c.validate().map_err(EmulatorError::Config)?;
            if !ids.insert(c.id.as_str()) {
                return Err(EmulatorError::Config(format!(
                    "cohort {} appears twice in app {}",
                    c.id, app.app_id
                )));
            }
        }
    }
    for f in &config.faults {
        f.validate().map_err(EmulatorError::Config)?;
    }
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, EmulatorError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| EmulatorError::Bind { addr, source })
}

/// Binds both listeners and serves until the handle is shut down or dropped.
pub async fn start(config: EmulatorConfig) -> Result<RunningEmulator, EmulatorError> {
    validate(&config)?;
    let api_listener = bind(config.bind).await?;
    let presign_listener = bind(config.presign_bind).await?;
    let local = |l: &TcpListener, asked: SocketAddr| {
        l.local_addr().map_err(|source| EmulatorError::Bind {
            addr: asked,
            source,
        })
    };
    let addr = local(&api_listener, config.bind)?;
    let presign_addr = local(&presign_listener, config.presign_bind)?;
    let presign_base_url = format!("http://{presign_addr}");
    let shared = Arc::new(Shared::new(config, presign_base_url.clone()));

    // Outermost first: stall (holds logged answers), log, then the other faults.
    let api = api::router(Arc::clone(&shared))
        .merge(admin::router(Arc::clone(&shared)))
        .layer(from_fn_with_state(Arc::clone(&shared), inject::inject))
        .layer(from_fn_with_state(
            (Arc::clone(&shared), Listener::Api),
            log::record,
        ))
        .layer(from_fn_with_state(Arc::clone(&shared), inject::stall));
    let presign = presign::router(Arc::clone(&shared))
        .layer(from_fn_with_state(Arc::clone(&shared), inject::inject))
        .layer(from_fn_with_state(
            (Arc::clone(&shared), Listener::Presign),
            log::record,
        ))
        .layer(from_fn_with_state(Arc::clone(&shared), inject::stall));

    let (stop, stopped) = watch::channel(false);
    let tasks = vec![
        serve(api_listener, api, stopped.clone()),
        serve(presign_listener, presign, stopped),
    ];
    Ok(RunningEmulator {
        base_url: format!("http://{addr}"),
        presign_base_url,
        addr,
        presign_addr,
        stop,
        tasks,
    })
}

fn serve(listener: TcpListener, app: Router, mut stopped: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!("emulator listener stopped: {e}");
        }
    })
}

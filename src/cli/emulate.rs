//! `cohort-sync emulate`: runs the built-in Amplitude API emulator until SIGINT/SIGTERM.
//! Prints `listening on http://ADDR` then `presigned links on http://ADDR` on stdout.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use cohort_sync::emulator::{self, EmulatorConfig, FaultRule, fixture};
use cohort_sync::exit;

/// How long requests in progress may take to finish after SIGINT/SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Args, Debug)]
#[command(after_help = "\
Without --fixture the emulator serves one app: app_id 100001, api key `demo-key`, \
secret `demo-secret`, with cohorts `small01` (100 members), `props01` (250 members, \
properties plan, city, note) and `empty01` (no members).

Flags override the fixture's settings. Every duration is in Amplitude time and is \
multiplied by --time-scale (0.01 turns the 10-minute request window into 6 s).
Inspection API (no auth) on the API listener: /_emulator/requests, \
/_emulator/apps/{app}/usage, /_emulator/apps/{app}/cohorts[/{id}[/members]], /_emulator/faults.

Test-only: COHORT_SYNC_NOW sets the emulator's calendar clock like the runner's (an RFC 3339 \
instant, or @FILE read at every call): lastComputed of changes and of cohorts with \
recompute_secs, the monthly usage reset on the 1st (UTC), resets_at, the request log's clock.

Examples:
  cohort-sync emulate --port 8080
  cohort-sync emulate --fixture pipelines/emulator-demo.toml --time-scale 0.02
  cohort-sync emulate --fault rate_limit:/api/5/cohorts/request:2")]
pub struct EmulateArgs {
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,
    /// API port (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Port of the presigned-link ("S3") listener (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    presign_port: u16,
    /// TOML fixture with settings, apps and cohorts (see the emulator's docs).
    #[arg(long, value_name = "FILE")]
    fixture: Option<PathBuf>,
    /// Multiplies every window, duration and Retry-After.
    #[arg(long, value_name = "F")]
    time_scale: Option<f64>,
    /// How long a cohort job stays JOB INPROGRESS.
    #[arg(long, value_name = "S")]
    job_seconds: Option<f64>,
    /// Cohorts with more members are served as a 302 to a presigned link.
    #[arg(long, value_name = "ROWS")]
    redirect_threshold: Option<u64>,
    /// Lifetime of a presigned link.
    #[arg(long, value_name = "S")]
    link_ttl_secs: Option<f64>,
    /// Serve files gzip-compressed (Content-Encoding on the body path, raw on presigned links).
    #[arg(long)]
    gzip: bool,
    /// Pace each download from the presigned-link listener to this bandwidth in MB/s
    /// (10^6 bytes), like one S3 GET stream over a real link (default: as fast as loopback).
    #[arg(long, value_name = "MB_PER_S")]
    presign_mb_per_sec: Option<f64>,
    /// Monthly download limit of every app.
    #[arg(long, value_name = "N")]
    monthly_limit: Option<u32>,
    /// Downloads already spent this month by every app.
    #[arg(long, value_name = "N")]
    usage_used: Option<u32>,
    /// Arm a fault: KIND:PATH:COUNT, KIND one of server_error, client_error, not_found,
    /// rate_limit, reset, truncate, body, stall, trickle, slow_job, job_failed,
    /// unknown_status, expired_link (repeatable; optional fields at their defaults, see
    /// /_emulator/faults).
    #[arg(long = "fault", value_name = "KIND:PATH:COUNT", value_parser = FaultRule::parse_flag)]
    faults: Vec<FaultRule>,
}

fn seconds(flag: &str, value: f64) -> Result<Duration, String> {
    emulator::config::setting_secs(value).map_err(|e| format!("--{flag} {e}"))
}

fn build_config(args: EmulateArgs) -> Result<EmulatorConfig, String> {
    let mut config = match &args.fixture {
        Some(path) => fixture::load(path).map_err(|e| e.to_string())?,
        None => EmulatorConfig::default(),
    };
    config.bind = SocketAddr::new(args.host, args.port);
    config.presign_bind = SocketAddr::new(args.host, args.presign_port);
    if let Some(s) = args.time_scale {
        config.time_scale = s;
    }
    if let Some(s) = args.job_seconds {
        config.job_duration = seconds("job-seconds", s)?;
    }
    if let Some(r) = args.redirect_threshold {
        config.redirect_threshold_rows = r;
    }
    if let Some(s) = args.link_ttl_secs {
        config.link_ttl = seconds("link-ttl-secs", s)?;
    }
    config.gzip |= args.gzip;
    if let Some(mb) = args.presign_mb_per_sec {
        config.presign_bytes_per_sec = Some(
            emulator::config::setting_mb_per_sec(mb)
                .map_err(|e| format!("--presign-mb-per-sec {e}"))?,
        );
    }
    if let Some(m) = args.monthly_limit {
        config.monthly_limit = m;
    }
    if let Some(u) = args.usage_used {
        for app in &mut config.apps {
            app.usage_used = u;
        }
    }
    config.faults.extend(args.faults);
    Ok(config)
}

pub async fn emulate(args: EmulateArgs) -> u8 {
    let config = match build_config(args) {
        Ok(c) => c,
        Err(message) => {
            eprintln!("{message}");
            return exit::USAGE;
        }
    };
    let running = match emulator::start(config).await {
        Ok(r) => r,
        Err(e @ emulator::EmulatorError::Config(_)) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return exit::FAILED;
        }
    };
    let mut out = std::io::stdout().lock();
    let printed = writeln!(out, "listening on {}", running.base_url)
        .and_then(|_| writeln!(out, "presigned links on {}", running.presign_base_url))
        .and_then(|_| out.flush());
    drop(out);
    if let Err(e) = printed {
        eprintln!("error: cannot write to stdout: {e}");
        return exit::FAILED;
    }
    wait_for_stop_signal().await;
    // Requests in progress get a moment to finish; a download nobody reads does not
    // hold the process.
    if tokio::time::timeout(SHUTDOWN_GRACE, running.shutdown())
        .await
        .is_err()
    {
        eprintln!("emulator: stopped with requests still in progress");
    }
    exit::OK
}

async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

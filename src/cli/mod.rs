//! Command implementations of the binary: one file per command (or family of commands).

pub mod convert;
pub mod ddl;
pub mod emulate;
pub mod remote;
pub mod run;
pub mod signals;
pub mod summary;
pub mod validate;

use std::future::Future;

/// The log filter and where it came from: `--log` (or `COHORT_SYNC_LOG`, which clap
/// reads into it), else a non-empty `RUST_LOG`, else `info`.
fn log_filter(flag_or_env: Option<&str>) -> (String, &'static str) {
    if let Some(f) = flag_or_env.filter(|f| !f.trim().is_empty()) {
        return (f.to_string(), "--log / COHORT_SYNC_LOG");
    }
    match std::env::var("RUST_LOG") {
        Ok(f) if !f.trim().is_empty() => (f, "RUST_LOG"),
        _ => ("info".to_string(), "default"),
    }
}

/// Logs go to stderr so that stdout stays machine-readable. A filter that does not parse
/// falls back to `info` with a warning naming it.
pub fn init_logging(flag_or_env: Option<&str>) {
    let (text, from) = log_filter(flag_or_env);
    let (filter, invalid) = match tracing_subscriber::EnvFilter::try_new(&text) {
        Ok(f) => (f, None),
        Err(e) => (tracing_subscriber::EnvFilter::new("info"), Some(e)),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    match invalid {
        Some(e) => tracing::warn!("ignoring log filter {text:?} from {from}: {e}; using info"),
        None => tracing::debug!("log filter {text:?} from {from}"),
    }
}

/// Runs a command's future on a multi-threaded runtime and returns its exit code.
pub fn block_on(fut: impl Future<Output = u8>) -> u8 {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(fut),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            cohort_sync::exit::FAILED
        }
    }
}

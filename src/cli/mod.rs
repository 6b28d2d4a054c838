//! Command implementations of the binary: one file per command (or family of commands).

pub mod completions;
pub mod convert;
pub mod ddl;
pub mod emulate;
pub mod examples;
pub mod progress;
pub mod remote;
pub mod run;
pub mod signals;
pub mod summary;
pub mod validate;
pub mod version;

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

/// How log lines are written (`--log-format`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Timestamped text lines (colours on a terminal).
    Human,
    /// One JSON object a line: `time`, `level`, `message`, `target`, the event's fields,
    /// and the fields of every span it happened in (`run_id`, `pipeline`, `cohort_id`,
    /// `request_id`), all at the top level.
    Json,
}

/// Logs go to stderr so that stdout stays machine-readable. A filter that does not parse
/// falls back to `info` with a warning naming it.
pub fn init_logging(flag_or_env: Option<&str>, format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (text, from) = log_filter(flag_or_env);
    let (filter, invalid) = match tracing_subscriber::EnvFilter::try_new(&text) {
        Ok(f) => (f, None),
        Err(e) => (tracing_subscriber::EnvFilter::new("info"), Some(e)),
    };
    match format {
        LogFormat::Human => tracing_subscriber::fmt()
            .with_env_filter(filter)
            // Above the progress bars while `run` shows them (plain stderr otherwise).
            .with_writer(progress::LogWriter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .init(),
        LogFormat::Json => {
            // Span fields are flattened next to the event's: the run's spans carry only
            // ids, and no event repeats a span's field name (one key, one meaning).
            let mut json = json_subscriber::JsonLayer::stderr();
            json.with_timer("time", tracing_subscriber::fmt::time::SystemTime)
                .with_level("level")
                .with_target("target")
                .with_flattened_event()
                .with_top_level_flattened_span_list();
            tracing_subscriber::registry()
                .with(filter)
                .with(json)
                .init();
        }
    }
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

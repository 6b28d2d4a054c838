//! Command implementations of the binary: one file per command (or family of commands).

pub mod convert;
pub mod emulate;
pub mod remote;
pub mod run;
pub mod signals;
pub mod summary;
pub mod validate;

use std::future::Future;

/// Logs go to stderr so that stdout stays machine-readable.
pub fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
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

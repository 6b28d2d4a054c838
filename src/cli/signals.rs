//! SIGTERM and SIGINT during `run`: the first asks the run to stop gracefully (no new
//! work, uploads in progress aborted, leases released, report written, exit 130/143);
//! a second one ends the process at once.

use cohort_sync::exit;
use cohort_sync::runner::context::RunContext;

/// Listens for SIGTERM/SIGINT in the background until the returned task is aborted.
pub fn stop_on_signals(ctx: RunContext) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut stops = 0;
        loop {
            let Some(signal) = next_signal().await else {
                return;
            };
            stops += 1;
            if stops > 1 {
                eprintln!("cohort-sync: second stop signal: exiting now");
                std::process::exit(i32::from(exit::stopped_by_signal(signal)));
            }
            tracing::warn!(
                run_id = %ctx.run_id,
                "received {}: stopping (no new work; uploads in progress are aborted, leases released, the report written); send it again to exit at once",
                if signal == exit::SIGINT { "SIGINT" } else { "SIGTERM" }
            );
            ctx.request_stop(signal);
        }
    })
}

#[cfg(unix)]
async fn next_signal() -> Option<i32> {
    use std::sync::OnceLock;
    use tokio::signal::unix::{Signal, SignalKind, signal};
    use tokio::sync::Mutex;
    // Registered once: a handler stays installed for the life of the process.
    static HANDLERS: OnceLock<Option<Mutex<(Signal, Signal)>>> = OnceLock::new();
    let handlers = HANDLERS.get_or_init(|| {
        let term = signal(SignalKind::terminate()).ok()?;
        let int = signal(SignalKind::interrupt()).ok()?;
        Some(Mutex::new((term, int)))
    });
    let Some(handlers) = handlers else {
        tracing::warn!("cannot listen for SIGTERM/SIGINT: a signal ends the run at once");
        return std::future::pending().await;
    };
    let mut guard = handlers.lock().await;
    let (term, int) = &mut *guard;
    tokio::select! {
        s = term.recv() => s.map(|_| exit::SIGTERM),
        s = int.recv() => s.map(|_| exit::SIGINT),
    }
}

#[cfg(not(unix))]
async fn next_signal() -> Option<i32> {
    tokio::signal::ctrl_c().await.ok().map(|_| exit::SIGINT)
}

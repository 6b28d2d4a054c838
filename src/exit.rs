//! Process exit codes of the CLI contract (see DESIGN.md).

/// Everything asked for was done.
pub const OK: u8 = 0;
/// Something failed at run time (network, disk, Amplitude refused).
pub const FAILED: u8 = 1;
/// Bad usage or configuration: nothing was attempted.
pub const USAGE: u8 = 2;
/// Stopped by quota: some work was deferred because the monthly budget does not allow it.
pub const QUOTA: u8 = 3;

/// Stopped by SIGTERM or SIGINT: the run stopped early (no new work, uploads aborted,
/// leases released, report written). The shell convention, 128 + the signal number:
/// 130 for SIGINT (Ctrl-C), 143 for SIGTERM.
pub fn stopped_by_signal(signal: i32) -> u8 {
    u8::try_from(128 + signal.clamp(1, 127)).unwrap_or(FAILED)
}

/// SIGINT (2) and SIGTERM (15), whatever the platform calls them.
pub const SIGINT: i32 = 2;
pub const SIGTERM: i32 = 15;

//! Process exit codes of the CLI contract (see DESIGN.md).

/// Everything asked for was done.
pub const OK: u8 = 0;
/// Something failed at run time (network, disk, Amplitude refused).
pub const FAILED: u8 = 1;
/// Bad usage or configuration: nothing was attempted.
pub const USAGE: u8 = 2;
/// Stopped by quota: some work was deferred because the monthly budget does not allow it.
pub const QUOTA: u8 = 3;

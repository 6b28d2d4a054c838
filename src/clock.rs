//! The one clock a run (and the emulator) reads "now" from, so that tests can simulate a
//! month of scheduled runs in seconds.
//!
//! Test-only setting `COHORT_SYNC_NOW` (unset outside tests: the system clock):
//! - `2026-11-01T00:00:00Z` (RFC 3339): the clock starts at that instant when the process
//!   first reads it and then advances in real time;
//! - `@/path/to/file`: the file holds an RFC 3339 instant; the clock is that instant plus
//!   the real time since the file was last written, read again at every call — so a test
//!   moves the runner and a running emulator to the next simulated hour by rewriting one
//!   file.
//!
//! Waits (rate-limit windows, polls, backoff) stay in real time (`tokio::time`), scaled by
//! `COHORT_SYNC_TIME_SCALE`; only calendar time (month boundaries, export ages, ledger
//! months, `lastComputed`) follows this clock.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::SystemTime;

use chrono::{DateTime, Utc};

/// The environment variable that sets the clock (tests only).
pub const NOW_ENV: &str = "COHORT_SYNC_NOW";

/// Where "now" comes from.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// `base` when the clock was made, advancing in real time since.
    Fixed {
        base: DateTime<Utc>,
        made: std::time::Instant,
    },
    /// The instant written in a file plus the real time since the file was written.
    File(PathBuf),
}

impl Clock {
    /// Parses a `COHORT_SYNC_NOW` value (see the module docs).
    pub fn parse(setting: &str) -> Result<Clock, String> {
        let setting = setting.trim();
        if let Some(path) = setting.strip_prefix('@') {
            if path.is_empty() {
                return Err("`@` needs a file path after it".into());
            }
            let clock = Clock::File(PathBuf::from(path));
            read_file(path.as_ref())?;
            return Ok(clock);
        }
        let base = parse_instant(setting)?;
        Ok(Clock::Fixed {
            base,
            made: std::time::Instant::now(),
        })
    }

    /// The clock `COHORT_SYNC_NOW` sets; the system clock when it is unset, or (with a
    /// warning) when it cannot be used.
    pub fn from_env() -> Clock {
        match std::env::var(NOW_ENV) {
            Ok(text) => Clock::parse(&text).unwrap_or_else(|e| {
                tracing::warn!(
                    "{NOW_ENV}={:?} is not usable ({e}); using the system clock",
                    crate::text::escape(&text)
                );
                Clock::System
            }),
            Err(_) => Clock::System,
        }
    }

    /// The current time on this clock.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Fixed { base, made } => {
                *base + chrono::Duration::from_std(made.elapsed()).unwrap_or_default()
            }
            Clock::File(path) => match read_file(path) {
                Ok((base, written)) => {
                    let since = SystemTime::now()
                        .duration_since(written)
                        .unwrap_or_default();
                    base + chrono::Duration::from_std(since).unwrap_or_default()
                }
                Err(e) => {
                    static WARNED: std::sync::Once = std::sync::Once::new();
                    WARNED.call_once(|| {
                        tracing::warn!("{NOW_ENV}: {e}; using the system clock");
                    });
                    Utc::now()
                }
            },
        }
    }
}

/// This process's clock ([`Clock::from_env`], read once).
pub fn now() -> DateTime<Utc> {
    static CLOCK: OnceLock<Clock> = OnceLock::new();
    CLOCK.get_or_init(Clock::from_env).now()
}

fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{:?} is not an RFC 3339 time ({e})", text.trim()))
}

/// The instant in a clock file and when the file was written.
fn read_file(path: &std::path::Path) -> Result<(DateTime<Utc>, SystemTime), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read clock file {}: {e}", path.display()))?;
    let written = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(|e| format!("cannot read the time of clock file {}: {e}", path.display()))?;
    let at = parse_instant(&text).map_err(|e| format!("clock file {}: {e}", path.display()))?;
    Ok((at, written))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_start_advances_from_its_instant() {
        let c = Clock::parse("2026-11-01T00:00:00Z").expect("clock");
        let now = c.now();
        assert!(now >= "2026-11-01T00:00:00Z".parse::<DateTime<Utc>>().expect("t"));
        assert!(now < "2026-11-01T00:01:00Z".parse::<DateTime<Utc>>().expect("t"));
    }

    #[test]
    fn a_clock_file_is_read_at_every_call() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("now");
        std::fs::write(&file, "2026-11-03T05:00:00Z").expect("write");
        let c = Clock::parse(&format!("@{}", file.display())).expect("clock");
        assert_eq!(c.now().format("%Y-%m-%dT%H").to_string(), "2026-11-03T05");
        std::fs::write(&file, "2026-12-01T00:00:00Z\n").expect("write");
        assert_eq!(c.now().format("%Y-%m-%dT%H").to_string(), "2026-12-01T00");
    }

    #[test]
    fn bad_settings_are_named() {
        assert!(Clock::parse("yesterday").unwrap_err().contains("RFC 3339"));
        assert!(Clock::parse("@").is_err());
        assert!(
            Clock::parse("@/no/such/clock/file")
                .unwrap_err()
                .contains("/no/such/clock/file")
        );
    }
}

//! Who holds a lease: the run id, the host and the process (pid and its start time). A
//! lease names its holder so that a runner finding it can tell a live holder from a dead
//! one: on the same host a holder whose process is gone (or whose pid now belongs to a
//! process started at another time) is dead at once; a holder on another host is dead
//! when its lease's heartbeat stops and the lease expires.

use serde::{Deserialize, Serialize};

/// The holder recorded in a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Holder {
    /// The run id of the holding `cohort-sync` invocation.
    pub run_id: String,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub pid: u32,
    /// The process's start time in clock ticks since boot (Linux), to tell a reused pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<u64>,
}

/// Whether a holder is still running, as far as this process can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// On this host and its process is running.
    Alive,
    /// On this host and its process is gone: its lease can be taken over at once.
    Dead,
    /// On another host (or not checkable here): trust the lease's expiry.
    Unknown,
}

impl Holder {
    /// This process, running `run_id`.
    pub fn this_process(run_id: &str) -> Holder {
        let pid = std::process::id();
        Holder {
            run_id: run_id.to_string(),
            host: host_name(),
            pid,
            started: process_start(pid),
        }
    }

    /// Checks the holder's process when it runs on this host.
    pub fn liveness(&self) -> Liveness {
        if self.host.is_empty() || self.pid == 0 || self.host != host_name() {
            return Liveness::Unknown;
        }
        if self.pid == std::process::id() {
            return Liveness::Alive;
        }
        if !process_exists(self.pid) {
            return Liveness::Dead;
        }
        match (self.started, process_start(self.pid)) {
            (Some(recorded), Some(now)) if recorded != now => Liveness::Dead,
            _ => Liveness::Alive,
        }
    }

    /// A holder nobody could name: a lease released between a refused create and the
    /// read that followed. Messages say "another runner".
    pub fn unknown() -> Holder {
        Holder {
            run_id: "another runner".into(),
            ..Holder::default()
        }
    }

    /// For messages: `run R (pid P on HOST)`.
    pub fn describe(&self) -> String {
        if self.host.is_empty() {
            format!("run {}", self.run_id)
        } else {
            format!("run {} (pid {} on {})", self.run_id, self.pid, self.host)
        }
    }
}

/// This machine's host name (empty when it cannot be read).
pub fn host_name() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer we own.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if rc == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            return String::from_utf8_lossy(&buf[..end]).into_owned();
        }
    }
    std::env::var("HOSTNAME").unwrap_or_default()
}

#[cfg(unix)]
fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    if rc == 0 {
        return true;
    }
    // EPERM: it exists but belongs to another user.
    std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
fn process_exists(_pid: u32) -> bool {
    true
}

/// Field 22 of `/proc/PID/stat`: the start time in clock ticks since boot (Linux only).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive() {
        let me = Holder::this_process("r1");
        assert_eq!(me.liveness(), Liveness::Alive);
        assert!(me.describe().contains("r1"));
    }

    #[test]
    fn a_finished_process_on_this_host_is_dead() {
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id();
        child.wait().expect("wait");
        let h = Holder {
            run_id: "r2".into(),
            host: host_name(),
            pid,
            started: Some(1),
        };
        assert_eq!(h.liveness(), Liveness::Dead);
    }

    #[test]
    fn a_reused_pid_is_dead_and_other_hosts_are_unknown() {
        let mut me = Holder::this_process("r3");
        me.pid = 1; // init: alive, but started at another time than recorded
        me.started = Some(u64::MAX);
        if process_start(1).is_some() {
            assert_eq!(me.liveness(), Liveness::Dead);
        }
        me.host = "some-other-host.example".into();
        assert_eq!(me.liveness(), Liveness::Unknown);
    }
}

//! Crash points: named places in a run where the kill-anywhere tests make the process
//! signal itself, so a kill lands exactly between two steps (after the request's answer,
//! before it is saved; between a membership answer and its journal entry; ...).
//!
//! Test-only setting: `COHORT_SYNC_CRASH_AT=NAME[#N][:term|:stop],...` — the Nth time
//! (default the first) the process passes point `NAME` it sends itself SIGKILL (it dies on
//! the spot, like `kill -9` or an OOM kill), SIGTERM with `:term` (the graceful stop runs,
//! as under `kill` or a Kubernetes eviction), or SIGSTOP with `:stop` (it freezes until a
//! SIGCONT, like a process paused long enough for its lease to expire). Unset (always, outside tests) a point costs
//! one atomic load. Every point a run passes is logged at `trace` level as
//! `crash point NAME #N`, so a test can list the points a scenario reaches.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::OnceLock;

/// The environment variable that arms crash points (tests only).
pub const ENV: &str = "COHORT_SYNC_CRASH_AT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Kill,
    Term,
    Stop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Armed {
    name: String,
    hit: u64,
    signal: Signal,
}

struct Points {
    armed: Vec<Armed>,
    hits: Mutex<HashMap<&'static str, u64>>,
}

fn points() -> Option<&'static Points> {
    static POINTS: OnceLock<Option<Points>> = OnceLock::new();
    POINTS
        .get_or_init(|| {
            let spec = std::env::var(ENV).ok()?;
            let armed = parse(&spec);
            Some(Points {
                armed,
                hits: Mutex::new(HashMap::new()),
            })
        })
        .as_ref()
}

fn parse(spec: &str) -> Vec<Armed> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let (point, signal) = match item.rsplit_once(':') {
                Some((p, "term")) => (p, Signal::Term),
                Some((p, "stop")) => (p, Signal::Stop),
                Some((p, "kill")) => (p, Signal::Kill),
                _ => (item, Signal::Kill),
            };
            let (name, hit) = match point.split_once('#') {
                Some((n, h)) => (n, h.parse().unwrap_or(1)),
                None => (point, 1),
            };
            Armed {
                name: name.to_string(),
                hit,
                signal,
            }
        })
        .collect()
}

/// Marks the crash point `name`; signals the process if a test armed it for this pass.
pub fn point(name: &'static str) {
    let Some(p) = points() else {
        return;
    };
    let n = {
        let mut hits = p.hits.lock().unwrap_or_else(|e| e.into_inner());
        let n = hits.entry(name).or_insert(0);
        *n += 1;
        *n
    };
    tracing::trace!("crash point {name} #{n}");
    let Some(armed) = p.armed.iter().find(|a| a.name == name && a.hit == n) else {
        return;
    };
    eprintln!(
        "cohort-sync: crash point {name} #{n} reached ({ENV}): sending {:?} to itself",
        armed.signal
    );
    send(armed.signal);
}

#[cfg(unix)]
fn send(signal: Signal) {
    let sig = match signal {
        Signal::Kill => libc::SIGKILL,
        Signal::Term => libc::SIGTERM,
        Signal::Stop => libc::SIGSTOP,
    };
    // SAFETY: kill(2) on our own pid with a valid signal number has no memory effects.
    unsafe {
        libc::kill(libc::getpid(), sig);
    }
}

#[cfg(not(unix))]
fn send(signal: Signal) {
    if signal == Signal::Kill {
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_hits_and_signals() {
        assert_eq!(
            parse("a, b#3:term ,c#2:kill,d:other"),
            vec![
                Armed {
                    name: "a".into(),
                    hit: 1,
                    signal: Signal::Kill
                },
                Armed {
                    name: "b".into(),
                    hit: 3,
                    signal: Signal::Term
                },
                Armed {
                    name: "c".into(),
                    hit: 2,
                    signal: Signal::Kill
                },
                Armed {
                    name: "d:other".into(),
                    hit: 1,
                    signal: Signal::Kill
                },
            ]
        );
    }
}

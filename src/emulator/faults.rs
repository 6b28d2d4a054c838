//! Fault injection: rules that target a path substring, fire `count` times, then disarm.
//! Armed from the config, the `--fault KIND:PATH:COUNT` flag or `POST /_emulator/faults`.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// What a fault does to the matching request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer a 5xx (`status`, default 500) with Amplitude's error JSON.
    ServerError,
    /// Answer 429 with `Retry-After` (`retry_after_secs`, default 1, scaled).
    RateLimit,
    /// Send part of a 200 body without a length, then abort the connection.
    Reset,
    /// Promise the whole body in `Content-Length`, send part of it, then close.
    Truncate,
    /// `request-status` answers `JOB INPROGRESS` although the job is done.
    SlowJob,
    /// `/file` hands out a link that has already expired, or the presigned listener
    /// refuses a valid link as expired.
    ExpiredLink,
}

impl FaultKind {
    pub fn parse(s: &str) -> Option<FaultKind> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }
}

/// One armed fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    pub kind: FaultKind,
    /// Fires on requests whose path contains this (empty: every API/presign request).
    #[serde(default)]
    pub path_contains: String,
    /// Fires this many times, then disarms.
    #[serde(default = "one")]
    pub count: u32,
    /// `server_error`: the status to answer (500..=599).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `rate_limit`: the `Retry-After` in Amplitude seconds (scaled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<f64>,
    /// `reset` / `truncate`: bytes sent before the cut (default half the body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_bytes: Option<u64>,
}

fn one() -> u32 {
    1
}

impl FaultRule {
    pub fn new(kind: FaultKind, path_contains: impl Into<String>, count: u32) -> Self {
        FaultRule {
            kind,
            path_contains: path_contains.into(),
            count,
            status: None,
            retry_after_secs: None,
            after_bytes: None,
        }
    }

    /// Parses `KIND:PATH:COUNT` (the CLI flag); COUNT defaults to 1.
    pub fn parse_flag(text: &str) -> Result<FaultRule, String> {
        let mut parts = text.splitn(3, ':');
        let kind_text = parts.next().unwrap_or_default();
        let kind = FaultKind::parse(kind_text).ok_or_else(|| {
            format!(
                "unknown fault kind {kind_text:?}: use server_error, rate_limit, reset, \
                 truncate, slow_job or expired_link"
            )
        })?;
        let path = parts.next().unwrap_or_default();
        let count = match parts.next() {
            None | Some("") => 1,
            Some(c) => c
                .parse()
                .map_err(|_| format!("fault count {c:?} is not a number"))?,
        };
        Ok(FaultRule::new(kind, path, count))
    }

    pub fn validate(&self) -> Result<(), String> {
        if let Some(s) = self.status
            && !(500..=599).contains(&s)
        {
            return Err(format!("status {s} is not a 5xx"));
        }
        if let Some(r) = self.retry_after_secs
            && !(r.is_finite() && r >= 0.0)
        {
            return Err("retry_after_secs must be a non-negative number".into());
        }
        Ok(())
    }
}

/// The armed rules, shared by both listeners.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<Vec<FaultRule>>,
}

impl Faults {
    pub fn new(rules: Vec<FaultRule>) -> Self {
        Faults {
            rules: Mutex::new(rules),
        }
    }

    pub fn add(&self, rule: FaultRule) {
        if rule.count > 0 {
            self.lock().push(rule);
        }
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    pub fn list(&self) -> Vec<FaultRule> {
        self.lock().clone()
    }

    /// Fires the first armed rule of one of `kinds` matching `path`: spends one of its
    /// shots and returns a copy.
    pub fn take(&self, kinds: &[FaultKind], path: &str) -> Option<FaultRule> {
        let mut rules = self.lock();
        let idx = rules
            .iter()
            .position(|r| kinds.contains(&r.kind) && path.contains(&r.path_contains))?;
        let rule = rules[idx].clone();
        rules[idx].count -= 1;
        if rules[idx].count == 0 {
            rules.remove(idx);
        }
        Some(rule)
    }

    /// Whether a rule of one of `kinds` is armed for `path` (spends nothing).
    pub fn armed(&self, kinds: &[FaultKind], path: &str) -> bool {
        self.lock()
            .iter()
            .any(|r| kinds.contains(&r.kind) && path.contains(&r.path_contains))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<FaultRule>> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_fire_count_times_then_disarm() {
        let f = Faults::new(vec![FaultRule::new(FaultKind::ServerError, "/file", 2)]);
        assert!(
            f.take(&[FaultKind::ServerError], "/api/3/cohorts")
                .is_none()
        );
        assert!(f.take(&[FaultKind::Reset], "/x/file").is_none());
        assert!(f.take(&[FaultKind::ServerError], "/x/file").is_some());
        assert!(f.take(&[FaultKind::ServerError], "/x/file").is_some());
        assert!(f.take(&[FaultKind::ServerError], "/x/file").is_none());
    }

    #[test]
    fn flag_syntax() {
        let r = FaultRule::parse_flag("reset:/file:3").expect("valid");
        assert_eq!(
            (r.kind, r.path_contains.as_str(), r.count),
            (FaultKind::Reset, "/file", 3)
        );
        assert_eq!(
            FaultRule::parse_flag("slow_job:request-status").map(|r| r.count),
            Ok(1)
        );
        assert!(FaultRule::parse_flag("boom:/x:1").is_err());
        assert!(FaultRule::parse_flag("reset:/x:many").is_err());
    }
}

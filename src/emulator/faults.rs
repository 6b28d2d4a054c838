//! Fault injection: rules that target a path substring, fire `count` times, then disarm.
//! Armed from the config, the `--fault KIND:PATH:COUNT` flag or `POST /_emulator/faults`.
//! The flag arms a rule with every optional field at its default; JSON and fixtures may
//! set `status`, `retry_after_secs`, `after_bytes`, `body`, `delay_secs` and
//! `chunk_bytes`, each only on the kinds that use it.

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
    /// A 200 answer's body is replaced by `body` (default [`DEFAULT_BODY`]), sent as is.
    Body,
    /// `request-status` answers 200 `JOB FAILED`.
    JobFailed,
    /// `request-status` answers 200 with the async status in `body` (default
    /// [`DEFAULT_UNKNOWN_STATUS`]).
    UnknownStatus,
    /// Answer 404 with Amplitude's error JSON instead of the handler.
    NotFound,
    /// Answer a 4xx (`status`, default 400) with Amplitude's error JSON.
    ClientError,
    /// Handle the request normally, then hold the answer `delay_secs` (default
    /// [`DEFAULT_STALL_SECS`], scaled) before sending it.
    Stall,
    /// Send a 200 body in pieces of `chunk_bytes` (default [`DEFAULT_TRICKLE_BYTES`]) with
    /// a pause of `delay_secs` (default [`DEFAULT_TRICKLE_SECS`], scaled) before each: a
    /// server that is never silent long enough for a read timeout, yet never done.
    Trickle,
}

/// The body a `body` fault sends when the rule sets none.
pub const DEFAULT_BODY: &str = "<html><body>Error</body></html>";
/// The async status an `unknown_status` fault reports when the rule sets none.
pub const DEFAULT_UNKNOWN_STATUS: &str = "JOB CANCELLED";
/// How long a `stall` fault holds the answer when the rule sets no `delay_secs`.
pub const DEFAULT_STALL_SECS: f64 = 30.0;
/// The pause before each piece of a `trickle` body when the rule sets no `delay_secs`.
pub const DEFAULT_TRICKLE_SECS: f64 = 2.0;
/// The piece size of a `trickle` body when the rule sets no `chunk_bytes`.
pub const DEFAULT_TRICKLE_BYTES: u64 = 64;
/// Longest delay or Retry-After a rule may set, in Amplitude seconds (a day).
pub const MAX_FAULT_SECS: f64 = 86_400.0;

impl FaultKind {
    pub fn parse(s: &str) -> Option<FaultKind> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }

    /// The snake_case name used in JSON, fixtures and the flag.
    pub fn name(self) -> String {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::String(s)) => s,
            _ => format!("{self:?}"),
        }
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
    /// `server_error`: the status to answer (500..=599); `client_error`: (400..=499).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `rate_limit`: the `Retry-After` in Amplitude seconds (scaled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<f64>,
    /// `reset` / `truncate`: bytes sent before the cut (default half the body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_bytes: Option<u64>,
    /// `body`: the replacement body; `unknown_status`: the async status reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// `stall`: how long the answer is held; `trickle`: the pause before each piece; in
    /// Amplitude seconds (scaled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_secs: Option<f64>,
    /// `trickle`: bytes per piece (≥ 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_bytes: Option<u64>,
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
            body: None,
            delay_secs: None,
            chunk_bytes: None,
        }
    }

    /// Parses `KIND:PATH:COUNT` (the CLI flag); COUNT defaults to 1.
    pub fn parse_flag(text: &str) -> Result<FaultRule, String> {
        let mut parts = text.splitn(3, ':');
        let kind_text = parts.next().unwrap_or_default();
        let kind = FaultKind::parse(kind_text).ok_or_else(|| {
            format!(
                "unknown fault kind {kind_text:?}: use server_error, client_error, \
                 not_found, rate_limit, reset, truncate, body, stall, trickle, slow_job, \
                 job_failed, unknown_status or expired_link"
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

    /// Checks each optional field against the kind: a field the kind does not use is an
    /// error (it would be silently ignored), and a used one must hold a usable value.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_status()?;
        if self.retry_after_secs.is_some() && self.kind != FaultKind::RateLimit {
            return Err(self.unused("retry_after_secs"));
        }
        non_negative_secs("retry_after_secs", self.retry_after_secs)?;
        if self.after_bytes.is_some()
            && !matches!(self.kind, FaultKind::Reset | FaultKind::Truncate)
        {
            return Err(self.unused("after_bytes"));
        }
        if self.body.is_some() && !matches!(self.kind, FaultKind::Body | FaultKind::UnknownStatus) {
            return Err(self.unused("body"));
        }
        if self.delay_secs.is_some() && !matches!(self.kind, FaultKind::Stall | FaultKind::Trickle)
        {
            return Err(self.unused("delay_secs"));
        }
        if self.chunk_bytes.is_some() && self.kind != FaultKind::Trickle {
            return Err(self.unused("chunk_bytes"));
        }
        if self.chunk_bytes == Some(0) {
            return Err("chunk_bytes must be at least 1".into());
        }
        non_negative_secs("delay_secs", self.delay_secs)
    }

    /// `status` is a 5xx for `server_error`, a 4xx for `client_error`, unset otherwise.
    fn validate_status(&self) -> Result<(), String> {
        let Some(s) = self.status else {
            return Ok(());
        };
        let (range, class) = match self.kind {
            FaultKind::ServerError => (500..=599, "5xx"),
            FaultKind::ClientError => (400..=499, "4xx"),
            _ => return Err(self.unused("status")),
        };
        if range.contains(&s) {
            Ok(())
        } else {
            Err(format!("status {s} is not a {class}"))
        }
    }

    fn unused(&self, field: &str) -> String {
        format!("{field} does not apply to a {} fault", self.kind.name())
    }
}

fn non_negative_secs(field: &str, value: Option<f64>) -> Result<(), String> {
    match value {
        Some(v) if !(v.is_finite() && (0.0..=MAX_FAULT_SECS).contains(&v)) => Err(format!(
            "{field} must be a number of seconds in 0..={MAX_FAULT_SECS}"
        )),
        _ => Ok(()),
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

    #[test]
    fn flag_accepts_every_new_kind_with_fields_unset() {
        let cases = [
            ("body:/file:2", FaultKind::Body),
            ("job_failed:request-status:1", FaultKind::JobFailed),
            ("unknown_status:request-status:1", FaultKind::UnknownStatus),
            ("not_found:/request/:1", FaultKind::NotFound),
            (
                "client_error:/api/3/cohorts/membership:3",
                FaultKind::ClientError,
            ),
            ("stall:/api/5/cohorts/request/:1", FaultKind::Stall),
        ];
        for (flag, kind) in cases {
            let r = FaultRule::parse_flag(flag).expect(flag);
            assert_eq!(r.kind, kind, "{flag}");
            assert_eq!(
                (r.status, r.body.as_deref(), r.delay_secs),
                (None, None, None)
            );
            assert_eq!(r.validate(), Ok(()), "{flag}");
            assert_eq!(FaultKind::parse(&kind.name()), Some(kind));
        }
    }

    #[test]
    fn unknown_kind_message_lists_the_new_kinds() {
        let err = FaultRule::parse_flag("explode:/x:1").expect_err("unknown kind");
        for kind in [
            "client_error",
            "not_found",
            "body",
            "stall",
            "job_failed",
            "unknown_status",
        ] {
            assert!(err.contains(kind), "{err}");
        }
    }

    fn with_status(kind: FaultKind, status: u16) -> FaultRule {
        FaultRule {
            status: Some(status),
            ..FaultRule::new(kind, "", 1)
        }
    }

    #[test]
    fn status_is_checked_per_kind() {
        assert_eq!(with_status(FaultKind::ServerError, 503).validate(), Ok(()));
        assert!(with_status(FaultKind::ServerError, 413).validate().is_err());
        assert_eq!(with_status(FaultKind::ClientError, 413).validate(), Ok(()));
        assert_eq!(with_status(FaultKind::ClientError, 400).validate(), Ok(()));
        assert_eq!(with_status(FaultKind::ClientError, 499).validate(), Ok(()));
        assert_eq!(
            with_status(FaultKind::ClientError, 500).validate(),
            Err("status 500 is not a 4xx".into())
        );
        assert!(with_status(FaultKind::ClientError, 302).validate().is_err());
        assert_eq!(
            with_status(FaultKind::NotFound, 404).validate(),
            Err("status does not apply to a not_found fault".into())
        );
    }

    #[test]
    fn body_and_delay_only_on_the_kinds_that_use_them() {
        let body = |kind| FaultRule {
            body: Some("x".into()),
            ..FaultRule::new(kind, "", 1)
        };
        assert_eq!(body(FaultKind::Body).validate(), Ok(()));
        assert_eq!(body(FaultKind::UnknownStatus).validate(), Ok(()));
        assert!(body(FaultKind::JobFailed).validate().is_err());
        let delay = |kind, secs| FaultRule {
            delay_secs: Some(secs),
            ..FaultRule::new(kind, "", 1)
        };
        assert_eq!(delay(FaultKind::Stall, 0.5).validate(), Ok(()));
        assert!(delay(FaultKind::Stall, -1.0).validate().is_err());
        assert!(delay(FaultKind::Stall, f64::NAN).validate().is_err());
        assert!(delay(FaultKind::SlowJob, 1.0).validate().is_err());
        assert!(delay(FaultKind::Stall, 1e300).validate().is_err());
        assert_eq!(delay(FaultKind::Trickle, 2.0).validate(), Ok(()));
        let chunk = |kind, n| FaultRule {
            chunk_bytes: Some(n),
            ..FaultRule::new(kind, "", 1)
        };
        assert_eq!(chunk(FaultKind::Trickle, 16).validate(), Ok(()));
        assert!(chunk(FaultKind::Trickle, 0).validate().is_err());
        assert!(chunk(FaultKind::Body, 16).validate().is_err());
        assert_eq!(
            FaultRule::parse_flag("trickle:/file:1").map(|r| r.kind),
            Ok(FaultKind::Trickle)
        );
    }

    #[test]
    fn json_shape_of_the_new_fields() {
        let rule: FaultRule = serde_json::from_str(
            r#"{"kind":"stall","path_contains":"/request/","count":2,"delay_secs":100}"#,
        )
        .expect("stall rule");
        assert_eq!(rule.delay_secs, Some(100.0));
        let rule: FaultRule =
            serde_json::from_str(r#"{"kind":"body","path_contains":"/file","body":"a,b\n"}"#)
                .expect("body rule");
        assert_eq!((rule.count, rule.body.as_deref()), (1, Some("a,b\n")));
        let text = serde_json::to_string(&FaultRule::new(FaultKind::JobFailed, "x", 1))
            .expect("serializes");
        assert_eq!(
            text,
            r#"{"kind":"job_failed","path_contains":"x","count":1}"#
        );
    }
}

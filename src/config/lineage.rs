//! `[lineage]` (optional, both kinds): where the pipeline's OpenLineage run events go — an
//! HTTP endpoint (`url`, e.g. Marquez's `/api/v1/lineage`) or a file of one JSON event a
//! line (`file`) — and the job's namespace and name. Emitted by [`crate::lineage`].

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;

use super::values::Secret;

/// Default `namespace` of the job.
pub const DEFAULT_NAMESPACE: &str = "cohort-sync";

/// Where and how to send OpenLineage run events (START, then COMPLETE, FAIL or ABORT).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Lineage {
    /// HTTP(S) endpoint each event is POSTed to as JSON, e.g.
    /// `https://marquez.example.com/api/v1/lineage`. Exclusive with `file`.
    #[serde(default)]
    pub url: Option<String>,
    /// Sent as `Authorization: Bearer KEY` with `url` (write it as `${VAR}`; never logged,
    /// never in an event). Needs `https://` unless the host is loopback.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// A local file each event is appended to, one JSON object a line (NDJSON); relative
    /// to the current directory. Exclusive with `url`.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// The job's namespace. Default `cohort-sync`.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The job's name. Default: the pipeline's name.
    #[serde(default)]
    pub job_name: Option<String>,
    /// Longest wait in seconds for one event to be sent (1..=60): lineage never holds a
    /// sync up longer. Default 5.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 60))]
    pub timeout_secs: u64,
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_string()
}

fn default_timeout() -> u64 {
    5
}

/// Allowed `timeout_secs`.
pub(crate) const TIMEOUT_SECS: (u64, u64) = (1, 60);

/// Where events go, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineageTransport {
    Http { url: String },
    File { path: PathBuf },
}

impl Lineage {
    /// The transport (checked at load: exactly one of `url`, `file`).
    pub fn transport(&self) -> Option<LineageTransport> {
        match (&self.url, &self.file) {
            (Some(url), None) => Some(LineageTransport::Http { url: url.clone() }),
            (None, Some(path)) => Some(LineageTransport::File { path: path.clone() }),
            _ => None,
        }
    }
}

/// Why `url` cannot be used, if it cannot.
pub(crate) fn check_url(url: &str, has_key: bool) -> Result<(), String> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "lineage.url {url:?} holds whitespace or a control character"
        ));
    }
    let rest = if let Some(rest) = url.strip_prefix("https://") {
        rest
    } else if let Some(rest) = url.strip_prefix("http://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = if authority.starts_with('[') {
            authority
                .find(']')
                .map_or(authority, |end| &authority[..=end])
        } else {
            authority.rsplit_once(':').map_or(authority, |(h, _)| h)
        };
        if has_key && !crate::amplitude::is_loopback_host(host) {
            return Err(format!(
                "lineage.url {url:?} is plain http:// to a host that is not loopback: lineage.api_key would travel unencrypted; use https://"
            ));
        }
        rest
    } else {
        return Err(format!(
            "lineage.url {url:?} must start with http:// or https:// (for a file of events, set lineage.file instead)"
        ));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() {
        return Err(format!(
            "lineage.url {url:?} needs a host, like https://marquez.example.com/api/v1/lineage"
        ));
    }
    if authority.contains('@') {
        return Err(
            "lineage.url must not hold user info (user@host): set lineage.api_key = \"${VAR}\" instead"
                .to_string(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(check_url("https://m.example.com/api/v1/lineage", true).is_ok());
        assert!(check_url("http://127.0.0.1:5000/api/v1/lineage", true).is_ok());
        assert!(check_url("http://marquez:5000/api/v1/lineage", false).is_ok());
        assert!(check_url("http://marquez:5000/api/v1/lineage", true).is_err());
        assert!(check_url("ftp://x/y", false).is_err());
        assert!(check_url("https:///x", false).is_err());
        assert!(check_url("https://u:p@x/y", false).is_err());
    }
}

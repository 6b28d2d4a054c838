//! Typed errors of the Amplitude client. None of them can carry credentials: request
//! URLs hold no secrets except a presigned link's signature, which is stripped.

use std::time::Duration;

use super::client::MAX_RETRY_AFTER;
use super::types::ErrorBody;
use crate::text::escape;

/// What went wrong talking to Amplitude, sorted by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401/403: the api key / secret key pair was refused. Amplitude answers 403 with
    /// `metadata.details` "Invalid API/Secret Key combination" (a wrong secret) or
    /// "Invalid API Key" (a key this host does not know); the message says which setting
    /// to check.
    #[error("authentication failed (HTTP {status}): {}; {}", describe(.body), auth_hint(.body))]
    Auth {
        status: u16,
        body: Option<ErrorBody>,
    },

    /// 404: the cohort or request id does not exist (or is no longer valid).
    #[error("{what} not found (HTTP 404): {}", describe(.body))]
    NotFound {
        what: String,
        body: Option<ErrorBody>,
    },

    /// 429 for a rate limit or concurrent access to one cohort; retry after the given time.
    #[error("rate limited (HTTP 429, retry after {}): {}", retry_text(.retry_after), describe(.body))]
    RateLimited {
        retry_after: Option<Duration>,
        body: Option<ErrorBody>,
    },

    /// The monthly download quota is spent; nothing helps before it resets.
    #[error("monthly cohort download quota exhausted: {}", describe(.body))]
    QuotaExhausted { body: Option<ErrorBody> },

    /// 400/413/422...: Amplitude rejected the request; its error JSON says why.
    #[error("invalid request (HTTP {status}): {}", describe(.body))]
    InvalidRequest {
        status: u16,
        body: Option<ErrorBody>,
    },

    /// 5xx.
    #[error("server error (HTTP {status}) from {endpoint}: {text}")]
    Server {
        status: u16,
        endpoint: String,
        text: String,
    },

    /// A status or body the reference does not document for this endpoint.
    #[error("unexpected response (HTTP {status}) from {endpoint}: {text}")]
    Unexpected {
        status: u16,
        endpoint: String,
        text: String,
    },

    /// The presigned download link answered 403 / expired: ask `/file` again.
    #[error(
        "download link expired or refused (HTTP {status}); ask /file again with the same request id"
    )]
    LinkExpired { status: u16 },

    /// Connection refused, reset, timed out, or a body that ended early.
    /// `maybe_delivered`: the request may have reached Amplitude (the connection was made
    /// before it failed), so its effect — a spent download — is unknown.
    #[error("transport error talking to {endpoint}: {message}")]
    Transport {
        endpoint: String,
        message: String,
        maybe_delivered: bool,
    },

    /// The run is stopping (SIGTERM/SIGINT) and this call was not sent.
    #[error("not sent: the run is stopping")]
    Stopped,

    /// A 429 whose `Retry-After` asks for more than [`MAX_RETRY_AFTER`]: not waited for
    /// (a rate limit is never that long; a spent month is told by the usage endpoint).
    #[error(
        "{endpoint}: HTTP {status} with Retry-After \"{}\" ({}), longer than the {} this tool waits at most; not retried: {}",
        escape(.header), wait_text(.wait), wait_text(&MAX_RETRY_AFTER), describe(.body.as_ref())
    )]
    RetryAfterTooLong {
        status: u16,
        endpoint: String,
        /// The header as sent.
        header: String,
        wait: Duration,
        /// Boxed: the error stays small.
        body: Box<Option<ErrorBody>>,
    },

    /// `/file` redirected somewhere this client does not go: only `https://` (or
    /// `http://` to a loopback host, the emulator's) is followed.
    #[error(
        "download file: refused the redirect to {}: only https:// (or http:// to a loopback host) is followed; not retried",
        escape(.target)
    )]
    UnsafeRedirect { target: String },

    /// An id that is not one of Amplitude's ([`super::ids`]), from a pipeline, the state or
    /// Amplitude's own answer. `counted`: it came in the answer to the quota-spending
    /// request, which Amplitude counted.
    #[error("{message}")]
    BadId { message: String, counted: bool },

    /// A file body that passed a download limit (`download.deadline_secs`,
    /// `download.min_bytes_per_sec`): retryable with the same request id.
    #[error("{endpoint}: {message}")]
    TooSlow { endpoint: String, message: String },
}

impl ApiError {
    /// Whether retrying the same call later may succeed (without spending more quota).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ApiError::RateLimited { .. }
                | ApiError::Server { .. }
                | ApiError::Transport { .. }
                | ApiError::LinkExpired { .. }
                | ApiError::TooSlow { .. }
        )
    }

    /// Whether the call may have had its effect although no answer says so (a transport
    /// error after the connection was made, or a 5xx from a proxy or Amplitude).
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            ApiError::Transport {
                maybe_delivered: true,
                ..
            } | ApiError::Server { .. }
                | ApiError::BadId { counted: true, .. }
        )
    }

    /// Builds a transport error from reqwest's, without the URL's query string.
    pub(crate) fn transport(endpoint: &str, err: reqwest::Error) -> ApiError {
        let maybe_delivered = !err.is_connect() && !err.is_builder();
        let err = err.without_url();
        let mut message = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        ApiError::Transport {
            endpoint: endpoint.to_string(),
            message,
            maybe_delivered,
        }
    }
}

fn describe(body: &Option<ErrorBody>) -> String {
    match body {
        Some(b) => b.to_string(),
        None => "no error details".to_string(),
    }
}

/// What to check after a refused key pair.
fn auth_hint(body: &Option<ErrorBody>) -> &'static str {
    let text = body.as_ref().map(|b| b.to_string()).unwrap_or_default();
    if text.contains("Invalid API Key") {
        "check AMPLITUDE_API_KEY / AMPLITUDE_SECRET_KEY (or the pipeline's connection.api_key / \
         secret_key): this host does not know the API key — is it the project's key, and the \
         project's region (a US project's key is unknown on the EU host and vice versa)?"
    } else {
        "check AMPLITUDE_API_KEY / AMPLITUDE_SECRET_KEY (or the pipeline's connection.api_key / \
         secret_key): both must be the same project's keys (Amplitude: Settings → Projects → \
         the project → General)"
    }
}

/// A wait for people: `42.0s`, or minutes, hours, days, years when that long.
fn wait_text(d: &Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 120.0 {
        format!("{secs:.1}s")
    } else if secs < 7_200.0 {
        format!("{:.0} minutes", secs / 60.0)
    } else if secs < 172_800.0 {
        format!("{:.0} hours", secs / 3_600.0)
    } else if secs < 3.0 * 31_557_600.0 {
        format!("{:.0} days", secs / 86_400.0)
    } else {
        format!("{:.0} years", secs / 31_557_600.0)
    }
}

fn retry_text(d: &Option<Duration>) -> String {
    match d {
        Some(d) => format!("{:.1}s", d.as_secs_f64()),
        None => "unspecified".to_string(),
    }
}

//! The typed Amplitude client: one async function per endpoint of the Behavioral Cohorts API.
//!
//! Every request carries HTTP Basic credentials except the download from a presigned URL,
//! which is followed by hand (redirects are never followed automatically) so that no
//! Amplitude credential reaches another host — and only to `https://` (or `http://` on a
//! loopback host, the emulator's): any other target fails at once, not retried.
//!
//! What a server sends is not trusted: ids are checked against Amplitude's alphabet
//! ([`super::ids`]) before they go into a path, in either direction; a `Retry-After` longer
//! than [`MAX_RETRY_AFTER`] is never waited for; answers are read up to a size
//! ([`MAX_ANSWER_BYTES`], [`MAX_ERROR_BYTES`]); a file body has a deadline and a minimum
//! rate ([`TransferLimits`]); error text is quoted with control characters escaped.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use reqwest::{Method, RequestBuilder, Response, StatusCode, header};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::credentials::Credentials;
use super::error::ApiError;
use super::ids::{IdRole, check_id};
use super::transfer::{TransferLimits, guard};
use super::types::*;
use crate::quota::{AppLimits, RetryPolicy, rate_limited_only, transient};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tokio::sync::OwnedSemaphorePermit;

/// Longest slice of an unexpected response body quoted in an error.
const MAX_QUOTED_BODY: usize = 2_000;
/// Largest JSON answer read (a list of thousands of cohorts is a few MB).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;
/// Largest error body read; the rest is not needed to explain the error.
pub const MAX_ERROR_BYTES: usize = 64 * 1024;

/// How the client connects.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `https://amplitude.com`, the EU host, or the emulator's address.
    pub base_url: String,
    pub credentials: Credentials,
    /// Time allowed to establish a connection.
    pub connect_timeout: Duration,
    /// Longest silence allowed while reading a response (a large download may take
    /// minutes in total: a file body is bounded by `transfer` instead).
    pub read_timeout: Duration,
    /// Deadline and minimum rate of a file body.
    pub transfer: TransferLimits,
}

impl ClientOptions {
    pub fn new(base_url: impl Into<String>, credentials: Credentials) -> Self {
        ClientOptions {
            base_url: base_url.into(),
            credentials,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(120),
            transfer: TransferLimits::default(),
        }
    }
}

/// A job's state as reported by `request-status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    InProgress,
    Completed,
}

/// A cohort file being downloaded: a stream of raw body bytes (possibly gzip).
pub struct FileDownload {
    /// `Content-Encoding` of the response that carried the body, if any.
    pub content_encoding: Option<String>,
    /// `Content-Length` of the body, if announced.
    pub content_length: Option<u64>,
    /// Whether `/file` answered with a redirect to a presigned URL.
    pub redirected: bool,
    pub body: Pin<Box<dyn Stream<Item = Result<Bytes, ApiError>> + Send>>,
}

impl std::fmt::Debug for FileDownload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileDownload")
            .field("content_encoding", &self.content_encoding)
            .field("content_length", &self.content_length)
            .field("redirected", &self.redirected)
            .finish_non_exhaustive()
    }
}

/// Client for one Amplitude project (one api key).
///
/// With [`AmplitudeClient::with_limits`] every call waits for the app's rate limits and
/// concurrency gate; with [`AmplitudeClient::with_retry`] refused calls are retried (429
/// always; 5xx and transport errors only for idempotent calls, never for the
/// quota-spending cohort request). Without them, calls go out at once and fail fast.
#[derive(Debug, Clone)]
pub struct AmplitudeClient {
    http: reqwest::Client,
    base_url: String,
    credentials: Credentials,
    limits: Option<Arc<AppLimits>>,
    retry: RetryPolicy,
    transfer: TransferLimits,
    /// Longest time reading an answer's body once its headers arrived.
    answer_deadline: Duration,
    /// Cancelled when the run stops: waits for a rate-limit slot or a retry end at once
    /// (a call already sent is left to finish).
    stop: Option<CancellationToken>,
    /// Counts the 429 answers (shared with the run: its report and metrics show them).
    answers_429: Option<Arc<AtomicU64>>,
}

impl AmplitudeClient {
    pub fn new(options: ClientOptions) -> Result<Self, ApiError> {
        // Bounded whatever the caller passes: an instant past the clock's range panics.
        let at_most = |d: Duration, max_secs: u64| d.min(Duration::from_secs(max_secs));
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(at_most(options.connect_timeout, 3_600))
            .read_timeout(at_most(options.read_timeout, 86_400))
            .user_agent(concat!("cohort-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::transport("client setup", e))?;
        Ok(AmplitudeClient {
            http,
            base_url: options.base_url.trim_end_matches('/').to_string(),
            credentials: options.credentials,
            limits: None,
            retry: RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            },
            transfer: options.transfer,
            answer_deadline: at_most(options.read_timeout, 86_400).max(Duration::from_secs(1)),
            stop: None,
            answers_429: None,
        })
    }

    /// Paces every call by the app's shared limits.
    pub fn with_limits(mut self, limits: Arc<AppLimits>) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Retries refused calls with this policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Adds one to `counter` for every HTTP 429 answer.
    pub fn with_429_counter(mut self, counter: Arc<AtomicU64>) -> Self {
        self.answers_429 = Some(counter);
        self
    }

    /// Ends waits for rate-limit slots and retries when `stop` is cancelled.
    pub fn with_stop(mut self, stop: CancellationToken) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Waits for `fut` unless the run stops first.
    async fn unless_stopped<T>(
        &self,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, ApiError> {
        match &self.stop {
            Some(stop) => tokio::select! {
                v = fut => Ok(v),
                _ = stop.cancelled() => Err(ApiError::Stopped),
            },
            None => Ok(fut.await),
        }
    }

    async fn call_permit(&self) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
        match &self.limits {
            Some(l) => Ok(Some(self.unless_stopped(l.call_permit()).await?)),
            None => Ok(None),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The api key (names the quota ledger of a project without an app id, hashed).
    pub fn api_key(&self) -> &str {
        self.credentials.api_key()
    }

    /// `GET /api/3/cohorts[?includeSyncInfo=true]`: every discoverable cohort. Costs no quota.
    pub async fn list_cohorts(&self, include_sync_info: bool) -> Result<CohortList, ApiError> {
        self.retry
            .run("list cohorts", self.stop.as_ref(), transient, || async {
                let _permit = self.call_permit().await?;
                let mut rb = self.authed(Method::GET, "/api/3/cohorts");
                if include_sync_info {
                    rb = rb.query(&[("includeSyncInfo", "true")]);
                }
                let resp = self.send("list cohorts", rb).await?;
                expect_json(
                    self.answer_deadline,
                    resp,
                    "list cohorts",
                    "cohort list",
                    &[StatusCode::OK],
                )
                .await
            })
            .await
    }

    /// `GET /api/5/cohorts/request/:id[?props=1&propKeys=..]`: starts an export job.
    /// Spends one of the month's downloads.
    pub async fn request_cohort(
        &self,
        cohort_id: &str,
        props: bool,
        prop_keys: &[String],
    ) -> Result<CohortRequest, ApiError> {
        checked(IdRole::Cohort, cohort_id)?;
        let path = format!("/api/5/cohorts/request/{}", path_segment(cohort_id));
        let what = format!("cohort {cohort_id}");
        // Only 429s are retried: a 5xx or a lost connection may have spent quota already.
        self.retry
            .run(
                "request cohort",
                self.stop.as_ref(),
                rate_limited_only,
                || async {
                    let _permit = match &self.limits {
                        Some(l) => Some(self.unless_stopped(l.cohort_request_permit()).await?),
                        None => None,
                    };
                    // Not sent after a stop: a request spends quota, and nobody would use it.
                    if self.stop.as_ref().is_some_and(|s| s.is_cancelled()) {
                        return Err(ApiError::Stopped);
                    }
                    let mut rb = self.authed(Method::GET, &path);
                    if props || !prop_keys.is_empty() {
                        rb = rb.query(&[("props", "1")]);
                        for key in prop_keys {
                            rb = rb.query(&[("propKeys", key.as_str())]);
                        }
                    }
                    let resp = self.send("request cohort", rb).await?;
                    let answer: Result<CohortRequest, ApiError> = expect_json(
                        self.answer_deadline,
                        resp,
                        "request cohort",
                        &what,
                        &[StatusCode::ACCEPTED, StatusCode::OK],
                    )
                    .await;
                    match answer {
                        Ok(issued) => match check_id(IdRole::Request, &issued.request_id) {
                            Ok(()) => Ok(issued),
                            // Counted by Amplitude, but no call can use it.
                            Err(message) => Err(ApiError::BadId {
                                message: format!(
                                    "Amplitude answered the request for cohort {cohort_id} with an unusable id: {message}"
                                ),
                                counted: true,
                            }),
                        },
                        Err(e @ ApiError::RateLimited {
                            retry_after: None, ..
                        })
                        | Err(e @ ApiError::RetryAfterTooLong { .. }) => {
                            Err(self.month_spent_or(e).await)
                        }
                        Err(e) => Err(e),
                    }
                },
            )
            .await
    }

    /// `GET /api/5/cohorts/request-status/:request_id`: 202 + `JOB INPROGRESS` while
    /// running, 200 + `JOB COMPLETED` when done; anything else is an error with its text.
    pub async fn request_status(&self, request_id: &str) -> Result<JobState, ApiError> {
        checked(IdRole::Request, request_id)?;
        let path = format!("/api/5/cohorts/request-status/{}", path_segment(request_id));
        let what = format!("request {request_id}");
        let (status, parsed) = self
            .retry
            .run("request status", self.stop.as_ref(), transient, || async {
                let _permit = self.call_permit().await?;
                let rb = self.authed(Method::GET, &path);
                let resp = self.send("request status", rb).await?;
                let status = resp.status();
                let parsed: RequestStatus = expect_json(
                    self.answer_deadline,
                    resp,
                    "request status",
                    &what,
                    &[StatusCode::ACCEPTED, StatusCode::OK],
                )
                .await?;
                Ok((status, parsed))
            })
            .await?;
        match (status, parsed.async_status.as_str()) {
            (StatusCode::ACCEPTED, JOB_IN_PROGRESS) => Ok(JobState::InProgress),
            (StatusCode::OK, JOB_COMPLETED) => Ok(JobState::Completed),
            (s, other) => Err(ApiError::Unexpected {
                status: s.as_u16(),
                endpoint: "request status".into(),
                text: format!("async_status \"{}\" for request {request_id}", quote(other)),
            }),
        }
    }

    /// `GET /api/5/cohorts/request/:request_id/file`: the cohort CSV as a byte stream.
    /// A redirect to a presigned URL is followed once, without Amplitude credentials.
    pub async fn download_file(&self, request_id: &str) -> Result<FileDownload, ApiError> {
        checked(IdRole::Request, request_id)?;
        self.retry
            .run("download file", self.stop.as_ref(), transient, || {
                self.download_file_once(request_id)
            })
            .await
    }

    async fn download_file_once(&self, request_id: &str) -> Result<FileDownload, ApiError> {
        let path = format!("/api/5/cohorts/request/{}/file", path_segment(request_id));
        let permit = self.call_permit().await?;
        let rb = self.authed(Method::GET, &path);
        let resp = self.send("download file", rb).await?;
        let status = resp.status();
        if status == StatusCode::OK {
            // The body streams from Amplitude: the request is in flight until it ends.
            return Ok(into_download(
                resp,
                false,
                "download file",
                permit,
                self.transfer,
            ));
        }
        drop(permit);
        if !status.is_redirection() {
            let what = format!("request {request_id}");
            return Err(
                error_from_response(self.answer_deadline, resp, "download file", &what).await,
            );
        }
        let location = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::Unexpected {
                status: status.as_u16(),
                endpoint: "download file".into(),
                text: "redirect without a Location header".into(),
            })?;
        let target = resp
            .url()
            .join(location)
            .map_err(|e| ApiError::Unexpected {
                status: status.as_u16(),
                endpoint: "download file".into(),
                text: format!("unusable redirect Location: {e}"),
            })?;
        if !followable(&target) {
            return Err(ApiError::UnsafeRedirect {
                target: without_query(&target),
            });
        }
        // No basic_auth here: the presigned URL carries its own signature.
        let rb = self.http.get(target);
        let resp = self.send("presigned download", rb).await?;
        let status = resp.status();
        if status == StatusCode::OK {
            return Ok(into_download(
                resp,
                true,
                "presigned download",
                None,
                self.transfer,
            ));
        }
        if status.is_redirection() {
            let next = resp
                .headers()
                .get(header::LOCATION)
                .map(|v| quote(&String::from_utf8_lossy(v.as_bytes())))
                .unwrap_or_else(|| "nowhere".into());
            let next = next.split('?').next().unwrap_or_default().to_string();
            return Err(ApiError::Unexpected {
                status: status.as_u16(),
                endpoint: "presigned download".into(),
                text: format!(
                    "the presigned link redirected again (to {next}); a second redirect is not followed"
                ),
            });
        }
        if status == StatusCode::FORBIDDEN
            || status == StatusCode::GONE
            || status == StatusCode::BAD_REQUEST
        {
            return Err(ApiError::LinkExpired {
                status: status.as_u16(),
            });
        }
        Err(error_from_response(
            self.answer_deadline,
            resp,
            "presigned download",
            "download link",
        )
        .await)
    }

    /// Decides what a 429 to the quota-spending request means, by the numbers rather than
    /// its wording (undocumented): only this endpoint counts towards the month, and a
    /// rate limit says when to come back. Without a `Retry-After` of at most
    /// [`MAX_RETRY_AFTER`] (none, or a longer one: `refusal`), a fresh read of the usage
    /// endpoint decides: the month is spent when it says so; otherwise (or when it cannot
    /// tell) `refusal` stands — a 429 without `Retry-After` is retried with backoff, one
    /// with a longer `Retry-After` fails the call naming it. The runner checks its quota
    /// ledger before it sends a request, so a spent month is caught there too.
    async fn month_spent_or(&self, refusal: ApiError) -> ApiError {
        match self.usage().await {
            Ok(u) if u.remaining() == 0 => ApiError::QuotaExhausted {
                body: match refusal {
                    ApiError::RateLimited { body, .. } => body,
                    ApiError::RetryAfterTooLong { body, .. } => *body,
                    _ => None,
                },
            },
            _ => refusal,
        }
    }

    /// `GET /api/3/cohorts/usage`: this month's download count and limit. Costs no quota.
    pub async fn usage(&self) -> Result<RestDownloadUsage, ApiError> {
        let rb = self.authed(Method::GET, "/api/3/cohorts/usage");
        let resp = self.send("usage", rb).await?;
        let parsed: UsageResponse = expect_json(
            self.answer_deadline,
            resp,
            "usage",
            "usage",
            &[StatusCode::OK],
        )
        .await?;
        Ok(parsed.rest_download)
    }

    /// `POST /api/3/cohorts/upload`: creates a cohort, or replaces one with
    /// `existing_cohort_id`. At most 100,000 ids per call.
    /// Only a 429 is retried: a 5xx or a lost connection may have created the cohort.
    pub async fn upload(&self, body: &UploadRequest) -> Result<UploadResponse, ApiError> {
        if let Some(id) = &body.existing_cohort_id {
            checked(IdRole::Cohort, id)?;
        }
        let what = match &body.existing_cohort_id {
            Some(id) => format!("cohort {id}"),
            None => "upload target".to_string(),
        };
        self.retry
            .run("upload", self.stop.as_ref(), rate_limited_only, || async {
                let _permit = self.call_permit().await?;
                let rb = self
                    .authed(Method::POST, "/api/3/cohorts/upload")
                    .json(body);
                let resp = self.send("upload", rb).await?;
                let answer: UploadResponse = expect_json(
                    self.answer_deadline,
                    resp,
                    "upload",
                    &what,
                    &[StatusCode::OK, StatusCode::CREATED],
                )
                .await?;
                check_id(IdRole::Cohort, &answer.cohort_id).map_err(|message| ApiError::BadId {
                    message: format!(
                        "Amplitude answered the upload with an unusable id: {message}"
                    ),
                    counted: false,
                })?;
                Ok(answer)
            })
            .await
    }

    /// `POST /api/3/cohorts/membership`: adds / removes ids. At most 100,000 ids per call.
    /// A 429 (rate limit, or the cohort busy with another membership call) is retried
    /// after backoff; nothing else is, so the caller's journal decides about the rest.
    pub async fn update_membership(
        &self,
        body: &MembershipRequest,
    ) -> Result<MembershipResponse, ApiError> {
        checked(IdRole::Cohort, &body.cohort_id)?;
        let what = format!("cohort {}", body.cohort_id);
        self.retry
            .run(
                "membership",
                self.stop.as_ref(),
                rate_limited_only,
                || async {
                    let _permit = self.call_permit().await?;
                    let rb = self
                        .authed(Method::POST, "/api/3/cohorts/membership")
                        .json(body);
                    let resp = self.send("membership", rb).await?;
                    expect_json(
                        self.answer_deadline,
                        resp,
                        "membership",
                        &what,
                        &[StatusCode::OK],
                    )
                    .await
                },
            )
            .await
    }

    fn authed(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.base_url, path))
            .basic_auth(
                self.credentials.api_key(),
                Some(self.credentials.secret_key()),
            )
    }

    async fn send(&self, endpoint: &str, rb: RequestBuilder) -> Result<Response, ApiError> {
        let resp = rb
            .send()
            .await
            .map_err(|e| ApiError::transport(endpoint, e))?;
        // The path only: a presigned link's query string is its signature.
        tracing::debug!(
            endpoint,
            path = resp.url().path(),
            status = resp.status().as_u16(),
            "amplitude answered"
        );
        if resp.status() == StatusCode::TOO_MANY_REQUESTS
            && let Some(counter) = &self.answers_429
        {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(resp)
    }
}

/// The longest `Retry-After` waited for: 15 minutes (a rate limit's windows are one and
/// ten minutes). Up to it a 429 is a rate limit: waited out and retried. Longer is never
/// waited for: on the cohort request the usage endpoint decides (the month is spent: the
/// cohort is deferred), anywhere else — or when the usage says downloads are left — the
/// call fails at once naming the `Retry-After`. A server's `Retry-After` is real time: the
/// maximum does not shrink with `COHORT_SYNC_TIME_SCALE`.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

/// An id checked before it goes into a path: a typed error naming it.
fn checked(role: IdRole, id: &str) -> Result<(), ApiError> {
    check_id(role, id).map_err(|message| ApiError::BadId {
        message,
        counted: false,
    })
}

/// Whether a redirect may be followed: `https://`, or `http://` to a loopback host.
fn followable(target: &reqwest::Url) -> bool {
    match target.scheme() {
        "https" => target.host().is_some(),
        "http" => target.host_str().is_some_and(is_loopback_host),
        _ => false,
    }
}

/// `localhost`, `127.x.x.x` or `[::1]` (as a URL writes the host).
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A URL for a message: without its query (a presigned link's signature) or user info.
fn without_query(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    let _ = u.set_username("");
    let _ = u.set_password(None);
    quote(u.as_str())
}

/// Percent-encodes an id for use as one path segment.
fn path_segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn into_download(
    resp: Response,
    redirected: bool,
    endpoint: &'static str,
    permit: Option<OwnedSemaphorePermit>,
    transfer: TransferLimits,
) -> FileDownload {
    let content_encoding = resp
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.to_ascii_lowercase());
    let content_length = resp.content_length();
    let body = resp.bytes_stream().map_err(move |e| {
        // Keeps the in-flight slot until the stream is dropped.
        let _held = &permit;
        ApiError::transport(endpoint, e)
    });
    let body = guard(body, transfer, endpoint).boxed();
    FileDownload {
        content_encoding,
        content_length,
        redirected,
        body,
    }
}

/// Reads a JSON answer with one of the expected statuses, or turns the response into
/// the matching typed error.
async fn expect_json<T: DeserializeOwned>(
    deadline: Duration,
    resp: Response,
    endpoint: &str,
    what: &str,
    ok: &[StatusCode],
) -> Result<T, ApiError> {
    let status = resp.status();
    if !ok.contains(&status) {
        return Err(error_from_response(deadline, resp, endpoint, what).await);
    }
    let text = read_text(resp, MAX_ANSWER_BYTES, endpoint, deadline).await?;
    serde_json::from_str(&text).map_err(|e| ApiError::Unexpected {
        status: status.as_u16(),
        endpoint: endpoint.to_string(),
        text: format!("{e} in body: {}", quote(&text)),
    })
}

/// Maps an error status (and Amplitude's error JSON, when present) to a typed error.
pub(crate) async fn error_from_response(
    deadline: Duration,
    resp: Response,
    endpoint: &str,
    what: &str,
) -> ApiError {
    let status = resp.status();
    let header = resp
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let retry_after = header
        .as_deref()
        .and_then(|h| parse_retry_after(h, chrono::Utc::now()));
    let text = match read_text(resp, MAX_ERROR_BYTES, endpoint, deadline).await {
        Ok(t) => t,
        Err(e) => return e,
    };
    match classify(status, retry_after, &text, endpoint, what) {
        ApiError::RateLimited {
            retry_after: Some(wait),
            body,
        } if wait > MAX_RETRY_AFTER => ApiError::RetryAfterTooLong {
            status: status.as_u16(),
            endpoint: endpoint.to_string(),
            header: quote(header.as_deref().unwrap_or_default()),
            wait,
            body: Box::new(body),
        },
        other => other,
    }
}

/// The body as text (invalid UTF-8 replaced), read up to `limit` bytes (the rest is
/// dropped unread, noted by `… (more than N bytes)`) and within `deadline` (an answer
/// that trickles in is a transport error, retried where the call may be).
async fn read_text(
    mut resp: Response,
    limit: usize,
    endpoint: &str,
    deadline: Duration,
) -> Result<String, ApiError> {
    let mut buf: Vec<u8> = Vec::new();
    let mut cut = false;
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let next = tokio::time::timeout_at(until, resp.chunk()).await;
        let chunk = match next {
            Err(_) => {
                return Err(ApiError::Transport {
                    endpoint: endpoint.to_string(),
                    message: format!(
                        "the answer did not arrive whole within {}s (connection.read_timeout_secs); {} bytes received",
                        deadline.as_secs(),
                        buf.len()
                    ),
                    maybe_delivered: true,
                });
            }
            Ok(Err(e)) => return Err(ApiError::transport(endpoint, e)),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => chunk,
        };
        let room = limit - buf.len();
        if chunk.len() > room {
            buf.extend_from_slice(&chunk[..room]);
            cut = true;
            break;
        }
        buf.extend_from_slice(&chunk);
    }
    if cut {
        // Only a quote of it is ever shown.
        buf.truncate(MAX_QUOTED_BODY);
    }
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    if cut {
        text.push_str(&format!("… (more than {limit} bytes)"));
    }
    Ok(text)
}

fn classify(
    status: StatusCode,
    retry_after: Option<Duration>,
    text: &str,
    endpoint: &str,
    what: &str,
) -> ApiError {
    let body = ErrorBody::parse(text);
    let code = status.as_u16();
    match code {
        401 | 403 => ApiError::Auth {
            status: code,
            body: body.or_else(|| plain_text_body(code, text)),
        },
        404 => ApiError::NotFound {
            what: what.to_string(),
            body,
        },
        // Read by meaning, not wording (which is undocumented): see `request_cohort`.
        429 => ApiError::RateLimited { retry_after, body },
        400..=499 => ApiError::InvalidRequest {
            status: code,
            body: body.or_else(|| {
                Some(ErrorBody {
                    http_code: Some(code),
                    message: Some(quote(text)),
                    ..ErrorBody::default()
                })
            }),
        },
        500..=599 => ApiError::Server {
            status: code,
            endpoint: endpoint.to_string(),
            text: quote(text),
        },
        _ => ApiError::Unexpected {
            status: code,
            endpoint: endpoint.to_string(),
            text: quote(text),
        },
    }
}

/// A body that is not Amplitude's error JSON, quoted as the message (none when empty).
fn plain_text_body(code: u16, text: &str) -> Option<ErrorBody> {
    (!text.trim().is_empty()).then(|| ErrorBody {
        http_code: Some(code),
        message: Some(quote(text)),
        ..ErrorBody::default()
    })
}

/// `Retry-After` as delta-seconds (fractions and exponents accepted: `2`, `0.5`, `1e3`)
/// or an HTTP date (IMF-fixdate, RFC 850 or asctime; a date in the past is 0) as of
/// `now`. Never panics: a wait too large for a `Duration` is [`Duration::MAX`] (far
/// beyond [`MAX_RETRY_AFTER`]); a negative, non-finite or unreadable value is `None`.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() || value.len() > 64 {
        return None;
    }
    if value
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        let secs: f64 = value.parse().ok()?;
        if !(secs.is_finite() && secs >= 0.0) {
            return None;
        }
        return Some(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX));
    }
    let when = http_date(value)?;
    let delta = when
        .timestamp_millis()
        .saturating_sub(now.timestamp_millis());
    Some(Duration::from_millis(u64::try_from(delta).unwrap_or(0)))
}

/// An HTTP date in any of the three forms RFC 9110 lets a recipient read, as UTC.
fn http_date(value: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    use chrono::{NaiveDateTime, TimeZone, Utc};
    if let Ok(d) = chrono::DateTime::parse_from_rfc2822(value) {
        return Some(d.with_timezone(&Utc));
    }
    let naive = NaiveDateTime::parse_from_str(value, "%A, %d-%b-%y %H:%M:%S GMT")
        .or_else(|_| NaiveDateTime::parse_from_str(value, "%a %b %e %H:%M:%S %Y"))
        .ok()?;
    Utc.from_local_datetime(&naive).single()
}

/// Text from a server for a message: trimmed, cut to [`MAX_QUOTED_BODY`] bytes, control
/// characters escaped.
fn quote(text: &str) -> String {
    let text = text.trim();
    // A body [`read_text`] cut is already short, with its own note of the size.
    if text.len() <= MAX_QUOTED_BODY
        || (text.len() <= MAX_QUOTED_BODY + 64 && text.ends_with(" bytes)"))
    {
        return crate::text::escape(text).into_owned();
    }
    let mut end = MAX_QUOTED_BODY;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… ({} bytes)",
        crate::text::escape(&text[..end]),
        text.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry_after(value: &str) -> Option<Duration> {
        parse_retry_after(value, chrono::Utc::now())
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(retry_after("-1"), None);
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(
            retry_after("Wednesday, 21-Oct-15 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(
            retry_after("Wed Oct 21 07:28:00 2015"),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon"), None);
    }

    #[test]
    fn hostile_retry_after_values_never_panic() {
        assert_eq!(retry_after("1e20"), Some(Duration::MAX));
        assert_eq!(retry_after("1e3"), Some(Duration::from_secs(1000)));
        for v in [
            "NaN", "inf", "-inf", "1e400", "-0.0e", "", " ", "+", "..", "1e", "\u{7}",
        ] {
            let d = retry_after(v);
            assert!(
                d.is_none_or(|d| d == Duration::ZERO || d == Duration::MAX),
                "{v:?}: {d:?}"
            );
        }
        let far = retry_after("Fri, 31 Dec 9999 23:59:59 GMT").expect("a date");
        assert!(far > Duration::from_secs(200 * 365 * 86_400), "{far:?}");
        assert_eq!(
            retry_after(&"9".repeat(400)),
            None,
            "too long to be a header value"
        );
        assert_eq!(
            retry_after("1000000000"),
            Some(Duration::from_secs(1_000_000_000))
        );
    }

    #[test]
    fn redirects_only_to_https_or_loopback_http() {
        let ok = |u: &str| followable(&reqwest::Url::parse(u).expect(u));
        assert!(ok("https://bucket.s3.amazonaws.com/x?sig=1"));
        assert!(ok("http://127.0.0.1:9/x") && ok("http://[::1]:9/x") && ok("http://localhost/x"));
        for bad in [
            "http://example.com/x",
            "http://10.0.0.1/x",
            "ftp://127.0.0.1/x",
            "file:///etc/passwd",
            "data:text/csv,a",
            "gopher://h/x",
        ] {
            assert!(!ok(bad), "{bad}");
        }
        let shown =
            without_query(&reqwest::Url::parse("ftp://u:p@h/x?X-Amz-Signature=s").expect("url"));
        assert_eq!(shown, "ftp://h/x");
    }

    #[test]
    fn ids_are_escaped_in_paths() {
        assert_eq!(path_segment("abc_12-3"), "abc_12-3");
        assert_eq!(path_segment("../x y"), "..%2Fx%20y");
    }

    #[test]
    fn refused_keys_name_the_cause_and_what_to_check() {
        let combination = r#"{"error":{"http_code":403,"type":"unspecified","metadata":{"details":"Invalid API/Secret Key combination"}}}"#;
        let e = classify(
            StatusCode::FORBIDDEN,
            None,
            combination,
            "list cohorts",
            "x",
        );
        assert!(matches!(e, ApiError::Auth { status: 403, .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.starts_with("authentication failed (HTTP 403): Invalid API/Secret Key combination; check AMPLITUDE_API_KEY / AMPLITUDE_SECRET_KEY"),
            "{text}"
        );
        let unknown = combination.replace("Invalid API/Secret Key combination", "Invalid API Key");
        let text = classify(StatusCode::FORBIDDEN, None, &unknown, "usage", "x").to_string();
        assert!(
            text.contains("Invalid API Key; check AMPLITUDE_API_KEY"),
            "{text}"
        );
        assert!(text.contains("region"), "{text}");
        let html = classify(StatusCode::UNAUTHORIZED, None, "<h1>401</h1>", "usage", "x");
        assert!(html.to_string().contains("<h1>401</h1>"), "{html}");
    }

    #[test]
    fn a_429_is_never_read_by_its_wording() {
        for text in [
            r#"{"error":{"http_code":429,"type":"quota_exceeded","message":"Monthly limit of 500 reached"}}"#,
            r#"{"error":{"http_code":429,"type":"rate_limited","message":"Too many requests"}}"#,
            "Quota for requests per minute exceeded",
        ] {
            let e = classify(
                StatusCode::TOO_MANY_REQUESTS,
                Some(Duration::from_secs(2)),
                text,
                "request cohort",
                "c",
            );
            assert!(
                matches!(e, ApiError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(2)),
                "{e}"
            );
        }
    }

    /// A server on loopback answering the cohort request with a 429 (`retry_after`,
    /// `message`) and the usage endpoint with `used` of 500.
    async fn server_429(
        retry_after: Option<&'static str>,
        message: &'static str,
        used: u32,
    ) -> String {
        use axum::routing::get;
        let app = axum::Router::new()
            .route(
                "/api/5/cohorts/request/{id}",
                get(move || async move {
                    let mut resp = axum::response::Response::new(axum::body::Body::from(format!(
                        r#"{{"error":{{"http_code":429,"type":"too_many_requests","message":"{message}"}}}}"#
                    )));
                    *resp.status_mut() = axum::http::StatusCode::TOO_MANY_REQUESTS;
                    if let Some(r) = retry_after {
                        resp.headers_mut().insert(
                            "retry-after",
                            axum::http::HeaderValue::from_static(r),
                        );
                    }
                    resp
                }),
            )
            .route(
                "/api/3/cohorts/usage",
                get(move || async move {
                    axum::Json(serde_json::json!({"rest_download": {"limit": 500, "usage": used}}))
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}")
    }

    async fn request_answer(
        retry_after: Option<&'static str>,
        message: &'static str,
        used: u32,
    ) -> ApiError {
        let base = server_429(retry_after, message, used).await;
        let client = AmplitudeClient::new(ClientOptions::new(base, Credentials::new("k", "s")))
            .expect("client");
        client
            .request_cohort("c1", false, &[])
            .await
            .expect_err("429")
    }

    #[tokio::test]
    async fn the_month_is_spent_only_when_the_usage_says_so_whatever_the_wording() {
        // No Retry-After, usage at the limit: the month is spent, though no word says so.
        let e = request_answer(None, "Too many requests", 500).await;
        assert!(matches!(e, ApiError::QuotaExhausted { .. }), "{e}");
        // The word "quota" with usage left: a rate limit.
        let e = request_answer(None, "Monthly quota exceeded", 10).await;
        assert!(matches!(e, ApiError::RateLimited { .. }), "{e}");
        // A short Retry-After is a rate limit's, whatever the text and the usage.
        let e = request_answer(Some("2"), "Quota exceeded", 500).await;
        assert!(
            matches!(
                e,
                ApiError::RateLimited {
                    retry_after: Some(_),
                    ..
                }
            ),
            "{e}"
        );
        // A Retry-After of a day, usage at the limit: the month is spent.
        let e = request_answer(Some("86400"), "Slow down", 500).await;
        assert!(matches!(e, ApiError::QuotaExhausted { .. }), "{e}");
    }

    #[tokio::test]
    async fn a_retry_after_past_the_maximum_is_never_waited_for() {
        for header in ["1000000000", "1e20", "Fri, 31 Dec 9999 23:59:59 GMT", "901"] {
            // Downloads left: not the month; the call fails at once naming the header.
            let e = request_answer(Some(header), "Slow down", 10).await;
            let text = e.to_string();
            assert!(
                matches!(e, ApiError::RetryAfterTooLong { .. }),
                "{header}: {e}"
            );
            assert!(
                text.contains(header) && text.contains("15 minutes"),
                "{text}"
            );
            assert!(!e.is_retryable(), "{header}");
            // None left: the month is spent, the cohort is deferred.
            let e = request_answer(Some(header), "Slow down", 500).await;
            assert!(
                matches!(e, ApiError::QuotaExhausted { .. }),
                "{header}: {e}"
            );
        }
        // Exactly the maximum is a rate limit's.
        let e = request_answer(Some("900"), "Slow down", 500).await;
        assert!(matches!(e, ApiError::RateLimited { .. }), "{e}");
    }
}

//! Waits for an export job: polls `request-status` with doubling intervals until
//! `JOB COMPLETED`, within a bounded total wait.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::amplitude::{AmplitudeClient, ApiError, JobState};

#[derive(Debug, Clone, PartialEq)]
pub struct PollSettings {
    pub initial: Duration,
    pub max_interval: Duration,
    pub max_wait: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(
        "job of request {request_id} did not complete within {:.0}s (download.max_wait_secs); the request id is kept and the next run downloads it without spending quota",
        .waited.as_secs_f64()
    )]
    TimedOut {
        request_id: String,
        waited: Duration,
    },
    #[error("polling request {request_id}: {source}")]
    Api {
        request_id: String,
        source: ApiError,
    },
    #[error(
        "stopped while waiting for the job of request {request_id} (the run is stopping; the request id is kept)"
    )]
    Stopped { request_id: String },
}

impl PollError {
    /// Whether Amplitude says the request is unusable: it failed (`JOB FAILED`), reports
    /// a status nobody documents, or does not know the request id (404) — or the id (kept
    /// in the state) is not one of Amplitude's. Polling it again cannot help; a new
    /// request can.
    pub fn request_unusable(&self) -> bool {
        matches!(
            self,
            PollError::Api {
                source: ApiError::NotFound { .. }
                    | ApiError::Unexpected { .. }
                    | ApiError::BadId { .. },
                ..
            }
        )
    }
}

/// Polls until the job completes; returns the number of status calls made.
pub async fn wait_for_job(
    client: &AmplitudeClient,
    request_id: &str,
    settings: &PollSettings,
) -> Result<u32, PollError> {
    wait_for_job_until(client, request_id, settings, None).await
}

/// [`wait_for_job`] that stops waiting when `stop` is cancelled.
pub async fn wait_for_job_until(
    client: &AmplitudeClient,
    request_id: &str,
    settings: &PollSettings,
    stop: Option<&CancellationToken>,
) -> Result<u32, PollError> {
    let start = Instant::now();
    let mut interval = settings.initial;
    let mut polls = 0;
    loop {
        polls += 1;
        crate::crash::point("export.poll");
        match client.request_status(request_id).await {
            Ok(JobState::Completed) => return Ok(polls),
            Ok(JobState::InProgress) => {}
            Err(ApiError::Stopped) => {
                return Err(PollError::Stopped {
                    request_id: request_id.to_string(),
                });
            }
            Err(source) => {
                return Err(PollError::Api {
                    request_id: request_id.to_string(),
                    source,
                });
            }
        }
        let waited = start.elapsed();
        if waited >= settings.max_wait {
            return Err(PollError::TimedOut {
                request_id: request_id.to_string(),
                waited,
            });
        }
        let sleep = interval.min(settings.max_wait - waited);
        // The request id is a field of the cohort's span.
        tracing::debug!("job in progress; next poll in {:.2}s", sleep.as_secs_f64());
        match stop {
            Some(stop) => tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = stop.cancelled() => {
                    return Err(PollError::Stopped {
                        request_id: request_id.to_string(),
                    });
                }
            },
            None => tokio::time::sleep(sleep).await,
        }
        interval = (interval * 2).min(settings.max_interval);
    }
}

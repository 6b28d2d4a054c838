//! Waits for an export job: polls `request-status` with doubling intervals until
//! `JOB COMPLETED`, within a bounded total wait.

use std::time::Duration;

use tokio::time::Instant;

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
}

/// Polls until the job completes; returns the number of status calls made.
pub async fn wait_for_job(
    client: &AmplitudeClient,
    request_id: &str,
    settings: &PollSettings,
) -> Result<u32, PollError> {
    let start = Instant::now();
    let mut interval = settings.initial;
    let mut polls = 0;
    loop {
        polls += 1;
        match client.request_status(request_id).await {
            Ok(JobState::Completed) => return Ok(polls),
            Ok(JobState::InProgress) => {}
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
        tracing::debug!(
            request_id,
            "job in progress; next poll in {:.2}s",
            sleep.as_secs_f64()
        );
        tokio::time::sleep(sleep).await;
        interval = (interval * 2).min(settings.max_interval);
    }
}

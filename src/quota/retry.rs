//! Bounded retries with jittered exponential backoff, honouring `Retry-After`.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::amplitude::{ApiError, MAX_RETRY_AFTER};

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Multiplies our own backoff delays (not a server's Retry-After).
    pub time_scale: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(120),
            time_scale: 1.0,
        }
    }
}

impl RetryPolicy {
    pub fn scaled(time_scale: f64) -> Self {
        RetryPolicy {
            time_scale,
            ..RetryPolicy::default()
        }
    }

    /// Delay before attempt `attempt + 1` after `err` (attempt counts from 1): the server's
    /// Retry-After when given (never more than [`MAX_RETRY_AFTER`]), else exponential
    /// backoff; plus up to 25% jitter. Never panics, whatever the settings.
    pub fn delay(&self, attempt: u32, err: &ApiError) -> Duration {
        let scale = |d: Duration| {
            let f = if self.time_scale.is_finite() && self.time_scale > 0.0 {
                self.time_scale
            } else {
                1.0
            };
            Duration::try_from_secs_f64(d.as_secs_f64() * f)
                .unwrap_or(MAX_RETRY_AFTER)
                .min(MAX_RETRY_AFTER)
        };
        let backoff = scale(self.base_delay)
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(scale(self.max_delay));
        let base = match err {
            ApiError::RateLimited {
                retry_after: Some(d),
                ..
            } => (*d).min(MAX_RETRY_AFTER),
            _ => backoff,
        };
        base + base.mul_f64(fastrand::f64() * 0.25)
    }

    /// Runs `op` until it succeeds, fails with an error `retryable` rejects, or attempts
    /// run out. `what` names the call in the warnings logged before each retry. A wait
    /// between attempts ends early with [`ApiError::Stopped`] when `stop` is cancelled.
    pub async fn run<T, F, Fut>(
        &self,
        what: &str,
        stop: Option<&CancellationToken>,
        retryable: impl Fn(&ApiError) -> bool,
        mut op: F,
    ) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if attempt < self.max_attempts && retryable(&e) => {
                    let delay = self.delay(attempt, &e);
                    tracing::warn!(
                        "{what}: {e}; retrying in {:.1}s (attempt {}/{})",
                        delay.as_secs_f64(),
                        attempt + 1,
                        self.max_attempts
                    );
                    let sleep = async {
                        match stop {
                            Some(stop) => tokio::select! {
                                _ = tokio::time::sleep(delay) => true,
                                _ = stop.cancelled() => false,
                            },
                            None => {
                                tokio::time::sleep(delay).await;
                                true
                            }
                        }
                    };
                    // A 429's backoff is a wait for Amplitude's limits (charged to the
                    // cohort that waited); a 5xx's or a lost connection's is not.
                    let slept = if matches!(e, ApiError::RateLimited { .. }) {
                        let until = tokio::time::Instant::now() + delay;
                        super::waits::timed(super::waits::WaitKind::RateLimited, Some(until), sleep)
                            .await
                    } else {
                        sleep.await
                    };
                    if !slept {
                        return Err(ApiError::Stopped);
                    }
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// 429s never spend quota; safe to retry for any call.
pub fn rate_limited_only(e: &ApiError) -> bool {
    matches!(e, ApiError::RateLimited { .. })
}

/// For idempotent calls: rate limits, 5xx and transport errors.
pub fn transient(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::RateLimited { .. } | ApiError::Server { .. } | ApiError::Transport { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(40),
            time_scale: 1.0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_until_bounded() {
        let calls = AtomicU32::new(0);
        let r: Result<(), ApiError> = policy()
            .run("test", None, transient, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(ApiError::Server {
                    status: 503,
                    endpoint: "x".into(),
                    text: String::new(),
                })
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn does_not_retry_what_is_not_retryable() {
        let calls = AtomicU32::new(0);
        let r: Result<(), ApiError> = policy()
            .run("test", None, rate_limited_only, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(ApiError::Server {
                    status: 500,
                    endpoint: "x".into(),
                    text: String::new(),
                })
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_wait_between_attempts() {
        let stop = CancellationToken::new();
        stop.cancel();
        let calls = AtomicU32::new(0);
        let r: Result<(), ApiError> = policy()
            .run("test", Some(&stop), transient, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(ApiError::Server {
                    status: 503,
                    endpoint: "x".into(),
                    text: String::new(),
                })
            })
            .await;
        assert!(matches!(r, Err(ApiError::Stopped)), "{r:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn honours_retry_after_with_bounded_jitter() {
        let e = ApiError::RateLimited {
            retry_after: Some(Duration::from_secs(2)),
            body: None,
        };
        for _ in 0..100 {
            let d = policy().delay(1, &e);
            assert!(
                d >= Duration::from_secs(2) && d <= Duration::from_millis(2500),
                "{d:?}"
            );
        }
        let s = ApiError::Transport {
            endpoint: "x".into(),
            message: String::new(),
            maybe_delivered: false,
        };
        let d5 = policy().delay(5, &s);
        assert!(d5 <= Duration::from_millis(50), "capped: {d5:?}");
    }
}

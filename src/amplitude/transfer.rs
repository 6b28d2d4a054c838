//! Limits on a file body's transfer: a deadline for the whole body and a minimum rate over
//! a sliding window, so a server that sends one row every two seconds (never silent long
//! enough for the read timeout) cannot hold a run forever.
//!
//! Both count only the time spent **waiting for the server's bytes**: while our own side
//! is busy (parsing, encoding Parquet, uploading a part to S3) the body is not read and
//! that time is not the server's; nor is time the process did not run at all (stopped,
//! starved of CPU: a wait is counted at most two checks long, and a check is due every
//! tenth of the window). A body that arrives faster than it is consumed never meets
//! either limit.
//!
//! Defaults are sized for the largest cohort on a slow link: a 2,000,000-member cohort with
//! properties is about 180 MB of CSV, which at the minimum rate of 64 KiB/s takes 47
//! minutes — within the 1-hour deadline. Set per pipeline in `[download]`
//! (`deadline_secs`, `min_bytes_per_sec`, `rate_window_secs`); the deadline and the window
//! shrink with `COHORT_SYNC_TIME_SCALE` like every other wait (the rate does not: it is
//! bytes per real second).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::time::{Instant, Sleep};

use super::error::ApiError;

/// Default `download.deadline_secs`: one hour for one body.
pub const DEFAULT_DEADLINE_SECS: u64 = 3_600;
/// Default `download.min_bytes_per_sec`: 64 KiB/s.
pub const DEFAULT_MIN_BYTES_PER_SEC: u64 = 64 * 1024;
/// Default `download.rate_window_secs`: the rate is measured over the last minute.
pub const DEFAULT_RATE_WINDOW_SECS: u64 = 60;

/// The limits of one body, in configured (Amplitude) seconds plus the time scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransferLimits {
    /// Longest time waiting for the whole body, in configured seconds.
    pub deadline_secs: u64,
    /// Least bytes per (real) second over the window; 0 turns the rate check off.
    pub min_bytes_per_sec: u64,
    /// The sliding window, in configured seconds.
    pub rate_window_secs: u64,
    /// Multiplies the deadline and the window (`COHORT_SYNC_TIME_SCALE`).
    pub time_scale: f64,
}

impl Default for TransferLimits {
    fn default() -> Self {
        TransferLimits {
            deadline_secs: DEFAULT_DEADLINE_SECS,
            min_bytes_per_sec: DEFAULT_MIN_BYTES_PER_SEC,
            rate_window_secs: DEFAULT_RATE_WINDOW_SECS,
            time_scale: 1.0,
        }
    }
}

impl TransferLimits {
    fn scaled(&self, secs: u64) -> Duration {
        let scale = if self.time_scale.is_finite() && self.time_scale > 0.0 {
            self.time_scale.min(1.0)
        } else {
            1.0
        };
        // At most a year whatever the input: never an instant that overflows.
        Duration::try_from_secs_f64(secs.min(31_536_000) as f64 * scale)
            .unwrap_or(Duration::from_secs(31_536_000))
    }

    /// The deadline in real time.
    pub fn deadline(&self) -> Duration {
        self.scaled(self.deadline_secs)
    }

    /// The window in real time (at least 1 ms).
    pub fn window(&self) -> Duration {
        self.scaled(self.rate_window_secs.max(1))
            .max(Duration::from_millis(1))
    }
}

/// Wraps a body stream with [`TransferLimits`].
pub(crate) fn guard<S>(inner: S, limits: TransferLimits, endpoint: &'static str) -> Guarded<S> {
    let now = Instant::now();
    let mut samples = VecDeque::new();
    samples.push_back((Duration::ZERO, 0));
    Guarded {
        inner,
        limits,
        deadline: limits.deadline(),
        window: limits.window(),
        endpoint,
        waited: Duration::ZERO,
        pending_since: None,
        received: 0,
        samples,
        timer: Box::pin(tokio::time::sleep_until(now)),
        done: false,
    }
}

pub(crate) struct Guarded<S> {
    inner: S,
    limits: TransferLimits,
    deadline: Duration,
    window: Duration,
    endpoint: &'static str,
    /// Time spent waiting for the server so far.
    waited: Duration,
    /// When the stream last answered `Pending` (the wait in progress).
    pending_since: Option<Instant>,
    received: u64,
    /// (waited, received) samples, oldest first, about a tenth of a window apart.
    samples: VecDeque<(Duration, u64)>,
    timer: Pin<Box<Sleep>>,
    done: bool,
}

impl<S> Guarded<S> {
    fn tick(&self) -> Duration {
        (self.window / 10).max(Duration::from_millis(1))
    }

    /// The limit passed by now, if one was.
    fn check(&mut self) -> Option<String> {
        if self.waited >= self.deadline {
            return Some(format!(
                "the body did not finish within download.deadline_secs = {} ({:.1}s of waiting for the server{}, {} bytes received); asked again with the same request id",
                self.limits.deadline_secs,
                self.waited.as_secs_f64(),
                scale_note(self.limits.time_scale),
                self.received
            ));
        }
        if self.limits.min_bytes_per_sec == 0 {
            return None;
        }
        if self
            .samples
            .back()
            .is_none_or(|(at, _)| self.waited.saturating_sub(*at) >= self.tick())
        {
            self.samples.push_back((self.waited, self.received));
        }
        // The newest sample at least a window old; older ones are no longer needed.
        let horizon = self.waited.checked_sub(self.window)?;
        while self.samples.len() > 1 && self.samples[1].0 <= horizon {
            self.samples.pop_front();
        }
        let (at, then) = *self.samples.front()?;
        if at > horizon {
            return None;
        }
        let span = (self.waited - at).as_secs_f64().max(1e-9);
        let rate = (self.received - then) as f64 / span;
        if rate < self.limits.min_bytes_per_sec as f64 {
            return Some(format!(
                "the body came at {:.0} bytes/s over the last {:.1}s of waiting, below download.min_bytes_per_sec = {} (measured over download.rate_window_secs = {}{}; {} bytes received); asked again with the same request id",
                rate,
                span,
                self.limits.min_bytes_per_sec,
                self.limits.rate_window_secs,
                scale_note(self.limits.time_scale),
                self.received
            ));
        }
        None
    }

    /// Real time until the next check is due.
    fn next_check(&self) -> Duration {
        self.tick()
            .min(self.deadline.saturating_sub(self.waited))
            .max(Duration::from_millis(1))
    }
}

fn scale_note(scale: f64) -> String {
    if scale < 1.0 {
        format!(", time scale {scale}")
    } else {
        String::new()
    }
}

impl<S, E> Stream for Guarded<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<ApiError>,
{
    type Item = Result<Bytes, ApiError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            let now = Instant::now();
            if let Some(since) = this.pending_since.take() {
                // The timer wakes us every tick while we wait: a longer gap is time this
                // process did not run (stopped, starved of CPU), not the server's.
                let gap = now.saturating_duration_since(since);
                this.waited += gap.min(this.tick() * 2);
            }
            if let Some(message) = this.check() {
                this.done = true;
                return Poll::Ready(Some(Err(ApiError::TooSlow {
                    endpoint: this.endpoint.to_string(),
                    message,
                })));
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(b))) => {
                    this.received += b.len() as u64;
                    return Poll::Ready(Some(Ok(b)));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => {}
            }
            this.pending_since = Some(now);
            let due = now + this.next_check();
            this.timer.as_mut().reset(due);
            if this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // The check is due already: count the wait and look again.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn limits(deadline: u64, rate: u64, window: u64) -> TransferLimits {
        TransferLimits {
            deadline_secs: deadline,
            min_bytes_per_sec: rate,
            rate_window_secs: window,
            time_scale: 0.01,
        }
    }

    /// `pieces` of `size` bytes, `pause` apart.
    fn trickle(
        pieces: usize,
        size: usize,
        pause: Duration,
    ) -> impl Stream<Item = Result<Bytes, ApiError>> + Unpin {
        Box::pin(futures::stream::iter(0..pieces).then(move |_| async move {
            tokio::time::sleep(pause).await;
            Ok::<_, ApiError>(Bytes::from(vec![b'x'; size]))
        }))
    }

    async fn drain(
        mut s: impl Stream<Item = Result<Bytes, ApiError>> + Unpin,
    ) -> Result<u64, String> {
        let mut n = 0;
        while let Some(item) = s.next().await {
            n += item.map_err(|e| e.to_string())?.len() as u64;
        }
        Ok(n)
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_body_passes() {
        let body = trickle(100, 10_000, Duration::from_millis(1));
        assert_eq!(
            drain(guard(body, limits(60, 65_536, 60), "t")).await,
            Ok(1_000_000)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_fails_on_the_rate_naming_it() {
        // 16 bytes every 20 ms: 800 B/s, under 64 KiB/s over a 0.6 s window.
        let body = trickle(10_000, 16, Duration::from_millis(20));
        let e = drain(guard(body, limits(3600, 65_536, 60), "t"))
            .await
            .expect_err("too slow");
        assert!(e.contains("download.min_bytes_per_sec = 65536"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_fails_on_the_rate_without_a_byte() {
        let body = Box::pin(futures::stream::pending::<Result<Bytes, ApiError>>());
        let e = drain(guard(body, limits(3600, 1, 60), "t"))
            .await
            .expect_err("silent");
        assert!(e.contains("0 bytes received"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_body_fails_on_the_deadline() {
        // 1 KiB every 10 ms is 100 KiB/s: fast enough, but never ends.
        let body = trickle(usize::MAX, 1024, Duration::from_millis(10));
        let e = drain(guard(body, limits(50, 1024, 60), "t"))
            .await
            .expect_err("deadline");
        assert!(e.contains("download.deadline_secs = 50"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn time_our_side_spends_is_not_the_servers() {
        // The consumer takes 1 s per piece, the server none: no limit is met.
        let body = trickle(20, 10, Duration::ZERO);
        let mut g = guard(body, limits(1, 1_000_000, 1), "t");
        let mut n = 0;
        while let Some(item) = g.next().await {
            n += item.expect("never the server's fault").len();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert_eq!(n, 200);
    }

    #[tokio::test(start_paused = true)]
    async fn time_the_process_did_not_run_is_not_counted() {
        use std::task::Poll;
        let body = Box::pin(futures::stream::pending::<Result<Bytes, ApiError>>());
        let mut g = guard(body, limits(3600, 1, 60), "t");
        let poll = |g: &mut Guarded<_>| {
            futures::executor::block_on(futures::future::poll_fn(|cx| {
                Poll::Ready(
                    Pin::new(&mut *g)
                        .poll_next(cx)
                        .map(|o| o.map(|r| r.is_ok())),
                )
            }))
        };
        assert_eq!(poll(&mut g), Poll::Pending);
        // A stop of 100 s (SIGSTOP, a starved CPU) counts as 2 ticks of waiting at most.
        tokio::time::advance(Duration::from_secs(100)).await;
        assert_eq!(poll(&mut g), Poll::Pending, "not the server's fault");
        // Waiting for real (the timer driving the polls) still fails the silent server.
        let e = drain(g).await.expect_err("silent");
        assert!(e.contains("below download.min_bytes_per_sec"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_of_zero_turns_the_check_off() {
        let body = trickle(200, 1, Duration::from_millis(100));
        assert_eq!(drain(guard(body, limits(3600, 0, 1), "t")).await, Ok(200));
    }

    #[test]
    fn huge_settings_never_overflow() {
        let l = TransferLimits {
            deadline_secs: u64::MAX,
            min_bytes_per_sec: u64::MAX,
            rate_window_secs: u64::MAX,
            time_scale: f64::MAX,
        };
        assert!(l.deadline() <= Duration::from_secs(31_536_000));
        assert!(l.window() <= Duration::from_secs(31_536_000));
    }
}

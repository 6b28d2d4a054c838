//! Per-app rate limits shared by every request to that app in this process: at most 60
//! single-cohort requests in any 10 minutes, at most 4 in any minute, at most 5 requests in
//! flight (cohort downloads and dashboard calls alike). Requests are paced so the documented
//! limits are never hit; a small margin absorbs network jitter between our clock and theirs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::window::SlidingWindow;

/// Environment variable that scales every quota window and wait (tests and the emulator's
/// `--time-scale`); 1.0 against the real API.
pub const TIME_SCALE_ENV: &str = "COHORT_SYNC_TIME_SCALE";

/// Smallest time scale taken from `COHORT_SYNC_TIME_SCALE`.
pub const MIN_TIME_SCALE: f64 = 1e-6;

/// `COHORT_SYNC_TIME_SCALE` as a factor in `MIN_TIME_SCALE`..=1 (a scale only speeds
/// waits up, for tests); 1.0 when unset, unreadable or out of that range (with a warning).
pub fn time_scale_from_env() -> f64 {
    let Ok(text) = std::env::var(TIME_SCALE_ENV) else {
        return 1.0;
    };
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (MIN_TIME_SCALE..=1.0).contains(&v) => v,
        _ => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "{TIME_SCALE_ENV}={:?} is not a number in {MIN_TIME_SCALE}..=1; using 1",
                    crate::text::escape(&text)
                );
            });
            1.0
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LimitSettings {
    /// Single-cohort requests allowed per long window (60 per 10 minutes).
    pub requests_per_long_window: usize,
    pub long_window: Duration,
    /// Single-cohort requests allowed per short window (4 per minute).
    pub requests_per_short_window: usize,
    pub short_window: Duration,
    /// Requests in flight at once across all endpoints (5).
    pub max_in_flight: usize,
    /// Multiplies both windows (tests against a time-scaled emulator).
    pub time_scale: f64,
    /// Extra spacing added to each window, not scaled: covers network delay differences.
    pub margin: Duration,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            requests_per_long_window: 60,
            long_window: Duration::from_secs(600),
            requests_per_short_window: 4,
            short_window: Duration::from_secs(60),
            max_in_flight: 5,
            time_scale: 1.0,
            margin: Duration::from_millis(250),
        }
    }
}

impl LimitSettings {
    pub fn scaled(time_scale: f64) -> Self {
        LimitSettings {
            time_scale,
            ..LimitSettings::default()
        }
    }

    fn long(&self) -> Duration {
        self.long_window.mul_f64(self.time_scale) + self.margin
    }

    fn short(&self) -> Duration {
        self.short_window.mul_f64(self.time_scale) + self.margin
    }
}

/// The limits of one app (one api key), shared by all its clients in this process.
#[derive(Debug)]
pub struct AppLimits {
    settings: LimitSettings,
    windows: Mutex<(SlidingWindow, SlidingWindow)>,
    in_flight: Arc<Semaphore>,
}

impl AppLimits {
    pub fn new(settings: LimitSettings) -> Arc<Self> {
        Arc::new(AppLimits {
            windows: Mutex::new((
                SlidingWindow::new(settings.requests_per_long_window, settings.long()),
                SlidingWindow::new(settings.requests_per_short_window, settings.short()),
            )),
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight.max(1))),
            settings,
        })
    }

    pub fn settings(&self) -> &LimitSettings {
        &self.settings
    }

    /// A slot among the requests in flight; hold it until the response body is read. A
    /// wait for one (all in flight are taken) is charged to the current [`super::waits`]
    /// meter.
    pub async fn call_permit(&self) -> OwnedSemaphorePermit {
        if let Ok(p) = self.in_flight.clone().try_acquire_owned() {
            return p;
        }
        super::waits::timed(super::waits::WaitKind::InFlight, None, async {
            loop {
                if let Ok(p) = self.in_flight.clone().acquire_owned().await {
                    return p;
                }
                // The semaphore is never closed; this loop only satisfies the type.
            }
        })
        .await
    }

    /// Waits until a single-cohort request may start without breaking either window and
    /// a slot in flight is free; records the request at the moment it is let go. The wait
    /// for a window's slot is charged to the current [`super::waits`] meter.
    pub async fn cohort_request_permit(&self) -> OwnedSemaphorePermit {
        loop {
            let wait_until = self.next_free(Instant::now());
            if wait_until > Instant::now() {
                super::waits::timed(
                    super::waits::WaitKind::RateSlot,
                    Some(wait_until),
                    tokio::time::sleep_until(wait_until),
                )
                .await;
            }
            let permit = self.call_permit().await;
            let now = Instant::now();
            let mut guard = match self.windows.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            let (long, short) = &mut *guard;
            if long.next_free(now) <= now && short.next_free(now) <= now {
                long.record(now);
                short.record(now);
                return permit;
            }
            // Another task took the slot while we waited for a permit: wait again.
            drop(guard);
            drop(permit);
        }
    }

    fn next_free(&self, now: Instant) -> Instant {
        let mut guard = match self.windows.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (long, short) = &mut *guard;
        long.next_free(now).max(short.next_free(now))
    }

    /// A copy of both windows as they are now (long, short), to simulate requests on.
    fn windows_now(&self) -> (SlidingWindow, SlidingWindow) {
        match self.windows.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The factor the windows are scaled by (1.0 against Amplitude).
    pub fn time_scale(&self) -> f64 {
        self.settings.time_scale
    }

    /// How long from now until cohorts that each need `works[k]` after their request are
    /// all done, `parallel` at a time in this order (the next cohort starts when one ends),
    /// every request waiting for the windows like [`AppLimits::time_to_issue`].
    pub fn time_to_finish(&self, works: &[Duration], parallel: usize) -> Duration {
        let now = Instant::now();
        let (mut l, mut s) = self.windows_now();
        // When each of the `parallel` workers is free again; the earliest takes the next
        // cohort, so start times never go back and the windows see requests in order.
        let mut free = vec![now; parallel.max(1)];
        let mut end = now;
        for work in works {
            let Some((worker, start)) = free.iter().copied().enumerate().min_by_key(|(_, t)| *t)
            else {
                break;
            };
            let at = l.next_free(start).max(s.next_free(start));
            l.record(at);
            s.record(at);
            let done = at + *work;
            free[worker] = done;
            end = end.max(done);
        }
        end - now
    }

    /// How long from now until `count` more single-cohort requests could all have started.
    pub fn time_to_issue(&self, count: usize) -> Duration {
        let now = Instant::now();
        let (mut l, mut s) = self.windows_now();
        let mut last = now;
        for _ in 0..count {
            last = l.next_free(last).max(s.next_free(last));
            l.record(last);
            s.record(last);
        }
        last - now
    }
}

/// One `AppLimits` per app key, so several pipelines for the same app share limits while
/// different apps run in parallel, each with its own.
#[derive(Debug, Default)]
pub struct LimitsRegistry {
    apps: Mutex<HashMap<String, Arc<AppLimits>>>,
}

impl LimitsRegistry {
    pub fn for_app(&self, app_key: &str, settings: &LimitSettings) -> Arc<AppLimits> {
        let mut apps = match self.apps.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        apps.entry(app_key.to_string())
            .or_insert_with(|| AppLimits::new(settings.clone()))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> LimitSettings {
        LimitSettings {
            requests_per_long_window: 6,
            long_window: Duration::from_millis(600),
            requests_per_short_window: 2,
            short_window: Duration::from_millis(100),
            max_in_flight: 3,
            time_scale: 1.0,
            margin: Duration::ZERO,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn paces_requests_by_both_windows() {
        let limits = AppLimits::new(fast());
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..8 {
            let _p = limits.cohort_request_permit().await;
            times.push(start.elapsed());
        }
        // 2 per 100 ms, 6 per 600 ms.
        let ms: Vec<u128> = times.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![0, 0, 100, 100, 200, 200, 600, 600]);
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_is_bounded() {
        let limits = AppLimits::new(fast());
        let a = limits.call_permit().await;
        let _b = limits.call_permit().await;
        let _c = limits.call_permit().await;
        let l2 = limits.clone();
        let waiter = tokio::spawn(async move {
            let _d = l2.call_permit().await;
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished(), "a fourth call must wait");
        drop(a);
        waiter
            .await
            .expect("fourth call proceeds once one finishes");
    }

    #[test]
    fn time_to_finish_follows_the_windows_and_the_workers() {
        // fast(): 2 requests per 100 ms, 6 per 600 ms.
        let limits = AppLimits::new(fast());
        let ms = Duration::from_millis;
        // One worker: one cohort after the other, the windows never bind.
        assert_eq!(limits.time_to_finish(&[ms(150), ms(150)], 1), ms(300));
        // Five workers, 7 short cohorts: requests at 0, 0, 100, 100, 200, 200, 600.
        assert_eq!(limits.time_to_finish(&[ms(10); 7], 5), ms(610));
        // The long cohort first keeps its worker; the rest share the others.
        assert_eq!(
            limits.time_to_finish(&[ms(1000), ms(10), ms(10)], 2),
            ms(1000)
        );
        // Planned order matters: the long one last starts at its window slot.
        assert_eq!(
            limits.time_to_finish(&[ms(10), ms(10), ms(1000)], 2),
            ms(1100)
        );
        assert_eq!(limits.time_to_finish(&[], 5), Duration::ZERO);
    }

    #[test]
    fn time_to_issue_matches_the_windows() {
        let limits = AppLimits::new(LimitSettings {
            margin: Duration::ZERO,
            ..LimitSettings::default()
        });
        assert_eq!(limits.time_to_issue(4), Duration::ZERO);
        assert_eq!(limits.time_to_issue(5), Duration::from_secs(60));
        // 4 a minute keeps any 10 minutes at 40 < 60: the 61st starts in minute 15.
        assert_eq!(limits.time_to_issue(61), Duration::from_secs(900));
    }
}

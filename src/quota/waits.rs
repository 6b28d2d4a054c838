//! Time spent waiting for Amplitude's limits, charged to the work that waited.
//!
//! The waits happen deep in the client ([`super::AppLimits`] and [`super::RetryPolicy`]),
//! shared by every cohort of a run; the runner wants them per cohort. A [`WaitMeter`] set
//! for the cohort's future with [`metered`] (a task-local, so no signature in between
//! changes) adds up each kind of wait and tells an optional [`WaitObserver`] (the progress
//! display) when a wait starts and ends. Outside a metered future, waits cost nothing extra.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// What a request waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitKind {
    /// A slot of the single-cohort request windows (4 a minute, 60 in 10 minutes).
    RateSlot,
    /// A free slot among the requests in flight (5 per app).
    InFlight,
    /// Backing off after an HTTP 429 (its `Retry-After`, or our own backoff).
    RateLimited,
}

/// Told when a metered wait starts and ends (the progress display).
pub trait WaitObserver: Send + Sync {
    /// A wait of `kind` starts; `until` when its end is known.
    fn waiting(&self, kind: WaitKind, until: Option<Instant>);
    /// The wait ended.
    fn resumed(&self);
}

/// Waits of one piece of work (a cohort, a reverse pipeline), by kind.
#[derive(Default)]
pub struct WaitMeter {
    rate_slot_ns: AtomicU64,
    in_flight_ns: AtomicU64,
    rate_limited_ns: AtomicU64,
    observer: Option<Arc<dyn WaitObserver>>,
}

impl std::fmt::Debug for WaitMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitMeter")
            .field("totals", &self.totals())
            .finish_non_exhaustive()
    }
}

/// What a [`WaitMeter`] added up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WaitTotals {
    pub rate_slot: Duration,
    pub in_flight: Duration,
    pub rate_limited: Duration,
}

impl WaitTotals {
    pub fn total(&self) -> Duration {
        self.rate_slot + self.in_flight + self.rate_limited
    }
}

impl WaitMeter {
    pub fn new(observer: Option<Arc<dyn WaitObserver>>) -> Arc<Self> {
        Arc::new(WaitMeter {
            observer,
            ..WaitMeter::default()
        })
    }

    pub fn totals(&self) -> WaitTotals {
        let d = |a: &AtomicU64| Duration::from_nanos(a.load(Ordering::Relaxed));
        WaitTotals {
            rate_slot: d(&self.rate_slot_ns),
            in_flight: d(&self.in_flight_ns),
            rate_limited: d(&self.rate_limited_ns),
        }
    }

    /// Adds `waited` to `kind` (also for waits measured elsewhere, e.g. for a request
    /// another pipeline of the run was issuing).
    pub fn add(&self, kind: WaitKind, waited: Duration) {
        let counter = match kind {
            WaitKind::RateSlot => &self.rate_slot_ns,
            WaitKind::InFlight => &self.in_flight_ns,
            WaitKind::RateLimited => &self.rate_limited_ns,
        };
        let ns = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        counter.fetch_add(ns, Ordering::Relaxed);
    }
}

tokio::task_local! {
    static METER: Arc<WaitMeter>;
}

/// Runs `fut` with `meter` charged for every wait inside it (in this task).
pub async fn metered<F: Future>(meter: Arc<WaitMeter>, fut: F) -> F::Output {
    METER.scope(meter, fut).await
}

/// The meter of the work running now, if any.
pub fn current() -> Option<Arc<WaitMeter>> {
    METER.try_with(Arc::clone).ok()
}

/// Awaits `wait` as a wait of `kind` (ending at `until` when known): its time is charged
/// to the current meter and the meter's observer is told when it starts and ends.
pub async fn timed<T>(kind: WaitKind, until: Option<Instant>, wait: impl Future<Output = T>) -> T {
    let Some(meter) = current() else {
        return wait.await;
    };
    if let Some(o) = &meter.observer {
        o.waiting(kind, until);
    }
    let started = Instant::now();
    // Told `resumed` even when the wait is dropped (the run stopping).
    let _end = Resumed(&meter);
    let value = wait.await;
    meter.add(kind, started.elapsed());
    value
}

struct Resumed<'a>(&'a WaitMeter);

impl Drop for Resumed<'_> {
    fn drop(&mut self) {
        if let Some(o) = &self.0.observer {
            o.resumed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Seen(Mutex<Vec<String>>);

    impl WaitObserver for Seen {
        fn waiting(&self, kind: WaitKind, until: Option<Instant>) {
            if let Ok(mut v) = self.0.lock() {
                v.push(format!("{kind:?} {}", until.is_some()));
            }
        }
        fn resumed(&self) {
            if let Ok(mut v) = self.0.lock() {
                v.push("resumed".into());
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waits_are_charged_to_the_metered_work_only() {
        let seen = Arc::new(Seen::default());
        let meter = WaitMeter::new(Some(seen.clone() as Arc<dyn WaitObserver>));
        let sleep = |ms| tokio::time::sleep(Duration::from_millis(ms));
        // Outside any meter: nothing charged, nobody told.
        timed(WaitKind::RateSlot, None, sleep(50)).await;
        metered(Arc::clone(&meter), async {
            let until = Instant::now() + Duration::from_millis(200);
            timed(
                WaitKind::RateSlot,
                Some(until),
                tokio::time::sleep_until(until),
            )
            .await;
            timed(WaitKind::RateLimited, None, sleep(30)).await;
            timed(WaitKind::InFlight, None, sleep(5)).await;
        })
        .await;
        let t = meter.totals();
        assert_eq!(t.rate_slot, Duration::from_millis(200));
        assert_eq!(t.rate_limited, Duration::from_millis(30));
        assert_eq!(t.in_flight, Duration::from_millis(5));
        assert_eq!(t.total(), Duration::from_millis(235));
        let seen = seen.0.lock().map(|v| v.clone()).unwrap_or_default();
        assert_eq!(
            seen,
            [
                "RateSlot true",
                "resumed",
                "RateLimited false",
                "resumed",
                "InFlight false",
                "resumed"
            ]
        );
    }
}

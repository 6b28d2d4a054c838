//! A sliding-window counter: at most `limit` events in any window of `length`.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct SlidingWindow {
    limit: usize,
    length: Duration,
    events: VecDeque<Instant>,
}

impl SlidingWindow {
    pub fn new(limit: usize, length: Duration) -> Self {
        SlidingWindow {
            limit: limit.max(1),
            length,
            events: VecDeque::new(),
        }
    }

    /// The earliest instant at or after `now` when one more event fits.
    pub fn next_free(&mut self, now: Instant) -> Instant {
        while let Some(&oldest) = self.events.front() {
            if oldest + self.length <= now {
                self.events.pop_front();
            } else {
                break;
            }
        }
        if self.events.len() < self.limit {
            return now;
        }
        let idx = self.events.len() - self.limit;
        self.events[idx] + self.length
    }

    pub fn record(&mut self, at: Instant) {
        self.events.push_back(at);
    }

    /// Simulates `count` more events as early as the window allows, starting at `now`;
    /// returns when the last one could start. Used by `plan` (records nothing).
    pub fn schedule(&self, now: Instant, count: usize) -> Instant {
        let mut copy = self.clone();
        let mut last = now;
        for _ in 0..count {
            last = copy.next_free(last);
            copy.record(last);
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_limit_then_waits_for_the_oldest_to_leave() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(2, Duration::from_secs(10));
        assert_eq!(w.next_free(t0), t0);
        w.record(t0);
        w.record(t0 + Duration::from_secs(1));
        assert_eq!(
            w.next_free(t0 + Duration::from_secs(2)),
            t0 + Duration::from_secs(10)
        );
        assert_eq!(
            w.next_free(t0 + Duration::from_secs(10)),
            t0 + Duration::from_secs(10)
        );
    }

    #[test]
    fn schedule_of_70_under_4_per_minute() {
        let t0 = Instant::now();
        let w = SlidingWindow::new(4, Duration::from_secs(60));
        // 70 events, 4 a minute: the 70th starts in minute 17 (events 69..72 slot).
        assert_eq!(w.schedule(t0, 70), t0 + Duration::from_secs(17 * 60));
        assert_eq!(w.schedule(t0, 4), t0);
        assert_eq!(w.schedule(t0, 0), t0);
    }
}

//! The live progress display of `cohort-sync run` on a terminal (indicatif): a line per
//! active cohort (or reverse pipeline) saying where it is — waiting for a rate-limit slot
//! and for how long yet, requested, job running, downloading (MB, rows, rate), writing,
//! done or failed — under an overall line (cohorts done of planned, downloads spent).
//!
//! It is a [`ProgressSink`] of the runner's events; a ticker thread redraws what changes
//! with time (elapsed, time left, bytes) ten times a second. Log lines go through
//! [`LogWriter`], which prints them above the bars while the display is on, so the two
//! never garble each other. Off (never created) when stderr is not a terminal, with
//! `--quiet`, or with `--log-format json`.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use cohort_sync::quota::waits::WaitKind;
use cohort_sync::reverse::report::num;
use cohort_sync::runner::progress::{CohortState, Event, ProgressSink, ReverseStep, TransferMeter};
use cohort_sync::text::escape;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Finished lines kept on screen (older ones make room; the summary lists them all).
const FINISHED_SHOWN: usize = 4;
/// How often the ticker redraws times and transfer figures.
const TICK: Duration = Duration::from_millis(100);

/// The display while it is on; logs print above it.
static ACTIVE: RwLock<Option<MultiProgress>> = RwLock::new(None);

/// Whether `run` shows progress: stderr is a terminal (not `TERM=dumb`), no `--quiet`,
/// human logs.
pub fn wanted(quiet: bool, json_logs: bool) -> bool {
    !quiet
        && !json_logs
        && std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

/// Where the human log format writes: stderr, above the bars while the display is on.
#[derive(Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let active = ACTIVE.read().ok().and_then(|g| g.clone());
        match active {
            Some(mp) => mp.suspend(|| std::io::stderr().lock().write_all(buf))?,
            None => std::io::stderr().lock().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogWriter
    }
}

/// The display; [`Display::finish`] clears it (before the summary is printed).
pub struct Display {
    lines: Arc<Mutex<Lines>>,
    stop: Arc<AtomicBool>,
    ticker: Option<std::thread::JoinHandle<()>>,
    mp: MultiProgress,
}

impl Display {
    pub fn start() -> Display {
        let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let overall = mp
            .add(ProgressBar::new_spinner().with_style(style("{spinner:.green} {wide_msg:.bold}")));
        let lines = Arc::new(Mutex::new(Lines {
            mp: mp.clone(),
            started: Instant::now(),
            overall,
            active: BTreeMap::new(),
            finished: VecDeque::new(),
            planned: 0,
            done: 0,
            failed: 0,
            quota_planned: 0,
            quota_spent: 0,
        }));
        lock(&lines).redraw();
        if let Ok(mut a) = ACTIVE.write() {
            *a = Some(mp.clone());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let lines = Arc::clone(&lines);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("progress".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        lock(&lines).redraw();
                    }
                })
                .ok()
        };
        Display {
            lines,
            stop,
            ticker,
            mp,
        }
    }

    /// The runner's end of the display.
    pub fn sink(&self) -> Arc<dyn ProgressSink> {
        Arc::new(Sink(Arc::clone(&self.lines)))
    }

    /// Stops redrawing and clears the lines; logs go straight to stderr again.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
        {
            let mut lines = lock(&self.lines);
            lines.redraw();
            lines.overall.finish();
        }
        if let Ok(mut a) = ACTIVE.write() {
            *a = None;
        }
        let _ = self.mp.clear();
    }
}

fn lock(lines: &Mutex<Lines>) -> MutexGuard<'_, Lines> {
    lines.lock().unwrap_or_else(|e| e.into_inner())
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner())
}

struct Sink(Arc<Mutex<Lines>>);

impl ProgressSink for Sink {
    fn event(&self, event: Event) {
        lock(&self.0).apply(event);
    }
}

/// What one line shows.
enum Shown {
    Cohort(CohortState),
    Reverse(ReverseStep),
}

struct Line {
    bar: ProgressBar,
    shown: Shown,
    /// A wait for Amplitude's limits in progress: kind, end when known.
    wait: Option<(WaitKind, Option<Instant>)>,
}

struct Lines {
    mp: MultiProgress,
    started: Instant,
    overall: ProgressBar,
    /// By (pipeline, cohort id; empty for a reverse pipeline's line).
    active: BTreeMap<(Arc<str>, Arc<str>), Line>,
    finished: VecDeque<ProgressBar>,
    planned: usize,
    done: usize,
    failed: usize,
    quota_planned: u32,
    quota_spent: u32,
}

impl Lines {
    fn apply(&mut self, event: Event) {
        match event {
            Event::Planned {
                downloads, quota, ..
            } => {
                self.planned += downloads;
                self.quota_planned += quota;
            }
            Event::ReverseStarted { .. } => self.planned += 1,
            Event::QuotaSpent { .. } => self.quota_spent += 1,
            Event::Cohort {
                pipeline,
                cohort_id,
                state,
            } => self.show(pipeline, cohort_id, Shown::Cohort(state)),
            Event::Reverse { pipeline, step } => {
                self.show(pipeline, "".into(), Shown::Reverse(step))
            }
            Event::Waiting {
                pipeline,
                cohort_id,
                wait,
            } => {
                if let Some(line) = self.active.get_mut(&(pipeline, cohort_id)) {
                    line.wait = wait.map(|(kind, until)| (kind, until.map(|u| u.into_std())));
                    line.bar.set_message(message(line));
                }
            }
        }
        self.overall.set_message(self.overall_message());
    }

    fn show(&mut self, pipeline: Arc<str>, cohort_id: Arc<str>, shown: Shown) {
        let finished = match &shown {
            Shown::Cohort(CohortState::Finished { ok, .. })
            | Shown::Reverse(ReverseStep::Finished { ok, .. }) => Some(*ok),
            _ => None,
        };
        let key = (pipeline, cohort_id);
        let line = self.active.entry(key.clone()).or_insert_with(|| {
            let prefix = match key.1.as_ref() {
                "" => format!("{} (reverse)", escape(&key.0)),
                id => format!("{} {}", escape(&key.0), escape(id)),
            };
            Line {
                bar: self.mp.add(
                    ProgressBar::new_spinner()
                        .with_style(style("  {spinner:.cyan} {prefix:.bold} {wide_msg}"))
                        .with_prefix(prefix),
                ),
                shown: Shown::Reverse(ReverseStep::ReadingSource),
                wait: None,
            }
        });
        line.shown = shown;
        line.bar.set_message(message(line));
        let Some(ok) = finished else {
            return;
        };
        if let Some(line) = self.active.remove(&key) {
            self.done += 1;
            if !ok {
                self.failed += 1;
            }
            line.bar.set_style(style("  {prefix:.bold} {wide_msg}"));
            line.bar.finish_with_message(message(&line));
            self.finished.push_back(line.bar);
            while self.finished.len() > FINISHED_SHOWN {
                if let Some(old) = self.finished.pop_front() {
                    self.mp.remove(&old);
                }
            }
        }
    }

    fn redraw(&mut self) {
        for line in self.active.values() {
            line.bar.set_message(message(line));
            line.bar.tick();
        }
        self.overall.set_message(self.overall_message());
        self.overall.tick();
    }

    fn overall_message(&self) -> String {
        let waiting = self.active.values().filter(|l| l.wait.is_some()).count();
        // The clock first: a line too long for the terminal is cut at its end.
        let mut text = format!(
            "[{}] {} of {} cohort(s) done",
            clock(self.started.elapsed()),
            self.done,
            self.planned
        );
        if self.failed > 0 {
            text.push_str(&format!(" ({} not done as planned)", self.failed));
        }
        text.push_str(&format!(
            " · downloads spent {} of {} planned",
            self.quota_spent, self.quota_planned
        ));
        if waiting > 0 {
            text.push_str(&format!(" · {waiting} waiting for Amplitude's limits"));
        }
        text
    }
}

/// A line's text now.
fn message(line: &Line) -> String {
    if let Some((kind, until)) = line.wait {
        let left = until.map(|u| u.saturating_duration_since(Instant::now()));
        return match (kind, left) {
            (WaitKind::RateSlot, Some(left)) => {
                format!(
                    "waiting for a rate-limit slot (4/min, 60/10 min): {} left",
                    secs(left)
                )
            }
            (WaitKind::RateSlot, None) => "waiting for a rate-limit slot".into(),
            (WaitKind::InFlight, _) => "waiting for a free request slot (5 in flight)".into(),
            (WaitKind::RateLimited, Some(left)) => {
                format!("rate-limited (HTTP 429): retrying in {}", secs(left))
            }
            (WaitKind::RateLimited, None) => "rate-limited (HTTP 429): backing off".into(),
        };
    }
    match &line.shown {
        Shown::Cohort(state) => match state {
            CohortState::Starting => "starting (lease, state)".into(),
            CohortState::Requesting => "requesting the download".into(),
            CohortState::JobRunning { since } => format!(
                "requested; job running at Amplitude ({})",
                secs(since.elapsed())
            ),
            CohortState::Downloading { meter } => transfer(meter),
            CohortState::Writing => "writing (publishing the Parquet file, saving state)".into(),
            CohortState::Finished { outcome, ok: true } => format!("done: {outcome}"),
            CohortState::Finished { outcome, ok: false } => format!("FAILED: {outcome}"),
        },
        Shown::Reverse(step) => match step {
            ReverseStep::ReadingSource => "reading the source list".into(),
            ReverseStep::Baseline => "reading the cohort's current members".into(),
            ReverseStep::Diffing => "diffing source and cohort".into(),
            ReverseStep::Applying { chunk, of } => format!("applying chunk {chunk} of {of}"),
            ReverseStep::Finished { outcome, ok: true } => format!("done: {}", escape(outcome)),
            ReverseStep::Finished { outcome, ok: false } => {
                format!("FAILED: {}", escape(outcome))
            }
        },
    }
}

/// `downloading 12.3 of 40.0 MB, 150,000 rows (4.1 MB/s)`.
fn transfer(meter: &TransferMeter) -> String {
    let bytes = meter.bytes();
    let mb = |b: u64| b as f64 / 1_000_000.0;
    let size = match meter.expected_bytes() {
        Some(total) => format!("{:.1} of {:.1} MB", mb(bytes), mb(total)),
        None => format!("{:.1} MB", mb(bytes)),
    };
    let elapsed = meter
        .started
        .get()
        .map_or(Duration::ZERO, |s| s.elapsed())
        .as_secs_f64();
    let rate = if elapsed > 0.0 {
        format!(" ({:.1} MB/s)", mb(bytes) / elapsed)
    } else {
        String::new()
    };
    format!("downloading {size}, {} rows{rate}", num(meter.rows()))
}

fn secs(d: Duration) -> String {
    if d.as_secs() >= 60 {
        clock(d)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}", s / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(0), "0");
        assert_eq!(num(999), "999");
        assert_eq!(num(2_000_000), "2,000,000");
        assert_eq!(secs(Duration::from_millis(1500)), "1.5s");
        assert_eq!(secs(Duration::from_secs(61)), "1:01");
    }
}

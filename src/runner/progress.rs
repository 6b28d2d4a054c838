//! What a run is doing now, as typed events for a live display: the runner says what
//! happens (a cohort waits for a rate-limit slot, its job runs, it downloads, it is
//! written), a [`ProgressSink`] shows it. The runner knows only this narrow trait — the
//! terminal display (indicatif) lives in the binary — and a run without a display gets
//! [`Progress::off`], which does nothing.
//!
//! Cheap by construction: one event per state change, never per row; bytes and rows of a
//! download are counters ([`TransferMeter`]) the display reads when it redraws.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

use crate::quota::waits::{WaitKind, WaitObserver};

/// Where one cohort's work is.
#[derive(Debug, Clone)]
pub enum CohortState {
    /// Waiting for the cohort's lease, reading its state.
    Starting,
    /// Asking Amplitude for the download (or reusing a request).
    Requesting,
    /// The export job runs at Amplitude (polled since `since`).
    JobRunning { since: Instant },
    /// The file is being downloaded and converted.
    Downloading { meter: Arc<TransferMeter> },
    /// Publishing the Parquet file and saving the state.
    Writing,
    /// Done: exported, or ended otherwise (`outcome` as in the report).
    Finished { outcome: String, ok: bool },
}

/// A reverse pipeline's step.
#[derive(Debug, Clone)]
pub enum ReverseStep {
    ReadingSource,
    /// Reading the cohort's current members (a snapshot or a download).
    Baseline,
    Diffing,
    /// Sending membership call `chunk` of `of` (1-based).
    Applying {
        chunk: usize,
        of: usize,
    },
    Finished {
        outcome: String,
        ok: bool,
    },
}

/// One happening of a run.
#[derive(Debug, Clone)]
pub enum Event {
    /// An export pipeline planned: `downloads` cohorts to download, `quota` downloads it
    /// may spend, `skipped` cohorts needing nothing.
    Planned {
        pipeline: Arc<str>,
        downloads: usize,
        quota: u32,
        skipped: usize,
    },
    /// A reverse pipeline started.
    ReverseStarted { pipeline: Arc<str> },
    Cohort {
        pipeline: Arc<str>,
        cohort_id: Arc<str>,
        state: CohortState,
    },
    /// A cohort's work started or ended a wait for Amplitude's limits (`None`: ended).
    Waiting {
        pipeline: Arc<str>,
        cohort_id: Arc<str>,
        wait: Option<(WaitKind, Option<Instant>)>,
    },
    /// One of the month's downloads was spent.
    QuotaSpent { pipeline: Arc<str> },
    Reverse {
        pipeline: Arc<str>,
        step: ReverseStep,
    },
}

/// Shows a run's events (the terminal display); must be cheap and never block long.
pub trait ProgressSink: Send + Sync {
    fn event(&self, event: Event);
}

/// The run's sink: [`Progress::off`] unless a display is attached.
#[derive(Clone, Default)]
pub struct Progress(Option<Arc<dyn ProgressSink>>);

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Progress(on)"
        } else {
            "Progress(off)"
        })
    }
}

impl Progress {
    /// Shows nothing.
    pub fn off() -> Self {
        Progress(None)
    }

    pub fn to(sink: Arc<dyn ProgressSink>) -> Self {
        Progress(Some(sink))
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    pub fn emit(&self, event: impl FnOnce() -> Event) {
        if let Some(sink) = &self.0 {
            sink.event(event());
        }
    }

    /// The handle one cohort's work reports through.
    pub fn cohort(&self, pipeline: &str, cohort_id: &str) -> CohortProgress {
        CohortProgress {
            progress: self.clone(),
            pipeline: pipeline.into(),
            cohort_id: cohort_id.into(),
        }
    }

    /// The handle a reverse pipeline reports through (its line is keyed by the pipeline
    /// and an empty cohort id, so its waits show on it).
    pub fn reverse(&self, pipeline: &str) -> ReverseProgress {
        let pipeline: Arc<str> = pipeline.into();
        self.emit(|| Event::ReverseStarted {
            pipeline: Arc::clone(&pipeline),
        });
        ReverseProgress {
            line: self.cohort(&pipeline, ""),
        }
    }
}

/// One cohort's progress; also told of its waits for Amplitude's limits.
#[derive(Clone, Debug)]
pub struct CohortProgress {
    progress: Progress,
    pipeline: Arc<str>,
    cohort_id: Arc<str>,
}

impl CohortProgress {
    pub fn set(&self, state: CohortState) {
        self.progress.emit(|| Event::Cohort {
            pipeline: Arc::clone(&self.pipeline),
            cohort_id: Arc::clone(&self.cohort_id),
            state,
        });
    }

    pub fn quota_spent(&self) {
        self.progress.emit(|| Event::QuotaSpent {
            pipeline: Arc::clone(&self.pipeline),
        });
    }

    /// As a wait observer, when a display is on (`None` saves the calls otherwise).
    pub fn observer(&self) -> Option<Arc<dyn WaitObserver>> {
        self.progress
            .is_on()
            .then(|| Arc::new(self.clone()) as Arc<dyn WaitObserver>)
    }

    fn waiting_event(&self, wait: Option<(WaitKind, Option<Instant>)>) {
        self.progress.emit(|| Event::Waiting {
            pipeline: Arc::clone(&self.pipeline),
            cohort_id: Arc::clone(&self.cohort_id),
            wait,
        });
    }
}

impl WaitObserver for CohortProgress {
    fn waiting(&self, kind: WaitKind, until: Option<Instant>) {
        self.waiting_event(Some((kind, until)));
    }

    fn resumed(&self) {
        self.waiting_event(None);
    }
}

/// A reverse pipeline's progress.
#[derive(Clone, Debug)]
pub struct ReverseProgress {
    line: CohortProgress,
}

impl ReverseProgress {
    pub fn step(&self, step: ReverseStep) {
        self.line.progress.emit(|| Event::Reverse {
            pipeline: Arc::clone(&self.line.pipeline),
            step,
        });
    }

    /// As a wait observer (its waits show on the pipeline's line), when a display is on.
    pub fn observer(&self) -> Option<Arc<dyn WaitObserver>> {
        self.line.observer()
    }
}

/// Bytes received and rows parsed of one download, read by the display when it redraws
/// (added to per network chunk and per record batch, never per row).
#[derive(Debug, Default)]
pub struct TransferMeter {
    bytes: AtomicU64,
    rows: Arc<AtomicU64>,
    /// The body's announced length (0: not announced).
    expected_bytes: AtomicU64,
    pub started: std::sync::OnceLock<Instant>,
}

impl TransferMeter {
    pub fn new(expected_bytes: Option<u64>) -> Arc<Self> {
        let meter = TransferMeter::default();
        meter
            .expected_bytes
            .store(expected_bytes.unwrap_or(0), Ordering::Relaxed);
        let _ = meter.started.set(Instant::now());
        Arc::new(meter)
    }

    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// The counter the CSV parser adds each batch's rows to
    /// ([`crate::export::ConvertOptions::rows_read`]).
    pub fn rows_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.rows)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    pub fn expected_bytes(&self) -> Option<u64> {
        match self.expected_bytes.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }
}

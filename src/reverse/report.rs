//! The reverse part of the run report (`PipelineReport.reverse`): what was read, which
//! baseline was used and why, the counts with samples, where the full lists went, the
//! guard's decision, every call and what Amplitude skipped — plus the human summary.

use std::collections::BTreeMap;

use serde::Serialize;

use super::apply::CallReport;
use super::baseline::{BaselineReport, BaselineUsed};
use super::guard::{Decision, GuardReport};
use super::journal::ChunkOp;
use crate::amplitude::types::IdKind;
use crate::config::ReconcileMode;

/// Ids shown per sample.
pub const SAMPLE: usize = 10;

#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cohort_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Members per the list call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    /// The cohort does not exist yet: the plan creates it by upload.
    pub to_create: bool,
    /// This run created it.
    pub created: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    pub url: String,
    pub rows: u64,
    /// Empty or missing ids (never sent).
    pub blank: u64,
    /// Distinct ids.
    pub ids: u64,
    /// Repeated ids (sent once).
    pub duplicates: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Counts {
    pub add: u64,
    pub remove: u64,
    pub unchanged: u64,
    /// Ids the plan uploads (create / replace).
    pub upload: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Samples {
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JournalReport {
    pub location: String,
    pub planned_by: String,
    /// This run continued a plan an earlier run did not finish.
    pub resumed: bool,
    pub chunks: usize,
    pub applied_before: usize,
    pub status: String,
}

/// An unfinished plan that was not resumed because what it was made from changed.
#[derive(Debug, Clone, Serialize)]
pub struct SupersededReport {
    /// Run that made it.
    pub planned_by: String,
    /// Its journal.
    pub journal: String,
    /// Its calls that were not applied (never sent now).
    pub calls_left: usize,
    /// What changed since it was made (the source object, reconcile mode, chunk_size, ...).
    pub reason: String,
    /// The journal was marked `superseded` (a run); `false` in a plan or dry run, which
    /// only report that the next run will plan afresh.
    pub marked: bool,
}

/// `verify = true`: the cohort downloaded after the last call against what was expected.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Expected members the cohort lacks.
    pub missing: u64,
    /// Members the cohort has and nobody expected.
    pub unexpected: u64,
    pub sample_missing: Vec<String>,
    pub sample_unexpected: Vec<String>,
    /// `missing` / `unexpected` → where the full list was written.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub lists: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl VerifyReport {
    pub fn skipped(note: String) -> Self {
        VerifyReport {
            note: Some(note),
            ..VerifyReport::default()
        }
    }

    pub fn from_drift(d: &super::verify::Drift, request_id: Option<String>) -> Self {
        VerifyReport {
            verified: true,
            request_id,
            missing: d.missing.len() as u64,
            unexpected: d.unexpected.len() as u64,
            sample_missing: d.missing.sample(SAMPLE),
            sample_unexpected: d.unexpected.sample(SAMPLE),
            lists: BTreeMap::new(),
            note: None,
        }
    }

    /// The run's error when there is drift.
    pub fn message(&self) -> String {
        format!(
            "verify after apply: the cohort differs from the expected membership — {} expected members missing (e.g. {}), {} unexpected members (e.g. {}); something else changed the cohort during or right after the run (full lists: {})",
            self.missing,
            self.sample_missing.join(", "),
            self.unexpected,
            self.sample_unexpected.join(", "),
            self.lists.values().cloned().collect::<Vec<_>>().join(", ")
        )
    }
}

/// The rejected-ids ledger in this run (see [`super::rejected`]).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RejectedReport {
    /// Ids to add that Amplitude rejected before: not sent.
    pub held_back: u64,
    /// Ids rejected before and sent again (`--retry-rejected` or an old entry).
    pub retried: u64,
    /// Ids Amplitude rejected in this run (recorded).
    pub recorded: u64,
    /// Entries in the ledger after the run.
    pub ledger: u64,
    pub sample: Vec<String>,
}

/// The membership this run's apply left, recorded (or not) as the next run's free baseline.
#[derive(Debug, Clone, Serialize)]
pub struct DerivedReport {
    pub written: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Members of the derived membership (ids plus members without an id of the kind).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Why it was not written, or what it is tied to.
    pub reason: String,
}

impl DerivedReport {
    pub fn not_written(reason: impl Into<String>) -> Self {
        DerivedReport {
            written: false,
            location: None,
            size: None,
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SkippedReport {
    pub count: u64,
    pub sample: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReverseReport {
    /// `plan`, `dry_run` or `run`.
    pub mode: String,
    /// `mirror`, `add_only`, `remove_only` or `replace`.
    pub reconcile: String,
    pub id_kind: IdKind,
    pub target: TargetReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineReport>,
    /// `None` when unknown (a plan without a free baseline).
    pub counts: Option<Counts>,
    pub samples: Samples,
    /// `add` / `remove` / `skipped` → where the full list was written.
    pub lists: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardReport>,
    /// An unfinished plan this run did not resume, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superseded: Option<SupersededReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal: Option<JournalReport>,
    pub calls: Vec<CallReport>,
    /// Calls this run sent.
    pub calls_sent: usize,
    /// Of those, calls sent again because an earlier run died after sending them and
    /// before journaling their answer (idempotent membership calls; see `reverse::apply`).
    pub calls_resent_in_doubt: usize,
    /// Ids Amplitude skipped or reported invalid.
    pub skipped_ids: SkippedReport,
    pub invalid_ids_sample: Vec<String>,
    /// `verify = true`: what the download after the last call showed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyReport>,
    /// Ids held back because Amplitude rejected them before, and what the ledger holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<RejectedReport>,
    /// `mirror_owned`: members missing from the source that stay because this pipeline did
    /// not add them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_owned_kept: Option<u64>,
    /// The derived baseline this run recorded for the next one (after an apply).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub derived: Option<DerivedReport>,
    /// Problems that do not stop a plan (a run may refuse them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// `planned`, `applied`, `in_sync`, `refused`, `resume_pending`, `failed`, `quota`,
    /// `drift` (applied, but `verify` found the cohort differs from what was expected).
    pub outcome: String,
    pub summary: String,
}

impl ReverseReport {
    /// What this run's calls changed: the figures metrics and the sync history show.
    pub fn totals(&self) -> crate::runner::report::ReverseTotals {
        let applied = |op: ChunkOp| -> u64 {
            self.calls
                .iter()
                .filter(|c| c.status == "applied" && c.op == op)
                .map(|c| c.ids as u64)
                .sum()
        };
        crate::runner::report::ReverseTotals {
            cohort_id: self.target.cohort_id.clone(),
            cohort_name: self.target.name.clone(),
            outcome: self.outcome.clone(),
            added: applied(ChunkOp::Add) + applied(ChunkOp::Upload),
            removed: applied(ChunkOp::Remove),
            skipped: self.skipped_ids.count,
        }
    }

    pub fn new(mode: &str, reconcile: ReconcileMode, id_kind: IdKind) -> Self {
        ReverseReport {
            mode: mode.to_string(),
            reconcile: super::guard::mode_name(reconcile).to_string(),
            id_kind,
            target: TargetReport::default(),
            source: None,
            baseline: None,
            counts: None,
            samples: Samples::default(),
            lists: BTreeMap::new(),
            guard: None,
            superseded: None,
            journal: None,
            calls: Vec::new(),
            calls_sent: 0,
            calls_resent_in_doubt: 0,
            skipped_ids: SkippedReport::default(),
            invalid_ids_sample: Vec::new(),
            derived: None,
            not_owned_kept: None,
            rejected: None,
            verify: None,
            warnings: Vec::new(),
            outcome: "failed".into(),
            summary: String::new(),
        }
    }

    /// The human summary (also logged). Every value from a file or a server is escaped
    /// ([`crate::text::escape`]): one line per line, no control character.
    pub fn render(&self, error: Option<&str>) -> String {
        let mut out = Vec::new();
        let target = match (&self.target.cohort_id, &self.target.name) {
            (Some(id), Some(name)) => format!("cohort {} ({})", esc(id), esc(name)),
            (Some(id), None) => format!("cohort {}", esc(id)),
            (None, Some(name)) => format!("new cohort {name:?}"),
            (None, None) => "the cohort".to_string(),
        };
        if let Some(s) = &self.source {
            out.push(format!(
                "source {}: {} rows, {} distinct ids ({} blank, {} duplicate)",
                esc(&s.url),
                num(s.rows),
                num(s.ids),
                num(s.blank),
                num(s.duplicates)
            ));
        }
        if let Some(b) = &self.baseline {
            let what = match b.used {
                BaselineUsed::Derived => format!(
                    "derived from the last apply ({} members)",
                    num(b.rows - b.members_without_id)
                ),
                BaselineUsed::Snapshot => {
                    format!("snapshot ({} members)", num(b.rows - b.members_without_id))
                }
                BaselineUsed::Download => format!(
                    "download of request {} ({} members)",
                    esc(b.request_id.as_deref().unwrap_or("?")),
                    num(b.rows - b.members_without_id)
                ),
                BaselineUsed::None => "none".to_string(),
            };
            out.push(format!("baseline: {what} — {}", esc(&b.reason)));
            if b.members_without_id > 0 {
                out.push(format!(
                    "  {} members have no {} and cannot be matched",
                    num(b.members_without_id),
                    match self.id_kind {
                        IdKind::UserId => "user_id",
                        IdKind::AmplitudeId => "amplitude_id",
                    }
                ));
            }
        }
        match &self.counts {
            Some(c) if c.upload > 0 => out.push(format!(
                "{}: upload {} ids ({} in the first call, the rest by ADD){}",
                target,
                num(c.upload),
                num(c.upload.min(self.first_upload_size() as u64)),
                if c.remove > 0 || c.add > 0 {
                    format!(
                        " — vs the current members: +{} / -{}",
                        num(c.add),
                        num(c.remove)
                    )
                } else {
                    String::new()
                }
            )),
            Some(c) => out.push(format!(
                "{}: {} to add, {} to remove, {} unchanged ({})",
                target,
                num(c.add),
                num(c.remove),
                num(c.unchanged),
                self.reconcile
            )),
            None => out.push(format!(
                "{target}: add/remove counts unknown without a baseline"
            )),
        }
        if !self.samples.add.is_empty() {
            out.push(format!("  add e.g.: {}", esc(&self.samples.add.join(", "))));
        }
        if !self.samples.remove.is_empty() {
            out.push(format!(
                "  remove e.g.: {}",
                esc(&self.samples.remove.join(", "))
            ));
        }
        if let Some(r) = self.rejected.as_ref().filter(|r| r.held_back > 0) {
            out.push(format!(
                "  {} ids held back: Amplitude rejected them in earlier runs (run --retry-rejected to send them again), e.g. {}",
                num(r.held_back),
                esc(&r.sample.join(", "))
            ));
        }
        if let Some(n) = self.not_owned_kept.filter(|n| *n > 0) {
            out.push(format!(
                "  {} members not in the source stay: this pipeline did not add them (mirror_owned)",
                num(n)
            ));
        }
        for (what, at) in &self.lists {
            out.push(format!("  full {} list: {}", esc(what), esc(at)));
        }
        if let Some(g) = &self.guard {
            match g.decision {
                Decision::Pass => {}
                Decision::Refused => {
                    out.push(format!("guard: REFUSED — {}", esc(&g.reasons.join("; "))))
                }
                Decision::Forced => out.push(format!(
                    "guard: over the limits, applied because of --force — {}",
                    esc(&g.reasons.join("; "))
                )),
            }
        }
        for w in &self.warnings {
            out.push(format!("warning: {}", esc(w)));
        }
        if let Some(v) = &self.verify {
            out.push(match &v.note {
                Some(note) => format!("verify: {}", esc(note)),
                None if v.missing + v.unexpected == 0 => {
                    "verify: the cohort equals the expected membership".to_string()
                }
                None => format!(
                    "verify: DRIFT — {} expected members missing (e.g. {}), {} unexpected (e.g. {})",
                    num(v.missing),
                    esc(&v.sample_missing.join(", ")),
                    num(v.unexpected),
                    esc(&v.sample_unexpected.join(", "))
                ),
            });
        }
        if let Some(d) = &self.derived {
            out.push(match d.size {
                Some(n) if d.written => format!(
                    "derived baseline ({} members) recorded for the next run: no download while nothing else changes the cohort",
                    num(n)
                ),
                _ => format!(
                    "no derived baseline recorded ({}): the next run downloads the cohort",
                    esc(&d.reason)
                ),
            });
        }
        if let Some(p) = &self.superseded {
            out.push(format!(
                "{} the unfinished plan of run {} ({} calls left; journal {}): {} — planned afresh",
                if p.marked {
                    "superseded"
                } else {
                    "a run supersedes"
                },
                esc(&p.planned_by),
                p.calls_left,
                esc(&p.journal),
                esc(&p.reason)
            ));
        }
        if let Some(j) = &self.journal
            && j.resumed
        {
            out.push(format!(
                "resumed the plan of run {} ({} of {} calls were applied before; journal {})",
                esc(&j.planned_by),
                j.applied_before,
                j.chunks,
                esc(&j.location)
            ));
        }
        if !self.calls.is_empty() {
            let count = |op: ChunkOp| {
                self.calls
                    .iter()
                    .filter(|c| c.op == op && c.status == "applied")
                    .count()
            };
            out.push(format!(
                "sent {} calls: {} upload, {} ADD, {} REMOVE{}",
                self.calls_sent,
                count(ChunkOp::Upload),
                count(ChunkOp::Add),
                count(ChunkOp::Remove),
                if self.calls_resent_in_doubt > 0 {
                    format!(
                        " ({} sent again: an earlier run died before journaling its answer)",
                        self.calls_resent_in_doubt
                    )
                } else {
                    String::new()
                }
            ));
        }
        if self.skipped_ids.count > 0 {
            out.push(format!(
                "Amplitude skipped {} ids, e.g. {}",
                num(self.skipped_ids.count),
                esc(&self.skipped_ids.sample.join(", "))
            ));
        }
        if let Some(e) = error {
            out.push(format!("error: {}", esc(e)));
        } else {
            out.push(format!("outcome: {}", self.outcome));
        }
        out.join("\n")
    }

    fn first_upload_size(&self) -> usize {
        self.calls
            .iter()
            .find(|c| c.op == ChunkOp::Upload)
            .map_or(crate::config::MAX_CHUNK_SIZE, |c| c.ids)
    }
}

fn esc(text: &str) -> std::borrow::Cow<'_, str> {
    crate::text::escape(text)
}

/// `1234567` → `1,234,567`.
pub fn num(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(num(0), "0");
        assert_eq!(num(999), "999");
        assert_eq!(num(1000), "1,000");
        assert_eq!(num(250_000), "250,000");
        assert_eq!(num(1_234_567), "1,234,567");
    }
}

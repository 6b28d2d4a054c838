//! The human summary `run` and `plan` print on stdout: per pipeline the quota picture, one
//! line per cohort (what happened and why), every request spent, and where files went.

use cohort_sync::runner::report::{CohortReport, Outcome, PipelineReport, RunReport};

pub fn print(report: &RunReport) {
    print!("{}", render(report));
}

pub fn render(report: &RunReport) -> String {
    let mut out = String::new();
    for p in &report.pipelines {
        render_pipeline(&mut out, p, &report.mode);
    }
    out.push_str(&format!(
        "{} {}: exit code {}\n",
        match report.mode.as_str() {
            "plan" => "plan",
            "dry_run" => "dry run",
            _ => "run",
        },
        report.run_id,
        report.exit_code
    ));
    out
}

fn render_pipeline(out: &mut String, p: &PipelineReport, mode: &str) {
    out.push_str(&format!("pipeline {} ({}, {})\n", p.name, p.kind, p.file));
    if let Some(u) = &p.usage_before {
        out.push_str(&format!(
            "  monthly downloads: {} of {} used, {} left, reserve {}\n",
            u.used, u.limit, u.remaining, u.reserve
        ));
    }
    let width = p
        .cohorts
        .iter()
        .map(|c| c.cohort_id.len())
        .max()
        .unwrap_or(0);
    for c in &p.cohorts {
        out.push_str(&format!(
            "  {:width$}  {:<17} {}\n",
            c.cohort_id,
            outcome_label(c.outcome),
            cohort_detail(c),
        ));
    }
    if p.kind == "export" {
        let verb = if mode == "run" {
            "spent"
        } else {
            "would spend"
        };
        out.push_str(&format!("  quota {verb}: {}", p.quota_spent));
        if p.quota_possibly_spent > 0 {
            out.push_str(&format!(
                ", possibly {} more (sent, no answer: Amplitude may have counted it)",
                p.quota_possibly_spent
            ));
        }
        if let Some(finish) = p.earliest_finish {
            out.push_str(&format!(
                " (rate limits let every request start by {})",
                finish.format("%Y-%m-%d %H:%M:%S UTC")
            ));
        }
        out.push('\n');
        for r in &p.requests {
            out.push_str(&format!(
                "    request {} for cohort {}: {}{}\n",
                r.request_id.as_deref().unwrap_or("(new)"),
                r.cohort_id,
                r.reason.describe(),
                if r.outcome_unknown {
                    " (outcome unknown: possibly spent)"
                } else {
                    ""
                }
            ));
        }
    }
    if let Some(rev) = &p.reverse
        && let Some(text) = rev.get("summary").and_then(|s| s.as_str())
    {
        for line in text.lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    if let Some(m) = &p.manifest {
        out.push_str(&format!("  manifest: {m}\n"));
    }
    if let Some(e) = &p.error {
        out.push_str(&format!("  error: {e}\n"));
    }
}

fn outcome_label(o: Outcome) -> &'static str {
    match o {
        Outcome::Exported => "exported",
        Outcome::Planned => "would download",
        Outcome::SkippedUnchanged => "unchanged",
        Outcome::SkippedArchived => "archived",
        Outcome::SkippedLeased => "HELD by another runner",
        Outcome::Interrupted => "INTERRUPTED",
        Outcome::DeferredQuota => "deferred (quota)",
        Outcome::Failed => "FAILED",
    }
}

fn cohort_detail(c: &CohortReport) -> String {
    let mut parts = Vec::new();
    if c.outcome == Outcome::Exported {
        parts.push(format!(
            "{} rows, {} bytes, {:.1}s",
            c.rows,
            c.bytes,
            c.duration_ms as f64 / 1000.0
        ));
        if let Some(o) = &c.output {
            parts.push(o.clone());
        }
        if c.request_reused {
            parts.push("earlier request reused (no quota)".into());
        }
        if c.file_attempts > 1 {
            parts.push(format!("/file asked {} times", c.file_attempts));
        }
    }
    if let Some(d) = &c.detail {
        parts.push(d.clone());
    }
    parts.push(format!("\"{}\"", c.name));
    parts.join("; ")
}

//! The human summary `run` and `plan` print on stdout: per pipeline the quota picture, one
//! line per cohort (what happened and why), every request spent, and where files went.
//!
//! Every string that came from a server or a file (cohort ids and names, request ids,
//! details and errors quoting Amplitude, paths, the reverse summary's values) goes through
//! [`safe`]: control characters are escaped, so a name cannot move the cursor, recolour
//! the terminal or forge a line. A pipeline's error is printed once.

use cohort_sync::runner::forecast::Forecast;
use cohort_sync::runner::report::{CohortReport, LimitWaits, Outcome, PipelineReport, RunReport};
use cohort_sync::text::escape;

/// A value for the summary, escaped.
fn safe(text: &str) -> String {
    escape(text).into_owned()
}

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
        safe(&report.run_id),
        report.exit_code
    ));
    out
}

fn render_pipeline(out: &mut String, p: &PipelineReport, mode: &str) {
    out.push_str(&format!(
        "pipeline {} ({}, {})\n",
        safe(&p.name),
        safe(&p.kind),
        safe(&p.file)
    ));
    if let Some(u) = &p.usage_before {
        out.push_str(&format!(
            "  monthly downloads: {} of {} used, {} left, reserve {}\n",
            u.used, u.limit, u.remaining, u.reserve
        ));
    }
    if let Some(pace) = &p.pace {
        out.push_str(&format!(
            "  even pacing: {} of the month's {} downloads allowed by the end of this hour, {} for this run (resets {})\n",
            pace.allowed_by_now,
            pace.usable,
            pace.share,
            pace.resets_at.format("%Y-%m-%d %H:%M UTC")
        ));
    }
    let ids: Vec<String> = p.cohorts.iter().map(|c| safe(&c.cohort_id)).collect();
    let width = ids
        .iter()
        .map(|id| id.chars().count())
        .max()
        .unwrap_or(0)
        .min(40);
    for (c, id) in p.cohorts.iter().zip(&ids) {
        out.push_str(&format!(
            "  {:width$}  {:<17} {}\n",
            id,
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
        if let (Some(finish), Some(basis)) = (p.predicted_finish, p.predicted_from)
            && basis.downloads > 0
        {
            out.push_str(&format!(
                "\n  predicted to finish by {} ({} of {} download(s) timed at their last export{})",
                finish.format("%Y-%m-%d %H:%M:%S UTC"),
                basis.known,
                basis.downloads,
                if basis.known < basis.downloads {
                    "; the others at the median of those, or a 30 s job and 500,000 rows a second"
                } else {
                    ""
                }
            ));
        }
        out.push('\n');
        for r in &p.requests {
            out.push_str(&format!(
                "    request {} for cohort {}: {}{}\n",
                safe(r.request_id.as_deref().unwrap_or("(new)")),
                safe(&r.cohort_id),
                r.reason.describe(),
                if r.outcome_unknown {
                    " (outcome unknown: possibly spent)"
                } else {
                    ""
                }
            ));
        }
    }
    // The reverse summary ends with the pipeline's error when there is one: it is left
    // out there and printed once, below, like an export's.
    if let Some(rev) = &p.reverse
        && let Some(text) = rev.get("summary").and_then(|s| s.as_str())
    {
        let error_line = p.error.as_deref().map(|e| format!("error: {}", escape(e)));
        let text = match &error_line {
            Some(e) if text.ends_with(e.as_str()) => &text[..text.len() - e.len()],
            _ => text,
        };
        for line in text.lines() {
            out.push_str(&format!("  {}\n", safe(line)));
        }
    }
    if let Some(w) = &p.limit_waits {
        out.push_str(&format!(
            "  {} in all (cohorts waiting side by side add up)\n",
            waits_text(w)
        ));
    }
    if let Some(f) = &p.forecast {
        render_forecast(out, f);
    }
    if let Some(m) = &p.manifest {
        out.push_str(&format!("  manifest: {}\n", safe(m)));
    }
    if let Some(h) = &p.history {
        out.push_str(&format!("  history: {}\n", safe(h)));
    }
    if let Some(e) = &p.error {
        out.push_str(&format!("  error: {}\n", safe(e)));
    }
}

fn render_forecast(out: &mut String, f: &Forecast) {
    out.push_str(&format!(
        "  month forecast ({} run(s) in the history): {} downloads left after the reserve until {}\n",
        f.runs,
        f.budget_left,
        f.resets_at.format("%Y-%m-%d %H:%M UTC")
    ));
    if let (Some(interval), Some(per_run), Some(per_day)) =
        (f.interval_hours, f.recomputed_per_run, f.downloads_per_day)
    {
        out.push_str(&format!(
            "    runs every {interval} h, {per_run} cohort(s) of {} recomputed between runs: {per_day} downloads a day without pacing\n",
            f.selected
        ));
    }
    match (f.lasts_the_month, f.runs_out_at) {
        (Some(true), None) => out.push_str("    the budget lasts the month\n"),
        (Some(true), Some(t)) => out.push_str(&format!(
            "    the budget lasts the month (without pacing it would run out {})\n",
            t.format("%Y-%m-%d %H:%M UTC")
        )),
        (_, Some(t)) => out.push_str(&format!(
            "    the budget runs out {}\n",
            t.format("%Y-%m-%d %H:%M UTC")
        )),
        _ => {}
    }
    if let Some(r) = &f.refresh_that_lasts {
        out.push_str(&format!(
            "    shortest refresh that lasts the month: {r} (any longer target lasts too)\n"
        ));
    }
    if let (Some(share), Some(deferred)) = (f.paced_downloads_per_day, f.paced_deferred_per_day) {
        out.push_str(&format!(
            "    pace = \"even\" allows {share} downloads a day and defers {deferred} a day"
        ));
        if let Some(every) = f.paced_export_every_hours {
            out.push_str(&format!(" (each cohort exported about every {every} h)"));
        }
        out.push('\n');
    }
    for n in &f.notes {
        out.push_str(&format!("    note: {}\n", safe(n)));
    }
}

/// `60.0s waiting for Amplitude's limits (rate-limit slot 59.9s, HTTP 429 backoff 0.1s)`.
fn waits_text(w: &LimitWaits) -> String {
    let parts: Vec<String> = [
        ("rate-limit slot", w.rate_slot_ms),
        ("in-flight cap", w.in_flight_ms),
        ("HTTP 429 backoff", w.rate_limited_ms),
    ]
    .iter()
    .filter(|(_, ms)| *ms > 0)
    .map(|(what, ms)| format!("{what} {:.1}s", *ms as f64 / 1000.0))
    .collect();
    format!(
        "{:.1}s waiting for Amplitude's limits ({})",
        w.total_ms as f64 / 1000.0,
        parts.join(", ")
    )
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
        Outcome::FreshEnough => "fresh enough",
        Outcome::Paced => "paced",
        Outcome::Failed => "FAILED",
    }
}

fn cohort_detail(c: &CohortReport) -> String {
    let mut parts = Vec::new();
    if c.outcome == Outcome::Exported {
        let time = match &c.limit_waits {
            // The time the cohort took apart from what it spent waiting for Amplitude's
            // limits (a cohort that waited 60 s for the 4-a-minute limit did not take
            // 60 s to download).
            Some(w) => format!(
                "{:.1}s working + {}",
                c.duration_ms.saturating_sub(w.total_ms) as f64 / 1000.0,
                waits_text(w)
            ),
            None => format!("{:.1}s", c.duration_ms as f64 / 1000.0),
        };
        parts.push(format!("{} rows, {} bytes, {time}", c.rows, c.bytes));
        if let Some(o) = &c.output {
            parts.push(safe(o));
        }
        if let Some(ch) = &c.changes {
            parts.push(format!(
                "{} entered, {} exited since {} ({})",
                ch.entered,
                ch.exited,
                safe(&ch.previous_snapshot_date),
                safe(&ch.key)
            ));
        }
        if c.request_reused {
            parts.push("earlier request reused (no quota)".into());
        }
        if c.file_attempts > 1 {
            parts.push(format!("/file asked {} times", c.file_attempts));
        }
    }
    if let Some(d) = &c.detail {
        parts.push(safe(d));
    }
    if c.outcome != Outcome::Exported
        && let Some(w) = &c.limit_waits
    {
        parts.push(waits_text(w));
    }
    parts.push(format!("\"{}\"", safe(&c.name)));
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_sync::runner::report::RunReport;

    fn report(kind: &str, error: &str, reverse_summary: Option<&str>) -> RunReport {
        let mut p = PipelineReport::new("p\x1b[2J.toml", "p", kind);
        p.error = Some(error.to_string());
        p.exit_code = 1;
        let mut c = CohortReport::new("c\r1", "Name\x1b]0;owned\x07", Outcome::Failed);
        c.detail = Some("Amplitude said \x1b[31mno\0".into());
        p.cohorts.push(c);
        if let Some(text) = reverse_summary {
            p.reverse = Some(serde_json::json!({ "summary": text }));
        }
        RunReport {
            tool_version: "0".into(),
            run_id: "r".into(),
            mode: "run".into(),
            started_at: chrono::Utc::now(),
            finished_at: chrono::Utc::now(),
            pipelines: vec![p],
            rate_limited_responses: 0,
            exit_code: 1,
        }
    }

    #[test]
    fn server_and_file_strings_are_escaped() {
        let text = render(&report("export", "boom\x07\nforged line", None));
        assert!(
            !text
                .chars()
                .any(|c| c != '\n' && cohort_sync::text::needs_escape(c)),
            "{text:?}"
        );
        assert!(text.contains("c\\r1"), "{text}");
        assert!(text.contains("Name\\x1b]0;owned\\x07"), "{text}");
        assert!(text.contains("error: boom\\x07\\nforged line"), "{text}");
        assert_eq!(text.lines().filter(|l| l.contains("forged")).count(), 1);
    }

    #[test]
    fn waiting_for_limits_is_told_apart_from_the_work() {
        let mut r = report("export", "", None);
        let p = &mut r.pipelines[0];
        p.error = None;
        let c = &mut p.cohorts[0];
        c.outcome = Outcome::Exported;
        c.detail = None;
        c.rows = 10;
        c.bytes = 99;
        c.duration_ms = 60_200;
        c.limit_waits = Some(LimitWaits {
            total_ms: 60_000,
            rate_slot_ms: 59_500,
            in_flight_ms: 0,
            rate_limited_ms: 500,
        });
        p.limit_waits = c.limit_waits;
        let text = render(&r);
        assert!(
            text.contains(
                "10 rows, 99 bytes, 0.2s working + 60.0s waiting for Amplitude's limits (rate-limit slot 59.5s, HTTP 429 backoff 0.5s)"
            ),
            "{text}"
        );
        assert!(
            text.contains("  60.0s waiting for Amplitude's limits (rate-limit slot 59.5s, HTTP 429 backoff 0.5s) in all"),
            "{text}"
        );
    }

    #[test]
    fn a_reverse_error_is_printed_once() {
        let error = "listing cohorts: refused\x1b";
        let summary = format!("cohort abc: counts unknown\nerror: {}", escape(error));
        let text = render(&report("reverse", error, Some(&summary)));
        assert_eq!(text.matches("error: ").count(), 1, "{text}");
        assert!(
            text.contains("  error: listing cohorts: refused\\x1b\n"),
            "{text}"
        );
        assert!(text.contains("  cohort abc: counts unknown\n"), "{text}");
    }
}

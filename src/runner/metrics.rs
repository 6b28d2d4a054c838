//! `run --metrics-file PATH`: the run report as Prometheus text format, for
//! node_exporter's textfile collector (or any scraper of a `.prom` file). Every figure is
//! read off the run report — the record the summary, the JSON report and the sync history
//! also come from — so they never disagree.
//!
//! The file describes the last run, except two gauges per pipeline that are carried
//! forward from the file already there: `cohort_sync_last_success_timestamp_seconds` and
//! `cohort_sync_last_run_timestamp_seconds` keep their earlier values for pipelines this
//! run did not run (several schedules may share one file), and the last success keeps its
//! earlier value for a pipeline that failed now. So `time() -
//! cohort_sync_last_success_timestamp_seconds > 26 * 3600` fires after 26 hours without a
//! successful run, however many failed in between. A pipeline that never succeeded shows
//! 0 (the alert fires at once: there is no successful export).
//!
//! Written to `.NAME.tmp` beside the file and renamed (the textfile collector reads only
//! `*.prom` files, so it never sees a half-written one).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use super::report::{Outcome, RunReport};

pub const LAST_SUCCESS: &str = "cohort_sync_last_success_timestamp_seconds";
pub const LAST_RUN: &str = "cohort_sync_last_run_timestamp_seconds";

/// Every outcome an export cohort can end with in an applied run (each pipeline shows all,
/// 0 when none: an alert on `failed > 0` needs the series to exist).
const EXPORT_OUTCOMES: [Outcome; 7] = [
    Outcome::Exported,
    Outcome::SkippedUnchanged,
    Outcome::SkippedArchived,
    Outcome::SkippedLeased,
    Outcome::DeferredQuota,
    Outcome::Interrupted,
    Outcome::Failed,
];

/// One metric family: its help, and samples as (labels, value).
struct Family {
    name: &'static str,
    help: &'static str,
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Family {
    fn new(name: &'static str, help: &'static str) -> Self {
        Family {
            name,
            help,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, labels: Vec<(&'static str, String)>, value: f64) {
        self.samples.push((labels, value));
    }

    fn write(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} gauge", self.name);
        for (labels, value) in &self.samples {
            out.push_str(self.name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", number(*value));
        }
    }
}

/// A label value as the text format wants it: `\`, `"` and line feeds escaped.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// Reads the per-pipeline values of `metric` from a metrics file this tool wrote earlier
/// (lines `metric{pipeline="…"} value`); anything else in it is ignored.
pub fn previous_values(text: &str, metric: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let prefix = format!("{metric}{{pipeline=\"");
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else {
            continue;
        };
        let mut name = String::new();
        let mut chars = rest.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => name.push('\n'),
                    Some((_, other)) => name.push(other),
                    None => break,
                },
                '"' => {
                    end = Some(i + 1);
                    break;
                }
                c => name.push(c),
            }
        }
        let Some(end) = end else { continue };
        let Some(value) = rest[end..].strip_prefix("} ") else {
            continue;
        };
        if let Ok(v) = value.trim().parse::<f64>() {
            out.insert(name, v);
        }
    }
    out
}

fn seconds(t: chrono::DateTime<chrono::Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// The file's text for `run`, carrying values forward from `previous` (the file's current
/// text, if any) as the module notes say.
pub fn render(run: &RunReport, previous: Option<&str>) -> String {
    let mut last_success = previous
        .map(|t| previous_values(t, LAST_SUCCESS))
        .unwrap_or_default();
    let mut last_run = previous
        .map(|t| previous_values(t, LAST_RUN))
        .unwrap_or_default();

    let mut run_info = Family::new(
        "cohort_sync_run_info",
        "The last run: its id, mode and tool version (value 1).",
    );
    run_info.add(
        vec![
            ("run_id", run.run_id.clone()),
            ("mode", run.mode.clone()),
            ("version", run.tool_version.clone()),
        ],
        1.0,
    );
    let mut run_finished = Family::new(
        "cohort_sync_run_finished_timestamp_seconds",
        "When the last run ended (Unix time).",
    );
    run_finished.add(vec![], seconds(run.finished_at));
    let mut run_duration = Family::new(
        "cohort_sync_run_duration_seconds",
        "How long the last run took.",
    );
    run_duration.add(
        vec![],
        (run.finished_at - run.started_at).num_milliseconds() as f64 / 1000.0,
    );
    let mut run_exit = Family::new(
        "cohort_sync_run_exit_code",
        "The last run's exit code (0 done, 1 failed, 2 bad config, 3 stopped by quota, 130/143 signal).",
    );
    run_exit.add(vec![], f64::from(run.exit_code));
    let mut answers_429 = Family::new(
        "cohort_sync_run_rate_limited_responses",
        "HTTP 429 answers Amplitude gave the last run.",
    );
    answers_429.add(vec![], run.rate_limited_responses as f64);

    let mut success = Family::new(
        "cohort_sync_pipeline_success",
        "1 when the pipeline's last run did all it had to (exit 0), else 0.",
    );
    let mut exit_code = Family::new(
        "cohort_sync_pipeline_exit_code",
        "The pipeline's exit code in the last run.",
    );
    let mut duration = Family::new(
        "cohort_sync_pipeline_duration_seconds",
        "How long the pipeline took in the last run.",
    );
    let mut rows = Family::new(
        "cohort_sync_rows_exported",
        "Rows written to Parquet by the last run.",
    );
    let mut bytes = Family::new(
        "cohort_sync_bytes_exported",
        "Parquet bytes written by the last run.",
    );
    let mut cohorts = Family::new(
        "cohort_sync_cohorts",
        "Cohorts of the last run by outcome (a reverse pipeline: its target, by the reverse outcome).",
    );
    let mut spent = Family::new(
        "cohort_sync_requests_spent",
        "Download requests (of the monthly quota) the last run spent.",
    );
    let mut possibly = Family::new(
        "cohort_sync_requests_possibly_spent",
        "Download requests of the last run whose outcome is unknown (sent, no answer).",
    );
    let mut quota_limit = Family::new(
        "cohort_sync_quota_limit",
        "The app's monthly download limit, as read by the last run.",
    );
    let mut quota_used = Family::new(
        "cohort_sync_quota_used",
        "Downloads used this month after the last run (possibly spent ones included).",
    );
    let mut quota_left = Family::new(
        "cohort_sync_quota_left",
        "Downloads left this month after the last run.",
    );
    let mut reverse_ids = Family::new(
        "cohort_sync_reverse_ids",
        "Ids the last run's reverse calls added, removed, or Amplitude skipped.",
    );

    for p in &run.pipelines {
        let name = || ("pipeline", p.name.clone());
        let ok = p.exit_code == crate::exit::OK;
        success.add(vec![name()], if ok { 1.0 } else { 0.0 });
        exit_code.add(vec![name()], f64::from(p.exit_code));
        let finished = p.finished_at.unwrap_or(run.finished_at);
        if let Some(started) = p.started_at {
            duration.add(
                vec![name()],
                (finished - started).num_milliseconds() as f64 / 1000.0,
            );
        }
        last_run.insert(p.name.clone(), seconds(finished));
        if ok {
            last_success.insert(p.name.clone(), seconds(finished));
        } else {
            last_success.entry(p.name.clone()).or_insert(0.0);
        }
        spent.add(vec![name()], f64::from(p.quota_spent));
        possibly.add(vec![name()], f64::from(p.quota_possibly_spent));
        if let Some((limit, used, left)) = p.quota_after() {
            quota_limit.add(vec![name()], f64::from(limit));
            quota_used.add(vec![name()], f64::from(used));
            quota_left.add(vec![name()], f64::from(left));
        }
        match &p.reverse_totals {
            Some(t) => {
                cohorts.add(vec![name(), ("outcome", t.outcome.clone())], 1.0);
                for (change, n) in [
                    ("added", t.added),
                    ("removed", t.removed),
                    ("skipped", t.skipped),
                ] {
                    reverse_ids.add(vec![name(), ("change", change.into())], n as f64);
                }
            }
            None => {
                rows.add(
                    vec![name()],
                    p.cohorts.iter().map(|c| c.rows).sum::<u64>() as f64,
                );
                bytes.add(
                    vec![name()],
                    p.cohorts.iter().map(|c| c.bytes).sum::<u64>() as f64,
                );
                for outcome in EXPORT_OUTCOMES {
                    let n = p.cohorts.iter().filter(|c| c.outcome == outcome).count();
                    cohorts.add(vec![name(), ("outcome", outcome_name(outcome))], n as f64);
                }
            }
        }
    }

    let mut success_at = Family::new(
        LAST_SUCCESS,
        "When the pipeline last ran with exit 0 (Unix time; 0 = never). Carried over runs.",
    );
    for (pipeline, t) in last_success {
        success_at.add(vec![("pipeline", pipeline)], t);
    }
    let mut run_at = Family::new(
        LAST_RUN,
        "When the pipeline last ran, whatever the outcome (Unix time). Carried over runs.",
    );
    for (pipeline, t) in last_run {
        run_at.add(vec![("pipeline", pipeline)], t);
    }

    let mut out = String::new();
    for family in [
        &run_info,
        &run_finished,
        &run_duration,
        &run_exit,
        &answers_429,
        &success,
        &exit_code,
        &duration,
        &rows,
        &bytes,
        &cohorts,
        &spent,
        &possibly,
        &quota_limit,
        &quota_used,
        &quota_left,
        &reverse_ids,
        &success_at,
        &run_at,
    ] {
        if !family.samples.is_empty() {
            family.write(&mut out);
        }
    }
    out
}

fn outcome_name(o: Outcome) -> String {
    serde_json::to_value(o)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Renders `run` (carrying values forward from the file at `path`) and replaces the file:
/// written beside it as `.NAME.tmp`, synced, renamed. Readable by all (0644): it holds no
/// id and no secret.
pub fn write(path: &Path, run: &RunReport) -> std::io::Result<()> {
    use std::io::Write;
    let previous = match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let text = render(run, previous.as_deref());
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the metrics path names no file"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    }
    crate::crash::point("metrics.temp_written");
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previous_values_read_escaped_names_back() {
        let mut f = Family::new(LAST_SUCCESS, "h");
        f.add(vec![("pipeline", "a\"b\\c\nd".into())], 1700000000.5);
        f.add(vec![("pipeline", "plain".into())], 12.0);
        let mut text = String::new();
        f.write(&mut text);
        let back = previous_values(&text, LAST_SUCCESS);
        assert_eq!(back.get("a\"b\\c\nd"), Some(&1700000000.5), "{text}");
        assert_eq!(back.get("plain"), Some(&12.0), "{text}");
        assert!(previous_values(&text, LAST_RUN).is_empty());
    }

    #[test]
    fn numbers_are_prometheus_numbers() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(f64::INFINITY), "+Inf");
    }
}

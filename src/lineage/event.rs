//! The OpenLineage RunEvent JSON (spec 2-0-2): START and the end events of one pipeline's
//! run, their datasets named as OpenLineage's naming conventions say (`s3://bucket` +
//! key, `file` + absolute path, `amplitude://HOST` + cohort id), and the run's UUID.

use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::runner::report::{Outcome, PipelineReport};

/// `producer` of every event and `_producer` of every facet: this tool, its version and
/// the commit it was built from.
pub const PRODUCER: &str = concat!(
    "urn:cohort-sync:",
    env!("CARGO_PKG_VERSION"),
    ":",
    env!("COHORT_SYNC_COMMIT")
);

const EVENT_SCHEMA: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
const JOB_TYPE_SCHEMA: &str =
    "https://openlineage.io/spec/facets/2-0-4/JobTypeJobFacet.json#/$defs/JobTypeJobFacet";
const OUTPUT_STATISTICS_SCHEMA: &str = "https://openlineage.io/spec/facets/1-0-2/OutputStatisticsOutputDatasetFacet.json#/$defs/OutputStatisticsOutputDatasetFacet";
const ERROR_MESSAGE_SCHEMA: &str = "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet";
/// This tool's own facets, described by `schemas/openlineage-facets.json`.
const OWN_FACETS: &str = "urn:cohort-sync:schemas/openlineage-facets.json#/$defs/";

/// A dataset as OpenLineage names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    pub namespace: String,
    pub name: String,
}

impl Dataset {
    /// A storage location (`s3://bucket/key`, `az://…`, `gs://…`, or a local path, relative
    /// ones taken against `base_dir`): `scheme://bucket` + key, or `file` + absolute path.
    pub fn of_location(url: &str, base_dir: &Path) -> Dataset {
        if crate::storage::is_cloud_url(url)
            && let Some((scheme, rest)) = url.split_once("://")
        {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            return Dataset {
                namespace: format!("{scheme}://{bucket}"),
                name: key.trim_matches('/').to_string(),
            };
        }
        let local = url.strip_prefix("file://").unwrap_or(url);
        let path = Path::new(local);
        let full = if path.is_absolute() {
            path.to_path_buf()
        } else {
            base_dir.join(path)
        };
        let mut clean = std::path::PathBuf::new();
        for c in full.components() {
            match c {
                std::path::Component::CurDir => {}
                std::path::Component::ParentDir => {
                    clean.pop();
                }
                other => clean.push(other),
            }
        }
        Dataset {
            namespace: "file".into(),
            name: clean.display().to_string(),
        }
    }

    /// A cohort of the Amplitude project behind `base_url`.
    pub fn cohort(base_url: &str, cohort_id: &str) -> Dataset {
        let rest = base_url.split_once("://").map_or(base_url, |(_, r)| r);
        let host = rest.split(['/', '?', '#']).next().unwrap_or(rest);
        Dataset {
            namespace: format!("amplitude://{host}"),
            name: cohort_id.to_string(),
        }
    }

    fn json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("namespace".into(), json!(self.namespace));
        m.insert("name".into(), json!(self.name));
        m
    }
}

/// The run's UUID: a UUIDv7 whose time is the run's start and whose other bits are a hash
/// of the run id and the pipeline name, so START and its end event agree without state.
pub fn run_uuid(started_at: DateTime<Utc>, run_id: &str, pipeline: &str) -> String {
    let digest = Sha256::new()
        .chain_update(run_id.as_bytes())
        .chain_update([0u8])
        .chain_update(pipeline.as_bytes())
        .finalize();
    let mut bits = [0u8; 10];
    bits.copy_from_slice(&digest[..10]);
    let millis = u64::try_from(started_at.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &bits)
        .into_uuid()
        .to_string()
}

/// How a pipeline's run ended, as OpenLineage's `eventType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Exit 0, or 3 (deferred by quota: all the month allowed was done).
    Complete,
    /// Exit 1 or 2.
    Fail,
    /// Stopped by SIGTERM / SIGINT.
    Abort,
}

impl Ended {
    /// From the pipeline's exit code and whether the run was stopped by a signal.
    pub fn of(exit_code: u8, stopped_by_signal: bool) -> Ended {
        if stopped_by_signal {
            Ended::Abort
        } else if exit_code == crate::exit::OK || exit_code == crate::exit::QUOTA {
            Ended::Complete
        } else {
            Ended::Fail
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Ended::Complete => "COMPLETE",
            Ended::Fail => "FAIL",
            Ended::Abort => "ABORT",
        }
    }
}

/// What the events of one pipeline say that its report does not.
#[derive(Debug, Clone)]
pub struct JobInfo {
    pub namespace: String,
    pub name: String,
    /// `EXPORT` or `REVERSE` (the `jobType` facet).
    pub job_type: &'static str,
    /// The API root: cohorts are datasets of `amplitude://HOST`.
    pub base_url: String,
    /// A reverse pipeline's CRM list.
    pub source: Option<Dataset>,
    /// A reverse pipeline's target cohort, when it exists before the run.
    pub target_cohort: Option<String>,
    /// Relative local paths in the report resolve against this directory.
    pub base_dir: std::path::PathBuf,
}

fn facet(schema: &str, fields: Value) -> Value {
    let mut m = Map::new();
    m.insert("_producer".into(), json!(PRODUCER));
    m.insert("_schemaURL".into(), json!(schema));
    if let Value::Object(f) = fields {
        m.extend(f);
    }
    Value::Object(m)
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl JobInfo {
    fn job(&self) -> Value {
        json!({
            "namespace": self.namespace,
            "name": self.name,
            "facets": {
                "jobType": facet(JOB_TYPE_SCHEMA, json!({
                    "processingType": "BATCH",
                    "integration": "COHORT_SYNC",
                    "jobType": self.job_type,
                })),
            },
        })
    }

    fn event(
        &self,
        event_type: &str,
        at: DateTime<Utc>,
        run: Value,
        inputs: Vec<Value>,
        outputs: Vec<Value>,
    ) -> Value {
        json!({
            "eventType": event_type,
            "eventTime": time(at),
            "producer": PRODUCER,
            "schemaURL": EVENT_SCHEMA,
            "run": run,
            "job": self.job(),
            "inputs": inputs,
            "outputs": outputs,
        })
    }

    /// START: the job and run; a reverse pipeline's source and target cohort (an export's
    /// cohorts are known once listed: they come with the end event).
    pub fn start(&self, run_uuid: &str, run_id: &str, at: DateTime<Utc>) -> Value {
        let run = json!({
            "runId": run_uuid,
            "facets": {"cohortSync": facet(&own("CohortSyncRunFacet"), json!({"runId": run_id}))},
        });
        let inputs = self
            .source
            .iter()
            .map(|d| Value::Object(d.json()))
            .collect();
        let outputs = self
            .target_cohort
            .iter()
            .map(|id| Value::Object(Dataset::cohort(&self.base_url, id).json()))
            .collect();
        self.event("START", at, run, inputs, outputs)
    }

    /// The end event, from the pipeline's report.
    pub fn end(
        &self,
        run_uuid: &str,
        run_id: &str,
        report: &PipelineReport,
        ended: Ended,
    ) -> Value {
        let at = report.finished_at.unwrap_or_else(crate::clock::now);
        let mut run_facets = Map::new();
        let deferred: Vec<&str> = report
            .cohorts
            .iter()
            .filter(|c| c.outcome == Outcome::DeferredQuota)
            .map(|c| c.cohort_id.as_str())
            .collect();
        let mut outcomes = Map::new();
        for c in &report.cohorts {
            let key = serde_json::to_value(c.outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let n = outcomes.get(&key).and_then(Value::as_u64).unwrap_or(0);
            outcomes.insert(key, json!(n + 1));
        }
        run_facets.insert(
            "cohortSync".into(),
            facet(
                &own("CohortSyncRunFacet"),
                json!({
                    "runId": run_id,
                    "exitCode": report.exit_code,
                    "outcomes": outcomes,
                    "deferredCohorts": deferred,
                    "quotaSpent": report.quota_spent,
                }),
            ),
        );
        if ended == Ended::Fail {
            run_facets.insert(
                "errorMessage".into(),
                facet(
                    ERROR_MESSAGE_SCHEMA,
                    json!({"message": failure_message(report), "programmingLanguage": "Rust"}),
                ),
            );
        }
        let run = json!({"runId": run_uuid, "facets": run_facets});
        let (inputs, outputs) = match self.job_type {
            "REVERSE" => self.reverse_datasets(report),
            _ => self.export_datasets(report),
        };
        self.event(ended.as_str(), at, run, inputs, outputs)
    }

    /// Inputs: the cohorts this run downloaded; outputs: the Parquet files it published.
    fn export_datasets(&self, report: &PipelineReport) -> (Vec<Value>, Vec<Value>) {
        let (mut inputs, mut outputs) = (Vec::new(), Vec::new());
        for c in report
            .cohorts
            .iter()
            .filter(|c| c.outcome == Outcome::Exported)
        {
            let mut input = Dataset::cohort(&self.base_url, &c.cohort_id).json();
            input.insert(
                "facets".into(),
                json!({"amplitudeCohort": facet(&own("AmplitudeCohortDatasetFacet"), json!({
                    "cohortId": c.cohort_id,
                    "cohortName": c.name,
                    "lastComputed": c.last_computed,
                    "requestId": c.request_id,
                }))}),
            );
            inputs.push(Value::Object(input));
            if let Some(path) = &c.output {
                let mut output = Dataset::of_location(path, &self.base_dir).json();
                output.insert(
                    "outputFacets".into(),
                    json!({"outputStatistics": facet(OUTPUT_STATISTICS_SCHEMA, json!({
                        "rowCount": c.rows,
                        "size": c.bytes,
                        "fileCount": 1,
                    }))}),
                );
                outputs.push(Value::Object(output));
            }
        }
        (inputs, outputs)
    }

    /// Input: the CRM list; output: the cohort, with what the run's calls changed.
    fn reverse_datasets(&self, report: &PipelineReport) -> (Vec<Value>, Vec<Value>) {
        let inputs = self
            .source
            .iter()
            .map(|d| Value::Object(d.json()))
            .collect();
        let totals = report.reverse_totals.clone().unwrap_or_default();
        let cohort = totals.cohort_id.clone().or(self.target_cohort.clone());
        let outputs = cohort
            .map(|id| {
                let mut output = Dataset::cohort(&self.base_url, &id).json();
                output.insert(
                    "outputFacets".into(),
                    json!({"cohortMembership": facet(&own("CohortMembershipOutputDatasetFacet"), json!({
                        "outcome": totals.outcome,
                        "cohortName": totals.cohort_name,
                        "idsAdded": totals.added,
                        "idsRemoved": totals.removed,
                        "idsSkipped": totals.skipped,
                    }))}),
                );
                Value::Object(output)
            })
            .into_iter()
            .collect();
        (inputs, outputs)
    }
}

fn own(name: &str) -> String {
    format!("{OWN_FACETS}{name}")
}

/// The pipeline's error, else the first failed cohort's, else its exit code.
fn failure_message(report: &PipelineReport) -> String {
    if let Some(e) = &report.error {
        return e.clone();
    }
    report
        .cohorts
        .iter()
        .find(|c| c.outcome == Outcome::Failed)
        .map(|c| {
            format!(
                "cohort {}: {}",
                c.cohort_id,
                c.detail.as_deref().unwrap_or("failed")
            )
        })
        .unwrap_or_else(|| format!("the pipeline ended with exit code {}", report.exit_code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datasets_are_named_by_the_conventions() {
        let base = Path::new("/work/dir");
        assert_eq!(
            Dataset::of_location("s3://bucket/a/b/part-0.parquet", base),
            Dataset {
                namespace: "s3://bucket".into(),
                name: "a/b/part-0.parquet".into()
            }
        );
        assert_eq!(
            Dataset::of_location("./out/../out/x.parquet", base),
            Dataset {
                namespace: "file".into(),
                name: "/work/dir/out/x.parquet".into()
            }
        );
        assert_eq!(
            Dataset::cohort("http://127.0.0.1:8080", "abc").namespace,
            "amplitude://127.0.0.1:8080"
        );
    }

    #[test]
    fn run_uuid_is_a_stable_v7() {
        let at = DateTime::parse_from_rfc3339("2026-11-29T20:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let a = run_uuid(at, "r1", "p");
        assert_eq!(a, run_uuid(at, "r1", "p"));
        assert_ne!(a, run_uuid(at, "r1", "q"));
        let parsed = uuid::Uuid::parse_str(&a).map(|u| u.get_version_num());
        assert_eq!(parsed.ok(), Some(7));
    }

    #[test]
    fn quota_deferral_completes_and_a_signal_aborts() {
        assert_eq!(Ended::of(3, false), Ended::Complete);
        assert_eq!(Ended::of(1, false), Ended::Fail);
        assert_eq!(Ended::of(0, true), Ended::Abort);
    }
}

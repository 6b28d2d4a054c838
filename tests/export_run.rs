//! End to end: `cohort-sync run` on export pipelines against the emulator over HTTP; what
//! it wrote read back by others — pyarrow (values, footer metadata, the file's own row
//! groups and zstd level), object listings, SHA-256 computed here over the bytes read
//! back — and compared with the members the emulator generated and the request ids its
//! log shows it issued; local and S3 (moto) outputs; gzip and plain bodies; bodies served
//! directly and through the 302 to the presigned listener; the run manifest and
//! `_SUCCESS`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{NaiveDate, Utc};
use cohort_sync::emulator::{CohortSpec, FaultKind, FaultRule, LoggedRequest};
use common::emulator::{CohortSpecExt, cohort};
use common::expect::{expected_digest, export_columns, sha256_hex};
use common::harness::{self, Harness, report_cohort};
use common::log::{presigned, request_id_of, spent_requests, status_count};
use common::peers::{layout, parquet_digest};
use serde_json::{Value, json};

const PROPS: &[&str] = &["gp:country", "gp:plan", "gp:note"];

/// An export output: a directory of the harness or a prefix of an S3 bucket, listed and
/// read back without the code under test.
enum Output {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl Output {
    fn local(h: &Harness, rel: &str) -> Output {
        Output::Local(h.path(rel))
    }

    fn s3(prefix: &str) -> Output {
        Output::S3 {
            bucket: common::s3::create_bucket("export"),
            prefix: prefix.into(),
        }
    }

    /// `output.url` (and `state.url` beside it) for a pipeline file.
    fn urls(&self) -> (String, String) {
        match self {
            Output::Local(dir) => (
                dir.to_string_lossy().into_owned(),
                dir.with_file_name("state").to_string_lossy().into_owned(),
            ),
            Output::S3 { bucket, prefix } => (
                format!("s3://{bucket}/{prefix}"),
                format!("s3://{bucket}/state"),
            ),
        }
    }

    /// Where a relative key is, as a path or `s3://` URL (what the tool reports too).
    fn target(&self, rel: &str) -> String {
        format!("{}/{rel}", self.urls().0)
    }

    /// Every object below the output, relative key → size.
    fn objects(&self) -> BTreeMap<String, u64> {
        match self {
            Output::Local(dir) => walk(dir)
                .into_iter()
                .map(|p| {
                    let rel = p.strip_prefix(dir).expect("below").to_string_lossy();
                    let len = std::fs::metadata(&p).expect("metadata").len();
                    (rel.into_owned(), len)
                })
                .collect(),
            Output::S3 { bucket, prefix } => common::s3::list(bucket, &format!("{prefix}/"))
                .into_iter()
                .map(|(k, size)| (k[prefix.len() + 1..].to_string(), size))
                .collect(),
        }
    }

    fn read(&self, rel: &str) -> Vec<u8> {
        common::s3::read(&self.target(rel))
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A run and the UTC dates before and after it: its snapshot date is one of them.
struct Dated {
    code: i32,
    report: Value,
    stderr: String,
    dates: [NaiveDate; 2],
}

async fn run_dated(h: &Harness, files: &[&Path]) -> Dated {
    let before = Utc::now().date_naive();
    let (code, report, stderr) = h.run_env(files, &[], &[]).await;
    let after = Utc::now().date_naive();
    let report = report.unwrap_or_else(|| panic!("no report; exit {code}\n{stderr}"));
    Dated {
        code,
        report,
        stderr,
        dates: [before, after],
    }
}

/// The one file of cohort `id` in the listing, at the default layout's key; its
/// snapshot date is the run's (taken from the key, within the dates around the run).
fn file_of(objects: &BTreeMap<String, u64>, id: &str, run: &Dated) -> String {
    let prefix = format!("cohort_id={id}/snapshot_date=");
    let mine: Vec<&String> = objects.keys().filter(|k| k.starts_with(&prefix)).collect();
    assert_eq!(mine.len(), 1, "{id}: {objects:#?}");
    let date = mine[0][prefix.len()..]
        .strip_suffix("/part-0.parquet")
        .unwrap_or_else(|| panic!("{}: not the default layout", mine[0]));
    let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").expect("a date");
    assert!(run.dates.contains(&date), "{date} is not the run's date");
    mine[0].clone()
}

/// One exported file against the emulator: rows and values (pyarrow vs. the universe),
/// footer metadata (the request id the emulator's log shows it issued for this cohort).
fn check_file(spec: &CohortSpec, log: &[LoggedRequest], target: &str) -> Value {
    let columns = export_columns(spec);
    let got = parquet_digest(target, &columns);
    assert_eq!(got["rows"].as_u64(), Some(spec.size), "{got:#}");
    // A `props` download ends with the amplitude id again.
    let mut all = columns.clone();
    if !spec.props.is_empty() {
        all.push("amplitude_id_2".into());
    }
    assert_eq!(got["columns"], json!(all), "{got:#}");
    assert_eq!(got["types"][0], "int64", "{got:#}");
    assert_eq!(
        got["digest"].as_str(),
        Some(expected_digest(spec, &spec.props).as_str()),
        "{}: content differs from the emulator's members",
        spec.id
    );
    let meta = &got["metadata"];
    assert_eq!(meta["cohort_sync.cohort_id"], spec.id.as_str());
    assert_eq!(meta["cohort_sync.cohort_name"], spec.name.as_str());
    assert_eq!(meta["cohort_sync.rows"], spec.size.to_string());
    assert_eq!(
        meta["cohort_sync.request_id"],
        request_id_of(log, &spec.id).as_str()
    );
    assert_eq!(
        meta["cohort_sync.last_computed"],
        (spec.last_computed_ms / 1000).to_string()
    );
    assert_eq!(meta["cohort_sync.tool_version"], env!("CARGO_PKG_VERSION"));
    got
}

/// The run's manifest of `pipeline` against the listing: exactly one, named by the run id;
/// every file with its key, rows, bytes (the listed size), SHA-256 (of the bytes read back)
/// and the emulator's request id; `_SUCCESS` beside it exactly when `complete`.
fn check_manifest(
    h: &Harness,
    out: &Output,
    run: &Dated,
    pipeline: &str,
    log: &[LoggedRequest],
    published: &[&str],
    complete: bool,
) {
    let objects = out.objects();
    let run_id = run.report["run_id"].as_str().expect("run id");
    let suffix = format!("/{pipeline}/manifest.json");
    let manifests: Vec<&String> = objects
        .keys()
        .filter(|k| k.starts_with("_runs/") && k.ends_with(&suffix))
        .filter(|k| k.contains(run_id))
        .collect();
    assert_eq!(
        manifests,
        [&format!("_runs/{run_id}/{pipeline}/manifest.json")],
        "{objects:#?}"
    );
    let manifest: Value = serde_json::from_slice(&out.read(manifests[0])).expect("manifest JSON");
    assert_eq!(manifest["run_id"], run_id);
    assert_eq!(manifest["pipeline"], pipeline);
    assert_eq!(manifest["complete"], complete, "{manifest:#}");
    let files = manifest["files"].as_array().expect("files");
    let mut listed: Vec<&str> = files
        .iter()
        .map(|f| f["cohort_id"].as_str().expect("cohort id"))
        .collect();
    listed.sort();
    let mut want = published.to_vec();
    want.sort();
    assert_eq!(listed, want, "{manifest:#}");
    for f in files {
        let id = f["cohort_id"].as_str().expect("id");
        let spec = h.spec(id);
        let rel = file_of(&objects, id, run);
        let bytes = out.read(&rel);
        assert_eq!(f["key"], out.target(&rel).as_str(), "{f:#}");
        assert_eq!(f["rows"].as_u64(), Some(spec.size), "{f:#}");
        assert_eq!(f["bytes"].as_u64(), Some(objects[&rel]), "{f:#}");
        assert_eq!(f["bytes"].as_u64(), Some(bytes.len() as u64), "{f:#}");
        assert_eq!(f["sha256"], sha256_hex(&bytes).as_str(), "{f:#}");
        assert_eq!(f["request_id"], request_id_of(log, id).as_str(), "{f:#}");
        assert_eq!(f["cohort_name"], spec.name.as_str(), "{f:#}");
    }
    let success = format!("_runs/{run_id}/{pipeline}/_SUCCESS");
    match objects.get(&success) {
        Some(size) => {
            assert!(complete, "_SUCCESS after an incomplete run");
            assert_eq!(*size, 0, "_SUCCESS is an empty marker");
        }
        None => assert!(!complete, "no {success}: {objects:#?}"),
    }
    let described = run.report["pipelines"]
        .as_array()
        .expect("pipelines")
        .iter()
        .find(|p| p["name"] == pipeline)
        .and_then(|p| p["manifest"].as_str())
        .expect("the report names the manifest");
    assert_eq!(described, out.target(manifests[0]));
}

async fn export_matrix(gzip: bool, s3: bool) {
    let cohorts = vec![
        cohort("empty", 0),
        cohort("one", 1).props(PROPS),
        cohort("mid-props", 100_000).props(PROPS),
        cohort("mid-plain", 100_000),
        cohort("small", 2_000),
    ];
    let h = harness::start(cohorts, |c| {
        c.gzip = gzip;
        c.redirect_threshold_rows = 50_000;
    })
    .await;
    let out = if s3 {
        Output::s3("cohorts")
    } else {
        Output::local(&h, "out")
    };
    let (output, state) = out.urls();
    // Two pipelines: props on for the cohorts with property columns, off for the rest.
    let with_props = h.export_pipeline(
        "with-props",
        &["one", "mid-props"],
        &output,
        &state,
        "[download]\nprops = true\n",
    );
    let plain = h.export_pipeline(
        "plain",
        &["empty", "mid-plain", "small"],
        &output,
        &state,
        "",
    );
    // Both pipelines in one run: the rate limits are kept per process, so this run paces
    // all five requests (two runs started within a minute would each pace only their own).
    let run = run_dated(&h, &[&with_props, &plain]).await;
    assert_eq!(run.code, 0, "{}\n{:#}", run.stderr, run.report);
    let log = h.requests().await;
    let objects = out.objects();
    for spec in &h.cohorts {
        let rel = file_of(&objects, &spec.id, &run);
        check_file(spec, &log, &out.target(&rel));
        let c = report_cohort(&run.report, &spec.id);
        assert_eq!(c["outcome"], "exported", "{c:#}");
    }
    check_manifest(
        &h,
        &out,
        &run,
        "with-props",
        &log,
        &["one", "mid-props"],
        true,
    );
    check_manifest(
        &h,
        &out,
        &run,
        "plain",
        &log,
        &["empty", "mid-plain", "small"],
        true,
    );
    // Both paths were taken: bodies directly and through the presigned listener, and the
    // presigned listener never saw an Authorization header.
    let links = presigned(&log);
    assert_eq!(links.len(), 2, "the two 100k cohorts go through the 302");
    assert!(links.iter().all(|r| !r.authorization));
    assert_eq!(spent_requests(&log).len(), 5, "one request per cohort");
    assert_eq!(status_count(&log, 429), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exports_plain_bodies_to_local_parquet() {
    export_matrix(false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exports_gzip_bodies_to_local_parquet() {
    export_matrix(true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exports_to_s3() {
    export_matrix(false, true).await;
    export_matrix(true, true).await;
}

/// The largest cohort Amplitude serves: 2,000,000 members with properties, via the 302,
/// written with the defaults — row groups of 131,072 rows, zstd level 3 — as the file's
/// own bytes show.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exports_two_million_members_with_props() {
    let h = harness::start(vec![cohort("big", 2_000_000).props(PROPS)], |_| {}).await;
    let out = Output::local(&h, "out");
    let (output, state) = out.urls();
    let file = h.export_pipeline(
        "big",
        &["big"],
        &output,
        &state,
        "[download]\nprops = true\n",
    );
    let run = run_dated(&h, &[&file]).await;
    assert_eq!(run.code, 0, "{}\n{:#}", run.stderr, run.report);
    let log = h.requests().await;
    let target = out.target(&file_of(&out.objects(), "big", &run));
    let got = check_file(h.spec("big"), &log, &target);
    let mut groups = vec![131_072u64; 15];
    groups.push(2_000_000 - 15 * 131_072);
    assert_eq!(got["row_groups"].as_u64(), Some(groups.len() as u64));
    let l = layout(&target, 1);
    assert_eq!(l["row_group_rows"], json!(groups), "{l}");
    assert!(
        l["codecs"]
            .as_array()
            .expect("codecs")
            .iter()
            .all(|c| c == "ZSTD"),
        "{l}"
    );
    assert_eq!(l["zstd_levels"], json!([3]), "{l}");
    assert!(!presigned(&log).is_empty(), "served through the 302");
    check_manifest(&h, &out, &run, "big", &log, &["big"], true);
}

/// `_SUCCESS` only when every cohort of the pipeline succeeded: a cohort refused by
/// Amplitude leaves the manifest of what was published, marked incomplete, and no
/// `_SUCCESS`; the rerun publishes the rest and writes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_cohort_leaves_a_manifest_without_success() {
    let h = harness::start(vec![cohort("good", 500), cohort("refused", 500)], |_| {}).await;
    let out = Output::local(&h, "out");
    let (output, state) = out.urls();
    let file = h.export_pipeline("partial", &["good", "refused"], &output, &state, "");
    let mut refuse = FaultRule::new(FaultKind::ClientError, "/api/5/cohorts/request/refused", 10);
    refuse.status = Some(400);
    h.add_fault(&refuse).await;
    let run = run_dated(&h, &[&file]).await;
    assert_eq!(run.code, 1, "{}\n{:#}", run.stderr, run.report);
    let log = h.requests().await;
    check_manifest(&h, &out, &run, "partial", &log, &["good"], false);
    assert!(
        !out.objects().keys().any(|k| k.ends_with("_SUCCESS")),
        "{:#?}",
        out.objects()
    );

    h.clear_faults().await;
    let rerun = run_dated(&h, &[&file]).await;
    assert_eq!(rerun.code, 0, "{}\n{:#}", rerun.stderr, rerun.report);
    let log = h.requests().await;
    check_manifest(&h, &out, &rerun, "partial", &log, &["refused"], true);
    check_file(
        h.spec("refused"),
        &log,
        &out.target(&file_of(&out.objects(), "refused", &rerun)),
    );
}

/// Names in paths are sanitized: a cohort called `../x` stays under the output prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_cohort_names_stay_inside_the_output() {
    let h = harness::start(vec![cohort("a.b", 3).named("../../x")], |_| {}).await;
    let text = format!(
        "kind = \"export\"\nname = \"names\"\n{}\n[select]\nids = [\"a.b\"]\n\n[output]\nurl = \"out/inner\"\nlayout = \"{{cohort_name}}/{{cohort_id}}/part.parquet\"\n\n[state]\nurl = \"state\"\n",
        h.connection()
    );
    let file = h.write("names", &text);
    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let files: Vec<PathBuf> = walk(h.dir.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    // The snapshot, and the run's sync history (named by the pipeline, not the cohort).
    let history = h.path("out/inner/_history/pipeline=names");
    let (history, snapshots): (Vec<PathBuf>, Vec<PathBuf>) =
        files.into_iter().partition(|p| p.starts_with(&history));
    assert_eq!(history.len(), 1, "{history:?}");
    let files = snapshots;
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].starts_with(h.path("out/inner")), "{files:?}");
    assert!(!h.path("x").exists() && !h.path("out/x").exists());
}

/// A run killed (SIGKILL, at its crash point) while its Parquet file is being uploaded
/// leaves no object at the final key — only the multipart upload it had started.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_mid_upload_leaves_no_object_at_the_final_key() {
    let h = harness::start(vec![cohort("big", 300_000).props(PROPS)], |_| {}).await;
    let out = Output::s3("cohorts");
    let (output, state) = out.urls();
    let file = h.export_pipeline(
        "kill",
        &["big"],
        &output,
        &state,
        "[download]\nprops = true\n",
    );
    let (code, _, stderr) = h
        .run_env(
            &[&file],
            &[],
            &[(cohort_sync::crash::ENV, "export.upload.part#3")],
        )
        .await;
    assert_eq!(code, -9, "killed at its crash point: {stderr}");
    assert!(stderr.contains("export.upload.part #3"), "{stderr}");
    let Output::S3 { bucket, .. } = &out else {
        unreachable!()
    };
    assert!(
        !out.objects().keys().any(|k| k.ends_with(".parquet")),
        "object published by a killed run: {:#?}",
        out.objects()
    );
    let uploads = common::s3::uploads(bucket);
    assert!(
        uploads.len() == 1 && uploads[0].0.ends_with("/part-0.parquet"),
        "the upload was under way: {uploads:?}"
    );
}

/// An output that cannot be written (here: a bucket that does not exist) fails the run
/// before any download is requested: no quota is spent on a file that could not be kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_that_cannot_be_written_spends_no_download() {
    let h = harness::start(vec![cohort("c1", 100)], |_| {}).await;
    let missing = format!("no-such-bucket-{}", fastrand::u32(..));
    let state = h.path("state");
    let file = h.export_pipeline(
        "unwritable",
        &["c1"],
        &format!("s3://{missing}/out"),
        &state.to_string_lossy(),
        "",
    );
    let (code, report, stderr) = h.run_env(&[&file], &[], &[]).await;
    assert_eq!(code, 1, "{stderr}");
    let error = report.as_ref().map_or(String::new(), |r| {
        r["pipelines"][0]["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    });
    assert!(
        error.contains("cannot write to the output") && error.contains("nothing was requested"),
        "{error}\n{stderr}"
    );
    assert_eq!(
        spent_requests(&h.requests().await).len(),
        0,
        "a download was requested for an output that cannot be written"
    );
}

/// `plan` predicts when a run's downloads are all written from each cohort's time at its
/// last export (kept in the state): before any export it says it guessed, after one it
/// knows every cohort, and the prediction comes after the last request can start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_predicts_the_finish_from_the_last_export() {
    let h = harness::start(vec![cohort("c1", 300), cohort("c2", 1_200)], |_| {}).await;
    let state = h.path("state");
    let file = h.export_pipeline(
        "predicted",
        &["c1", "c2"],
        &h.path("out").to_string_lossy(),
        &state.to_string_lossy(),
        "",
    );
    let basis = |plan: &Value| plan["pipelines"][0]["predicted_from"].clone();
    let first = h.plan(&[&file], &[]).await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(
        basis(first.report()),
        serde_json::json!({"known": 0, "downloads": 2})
    );
    assert!(
        first
            .stdout
            .contains("0 of 2 download(s) timed at their last export; the others at"),
        "{}",
        first.stdout
    );
    let (code, _, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}");
    for id in ["c1", "c2"] {
        let record: Value = serde_json::from_str(
            &std::fs::read_to_string(state.join(format!("predicted/cohorts/{id}.json")))
                .expect("state record"),
        )
        .expect("JSON");
        assert!(record["exported_work_ms"].as_u64().is_some(), "{record}");
    }
    let again = h.plan(&[&file], &["--force"]).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    let p = &again.report()["pipelines"][0];
    assert_eq!(
        basis(again.report()),
        serde_json::json!({"known": 2, "downloads": 2})
    );
    let at =
        |k: &str| chrono::DateTime::parse_from_rfc3339(p[k].as_str().expect(k)).expect("a time");
    assert!(at("predicted_finish") >= at("earliest_finish"), "{p}");
    assert!(
        again
            .stdout
            .contains("(2 of 2 download(s) timed at their last export)"),
        "{}",
        again.stdout
    );
}

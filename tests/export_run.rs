//! End to end: `cohort-sync run` on export pipelines against the emulator over HTTP, the
//! Parquet read back by pyarrow and compared with the members the emulator generated
//! (ids and every property value); local and S3 (moto) outputs; gzip and plain bodies;
//! bodies served directly and through the 302 to the presigned listener.

mod common;

use common::runner::{self, Harness, cohort, expected_digest, parquet_digest, spent_requests};
use serde_json::Value;

const PROPS: &[&str] = &["gp:country", "gp:plan", "gp:note"];

/// The report entry of cohort `id`, in whichever pipeline of the run exported it.
fn report_cohort<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["pipelines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["cohorts"].as_array())
        .flatten()
        .find(|c| c["cohort_id"] == id)
        .unwrap_or_else(|| panic!("cohort {id} not in report: {report:#}"))
}

/// Checks one exported cohort's Parquet file against the emulator's universe.
fn check_file(h: &Harness, report: &Value, id: &str, target: &str) {
    let spec = h.cohorts.iter().find(|c| c.id == id).expect("spec");
    let c = report_cohort(report, id);
    assert_eq!(c["outcome"], "exported", "{c:#}");
    assert_eq!(c["rows"].as_u64(), Some(spec.size), "{c:#}");
    let props: Vec<String> = spec.props.clone();
    let mut columns = vec!["amplitude_id".to_string(), "user_id".to_string()];
    columns.extend(props.iter().cloned());
    let got = parquet_digest(target, &columns);
    assert_eq!(got["rows"].as_u64(), Some(spec.size), "{got:#}");
    assert_eq!(got["types"][0], "int64", "{got:#}");
    assert_eq!(
        got["digest"].as_str(),
        Some(expected_digest(spec, &props).as_str()),
        "{id}: content differs from the emulator's members"
    );
    let meta = &got["metadata"];
    assert_eq!(meta["cohort_sync.cohort_id"], id);
    assert_eq!(meta["cohort_sync.rows"], spec.size.to_string());
    assert_eq!(meta["cohort_sync.request_id"], c["request_id"]);
    assert!(
        meta["cohort_sync.last_computed"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert!(meta["cohort_sync.tool_version"].as_str().is_some());
}

async fn export_matrix(gzip: bool, s3: bool) {
    let cohorts = vec![
        cohort("empty", 0, &[]),
        cohort("one", 1, PROPS),
        cohort("mid-props", 100_000, PROPS),
        cohort("mid-plain", 100_000, &[]),
        cohort("small", 2_000, &[]),
    ];
    let h = runner::start(cohorts, |c| {
        c.gzip = gzip;
        c.redirect_threshold_rows = 50_000;
    })
    .await;
    let (output, state, bucket) = if s3 {
        let bucket = common::create_bucket("export");
        (
            format!("s3://{bucket}/cohorts"),
            format!("s3://{bucket}/state"),
            Some(bucket),
        )
    } else {
        ("out".to_string(), "state".to_string(), None)
    };
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
    let plain_arg = plain.to_string_lossy().into_owned();
    let (code, report, stderr) = h.run(&with_props, &[plain_arg.as_str()]).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let date = chrono::Utc::now().format("%Y-%m-%d").to_string();
    for (pipeline, ids) in [
        (0, vec!["one", "mid-props"]),
        (1, vec!["empty", "mid-plain", "small"]),
    ] {
        for id in ids {
            let rel = format!("cohorts/cohort_id={id}/snapshot_date={date}/part-0.parquet");
            let target = match &bucket {
                Some(b) => format!("s3://{b}/{rel}"),
                None => h
                    .path(&format!(
                        "out/cohort_id={id}/snapshot_date={date}/part-0.parquet"
                    ))
                    .to_string_lossy()
                    .into_owned(),
            };
            check_file(&h, &report, id, &target);
        }
        let manifest = report["pipelines"][pipeline]["manifest"]
            .as_str()
            .expect("manifest");
        assert!(manifest.ends_with("manifest.json"), "{manifest}");
    }
    // Both paths were taken: bodies directly and through the presigned listener, and the
    // presigned listener never saw an Authorization header.
    let log = h.requests().await;
    let presigned: Vec<&Value> = log.iter().filter(|r| r["listener"] == "presign").collect();
    assert_eq!(
        presigned.len(),
        2,
        "the two 100k cohorts go through the 302"
    );
    assert!(presigned.iter().all(|r| r["authorization"] == false));
    assert_eq!(spent_requests(&log).len(), 5, "one request per cohort");
    assert_eq!(common::runner::status_count(&log, 429), 0);
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

/// The largest cohort Amplitude serves: 2,000,000 members with properties, via the 302.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exports_two_million_members_with_props() {
    let h = runner::start(vec![cohort("big", 2_000_000, PROPS)], |_| {}).await;
    let file = h.export_pipeline(
        "big",
        &["big"],
        "out",
        "state",
        "[download]\nprops = true\n",
    );
    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let date = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let target = h.path(&format!(
        "out/cohort_id=big/snapshot_date={date}/part-0.parquet"
    ));
    check_file(&h, &report, "big", &target.to_string_lossy());
    let log = h.requests().await;
    assert!(
        log.iter().any(|r| r["listener"] == "presign"),
        "served through the 302"
    );
}

/// Names in paths are sanitized: a cohort called `../x` stays under the output prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_cohort_names_stay_inside_the_output() {
    let mut c = cohort("a.b", 3, &[]);
    c.name = "../../x".into();
    let h = runner::start(vec![c], |_| {}).await;
    let text = format!(
        "kind = \"export\"\nname = \"names\"\n{}\n[select]\nids = [\"a.b\"]\n\n[output]\nurl = \"out/inner\"\nlayout = \"{{cohort_name}}/{{cohort_id}}/part.parquet\"\n\n[state]\nurl = \"state\"\n",
        h.connection()
    );
    let file = h.write("names", &text);
    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let files: Vec<_> = walk(&h.path("out"))
        .into_iter()
        .filter(|p| p.ends_with(".parquet"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].contains("/out/inner/"), "{files:?}");
    assert!(!h.path("x").exists() && !h.path("out/x").exists());
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// A run killed while its Parquet file is being uploaded leaves no object at the final key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_mid_upload_leaves_no_object_at_the_final_key() {
    let h = runner::start(vec![cohort("big", 2_000_000, PROPS)], |_| {}).await;
    let bucket = common::create_bucket("kill");
    let file = h.export_pipeline(
        "kill",
        &["big"],
        &format!("s3://{bucket}/cohorts"),
        &format!("s3://{bucket}/state"),
        "[download]\nprops = true\n",
    );
    let file_s = file.to_string_lossy().into_owned();
    let mut child = h.command(&["run", &file_s]).spawn().expect("spawn");
    let endpoint = common::s3_endpoint();
    let mut saw_upload = false;
    for _ in 0..600 {
        let uploads = common::run_python("s3_admin.py", &["uploads", &endpoint, &bucket]);
        if uploads.contains("part-0.parquet") {
            saw_upload = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(saw_upload, "the multipart upload never started");
    child.start_kill().expect("kill");
    let _ = child.wait().await;
    let listing = common::run_python("s3_admin.py", &["list", &endpoint, &bucket, "cohorts/"]);
    assert!(
        !listing.contains("part-0.parquet"),
        "object published by a killed run: {listing}"
    );
}

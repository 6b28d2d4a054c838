//! OpenLineage run events (`[lineage]`), end to end: the real binary against the emulator
//! on loopback sends its events to a Python http.server receiver on 127.0.0.1, or appends
//! them to a file; every event is validated with OpenLineage's Python client (built into
//! its generated classes, serialised back unchanged) and each cohort-sync facet by
//! jsonschema against schemas/openlineage-facets.json (tests/py/check_lineage.py), and a
//! test proves that checker rejects broken events; its datasets are checked
//! against what the run did — the Parquet row counts as pyarrow reads them, the reverse
//! calls as the emulator holds them. A failing run emits FAIL, a quota-deferred one
//! COMPLETE with the deferred cohorts, and a dead receiver never fails or stalls a sync.
//! One test writes to S3 (moto): run with `scripts/test.sh --test lineage`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::emulator::{CohortSpecExt, cohort};
use common::harness::{self, Harness};
use common::peers::check_lineage;
use serde_json::Value;
use tokio::io::AsyncBufReadExt;

/// The receiver (tests/py/lineage_receiver.py) writing what it gets to `out`; returns the
/// process (killed on drop) and its URL.
async fn receiver(out: &Path) -> (tokio::process::Child, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/lineage_receiver.py");
    let mut child = tokio::process::Command::new(common::peers::python())
        .arg(script)
        .arg(out)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the lineage receiver (run `make venv`)");
    let stdout = child.stdout.take().expect("stdout");
    let mut first = String::new();
    tokio::io::BufReader::new(stdout)
        .read_line(&mut first)
        .await
        .expect("receiver's first line");
    let port = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("receiver said {first:?}"));
    (child, format!("http://127.0.0.1:{port}/api/v1/lineage"))
}

fn events(checked: &Value) -> Vec<Value> {
    checked["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|r| r.get("event").cloned().unwrap_or_else(|| r.clone()))
        .collect()
}

/// START then one end event of `end` type, sharing one runId; returns the end event.
fn start_then(events: &[Value], job: &str, end: &str) -> Value {
    let of_job: Vec<&Value> = events.iter().filter(|e| e["job"]["name"] == job).collect();
    let types: Vec<&str> = of_job
        .iter()
        .map(|e| e["eventType"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(types, ["START", end], "{events:#?}");
    assert_eq!(of_job[0]["run"]["runId"], of_job[1]["run"]["runId"]);
    for e in &of_job {
        assert_eq!(e["job"]["namespace"], "cohort-sync");
    }
    of_job[1].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_sends_start_and_complete_with_its_cohorts_and_parquet_files() {
    let h = harness::start(
        vec![
            cohort("alpha", 1_500).props(&["gp:plan"]),
            cohort("beta", 400),
        ],
        |_| {},
    )
    .await;
    let received = h.path("received.ndjson");
    let (_receiver, url) = receiver(&received).await;
    let key = "ol-secret-4e1f9";
    let file = h.export_pipeline(
        "nightly",
        &["alpha", "beta"],
        "out",
        "state",
        &format!(
            "[download]\npoll_initial_secs = 1\n\n[lineage]\nurl = \"{url}\"\napi_key = \"${{OL_KEY}}\"\n"
        ),
    );
    let run = h.invoke("run", &[&file], &[], &[("OL_KEY", key)]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = run.report();
    assert!(!run.stderr.contains(key), "the key is in the log");

    let checked = check_lineage(&received);
    let records = checked["events"].as_array().expect("records");
    assert_eq!(records.len(), 2);
    for r in records {
        assert_eq!(r["authorization"], format!("Bearer {key}"));
        assert_eq!(r["path"], "/api/v1/lineage");
        assert!(
            !r["event"].to_string().contains(key),
            "the key is in an event"
        );
    }
    let events = events(&checked);
    let complete = start_then(&events, "nightly", "COMPLETE");
    assert_eq!(events[0]["inputs"], Value::Array(vec![]));

    // Inputs: the cohorts downloaded, named by the API's host.
    let host = h.base_url().trim_start_matches("http://");
    let inputs: BTreeMap<String, String> = complete["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .map(|d| {
            assert_eq!(d["namespace"], format!("amplitude://{host}"));
            let name = d["name"].as_str().expect("name").to_string();
            let facet = &d["facets"]["amplitudeCohort"];
            assert_eq!(facet["cohortId"], name.as_str());
            (
                name,
                facet["cohortName"].as_str().expect("name").to_string(),
            )
        })
        .collect();
    assert_eq!(
        inputs,
        BTreeMap::from([
            ("alpha".into(), "Cohort alpha".into()),
            ("beta".into(), "Cohort beta".into())
        ])
    );

    // Outputs: every Parquet file the report lists, with pyarrow's row count and its size.
    let rows = checked["parquet_rows"].as_object().expect("rows");
    let mut seen = BTreeSet::new();
    for c in report["pipelines"][0]["cohorts"]
        .as_array()
        .expect("cohorts")
    {
        let path = h.dir.path().join(c["output"].as_str().expect("output"));
        let name = path.to_string_lossy().into_owned();
        let out = complete["outputs"]
            .as_array()
            .expect("outputs")
            .iter()
            .find(|d| d["name"] == name.as_str())
            .unwrap_or_else(|| panic!("no output {name} in {complete:#}"));
        assert_eq!(out["namespace"], "file");
        let stats = &out["outputFacets"]["outputStatistics"];
        assert_eq!(stats["rowCount"], rows[&name]);
        assert_eq!(stats["rowCount"], c["rows"]);
        assert_eq!(
            stats["size"].as_u64(),
            Some(std::fs::metadata(&path).expect("file").len())
        );
        seen.insert(name);
    }
    assert_eq!(seen.len(), 2);
    assert_eq!(complete["outputs"].as_array().map(Vec::len), Some(2));
    let facet = &complete["run"]["facets"]["cohortSync"];
    assert_eq!(facet["runId"], report["run_id"]);
    assert_eq!(facet["exitCode"], 0);
    assert_eq!(facet["outcomes"]["exported"], 2);

    // The second run skips both unchanged cohorts: a new runId, no dataset read or written.
    let again = h.invoke("run", &[&file], &[], &[("OL_KEY", key)]).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    let events = self::events(&check_lineage(&received));
    assert_eq!(events.len(), 4);
    assert_ne!(events[2]["run"]["runId"], events[0]["run"]["runId"]);
    assert_eq!(events[3]["eventType"], "COMPLETE");
    assert_eq!(events[3]["outputs"], Value::Array(vec![]));
    assert_eq!(
        events[3]["run"]["facets"]["cohortSync"]["outcomes"]["skipped_unchanged"],
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reverse_run_names_its_source_and_the_cohort_it_changed() {
    let h = harness::start(vec![cohort("rev", 1_000)], |_| {}).await;
    let source = h.write_crm_source("rev", 50..1_000, 70);
    let before = h.member_ids("rev").await;
    let file = h.reverse_pipeline(
        "crm",
        "crm.csv",
        "amplitude_id",
        "cohort_id = \"rev\"",
        "mode = \"mirror\"\n\n[lineage]\nfile = \"lineage/events.ndjson\"\nnamespace = \"crm-sync\"\njob_name = \"vip-mirror\"\n",
    );
    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(h.member_ids("rev").await, source);

    let events = events(&check_lineage(&h.path("lineage/events.ndjson")));
    assert_eq!(events.len(), 2);
    for e in &events {
        assert_eq!(e["job"]["namespace"], "crm-sync");
        assert_eq!(e["job"]["name"], "vip-mirror");
        assert_eq!(e["job"]["facets"]["jobType"]["jobType"], "REVERSE");
        let input = &e["inputs"][0];
        assert_eq!(input["namespace"], "file");
        assert_eq!(input["name"], h.path("crm.csv").to_string_lossy().as_ref());
        assert_eq!(e["outputs"][0]["name"], "rev");
    }
    let types: Vec<&Value> = events.iter().map(|e| &e["eventType"]).collect();
    assert_eq!(types, ["START", "COMPLETE"]);
    assert_eq!(events[0]["run"]["runId"], events[1]["run"]["runId"]);
    let membership = &events[1]["outputs"][0]["outputFacets"]["cohortMembership"];
    let totals = &report["pipelines"][0]["reverse_totals"];
    assert_eq!(membership["idsAdded"], 70);
    assert_eq!(membership["idsRemoved"], 50);
    assert_eq!(membership["idsAdded"], totals["added"]);
    assert_eq!(membership["idsRemoved"], totals["removed"]);
    assert_eq!(membership["outcome"], totals["outcome"]);
    // Counts only: no member id is in an event.
    let text = std::fs::read_to_string(h.path("lineage/events.ndjson")).expect("events");
    let newcomer = source.difference(&before).next().expect("an added id");
    assert!(
        !text.contains(newcomer.as_str()),
        "a member id is in an event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_run_sends_fail_and_a_quota_deferred_one_complete() {
    let h = harness::start(vec![cohort("alpha", 300), cohort("beta", 200)], |_| {}).await;
    // An output under a regular file cannot be created: the pipeline fails (exit 2).
    std::fs::write(h.path("blocker"), b"not a folder").expect("write");
    let failing = h.export_pipeline(
        "broken",
        &["alpha"],
        "blocker/out",
        "state",
        "[lineage]\nfile = \"events.ndjson\"\n",
    );
    let (code, report, stderr) = h.run(&failing, &[]).await;
    assert_eq!(code, 2, "{stderr}");
    let events = events(&check_lineage(&h.path("events.ndjson")));
    let fail = start_then(&events, "broken", "FAIL");
    let message = fail["run"]["facets"]["errorMessage"]["message"]
        .as_str()
        .expect("message");
    assert_eq!(Some(message), report["pipelines"][0]["error"].as_str());
    assert!(message.contains("cannot create directory"), "{message}");
    assert_eq!(fail["run"]["facets"]["cohortSync"]["exitCode"], 2);

    // The month is spent: the cohort is deferred (exit 3), the run COMPLETE says which.
    let (_, limit) = h.usage().await;
    h.set_usage(limit).await;
    let deferred = h.export_pipeline(
        "monthly",
        &["alpha", "beta"],
        "out",
        "state",
        "[lineage]\nfile = \"events.ndjson\"\n",
    );
    let (code, _, stderr) = h.run(&deferred, &[]).await;
    assert_eq!(code, 3, "{stderr}");
    let events = self::events(&check_lineage(&h.path("events.ndjson")));
    assert_eq!(events.len(), 4);
    let complete = start_then(&events, "monthly", "COMPLETE");
    let facet = &complete["run"]["facets"]["cohortSync"];
    assert_eq!(facet["exitCode"], 3);
    assert_eq!(
        facet["deferredCohorts"],
        serde_json::json!(["alpha", "beta"])
    );
    assert!(complete["run"]["facets"].get("errorMessage").is_none());
}

/// One broken copy of a real event: what is changed, and where in the event.
type Breakage = (&'static str, fn(&mut Value));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_rejects_events_the_spec_or_our_facet_schema_forbids() {
    let h = harness::start(vec![cohort("alpha", 300)], |_| {}).await;
    std::fs::write(h.path("blocker"), b"not a folder").expect("write");
    let failing = h.export_pipeline(
        "broken",
        &["alpha"],
        "blocker/out",
        "state",
        "[lineage]\nfile = \"events.ndjson\"\n",
    );
    let (code, _, stderr) = h.run(&failing, &[]).await;
    assert_eq!(code, 2, "{stderr}");
    let good = h.export_pipeline(
        "nightly",
        &["alpha"],
        "out",
        "state",
        "[lineage]\nfile = \"events.ndjson\"\n",
    );
    let (code, _, stderr) = h.run(&good, &[]).await;
    assert_eq!(code, 0, "{stderr}");
    // The real events pass: START, FAIL (errorMessage), START, COMPLETE (outputStatistics).
    let real = events(&check_lineage(&h.path("events.ndjson")));
    let types: Vec<&Value> = real.iter().map(|e| &e["eventType"]).collect();
    assert_eq!(types, ["START", "FAIL", "START", "COMPLETE"]);
    let (fail, complete) = (&real[1], &real[3]);

    let on_fail: &[Breakage] = &[
        ("event.run: Run refused it", |e| {
            e["run"]["runId"] = "not-a-uuid".into()
        }),
        ("event.producer: 'cohort sync' is not a URI", |e| {
            e["producer"] = "cohort sync".into()
        }),
        (
            "ErrorMessageRunFacet requires ['programmingLanguage']",
            |e| {
                e["run"]["facets"]["errorMessage"]
                    .as_object_mut()
                    .map(|f| f.remove("programmingLanguage"));
            },
        ),
        ("JobTypeJobFacet requires ['processingType']", |e| {
            e["job"]["facets"]["jobType"]
                .as_object_mut()
                .map(|f| f.remove("processingType"));
        }),
        ("'2' is not of type 'integer' at ['exitCode']", |e| {
            e["run"]["facets"]["cohortSync"]["exitCode"] = "2".into()
        }),
        ("RunEvent requires ['eventTime']", |e| {
            e.as_object_mut().map(|f| f.remove("eventTime"));
        }),
        ("RunEvent has no field ['runFacets']", |e| {
            e["runFacets"] = serde_json::json!({})
        }),
        ("is not an RFC 3339 date-time", |e| {
            e["eventTime"] = "2026-11-29T20:00:00".into()
        }),
        ("is not one of ['START'", |e| {
            e["eventType"] = "FAILED".into()
        }),
        ("is not RunEvent's", |e| {
            e["schemaURL"] =
                "https://openlineage.io/spec/2-0-1/OpenLineage.json#/$defs/RunEvent".into()
        }),
        ("is not a standard facet of openlineage-python", |e| {
            e["run"]["facets"]["errorMessage"]["_schemaURL"] =
                "https://openlineage.io/spec/facets/1-0-0/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet".into()
        }),
    ];
    let on_complete: &[Breakage] = &[
        ("outputStatistics.rowCount: expected int, got '300'", |e| {
            e["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] = "300".into()
        }),
        (
            "changed event.outputs[0].outputFacets.outputStatistics.size: sent null",
            |e| e["outputs"][0]["outputFacets"]["outputStatistics"]["size"] = Value::Null,
        ),
        (
            "OutputStatisticsOutputDatasetFacet has no field ['rows']",
            |e| e["outputs"][0]["outputFacets"]["outputStatistics"]["rows"] = 300.into(),
        ),
        ("'1' is not of type 'integer' at ['quotaSpent']", |e| {
            e["run"]["facets"]["cohortSync"]["quotaSpent"] = "1".into()
        }),
        ("Additional properties are not allowed", |e| {
            e["inputs"][0]["facets"]["amplitudeCohort"]["rows"] = 300.into()
        }),
    ];
    let cases = on_fail
        .iter()
        .map(|b| (fail, b))
        .chain(on_complete.iter().map(|b| (complete, b)));
    for (n, (event, (expected, breaks))) in cases.enumerate() {
        let mut broken = event.clone();
        breaks(&mut broken);
        assert_ne!(&broken, event, "case {n} changes nothing");
        let file = h.path(&format!("broken-{n}.ndjson"));
        std::fs::write(&file, format!("{broken}\n")).expect("write");
        let message = common::peers::check_lineage_rejects(&file);
        assert!(
            message.contains(expected),
            "case {n}: expected {expected:?}, got {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_receiver_is_warned_about_once_and_the_sync_goes_on() {
    let h = harness::start(vec![cohort("alpha", 300)], |_| {}).await;
    // A port nothing listens on (bound, then closed): connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let file = h.export_pipeline(
        "nightly",
        &["alpha"],
        "out",
        "state",
        &format!("[lineage]\nurl = \"http://127.0.0.1:{port}/api/v1/lineage\"\n"),
    );
    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["pipelines"][0]["cohorts"][0]["outcome"], "exported");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("lineage:")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains("the START event could not be sent"),
        "{stderr}"
    );
}

/// Plans and dry runs emit nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_and_a_dry_run_emit_no_events() {
    let h: Harness = harness::start(vec![cohort("alpha", 300)], |_| {}).await;
    let file = h.export_pipeline(
        "nightly",
        &["alpha"],
        "out",
        "state",
        "[lineage]\nfile = \"events.ndjson\"\n",
    );
    let plan = h.plan(&[&file], &[]).await;
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let dry = h.invoke("run", &[&file], &["--dry-run"], &[]).await;
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(!h.path("events.ndjson").exists());
}

/// On S3 (moto on loopback) an output is named `s3://BUCKET` + key, and its rowCount and
/// size are what pyarrow reads and what the bucket lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_to_s3_names_its_files_by_bucket_and_key() {
    let h = harness::start(vec![cohort("alpha", 900), cohort("beta", 250)], |_| {}).await;
    let bucket = common::s3::create_bucket("lineage");
    let file = h.export_pipeline(
        "to-s3",
        &["alpha", "beta"],
        &format!("s3://{bucket}/cohorts"),
        &format!("s3://{bucket}/state"),
        "[lineage]\nfile = \"events.ndjson\"\n",
    );
    let (code, report, stderr) = h.run(&file, &[]).await;
    assert_eq!(code, 0, "{stderr}");
    let events = events(&check_lineage(&h.path("events.ndjson")));
    let complete = start_then(&events, "to-s3", "COMPLETE");
    let objects: BTreeMap<String, u64> =
        common::s3::list(&bucket, "cohorts/").into_iter().collect();
    let outputs = complete["outputs"].as_array().expect("outputs");
    assert_eq!(outputs.len(), 2, "{complete:#}");
    for c in report["pipelines"][0]["cohorts"]
        .as_array()
        .expect("cohorts")
    {
        let url = c["output"].as_str().expect("output");
        let key = url
            .strip_prefix(&format!("s3://{bucket}/"))
            .unwrap_or_else(|| panic!("{url} is not in the bucket"));
        let out = outputs
            .iter()
            .find(|d| d["name"] == key)
            .unwrap_or_else(|| panic!("no output {key} in {complete:#}"));
        assert_eq!(out["namespace"], format!("s3://{bucket}"));
        let stats = &out["outputFacets"]["outputStatistics"];
        let read = common::peers::parquet_digest(url, &[]);
        assert_eq!(stats["rowCount"], read["rows"], "{read:#}");
        assert_eq!(stats["size"].as_u64(), objects.get(key).copied());
    }
}

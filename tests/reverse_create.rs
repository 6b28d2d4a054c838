//! Creating (or replacing) a cohort from a list Amplitude knows nothing of: Amplitude
//! refuses an upload with no valid id, so the run checks the first upload with
//! `skip_save` and ends with a clear error before anything is created or half-done.

mod common;

use common::emulator::{APP_ID, api_key, cohort, secret_key};
use common::harness::{self, Harness};
use serde_json::Value;

fn create_pipeline(h: &Harness, source: &str) -> std::path::PathBuf {
    h.write(
        "create",
        &format!(
            "kind = \"reverse\"\nname = \"create\"\n\n{}\n[state]\nurl = \"state\"\n\n[source]\nurl = \"{source}\"\nid_column = \"user_id\"\nid_kind = \"user_id\"\n\n[target]\ncreate = {{ name = \"CRM VIPs\", owner = \"ops@example.com\", published = true }}\n",
            h.connection()
        ),
    )
}

async fn cohort_names(h: &Harness) -> Vec<String> {
    let v: Value = reqwest::Client::new()
        .get(format!("{}/api/3/cohorts", h.base_url()))
        .basic_auth(api_key(APP_ID), Some(secret_key(APP_ID)))
        .send()
        .await
        .expect("list cohorts")
        .json()
        .await
        .expect("cohorts JSON");
    v["cohorts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_from_ids_amplitude_does_not_know_fails_before_anything_is_made() {
    let h = harness::start(vec![cohort("known", 50)], |_| {}).await;
    std::fs::write(
        h.path("strangers.csv"),
        "user_id\nnobody-1@nowhere.example\nnobody-2@nowhere.example\n",
    )
    .expect("source");
    let file = create_pipeline(&h, "strangers.csv");
    let before = cohort_names(&h).await;
    let (code, report, stderr) = h.run_env(&[&file], &[], &[]).await;
    let report = report.expect("report");
    assert_eq!(code, 1, "{stderr}\n{report:#}");
    let error = report["pipelines"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("none of the 2 ids of the first upload is known to Amplitude")
            && error.contains("nobody-1@nowhere.example")
            && error.contains("nothing was created"),
        "{error}"
    );
    assert_eq!(cohort_names(&h).await, before, "no cohort was created");
    // The check was a validation only (skip_save), and no journal was written.
    let log = h.requests().await;
    let uploads: Vec<_> = log
        .iter()
        .filter(|r| r.path == "/api/3/cohorts/upload")
        .collect();
    assert_eq!(uploads.len(), 1, "one validating upload");
    assert_eq!(
        uploads[0].operation.as_deref(),
        Some("VALIDATE"),
        "{uploads:#?}"
    );
    assert!(!h.path("state/create/journals").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_with_known_ids_goes_ahead_after_the_check() {
    use cohort_sync::emulator::universe::{member_numbers, user_id};
    let spec = cohort("known", 50);
    let h = harness::start(vec![spec.clone()], |_| {}).await;
    let users: Vec<String> = member_numbers(spec.seed, "known", 50)
        .filter_map(user_id)
        .take(10)
        .collect();
    assert!(!users.is_empty());
    let mut csv = String::from("user_id\nnobody-1@nowhere.example\n");
    for u in &users {
        csv.push_str(u);
        csv.push('\n');
    }
    std::fs::write(h.path("crm.csv"), csv).expect("source");
    let file = create_pipeline(&h, "crm.csv");
    let (code, report, stderr) = h.run_env(&[&file], &[], &[]).await;
    let report = report.expect("report");
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let created = report["pipelines"][0]["reverse"]["target"]["cohort_id"]
        .as_str()
        .expect("created id")
        .to_string();
    assert!(cohort_names(&h).await.contains(&"CRM VIPs".to_string()));
    let members: Vec<Option<String>> = h
        .members(&created)
        .await
        .into_iter()
        .map(|(_, u)| u)
        .collect();
    assert_eq!(
        members.len(),
        users.len(),
        "the known ids, not the stranger"
    );
}

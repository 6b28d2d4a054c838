//! The read-only commands (`cohorts`, `usage`) and credentials taken from the environment
//! (`AMPLITUDE_API_KEY` / `AMPLITUDE_SECRET_KEY`, `${VAR}` in pipeline files), end to end:
//! the binary run as a user runs it against the emulator, its output compared with what
//! the emulator holds and its request log.

mod common;

use common::emulator::{APP_ID, CohortSpecExt, api_key, cohort, secret_key};
use common::harness::{self, Harness, with_outcome};
use common::log::{LIST, USAGE, cohort_request_attempts, spent_cohorts};
use serde_json::Value;

/// The app's key pair as environment variables.
fn keys() -> [(&'static str, String); 2] {
    [
        ("AMPLITUDE_API_KEY", api_key(APP_ID)),
        ("AMPLITUDE_SECRET_KEY", secret_key(APP_ID)),
    ]
}

async fn with_keys(h: &Harness, args: &[&str], extra: &[(&str, &str)]) -> harness::Finished {
    let keys = keys();
    let mut env: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend_from_slice(extra);
    h.exec(args, &env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cohorts_lists_what_the_emulator_holds() {
    let h = harness::start(
        vec![
            cohort("alpha", 120).last_computed_ms(1_765_000_000_000),
            cohort("beta", 0).named("Beta users"),
        ],
        |_| {},
    )
    .await;
    h.patch_cohort("beta", serde_json::json!({ "archived": true }))
        .await;

    let table = with_keys(&h, &["cohorts", "--base-url", h.base_url()], &[]).await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    let rows: Vec<Vec<&str>> = table
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec![
                "alpha",
                "120",
                "true",
                "false",
                "1765000000",
                "Cohort",
                "alpha"
            ],
            vec!["beta", "0", "true", "true", "1704067200", "Beta", "users"],
        ],
        "{}",
        table.stdout
    );

    // JSON, with the base URL from the environment this time.
    let json = with_keys(
        &h,
        &["cohorts", "--json"],
        &[("AMPLITUDE_BASE_URL", h.base_url())],
    )
    .await;
    assert_eq!(json.code, 0, "{}", json.stderr);
    let listed: Value = serde_json::from_str(&json.stdout).expect("JSON");
    let ids: Vec<&str> = listed["cohorts"]
        .as_array()
        .expect("cohorts")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(ids, ["alpha", "beta"]);
    assert_eq!(listed["cohorts"][0]["size"], 120);

    // Both calls reached the emulator with the environment's credentials (it knew the
    // app), and cost nothing.
    let log = h.requests().await;
    let lists: Vec<_> = log.iter().filter(|r| r.path == LIST).collect();
    assert_eq!(lists.len(), 2);
    assert!(
        lists
            .iter()
            .all(|r| r.app_id == Some(APP_ID) && r.status == 200)
    );
    assert!(cohort_request_attempts(&log).is_empty());

    // Without them: a usage error naming the variable, and no call at all.
    let seq = h.last_seq().await;
    let missing = h.exec(&["cohorts", "--base-url", h.base_url()], &[]).await;
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("AMPLITUDE_API_KEY is not set"),
        "{}",
        missing.stderr
    );
    assert!(h.requests_since(seq).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_shows_the_emulators_count() {
    let h = harness::start(vec![cohort("u", 10)], |_| {}).await;
    h.set_usage(123).await;
    let text = with_keys(&h, &["usage", "--base-url", h.base_url()], &[]).await;
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(
        text.stdout
            .starts_with("123 of 500 cohort downloads used this month, 377 left"),
        "{}",
        text.stdout
    );
    let json = with_keys(&h, &["usage", "--base-url", h.base_url(), "--json"], &[]).await;
    assert_eq!(json.code, 0, "{}", json.stderr);
    let shown: Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(
        (&shown["usage"], &shown["limit"], &shown["remaining"]),
        (&Value::from(123), &Value::from(500), &Value::from(377)),
        "{shown:#}"
    );
    assert_eq!(shown["source"], "endpoint");
    let log = h.requests().await;
    let calls: Vec<_> = log.iter().filter(|r| r.path == USAGE).collect();
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|r| r.app_id == Some(APP_ID)));
    assert_eq!(h.usage().await.0, 123, "reading usage spends nothing");
}

/// An export pipeline without keys in its file runs with `AMPLITUDE_API_KEY` /
/// `AMPLITUDE_SECRET_KEY`; one naming `${VAR}`s runs with those; without either it stops
/// before calling Amplitude, naming what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_the_environment() {
    let h = harness::start(vec![cohort("env", 40), cohort("var", 40)], |_| {}).await;
    let pipeline = |name: &str, id: &str, keys: &str| {
        h.write(
            name,
            &format!(
                "kind = \"export\"\nname = \"{name}\"\n\n[connection]\nbase_url = \"{}\"\napp_id = {APP_ID}\n{keys}\n[select]\nids = [\"{id}\"]\n\n[output]\nurl = \"out\"\n\n[state]\nurl = \"state\"\n",
                h.base_url()
            ),
        )
    };
    let from_env = pipeline("from-env", "env", "");
    let from_vars = pipeline(
        "from-vars",
        "var",
        "api_key = \"${CRM_AMP_KEY}\"\nsecret_key = \"${CRM_AMP_SECRET}\"\n",
    );

    // Nothing set: no call is made, and the error says which variable.
    let f = h.invoke("run", &[&from_env], &[], &[]).await;
    assert_eq!(f.code, 2, "{}", f.stderr);
    assert!(
        f.stderr
            .contains("the environment variable AMPLITUDE_API_KEY is not set"),
        "{}",
        f.stderr
    );
    let f = h.invoke("run", &[&from_vars], &[], &[]).await;
    assert_eq!(f.code, 2, "{}", f.stderr);
    assert!(
        f.stderr
            .contains("environment variable CRM_AMP_KEY is not set (used as `${CRM_AMP_KEY}`)"),
        "{}",
        f.stderr
    );
    assert!(
        h.requests().await.is_empty(),
        "called Amplitude without keys"
    );

    let keys = keys();
    let env: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let f = h.invoke("run", &[&from_env], &[], &env).await;
    assert_eq!(f.code, 0, "{}", f.stderr);
    assert_eq!(with_outcome(f.report(), "exported"), ["env"]);

    let vars = [
        ("CRM_AMP_KEY", keys[0].1.as_str()),
        ("CRM_AMP_SECRET", keys[1].1.as_str()),
    ];
    let f = h.invoke("run", &[&from_vars], &[], &vars).await;
    assert_eq!(f.code, 0, "{}", f.stderr);
    assert_eq!(with_outcome(f.report(), "exported"), ["var"]);

    let log = h.requests().await;
    assert_eq!(spent_cohorts(&log), ["env", "var"]);
    assert!(
        log.iter().all(|r| r.app_id == Some(APP_ID)),
        "every call carried the app's keys"
    );
}

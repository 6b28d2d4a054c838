//! The binary's log filter, end to end: `--log` wins, then `COHORT_SYNC_LOG`, then
//! `RUST_LOG`, then `info` — and what a refused key pair prints. Each case runs
//! `cohort-sync cohorts` against an in-process emulator on loopback.

mod common;

use common::emulator::{APP_ID, api_key, cohort, secret_key};
use common::harness::{self, Harness};

/// `--log` value, environment, whether a debug line is expected.
type Case<'a> = (Option<&'a str>, &'a [(&'a str, &'a str)], bool);

/// Runs `cohort-sync cohorts` with the app's key, `secret`, and only the given log
/// settings; (exit code, stderr).
async fn cohorts(
    h: &Harness,
    secret: &str,
    flag: Option<&str>,
    env: &[(&str, &str)],
) -> (i32, String) {
    let mut args = vec!["cohorts", "--base-url", h.base_url()];
    if let Some(f) = flag {
        args.extend(["--log", f]);
    }
    let key = api_key(APP_ID);
    let mut all_env = vec![
        ("AMPLITUDE_API_KEY", key.as_str()),
        ("AMPLITUDE_SECRET_KEY", secret),
    ];
    all_env.extend_from_slice(env);
    let f = h.exec(&args, &all_env).await;
    (f.code, f.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_log_is_honoured_after_the_flag_and_cohort_sync_log() {
    let h = harness::start(vec![cohort("c1", 10)], |_| {}).await;
    let secret = secret_key(APP_ID);
    let debug_line = "amplitude answered";

    let (code, err) = cohorts(&h, &secret, None, &[("RUST_LOG", "debug")]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("DEBUG") && err.contains(debug_line), "{err}");
    assert!(err.contains("from RUST_LOG"), "{err}");

    let cases: [Case; 5] = [
        (None, &[], false),
        (None, &[("COHORT_SYNC_LOG", "debug")], true),
        (
            None,
            &[("COHORT_SYNC_LOG", "info"), ("RUST_LOG", "debug")],
            false,
        ),
        (Some("warn"), &[("RUST_LOG", "debug")], false),
        (Some("debug"), &[("COHORT_SYNC_LOG", "info")], true),
    ];
    for (flag, env, debug) in cases {
        let (code, err) = cohorts(&h, &secret, flag, env).await;
        assert_eq!(code, 0, "{flag:?} {env:?}: {err}");
        assert_eq!(
            err.contains(debug_line),
            debug,
            "--log {flag:?} with {env:?}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_pair_says_why_and_what_to_check() {
    let h = harness::start(vec![], |_| {}).await;
    let (code, err) = cohorts(&h, "not-the-secret", None, &[]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("authentication failed (HTTP 403): Invalid API/Secret Key combination"),
        "{err}"
    );
    assert!(
        err.contains("check AMPLITUDE_API_KEY / AMPLITUDE_SECRET_KEY"),
        "{err}"
    );
}

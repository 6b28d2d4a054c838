//! The binary's log filter, end to end: `--log` wins, then `COHORT_SYNC_LOG`, then
//! `RUST_LOG`, then `info` — and what a refused key pair prints. Each case runs
//! `cohort-sync cohorts` against an in-process emulator on loopback.

mod common;

use common::emulator::*;

const APP: u64 = 7070;

/// `--log` value, environment, whether a debug line is expected.
type Case<'a> = (Option<&'a str>, &'a [(&'a str, &'a str)], bool);

/// Runs `cohort-sync cohorts` with only the given log settings; (exit code, stderr).
async fn cohorts(
    base_url: &str,
    secret: &str,
    flag: Option<&str>,
    env: &[(&str, &str)],
) -> (Option<i32>, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cohort-sync"));
    cmd.args(["cohorts", "--base-url", base_url])
        .env_remove("RUST_LOG")
        .env_remove("COHORT_SYNC_LOG")
        .env("AMPLITUDE_API_KEY", format!("key-{APP}"))
        .env("AMPLITUDE_SECRET_KEY", secret);
    if let Some(f) = flag {
        cmd.args(["--log", f]);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_log_is_honoured_after_the_flag_and_cohort_sync_log() {
    let emu = start_emulator(fast_config(vec![app(APP, vec![cohort("c1", 10, 1)])])).await;
    let secret = format!("secret-{APP}");
    let base = emu.base_url.as_str();
    let debug_line = "amplitude answered";

    let (code, err) = cohorts(base, &secret, None, &[("RUST_LOG", "debug")]).await;
    assert_eq!(code, Some(0), "{err}");
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
        let (code, err) = cohorts(base, &secret, flag, env).await;
        assert_eq!(code, Some(0), "{flag:?} {env:?}: {err}");
        assert_eq!(
            err.contains(debug_line),
            debug,
            "--log {flag:?} with {env:?}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_pair_says_why_and_what_to_check() {
    let emu = start_emulator(fast_config(vec![app(APP, vec![])])).await;
    let (code, err) = cohorts(&emu.base_url, "not-the-secret", None, &[]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("authentication failed (HTTP 403): Invalid API/Secret Key combination"),
        "{err}"
    );
    assert!(
        err.contains("check AMPLITUDE_API_KEY / AMPLITUDE_SECRET_KEY"),
        "{err}"
    );
}

//! The bad-input corpus: table-driven, one row per case — the input, the exit code and a
//! fragment of the error that names the file, row, column or limit. Four tables:
//!
//! - **pipeline files** (`PIPELINES`): `cohort-sync run` on a bad file exits 2 with
//!   `case.toml:LINE:COL:` at the bad value; nothing reaches the (hostile) server and no
//!   output or state folder appears;
//! - **CSV bodies** (`CSV_BODIES`): `cohort-sync convert` refuses them naming the row,
//!   line, column or limit, and writes no Parquet file;
//! - **reverse sources** (`SOURCES`): a reverse run on a bad CRM list (CSV or Parquet)
//!   stops naming the file and row, and sends no membership or upload call;
//! - **server answers** (`ANSWERS`): an export against a hostile stand-in server on
//!   127.0.0.1 (`support/hostile_server.rs`: raw HTTP, so anything can be answered) —
//!   `Retry-After` values, redirects, trickling bodies, bad ids, statuses, bodies — ends
//!   with the expected exit code and reason, within a bounded time, publishing nothing.
//!
//! Every case also checks that nothing printed holds a control character from the input
//! (the summary and logs escape them) and that the process did not panic (exit 101).
//! Set `HOSTILE_SHOW=1` to print every case's output.

#[path = "support/hostile_server.rs"]
mod hostile_server;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hostile_server::{GOOD_CSV, Reply, Route, Script, http, json, list_of, trickle};

const TIME_SCALE: &str = "0.01";
/// Longest a case may take: a hang is a failure, not a slow pass.
const CASE_TIMEOUT: Duration = Duration::from_secs(90);
/// Cases run at once.
const PARALLEL: usize = 4;

/// What a run printed.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs the binary in `dir` with `args` and `env`, time-scaled, without credentials in
/// the environment; fails the case (an `Err`) when it outlives [`CASE_TIMEOUT`].
async fn cli(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Ran, String> {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cohort-sync"));
    cmd.args(args)
        .current_dir(dir)
        .env("COHORT_SYNC_TIME_SCALE", TIME_SCALE)
        .env("COHORT_SYNC_LOG", "warn")
        .env_remove("AMPLITUDE_API_KEY")
        .env_remove("AMPLITUDE_SECRET_KEY")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(CASE_TIMEOUT, cmd.output())
        .await
        .map_err(|_| format!("did not end within {CASE_TIMEOUT:?}"))?
        .map_err(|e| format!("cannot run cohort-sync: {e}"))?;
    Ok(Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// The checks every case shares: the exit code, the fragment, no panic, no raw control
/// character in what was printed.
fn common_checks(name: &str, ran: &Ran, exit: i32, expect: &str) -> Result<(), String> {
    if std::env::var_os("HOSTILE_SHOW").is_some() {
        eprintln!(
            "=== {name}: exit {}\n--- stdout\n{}--- stderr\n{}",
            ran.code, ran.stdout, ran.stderr
        );
    }
    let text = ran.text();
    if ran.code != exit {
        return Err(format!("exit {} (want {exit})\n{text}", ran.code));
    }
    if !text.contains(expect) {
        return Err(format!("no {expect:?} in the output:\n{text}"));
    }
    if text.contains("panicked") {
        return Err(format!("a panic:\n{text}"));
    }
    if let Some(c) = text
        .chars()
        .find(|&c| c != '\n' && c != '\t' && cohort_sync::text::needs_escape(c))
    {
        return Err(format!(
            "a raw control character {c:?} was printed:\n{text:?}"
        ));
    }
    Ok(())
}

/// Every file under `dir` (recursively), as paths relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(
                    p.strip_prefix(dir)
                        .unwrap_or(&p)
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out
}

/// Runs `cases` (at most [`PARALLEL`] at once) and fails listing every case that failed.
async fn run_table<T, F, Fut>(table: &str, cases: Vec<T>, run: F)
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = (String, Result<(), String>)>,
{
    let total = cases.len();
    let results: Vec<(String, Result<(), String>)> =
        futures::stream::iter(cases.into_iter().map(run))
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
    let failed: Vec<String> = results
        .into_iter()
        .filter_map(|(name, r)| r.err().map(|e| format!("--- {name}: {e}")))
        .collect();
    assert!(
        failed.is_empty(),
        "{table}: {} of {total} cases failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

// ------------------------------------------------------------------------------------
// Pipeline files
// ------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Export,
    Reverse,
}

/// One bad pipeline file: `set` overrides (or, with an empty value, removes) keys of a
/// good pipeline of `kind`; the error must point at the value of the first key set (or,
/// with `at`, at where `at` starts on that key's line) and hold `expect`.
struct P {
    name: &'static str,
    kind: Kind,
    set: &'static [(&'static str, &'static str)],
    at: Option<&'static str>,
    env: &'static [(&'static str, &'static str)],
    expect: &'static str,
}

const fn p(
    name: &'static str,
    set: &'static [(&'static str, &'static str)],
    expect: &'static str,
) -> P {
    P {
        name,
        kind: Kind::Export,
        set,
        at: None,
        env: &[],
        expect,
    }
}

const fn rev(
    name: &'static str,
    set: &'static [(&'static str, &'static str)],
    expect: &'static str,
) -> P {
    P {
        name,
        kind: Kind::Reverse,
        set,
        at: None,
        env: &[],
        expect,
    }
}

const I64_MAX: &str = "9223372036854775807";

#[rustfmt::skip]
const PIPELINES: &[P] = &[
    // Every duration is range-checked (the panics of issue 13: a timeout of i64::MAX).
    p("connect_timeout_zero", &[("connection.connect_timeout_secs", "0")], "connection.connect_timeout_secs must be at least 1 (allowed 1..=600 seconds), not 0"),
    p("connect_timeout_over", &[("connection.connect_timeout_secs", "601")], "must be at most 600 (allowed 1..=600 seconds), not 601"),
    p("connect_timeout_i64_max", &[("connection.connect_timeout_secs", I64_MAX)], "must be at most 600"),
    p("read_timeout_zero", &[("connection.read_timeout_secs", "0")], "connection.read_timeout_secs must be at least 1 (allowed 1..=3600 seconds)"),
    p("read_timeout_over", &[("connection.read_timeout_secs", "3601")], "must be at most 3600 (allowed 1..=3600 seconds), not 3601"),
    p("read_timeout_i64_max", &[("connection.read_timeout_secs", I64_MAX)], "connection.read_timeout_secs must be at most 3600 (allowed 1..=3600 seconds), not 9223372036854775807"),
    p("read_timeout_negative", &[("connection.read_timeout_secs", "-1")], "invalid value: integer `-1`"),
    p("read_timeout_float", &[("connection.read_timeout_secs", "1e20")], "invalid type: floating point"),
    p("read_timeout_past_i64", &[("connection.read_timeout_secs", "9223372036854775808")], "must be at most 3600 (allowed 1..=3600 seconds), not 9223372036854775808"),
    p("read_timeout_text", &[("connection.read_timeout_secs", "\"forever\"")], "invalid type: string"),
    p("poll_initial_zero", &[("download.poll_initial_secs", "0")], "download.poll_initial_secs must be at least 1"),
    p("poll_initial_over", &[("download.poll_initial_secs", "3601")], "download.poll_initial_secs must be at most 3600 (allowed 1..=3600 seconds)"),
    p("poll_initial_i64_max", &[("download.poll_initial_secs", I64_MAX)], "download.poll_initial_secs must be at most 3600"),
    p("poll_max_over", &[("download.poll_max_secs", "86401")], "download.poll_max_secs must be at most 86400 (allowed 1..=86400 seconds)"),
    p("poll_max_i64_max", &[("download.poll_max_secs", I64_MAX)], "download.poll_max_secs must be at most 86400"),
    p("poll_max_below_initial", &[ ("download.poll_max_secs", "5"), ("download.poll_initial_secs", "10"), ], "must not be below download.poll_initial_secs (10)"),
    p("max_wait_zero", &[("download.max_wait_secs", "0")], "download.max_wait_secs must be at least 1 (allowed 1..=604800 seconds)"),
    p("max_wait_over_a_week", &[("download.max_wait_secs", "604801")], "download.max_wait_secs must be at most 604800"),
    p("max_wait_i64_max", &[("download.max_wait_secs", I64_MAX)], "download.max_wait_secs must be at most 604800"),
    p("deadline_zero", &[("download.deadline_secs", "0")], "download.deadline_secs must be at least 1 (allowed 1..=86400 seconds)"),
    p("deadline_over", &[("download.deadline_secs", "86401")], "download.deadline_secs must be at most 86400"),
    p("deadline_i64_max", &[("download.deadline_secs", I64_MAX)], "download.deadline_secs must be at most 86400"),
    p("rate_window_zero", &[("download.rate_window_secs", "0")], "download.rate_window_secs must be at least 1 (allowed 1..=3600 seconds)"),
    p("rate_window_over", &[("download.rate_window_secs", "3601")], "download.rate_window_secs must be at most 3600"),
    p("rate_window_i64_max", &[("download.rate_window_secs", I64_MAX)], "download.rate_window_secs must be at most 3600"),
    p("min_rate_over", &[("download.min_bytes_per_sec", "1073741825")], "download.min_bytes_per_sec must be at most 1073741824 (allowed 0..=1073741824 bytes per second, 0 turns the check off)"),
    p("min_rate_i64_max", &[("download.min_bytes_per_sec", I64_MAX)], "download.min_bytes_per_sec must be at most 1073741824"),
    p("min_rate_negative", &[("download.min_bytes_per_sec", "-1")], "invalid value: integer `-1`"),
    // base_url: where the credentials go.
    p("base_url_plain_http_proxy", &[("connection.base_url", "\"http://some-proxy.example:8080\"")], "plain http:// to a host that is not loopback: the API key and secret would travel unencrypted"),
    p("base_url_plain_http_private_ip", &[("connection.base_url", "\"http://10.0.0.1\"")], "set connection.allow_insecure_http = true"),
    p("base_url_plain_http_public_ip", &[("connection.base_url", "\"http://8.8.8.8:80\"")], "plain http://"),
    p("base_url_port_too_big", &[("connection.base_url", "\"https://amplitude.com:99999\"")], "has the port \"99999\": a port is 1..=65535"),
    p("base_url_port_zero", &[("connection.base_url", "\"https://amplitude.com:0\"")], "has the port \"0\": a port is 1..=65535"),
    p("base_url_port_empty", &[("connection.base_url", "\"https://amplitude.com:\"")], "has the port \"\""),
    p("base_url_port_text", &[("connection.base_url", "\"https://amplitude.com:80a\"")], "has the port \"80a\""),
    p("base_url_query", &[("connection.base_url", "\"https://amplitude.com/?x=1\"")], "must not have a query"),
    p("base_url_query_no_path", &[("connection.base_url", "\"https://amplitude.com?x=1\"")], "must not have a query"),
    p("base_url_fragment", &[("connection.base_url", "\"https://amplitude.com#top\"")], "must not have a fragment"),
    p("base_url_userinfo", &[("connection.base_url", "\"https://key:secret@amplitude.com\"")], "must not hold user info"),
    p("base_url_at_trap", &[("connection.base_url", "\"https://amplitude.com@evil.example\"")], "must not hold user info"),
    p("base_url_dotdot", &[("connection.base_url", "\"https://amplitude.com/a/../b\"")], "'..' segment"),
    p("base_url_dot", &[("connection.base_url", "\"https://amplitude.com/./b\"")], "'.' or '..' segment"),
    p("base_url_double_slash", &[("connection.base_url", "\"https://amplitude.com//b\"")], "an empty, '.' or '..' segment"),
    p("base_url_percent", &[("connection.base_url", "\"https://amplitude.com/%2e%2e\"")], "a character other than"),
    p("base_url_backslash", &[("connection.base_url", "\"https://amplitude.com\\\\..\\\\x\"")], "base_url"),
    p("base_url_space", &[("connection.base_url", "\"https://amplitude.com/a b\"")], "holds whitespace or a control character"),
    p("base_url_escape", &[("connection.base_url", "\"https://amplitude.com\\u001b[2J\"")], "base_url \"https://amplitude.com\\x1b[2J\" holds whitespace or a control character"),
    p("base_url_ftp", &[("connection.base_url", "\"ftp://127.0.0.1\"")], "must start with http:// or https://"),
    p("base_url_upper_scheme", &[("connection.base_url", "\"HTTPS://amplitude.com\"")], "must start with http:// or https:// (lowercase"),
    p("base_url_no_host", &[("connection.base_url", "\"https://\"")], "needs a host"),
    p("base_url_open_bracket", &[("connection.base_url", "\"https://[::1\"")], "base_url \"https://[::1\""),
    P { at: Some("base_url = "), ..p("base_url_and_region", &[("connection.region", "\"eu\"")], "set either connection.region or connection.base_url, not both") },
    // Storage locations: typos of s3:// are not local folders.
    p("output_s3_one_slash", &[("output.url", "\"s3:/bucket/x\"")], "did you mean \"s3://bucket/x\""),
    p("output_s3_no_slash", &[("output.url", "\"s3:bucket/x\"")], "did you mean \"s3://bucket/x\""),
    p("output_s3_upper", &[("output.url", "\"S3://bucket/x\"")], "lowercase"),
    p("output_s3_no_colon", &[("output.url", "\"s3//bucket/x\"")], "did you mean \"s3://bucket/x\""),
    p("output_s3_bare", &[("output.url", "\"s3:\"")], "\"s3:\" is not a valid location"),
    p("output_s3a", &[("output.url", "\"s3a://bucket/x\"")], "did you mean"),
    p("output_gcs", &[("output.url", "\"gcs://bucket/x\"")], "unsupported URL scheme \"gcs\""),
    p("output_az_bad_container", &[("output.url", "\"az://Bad_Container/x\"")], "invalid Azure container name \"Bad_Container\""),
    p("output_abfss_not_dfs", &[("output.url", "\"abfss://lake@acct.blob.core.windows.net/x\"")], "abfss://container@account.dfs.core.windows.net"),
    p("output_https", &[("output.url", "\"https://bucket.example/x\"")], "unsupported URL scheme \"https\""),
    p("output_file_one_slash", &[("output.url", "\"file:/tmp/x\"")], "did you mean \"file:///tmp/x\""),
    p("output_file_relative", &[("output.url", "\"file://rel\"")], "needs an absolute path"),
    p("output_bucket_upper", &[("output.url", "\"s3://Bucket/x\"")], "invalid S3 bucket name \"Bucket\""),
    p("output_bucket_short", &[("output.url", "\"s3://ab/x\"")], "invalid S3 bucket name \"ab\""),
    p("output_no_bucket", &[("output.url", "\"s3:///x\"")], "has no bucket"),
    p("output_empty", &[("output.url", "\"\"")], "empty location"),
    p("output_control", &[("output.url", "\"out\\u0007\"")], "holds the control character"),
    p("state_s3_typo", &[("state.url", "\"s3:/bucket/state\"")], "did you mean \"s3://bucket/state\""),
    p("state_upper", &[("state.url", "\"S3://bucket/state\"")], "lowercase"),
    p("state_scheme", &[("state.url", "\"hdfs://nn/state\"")], "unsupported URL scheme \"hdfs\""),
    rev("source_s3_typo", &[("source.url", "\"s3:/bucket/crm.csv\"")], "did you mean \"s3://bucket/crm.csv\""),
    rev("source_hdfs", &[("source.url", "\"hdfs://bucket/crm.csv\"")], "unsupported URL scheme \"hdfs\""),
    rev("snapshots_typo", &[("reconcile.snapshots", "\"s3:bucket/out\"")], "did you mean \"s3://bucket/out\""),
    rev("lists_dir_typo", &[("reconcile.lists_dir", "\"S3://bucket/plans\"")], "lowercase"),
    // Ids: Amplitude's alphabet before any URL or key.
    p("select_id_dotdot", &[("select.ids", "[\"..\"]")], "select.ids[0]: cohort id \"..\" is not a valid Amplitude id"),
    p("select_id_dot", &[("select.ids", "[\".\"]")], "does not start with a letter or digit"),
    p("select_id_empty", &[("select.ids", "[\"\"]")], "select.ids[0] is empty"),
    p("select_id_blank", &[("select.ids", "[\"  \"]")], "select.ids[0] is empty"),
    p("select_id_slash", &[("select.ids", "[\"a/b\"]")], "cohort id \"a/b\" is not a valid Amplitude id"),
    p("select_id_space", &[("select.ids", "[\"a b\"]")], "a character other than letters, digits"),
    p("select_id_percent", &[("select.ids", "[\"%2e%2e\"]")], "cohort id \"%2e%2e\""),
    p("select_id_query", &[("select.ids", "[\"c1?props=1\"]")], "cohort id \"c1?props=1\""),
    p("select_id_hash", &[("select.ids", "[\"c1#x\"]")], "cohort id \"c1#x\""),
    p("select_id_escape", &[("select.ids", "[\"\\u001b[2J\"]")], "cohort id \"\\x1b[2J\" is not a valid"),
    p("select_id_too_long", &[("select.ids", "[\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"]")], "longer than 128 characters"),
    p("select_id_leading_dash", &[("select.ids", "[\"-rf\"]")], "does not start with a letter or digit"),
    p("select_id_unicode", &[("select.ids", "[\"cöhort\"]")], "cohort id \"cöhort\""),
    P { at: Some("\"..\"]"), ..p("select_id_second", &[("select.ids", "[\"c1\", \"..\"]")], "select.ids[1]: cohort id \"..\"") },
    P { env: &[("BAD_ID", "..")], ..p("select_id_from_env", &[("select.ids", "[\"${BAD_ID}\"]")], "select.ids[0]: cohort id \"..\"") },
    P { at: Some("${HOSTILE_UNSET_VAR}"), ..p("select_id_unset_var", &[("select.ids", "[\"${HOSTILE_UNSET_VAR}\"]")], "HOSTILE_UNSET_VAR") },
    rev("target_id_dotdot", &[("target.cohort_id", "\"..\"")], "target.cohort_id: cohort id \"..\" is not a valid Amplitude id"),
    rev("target_id_slash", &[("target.cohort_id", "\"../../api/3/cohorts\"")], "cohort id \"../../api/3/cohorts\""),
    rev("target_id_empty", &[("target.cohort_id", "\"\"")], "target.cohort_id is empty"),
    rev("target_id_newline", &[("target.cohort_id", "\"c1\\nforged: ok\"")], "cohort id \"c1\\nforged: ok\""),
];

/// The file of a row: the good pipeline of its kind with the row's keys set.
fn pipeline_text(kind: Kind, base: &str, set: &[(&str, &str)]) -> String {
    let base_url = format!("\"{base}\"");
    let mut sections: Vec<(&str, Vec<(String, String)>)> = vec![
        ("", vec![]),
        (
            "connection",
            vec![
                ("base_url".into(), base_url),
                ("api_key".into(), "\"k\"".into()),
                ("secret_key".into(), "\"s\"".into()),
                ("app_id".into(), "42".into()),
            ],
        ),
        ("state", vec![("url".into(), "\"state\"".into())]),
        ("download", vec![]),
        ("download.limits", vec![]),
    ];
    match kind {
        Kind::Export => {
            sections[0].1 = vec![
                ("kind".into(), "\"export\"".into()),
                ("name".into(), "\"case\"".into()),
            ];
            sections.push(("select", vec![("ids".into(), "[\"c1\"]".into())]));
            sections.push(("output", vec![("url".into(), "\"out\"".into())]));
        }
        Kind::Reverse => {
            sections[0].1 = vec![
                ("kind".into(), "\"reverse\"".into()),
                ("name".into(), "\"case\"".into()),
            ];
            sections.push(("source", vec![("url".into(), "\"crm.csv\"".into())]));
            sections.push(("target", vec![("cohort_id".into(), "\"c1\"".into())]));
            sections.push(("reconcile", vec![]));
        }
    }
    for (path, value) in set {
        let (section, key) = path.rsplit_once('.').unwrap_or(("", path));
        let Some((_, keys)) = sections.iter_mut().find(|(s, _)| *s == section) else {
            panic!("no section {section}");
        };
        keys.retain(|(k, _)| k != key);
        if !value.is_empty() {
            keys.push((key.to_string(), value.to_string()));
        }
    }
    let mut text = String::new();
    for (section, keys) in sections {
        if keys.is_empty() {
            continue;
        }
        if !section.is_empty() {
            text.push_str(&format!("\n[{section}]\n"));
        }
        for (k, v) in keys {
            text.push_str(&format!("{k} = {v}\n"));
        }
    }
    text
}

/// `line:col` (1-based, characters) where `row`'s error must point.
fn expected_position(text: &str, row: &P) -> String {
    if let Some(at) = row.at {
        let offset = text.find(at).expect("the anchor is in the file");
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before[before.rfind('\n').map_or(0, |i| i + 1)..]
            .chars()
            .count()
            + 1;
        return format!("{line}:{col}");
    }
    let (path, value) = row.set[0];
    let key = path.rsplit_once('.').map_or(path, |(_, k)| k);
    let wanted = format!("{key} = {value}");
    for (i, line) in text.lines().enumerate() {
        if line == wanted {
            // An array's error points at its (first) element.
            let bracket = usize::from(value.starts_with('['));
            return format!("{}:{}", i + 1, key.chars().count() + 4 + bracket);
        }
    }
    panic!("{wanted:?} not in {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pipeline_files_fail_at_their_value_and_nothing_is_sent() {
    let server = Arc::new(hostile_server::start(Script::default()).await);
    let cases: Vec<&P> = PIPELINES.iter().collect();
    let srv = Arc::clone(&server);
    run_table("pipeline files", cases, move |row| {
        let server = Arc::clone(&srv);
        async move {
            let result = async {
                let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                let text = pipeline_text(row.kind, &server.base_url, row.set);
                std::fs::write(dir.path().join("case.toml"), &text).map_err(|e| e.to_string())?;
                std::fs::write(dir.path().join("crm.csv"), "user_id\nu1\n")
                    .map_err(|e| e.to_string())?;
                let ran = cli(dir.path(), &["run", "case.toml"], row.env).await?;
                common_checks(row.name, &ran, 2, row.expect)?;
                let at = format!("case.toml:{}: ", expected_position(&text, row));
                if !ran.stderr.starts_with(&at) {
                    return Err(format!("the error is not at {at}\n{}", ran.stderr));
                }
                let made = files_under(dir.path());
                if made.iter().any(|f| f != "case.toml" && f != "crm.csv") {
                    return Err(format!("files were written: {made:?}"));
                }
                Ok(())
            }
            .await;
            (row.name.to_string(), result)
        }
    })
    .await;
    assert!(
        server.log().is_empty(),
        "the server was called: {:?}",
        server.log()
    );
}

// ------------------------------------------------------------------------------------
// CSV bodies (`cohort-sync convert`)
// ------------------------------------------------------------------------------------

/// One bad CSV: the body (made by `body`), the input's file name, extra arguments of
/// `convert`, the exit code and the fragment naming row, line, column or limit.
struct C {
    name: &'static str,
    file: &'static str,
    body: fn() -> Vec<u8>,
    args: &'static [&'static str],
    exit: i32,
    expect: &'static str,
}

const fn csv(
    name: &'static str,
    body: fn() -> Vec<u8>,
    args: &'static [&'static str],
    expect: &'static str,
) -> C {
    C {
        name,
        file: "in.csv",
        body,
        args,
        exit: 1,
        expect,
    }
}

fn gz(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

fn rows(header: &str, row: &str, n: usize) -> Vec<u8> {
    let mut out = format!("{header}\n").into_bytes();
    for _ in 0..n {
        out.extend_from_slice(row.as_bytes());
        out.push(b'\n');
    }
    out
}

#[rustfmt::skip]
const CSV_BODIES: &[C] = &[
    csv("empty", Vec::new, &[], "in.csv: body is truncated (it is empty: no header row) after 0 bytes"),
    csv("only_blank_lines", || b"\n\n\r\n".to_vec(), &[], "it is empty: no header row"),
    csv("ends_inside_quote", || b"amplitude_id,user_id\n1,\"".to_vec(), &[], "it ends inside a quoted field of row 1, which starts on line 2"),
    csv("ends_inside_quote_late", || { let mut b = rows("amplitude_id,user_id", "1,a", 500); b.extend_from_slice(b"2,\"open\nstill open"); b }, &[], "row 501, which starts on line 502"),
    csv("cr_line_ends_unterminated", || b"amplitude_id,user_id\r1,\"a\r".to_vec(), &[], "ends inside a quoted field of row 1"),
    csv("more_fields", || b"amplitude_id,user_id\n1,a\n2,b,c\n".to_vec(), &[], "in.csv: bad row 2 (line 3): expected 2 fields, found 3"),
    csv("fewer_fields", || b"amplitude_id,user_id\n1,a\n2\n".to_vec(), &[], "bad row 2 (line 3): expected 2 fields, found 1"),
    csv("text_after_quote", || b"amplitude_id,user_id\n1,\"a\"x\n".to_vec(), &[], "text after a closing quote"),
    csv("quoted_line_break_then_junk", || b"amplitude_id,user_id\n1,\"a\n2,\"b\"\n".to_vec(), &[], "bad row 1 (line 2)"),
    csv("invalid_utf8", || b"amplitude_id,user_id\n1,\xff\xfe\n".to_vec(), &[], "bad row 1 (line 2): column \"user_id\" is not valid UTF-8"),
    csv("id_not_integer", || b"amplitude_id,user_id\nabc,a\n".to_vec(), &[], "column \"amplitude_id\": \"abc\" is not an int64"),
    csv("id_empty", || b"amplitude_id,user_id\n,a\n".to_vec(), &[], "bad row 1 (line 2): column \"amplitude_id\" is empty"),
    csv("id_past_i64", || b"amplitude_id,user_id\n99999999999999999999,a\n".to_vec(), &[], "\"99999999999999999999\" is not an int64"),
    csv("id_fraction", || b"amplitude_id,user_id\n1.5,a\n".to_vec(), &[], "\"1.5\" is not an int64"),
    csv("id_escape_sequence", || b"amplitude_id,user_id\n\x1b[2J,a\n".to_vec(), &[], "\"\\u{1b}[2J\" is not an int64"),
    csv("late_bad_row", || { let mut b = rows("amplitude_id,user_id", "1,a", 1000); b.extend_from_slice(b"x,y\n"); b }, &[], "bad row 1001 (line 1002)"),
    csv("typed_column_fraction", || b"amplitude_id,n\n1,1.5\n".to_vec(), &["--column-type", "n=int64"], "column \"n\": \"1.5\" is not an int64"),
    csv("typed_column_not_bool", || b"amplitude_id,b\n1,maybe\n".to_vec(), &["--column-type", "b=boolean"], "column \"b\""),
    csv("typed_column_not_float", || b"amplitude_id,f\n1,1,5\n".to_vec(), &["--column-type", "f=float64"], "expected 2 fields, found 3"),
    csv("field_past_limit", || b"amplitude_id,user_id\n1,xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n".to_vec(), &["--max-field-bytes", "16"], "row 1 (line 2), column \"user_id\": a field is longer than 16 bytes (limit max_field_bytes"),
    csv("field_past_default_limit", || { let mut b = b"amplitude_id,user_id\n1,".to_vec(); b.extend(std::iter::repeat_n(b'x', 70_000)); b.push(b'\n'); b }, &[], "a field is longer than 65536 bytes (limit max_field_bytes"),
    csv("row_past_limit", || { b"amplitude_id,a,b,c\n1,aaaaaaaaaaaaaaaaaaaa,bbbbbbbbbbbbbbbbbbbbbbbb,cccccccccccccccccccccccc\n".to_vec() }, &["--max-row-bytes", "64"], "row 1 (line 2): a row is longer than 64 bytes (limit max_row_bytes"),
    csv("row_without_line_break", || { let mut b = b"amplitude_id,user_id\n1,".to_vec(); b.extend(std::iter::repeat_n(b'q', 2_000)); b }, &["--max-row-bytes", "100"], "a row is longer than 100 bytes"),
    csv("header_past_limit", || { let mut b = b"amplitude_id,".to_vec(); b.extend(std::iter::repeat_n(b'h', 200)); b.extend_from_slice(b"\n1,a\n"); b }, &["--max-header-bytes", "64"], "the header row is longer than 64 bytes (limit max_header_bytes"),
    csv("header_without_line_break", || { let mut b = b"amplitude_id,".to_vec(); b.extend(std::iter::repeat_n(b'h', 2_000_000)); b }, &[], "the header row is longer than 1048576 bytes"),
    csv("too_many_columns", || rows("amplitude_id,c1,c2,c3,c4,c5,c6", "1,a,b,c,d,e,f", 1), &["--max-columns", "5"], "the header has more than 5 columns (limit max_columns"),
    csv("too_many_columns_default", || { let names: Vec<String> = (0..1_001).map(|i| format!("c{i}")).collect(); format!("amplitude_id,{}\n", names.join(",")).into_bytes() }, &[], "the header has more than 1000 columns"),
    C { file: "in.csv.gz", ..csv("gzip_bomb", || gz(&rows("amplitude_id,user_id", "1,a", 3_000_000)), &["--max-gzip-ratio", "10"], "the gzip body expands more than 10 times") },
    C { file: "in.csv.gz", ..csv("gzip_truncated", || { let mut g = gz(&rows("amplitude_id,user_id", "1,a", 1000)); g.truncate(60); g }, &[], "body is truncated (the gzip stream is incomplete)") },
    C { file: "in.csv.gz", ..csv("gzip_garbage", || { let mut g = vec![0x1f, 0x8b]; g.extend_from_slice(b"NOT GZIP AT ALL"); g }, &[], "cannot decompress the gzip body") },
    C { file: "in.csv.gz", ..csv("gzip_second_member_cut", || { let mut g = gz(b"amplitude_id,user_id\n1,a\n"); let second = gz(&rows("", "2,b", 100)); g.extend_from_slice(&second[..20]); g }, &[], "the gzip stream is incomplete") },
    C { file: "in.csv.gz", ..csv("gzip_hiding_a_bad_row", || gz(b"amplitude_id,user_id\n1,a\n2,b,c\n"), &[], "bad row 2 (line 3): expected 2 fields, found 3") },
    csv("binary_garbage", || (0u8..=255).cycle().take(768).collect(), &[], "in.csv: bad row"),
    csv("html_error_page", || b"<html><body><h1>502 Bad Gateway</h1>\n<p>nginx, oops</p></body></html>\n".to_vec(), &[], "expected 1 fields, found 2"),
    csv("unknown_column_type", || b"amplitude_id,user_id\n1,a\n".to_vec(), &["--column-type", "nope=int64"], "nope"),
    C { exit: 2, ..csv("zero_field_limit", || b"amplitude_id\n1\n".to_vec(), &["--max-field-bytes", "0"], "--max-field-bytes") },
    C { exit: 2, ..csv("output_s3_typo", || b"amplitude_id\n1\n".to_vec(), &["--output-instead", "s3:/bucket/x.parquet"], "did you mean \"s3://bucket/x.parquet\"") },
    C { exit: 2, ..csv("output_is_input", || b"amplitude_id\n1\n".to_vec(), &["--output-instead", "./in.csv"], "is the input file") },
    C { exit: 2, ..csv("output_unknown_scheme", || b"amplitude_id\n1\n".to_vec(), &["--output-instead", "gcs://bucket/x.parquet"], "unsupported URL scheme \"gcs\"") },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_csv_bodies_are_refused_naming_where_and_nothing_is_written() {
    let cases: Vec<&C> = CSV_BODIES.iter().collect();
    run_table("CSV bodies", cases, |row| async move {
        let result = async {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            std::fs::write(dir.path().join(row.file), (row.body)()).map_err(|e| e.to_string())?;
            // `--output-instead X` (this table's own marker) replaces the output path.
            let mut output = "out.parquet".to_string();
            let mut extra = Vec::new();
            let mut args = row.args.iter();
            while let Some(a) = args.next() {
                match *a {
                    "--output-instead" => output = args.next().copied().unwrap_or("").into(),
                    other => extra.push(other),
                }
            }
            let mut argv = vec!["convert", row.file, output.as_str()];
            argv.extend(extra);
            let ran = cli(dir.path(), &argv, &[]).await?;
            common_checks(row.name, &ran, row.exit, row.expect)?;
            let made = files_under(dir.path());
            if made.iter().any(|f| f != row.file) {
                return Err(format!("files were written: {made:?}"));
            }
            Ok(())
        }
        .await;
        (row.name.to_string(), result)
    })
    .await;
}

// ------------------------------------------------------------------------------------
// Reverse sources
// ------------------------------------------------------------------------------------

/// One bad CRM list: its file name and bytes, keys set in the reverse pipeline (the
/// source URL is the file), the exit code and the fragment naming file, row or value.
struct S {
    name: &'static str,
    file: &'static str,
    body: fn() -> Vec<u8>,
    set: &'static [(&'static str, &'static str)],
    exit: i32,
    expect: &'static str,
}

const fn src(
    name: &'static str,
    file: &'static str,
    body: fn() -> Vec<u8>,
    set: &'static [(&'static str, &'static str)],
    expect: &'static str,
) -> S {
    S {
        name,
        file,
        body,
        set,
        exit: 1,
        expect,
    }
}

const AMP: &[(&str, &str)] = &[
    ("source.id_column", "\"amplitude_id\""),
    ("source.id_kind", "\"amplitude_id\""),
];

/// A Parquet file of one column `name` holding `array`.
fn parquet_of(name: &str, array: arrow::array::ArrayRef) -> Vec<u8> {
    use arrow::datatypes::{Field, Schema};
    use arrow::record_batch::RecordBatch;
    let schema = Arc::new(Schema::new(vec![Field::new(
        name,
        array.data_type().clone(),
        true,
    )]));
    let batch = RecordBatch::try_new(schema.clone(), vec![array]).expect("batch");
    let mut out = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None).expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
    out
}

fn pq_strings(name: &str, values: &[Option<&str>]) -> Vec<u8> {
    parquet_of(
        name,
        Arc::new(arrow::array::StringArray::from(values.to_vec())),
    )
}

fn pq_ints(name: &str, values: &[i64]) -> Vec<u8> {
    parquet_of(
        name,
        Arc::new(arrow::array::Int64Array::from(values.to_vec())),
    )
}

#[rustfmt::skip]
const SOURCES: &[S] = &[
    src("csv_no_id_column", "crm.csv", || b"email,name\na@x,A\n".to_vec(), &[], "crm.csv: no column \"user_id\" in the header (columns: email, name)"),
    src("csv_id_column_twice", "crm.csv", || b"user_id,user_id\nu1,u2\n".to_vec(), &[], "column name \"user_id\" appears 2 times in the header"),
    src("csv_ends_inside_quote", "crm.csv", || b"user_id\nu1\n\"u2\n".to_vec(), &[], "crm.csv: body is truncated (it ends inside a quoted field of row 2, which starts on line 3)"),
    src("csv_more_fields", "crm.csv", || b"user_id,name\nu1,A\nu2,B,C\n".to_vec(), &[], "crm.csv: bad row 2 (line 3): expected 2 fields, found 3"),
    src("csv_fewer_fields", "crm.csv", || b"user_id,name\nu1,A\nu2\n".to_vec(), &[], "crm.csv: bad row 2 (line 3): expected 2 fields, found 1"),
    src("csv_text_after_quote", "crm.csv", || b"user_id\n\"u1\"junk\n".to_vec(), &[], "bad row 1 (line 2): field 2: text after a closing quote"),
    src("csv_field_past_limit", "crm.csv", || { let mut b = b"user_id\n".to_vec(); b.extend(std::iter::repeat_n(b'u', 70_000)); b.push(b'\n'); b }, &[], "row 1 (line 2), column \"user_id\": a field is longer than 65536 bytes (limit max_field_bytes)"),
    src("csv_empty_file", "crm.csv", Vec::new, &[], "crm.csv: body is truncated (it is empty: no header row)"),
    src("csv_binary", "crm.csv", || (0u8..=255).cycle().take(600).collect(), &[], "crm.csv: no column \"user_id\" in the header (columns: \\0\\x01"),
    src("csv_amplitude_id_text", "crm.csv", || b"amplitude_id\n12\nabc\n".to_vec(), AMP, "crm.csv: row 2 (line 3): amplitude_id \"abc\" is not an integer"),
    src("csv_amplitude_id_zero", "crm.csv", || b"amplitude_id\n0\n".to_vec(), AMP, "crm.csv: row 1 (line 2): amplitude_id 0 is out of range (Amplitude ids are 1..=9223372036854775807)"),
    src("csv_amplitude_id_negative", "crm.csv", || b"amplitude_id\n-5\n".to_vec(), AMP, "row 1 (line 2): amplitude_id -5 is out of range"),
    src("csv_amplitude_id_past_i64", "crm.csv", || b"amplitude_id\n9223372036854775808\n".to_vec(), AMP, "amplitude_id 9223372036854775808 is out of range"),
    src("csv_amplitude_id_fraction", "crm.csv", || b"amplitude_id\n1.5\n".to_vec(), AMP, "amplitude_id \"1.5\" is not an integer"),
    src("csv_amplitude_id_escape", "crm.csv", || b"amplitude_id\n7\x1b[2J\n".to_vec(), AMP, "amplitude_id \"7\\u{1b}[2J\" is not an integer"),
    src("csv_gzip_truncated", "crm.csv.gz", || { let mut g = gz(&rows("user_id", "u1", 1000)); g.truncate(40); g }, &[], "crm.csv.gz: body is truncated (the gzip stream is incomplete)"),
    src("csv_gzip_garbage", "crm.csv.gz", || b"\x1f\x8bthis is not gzip".to_vec(), &[], "crm.csv.gz: cannot decompress the gzip body"),
    src("csv_gzip_bomb", "crm.csv.gz", || gz(&rows("user_id", "u", 12_000_000)), &[], "the gzip body expands more than 1000 times"),
    src("csv_empty_source_mirror", "crm.csv", || b"user_id\n".to_vec(), &[], "refused by the removal guard: the source has no ids"),
    src("parquet_not_parquet", "crm.parquet", || b"PAR1 this is not a parquet file".to_vec(), &[], "crm.parquet: Parquet error"),
    src("parquet_truncated", "crm.parquet", || { let mut p = pq_strings("user_id", &[Some("u1"), Some("u2")]); let n = p.len() / 2; p.truncate(n); p }, &[], "crm.parquet: Parquet error"),
    src("parquet_empty_file", "crm.parquet", Vec::new, &[], "crm.parquet"),
    src("parquet_no_id_column", "crm.parquet", || pq_strings("email", &[Some("a@x")]), &[], "crm.parquet: no column \"user_id\" (columns: email)"),
    src("parquet_float_ids", "crm.parquet", || { parquet_of("user_id", Arc::new(arrow::array::Float64Array::from(vec![1.5, 2.0]))) }, &[], "column \"user_id\" is of Arrow type Float64, which cannot hold user_id ids"),
    src("parquet_boolean_ids", "crm.parquet", || { parquet_of("user_id", Arc::new(arrow::array::BooleanArray::from(vec![true]))) }, &[], "column \"user_id\" is of Arrow type Boolean"),
    src("parquet_binary_ids", "crm.parquet", || { parquet_of("user_id", Arc::new(arrow::array::BinaryArray::from(vec![&b"u1"[..]]))) }, &[], "column \"user_id\" is of Arrow type Binary"),
    src("parquet_amplitude_id_zero", "crm.parquet", || pq_ints("amplitude_id", &[5, 0]), AMP, "crm.parquet: row 2: amplitude_id 0 is out of range"),
    src("parquet_amplitude_id_negative", "crm.parquet", || pq_ints("amplitude_id", &[-7]), AMP, "crm.parquet: row 1: amplitude_id -7 is out of range"),
    src("parquet_amplitude_id_text", "crm.parquet", || pq_strings("amplitude_id", &[Some("12"), Some("x1")]), AMP, "crm.parquet: row 2: amplitude_id \"x1\" is not an integer"),
    src("parquet_float_amplitude_ids", "crm.parquet", || { parquet_of("amplitude_id", Arc::new(arrow::array::Float64Array::from(vec![1.0]))) }, AMP, "column \"amplitude_id\" is of Arrow type Float64, which cannot hold amplitude_id ids"),
    // Files the parquet crate panicked on (found by fuzzing; the first byte is the fuzz target's flags).
    src("parquet_negative_chunk_offset", "crm.parquet", || include_bytes!("../fuzz/regressions/reverse_source/crash-negative-column-chunk-offset")[1..].to_vec(), AMP, "crm.parquet: corrupt Parquet metadata: row group 0, column chunk 0 has offset"),
    src("parquet_definition_levels_overrun", "crm.parquet", || include_bytes!("../fuzz/regressions/reverse_source/crash-definition-levels-overrun")[1..].to_vec(), AMP, "crm.parquet: the Parquet reader failed on this file (offset + len out of bounds); is it a valid Parquet file?"),
    src("parquet_garbage_without_extension", "crm", || b"PAR1\x00\x01\x02garbagePAR1".to_vec(), &[("source.format", "\"parquet\"")], "crm"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reverse_sources_stop_before_any_call() {
    let cases: Vec<&S> = SOURCES.iter().collect();
    run_table("reverse sources", cases, |row| async move {
        let result = async {
            let server = hostile_server::start(Script::default()).await;
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            std::fs::write(dir.path().join(row.file), (row.body)()).map_err(|e| e.to_string())?;
            let url = format!("\"{}\"", row.file);
            let mut set: Vec<(&str, &str)> = vec![("source.url", url.as_str())];
            set.extend_from_slice(row.set);
            let text = pipeline_text(Kind::Reverse, &server.base_url, &set);
            std::fs::write(dir.path().join("case.toml"), &text).map_err(|e| e.to_string())?;
            let ran = cli(dir.path(), &["run", "case.toml"], &[]).await?;
            common_checks(row.name, &ran, row.exit, row.expect)?;
            if !server.writes().is_empty() {
                return Err(format!("calls were sent: {:?}", server.writes()));
            }
            if server.cohort_requests() > 0 {
                return Err("a download was requested (quota spent)".into());
            }
            Ok(())
        }
        .await;
        (row.name.to_string(), result)
    })
    .await;
}

// ------------------------------------------------------------------------------------
// Server answers (an export against the hostile server)
// ------------------------------------------------------------------------------------

/// One hostile answer: the server's script, keys set in the export pipeline, the exit
/// code, the fragment of the reason, and at most how many times `bounded.0` may be
/// called (an error that must not be retried is asked once).
struct A {
    name: &'static str,
    script: fn() -> Script,
    set: &'static [(&'static str, &'static str)],
    exit: i32,
    expect: &'static str,
    bounded: Option<(Route, usize)>,
}

const fn ans(name: &'static str, script: fn() -> Script, expect: &'static str) -> A {
    A {
        name,
        script,
        set: &[],
        exit: 1,
        expect,
        bounded: None,
    }
}

fn with(route: Route, reply: Reply) -> Script {
    Script::default().with(route, reply)
}

fn r429(retry_after: &str) -> Reply {
    http(
        "429 Too Many Requests",
        &[
            ("Retry-After", retry_after),
            ("Content-Type", "application/json"),
        ],
        br#"{"error":{"http_code":429,"type":"too_many_requests","message":"Slow down"}}"#,
    )
}

fn redirect(location: &str) -> Reply {
    http("302 Found", &[("Location", location)], b"")
}

fn csv_file(body: &[u8]) -> Reply {
    http("200 OK", &[("Content-Type", "text/csv")], body)
}

/// A cohort body of `n` members.
fn members(n: usize) -> Vec<u8> {
    let mut out = b"\"amplitude_id\",\"user_id\"\n".to_vec();
    for i in 1..=n {
        out.extend_from_slice(format!("{i},\"u{i}\"\n").as_bytes());
    }
    out
}

const SPENT: &str = r#"{"rest_download":{"limit":500,"usage":500}}"#;
const LEFT: &str = r#"{"rest_download":{"limit":500,"usage":10}}"#;
const SLOW: &[(&str, &str)] = &[("connection.read_timeout_secs", "1")];

#[rustfmt::skip]
const ANSWERS: &[A] = &[
    // Retry-After: parsed without panics, never waited for past 15 minutes.
    ans("retry_after_exponent", || with(Route::Request, r429("1e20")), "Retry-After \"1e20\""),
    ans("retry_after_a_billion", || with(Route::Request, r429("1000000000")), "HTTP 429 with Retry-After \"1000000000\" (32 years), longer than the 15 minutes this tool waits at most; not retried"),
    ans("retry_after_year_9999", || with(Route::Request, r429("Fri, 31 Dec 9999 23:59:59 GMT")), "Retry-After \"Fri, 31 Dec 9999 23:59:59 GMT\""),
    ans("retry_after_rfc850_far", || with(Route::Request, r429("Friday, 31-Dec-99 23:59:59 GMT")), "rate limited (HTTP 429, retry after 0.0s)"),
    ans("retry_after_just_past_max", || with(Route::Request, r429("900.5")), "Retry-After \"900.5\""),
    ans("retry_after_past_duration_range", || with(Route::Request, r429("1e400")), "rate limited (HTTP 429, retry after unspecified)"),
    ans("retry_after_negative", || with(Route::Request, r429("-5")), "rate limited (HTTP 429, retry after unspecified)"),
    ans("retry_after_nan", || with(Route::Request, r429("NaN")), "retry after unspecified"),
    ans("retry_after_inf", || with(Route::Request, r429("inf")), "retry after unspecified"),
    ans("retry_after_garbage", || with(Route::Request, r429("soon-ish")), "retry after unspecified"),
    ans("retry_after_on_the_list", || with(Route::List, r429("1e20")), "listing cohorts: list cohorts: HTTP 429 with Retry-After \"1e20\""),
    ans("retry_after_on_status", || with(Route::Status, r429("86400")), "Retry-After \"86400\" (24 hours)"),
    ans("retry_after_on_file", || with(Route::File, r429("3600")), "Retry-After \"3600\" (60 minutes)"),
    A { exit: 3, ..ans("retry_after_long_month_spent", || { with(Route::Request, r429("1e20")).with(Route::Usage, Reply::Seq(vec![json("200 OK", LEFT), json("200 OK", SPENT)])) }, "deferred (quota)  requesting cohort: monthly cohort download quota exhausted") },
    A { exit: 3, ..ans("no_retry_after_month_spent", || { with(Route::Request, http("429 Too Many Requests", &[], b"{}")).with(Route::Usage, Reply::Seq(vec![json("200 OK", LEFT), json("200 OK", SPENT)])) }, "deferred (quota)  requesting cohort: monthly cohort download quota exhausted") },
    ans("retry_after_control_characters", || { with(Route::Request, Reply::Raw(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\x1b[2J\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec())) }, "requesting cohort"),
    // Redirects of /file: https or loopback http only, and never retried otherwise.
    A { bounded: Some((Route::File, 1)), ..ans("redirect_ftp", || with(Route::File, redirect("ftp://127.0.0.1/r1.csv")), "refused the redirect to ftp://127.0.0.1/r1.csv: only https:// (or http:// to a loopback host) is followed; not retried") },
    A { bounded: Some((Route::File, 1)), ..ans("redirect_file_scheme", || with(Route::File, redirect("file:///etc/passwd")), "refused the redirect to file:///etc/passwd") },
    A { bounded: Some((Route::File, 1)), ..ans("redirect_plain_http_elsewhere", || { with(Route::File, redirect("http://example.com/r1.csv?X-Amz-Signature=secret")) }, "refused the redirect to http://example.com/r1.csv: only https://") },
    A { bounded: Some((Route::File, 1)), ..ans("redirect_data_url", || with(Route::File, redirect("data:text/csv,amplitude_id%0A1")), "refused the redirect to data:") },
    A { bounded: Some((Route::File, 1)), ..ans("redirect_gopher", || with(Route::File, redirect("gopher://127.0.0.1:70/x")), "refused the redirect to gopher://") },
    A { bounded: Some((Route::File, 1)), ..ans("redirect_user_info_stripped", || with(Route::File, redirect("ftp://user:pass@127.0.0.1/x")), "refused the redirect to ftp://127.0.0.1/x") },
    A { bounded: Some((Route::File, 1)), ..ans("redirect_without_location", || with(Route::File, http("302 Found", &[], b"")), "redirect without a Location header") },
    A { bounded: Some((Route::File, 1)), ..ans("redirect_to_a_redirect", || { with(Route::File, redirect("{base}/presigned/r1.csv")).with(Route::Presigned, redirect("{base}/presigned/again.csv")) }, "unexpected response (HTTP 302) from presigned download: the presigned link redirected again (to http://127.0.0.1") },
    ans("redirect_location_with_controls", || { with(Route::File, Reply::Raw(b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1/\x1b[2J\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec())) }, "invalid HTTP header parsed"),
    // Bodies: a trickle is cut by the minimum rate, an endless body by the deadline.
    ans("trickling_body", || { with(Route::File, trickle(b"\"amplitude_id\",\"user_id\"\n", b"1,\"u\"\n", Duration::from_millis(20), None)) }, "below download.min_bytes_per_sec = 65536 (measured over download.rate_window_secs = 60, time scale 0.01"),
    ans("silent_body", || { with(Route::File, trickle(b"\"amplitude_id\",\"user_id\"\n", b"", Duration::from_secs(30), None)) }, "below download.min_bytes_per_sec"),
    A { set: &[ ("download.deadline_secs", "50"), ("download.min_bytes_per_sec", "1024"), ], ..ans("endless_body", || { with(Route::File, trickle(b"\"amplitude_id\",\"user_id\"\n", &members(200)[25..], Duration::from_millis(5), None)) }, "the body did not finish within download.deadline_secs = 50") },
    ans("trickling_presigned_body", || { with(Route::File, redirect("{base}/presigned/r1.csv")).with(Route::Presigned, trickle(b"\"amplitude_id\",\"user_id\"\n", b"1,\"u\"\n", Duration::from_millis(20), None)) }, "presigned download: the body came at"),
    ans("html_with_200", || { with(Route::File, http("200 OK", &[("Content-Type", "text/html")], b"<html><body>Error</body></html>")) }, "amplitude_id"),
    ans("another_csv", || with(Route::File, csv_file(b"\"foo\",\"bar\"\n1,2\n")), "amplitude_id"),
    ans("body_ends_inside_quote", || { with(Route::File, csv_file(b"\"amplitude_id\",\"user_id\"\n1,\"u1")) }, "ends inside a quoted field of row 1"),
    A { set: &[("download.limits.max_field_bytes", "16")], ..ans("body_field_past_limit", || { with(Route::File, csv_file(b"\"amplitude_id\",\"user_id\"\n1,\"uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu\"\n2,\"u\"\n3,\"u\"\n")) }, "row 1 (line 2), column \"user_id\": a field is longer than 16 bytes (limit max_field_bytes; raise it with max_field_bytes in [download.limits])") },
    ans("body_far_more_rows_than_listed", || with(Route::File, csv_file(&members(500))), "rows"),
    ans("body_gzip_bomb", || { with(Route::File, http("200 OK", &[("Content-Encoding", "gzip")], &gz(&members(1).into_iter().chain(std::iter::repeat_n(b'\n', 30_000_000)).collect::<Vec<u8>>()))) }, "the gzip body expands more than 1000 times"),
    ans("body_gzip_claimed_but_plain", || { with(Route::File, http("200 OK", &[("Content-Encoding", "gzip")], GOOD_CSV.as_bytes())) }, "gzip"),
    ans("body_shorter_than_its_length", || { with(Route::File, Reply::Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n\"amplitude_id\",\"user_id\"\n1,\"u1\"\n".to_vec())) }, "download failed 5 times"),
    ans("body_bad_chunked_encoding", || { with(Route::File, Reply::Raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nnot a chunk\r\n".to_vec())) }, "download failed 5 times"),
    ans("body_cut_without_length", || { with(Route::File, Reply::Raw(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n\"amplitude_id\",\"user_id\"\n1,\"u".to_vec())) }, "ends inside a quoted field"),
    // Ids from the server: checked before they go into a URL or a key.
    A { bounded: Some((Route::Request, 0)), set: &[("select.ids", ""), ("select.all_published", "true")], ..ans("list_id_dotdot", || with(Route::List, json("200 OK", &list_of("..", "Dots", 3))), "cohort list gave an unusable id; nothing was requested: cohort id \"..\" is not a valid Amplitude id") },
    A { bounded: Some((Route::Request, 0)), set: &[("select.ids", ""), ("select.all_published", "true")], ..ans("list_id_slash", || { with(Route::List, json("200 OK", &list_of("../../api/3/cohorts/upload", "Up", 3))) }, "cohort id \"../../api/3/cohorts/upload\" is not a valid") },
    A { bounded: Some((Route::Request, 0)), set: &[("select.ids", ""), ("select.all_published", "true")], ..ans("list_id_empty", || with(Route::List, json("200 OK", &list_of("", "Empty", 3))), "cohort id \"\" is not a valid Amplitude id: it is empty") },
    A { bounded: Some((Route::Request, 0)), set: &[("select.ids", ""), ("select.all_published", "true")], ..ans("list_id_escape", || { with(Route::List, json("200 OK", &list_of("\u{1b}]0;pwned\u{7}", "Esc", 3))) }, "cohort id \"\\x1b]0;pwned\\x07\"") },
    A { bounded: Some((Route::Status, 0)), ..ans("request_id_dotdot", || { with(Route::Request, json("202 Accepted", r#"{"request_id":"..","cohort_id":"c1"}"#)) }, "Amplitude answered the request for cohort c1 with an unusable id: request id \"..\" is not a valid Amplitude id") },
    A { bounded: Some((Route::Status, 0)), ..ans("request_id_empty", || { with(Route::Request, json("202 Accepted", r#"{"request_id":"","cohort_id":"c1"}"#)) }, "unusable id: request id \"\" is not a valid Amplitude id: it is empty") },
    A { bounded: Some((Route::Status, 0)), ..ans("request_id_path", || { with(Route::Request, json("202 Accepted", r#"{"request_id":"r1/../../x","cohort_id":"c1"}"#)) }, "request id \"r1/../../x\"") },
    A { bounded: Some((Route::Status, 0)), ..ans("request_id_controls", || { with(Route::Request, json("202 Accepted", r#"{"request_id":"r1\r\nX-Evil: 1","cohort_id":"c1"}"#)) }, "request id \"r1\\r\\nX-Evil: 1\"") },
    // Statuses and texts: a clear error, escaped.
    ans("status_unknown_with_escapes", || { with(Route::Status, json("200 OK", r#"{"request_id":"r1","async_status":"JOB \u001b[31mEXPLODED\u0007"}"#)) }, "async_status \"JOB \\x1b[31mEXPLODED\\x07\""),
    ans("server_error_with_escapes", || { with(Route::List, json("500 Internal Server Error", "\u{1b}[2J\u{1b}[Hall good\r\u{7}")) }, "server error (HTTP 500) from list cohorts: \\x1b[2J\\x1b[Hall good\\r\\x07"),
    ans("auth_error_with_escapes", || { with(Route::List, json("403 Forbidden", r#"{"error":{"http_code":403,"type":"unspecified","metadata":{"details":"Invalid API Key\u001b[8m"}}}"#)) }, "authentication failed (HTTP 403): Invalid API Key\\x1b[8m"),
    ans("status_line_out_of_range", || { with(Route::List, Reply::Raw(b"HTTP/1.1 999 Whatever\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}" .to_vec())) }, "unexpected response (HTTP 999) from list cohorts"),
    ans("not_http_at_all", || with(Route::List, Reply::Raw(b"\x00\x01garbage\r\n\r\n".to_vec())), "listing cohorts: transport error"),
    ans("connection_closed", || with(Route::List, Reply::Close), "listing cohorts: transport error"),
    A { set: SLOW, ..ans("list_trickles_forever", || with(Route::List, trickle(b"{\"cohorts\":[", b" ", Duration::from_millis(100), None)), "listing cohorts: transport error talking to list cohorts: the answer did not arrive whole within 1s (connection.read_timeout_secs)") },
    A { set: SLOW, ..ans("list_never_answers", || with(Route::List, Reply::Silence(Duration::from_secs(60))), "listing cohorts: transport error") },
    ans("list_not_json", || with(Route::List, json("200 OK", "{\"cohorts\": [")), "unexpected response (HTTP 200) from list cohorts"),
    ans("list_error_body_huge", || { with(Route::List, json("500 Internal Server Error", &"x".repeat(3_000_000))) }, "… (more than 65536 bytes)"),
    A { bounded: Some((Route::Request, 2)), ..ans("file_unknown_request", || { with(Route::File, json("404 Not Found", r#"{"error":{"message":"no such request"}}"#)) }, "Amplitude does not know request r1 any more") },
    A { set: &[("download.max_wait_secs", "1")], ..ans("job_never_completes", || { with(Route::Status, json("202 Accepted", r#"{"request_id":"r1","async_status":"JOB INPROGRESS"}"#)) }, "did not complete within 1s (download.max_wait_secs)") },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_answers_end_clearly_and_publish_nothing() {
    let cases: Vec<&A> = ANSWERS.iter().collect();
    run_table("server answers", cases, |row| async move {
        let result = async {
            let server = hostile_server::start((row.script)()).await;
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let text = pipeline_text(Kind::Export, &server.base_url, row.set);
            std::fs::write(dir.path().join("case.toml"), &text).map_err(|e| e.to_string())?;
            let ran = cli(dir.path(), &["run", "case.toml"], &[]).await?;
            common_checks(row.name, &ran, row.exit, row.expect)?;
            // The sync history records the failed run: it is no snapshot.
            let published: Vec<String> = files_under(&dir.path().join("out"))
                .into_iter()
                .filter(|f| !f.starts_with("_history/"))
                .filter(|f| f.ends_with(".parquet") || f.ends_with("_SUCCESS"))
                .collect();
            if !published.is_empty() {
                return Err(format!("published: {published:?}"));
            }
            if let Some((route, max)) = row.bounded {
                let n = server
                    .log()
                    .iter()
                    .filter(|r| hostile_server::route_of(&r.path) == route)
                    .count();
                if n > max {
                    return Err(format!(
                        "{route:?} was called {n} times, at most {max} expected"
                    ));
                }
            }
            if server
                .log()
                .iter()
                .any(|r| r.authorized && hostile_server::route_of(&r.path) == Route::Presigned)
            {
                return Err("credentials were sent to the presigned link".into());
            }
            Ok(())
        }
        .await;
        (row.name.to_string(), result)
    })
    .await;
}

// ------------------------------------------------------------------------------------
// Beyond the tables: what must still work, and the emulator's trickle fault
// ------------------------------------------------------------------------------------

/// Writes an export pipeline of cohort `c1` against `base` (with `extra` lines in
/// `[connection]`) into `dir`.
fn export_file(dir: &Path, base: &str, extra_connection: &str) -> std::path::PathBuf {
    let text = format!(
        "kind = \"export\"\nname = \"case\"\n[connection]\nbase_url = \"{base}\"\napi_key = \"k\"\nsecret_key = \"s\"\n{extra_connection}\n[select]\nids = [\"c1\"]\n[output]\nurl = \"out\"\n[state]\nurl = \"state\"\n"
    );
    let file = dir.join("case.toml");
    std::fs::write(&file, text).expect("write pipeline");
    file
}

/// The snapshot files under `out/` (not the run's sync history in `_history/`).
fn parquet_files(dir: &Path) -> Vec<String> {
    files_under(&dir.join("out"))
        .into_iter()
        .filter(|f| f.ends_with(".parquet") && !f.starts_with("_history/"))
        .collect()
}

/// `0.0.0.0` is not a loopback name, so plain http to it needs the opt-in; with it, every
/// run warns (and, on Linux, reaches this machine: no other host is contacted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_elsewhere_needs_the_opt_in_and_then_warns_every_run() {
    let server = hostile_server::start(Script::default()).await;
    let port = server
        .base_url
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let base = format!("http://0.0.0.0:{port}");
    export_file(dir.path(), &base, "");
    let ran = cli(dir.path(), &["run", "case.toml"], &[])
        .await
        .expect("ran");
    assert_eq!(ran.code, 2, "{}", ran.text());
    assert!(ran.stderr.contains("allow_insecure_http"), "{}", ran.stderr);
    assert!(server.log().is_empty());
    export_file(dir.path(), &base, "allow_insecure_http = true");
    for _ in 0..2 {
        let ran = cli(dir.path(), &["run", "case.toml", "--force"], &[])
            .await
            .expect("ran");
        assert_eq!(ran.code, 0, "{}", ran.text());
        assert!(
            ran.stderr.contains("is plain http:// to a host that is not loopback (connection.allow_insecure_http = true): the API key and secret travel unencrypted"),
            "{}",
            ran.stderr
        );
    }
    assert_eq!(parquet_files(dir.path()).len(), 1);
}

/// A short `Retry-After` is a rate limit: waited out, then the request goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_retry_after_is_waited_out() {
    let server = hostile_server::start(with(
        Route::Request,
        Reply::Seq(vec![
            r429("0.05"),
            r429("Thu, 01 Jan 1970 00:00:00 GMT"),
            hostile_server::default_reply(Route::Request),
        ]),
    ))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    export_file(dir.path(), &server.base_url, "");
    let ran = cli(dir.path(), &["run", "case.toml"], &[])
        .await
        .expect("ran");
    assert_eq!(ran.code, 0, "{}", ran.text());
    assert_eq!(server.cohort_requests(), 3);
    assert_eq!(parquet_files(dir.path()).len(), 1);
}

/// A cohort whose name holds terminal escapes exports as usual; the summary shows the
/// name escaped, one line, and the file is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_are_escaped_in_the_summary() {
    let name = "\u{1b}]0;owned\u{7}\u{1b}[2J\rEvil\u{0}\u{202e}txt";
    let server =
        hostile_server::start(with(Route::List, json("200 OK", &list_of("c1", name, 3)))).await;
    let dir = tempfile::tempdir().expect("tempdir");
    export_file(dir.path(), &server.base_url, "");
    let ran = cli(dir.path(), &["run", "case.toml"], &[])
        .await
        .expect("ran");
    common_checks(
        "escaped name",
        &ran,
        0,
        "\"\\x1b]0;owned\\x07\\x1b[2J\\rEvil\\0\\u{202e}txt\"",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(parquet_files(dir.path()).len(), 1);
}

/// A reverse run that fails prints its error once (it was printed twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reverse_error_is_printed_once() {
    let server = hostile_server::start(with(
        Route::List,
        json("500 Internal Server Error", "boom\u{1b}[2J"),
    ))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("crm.csv"), "user_id\nu1\n").expect("source");
    let text = pipeline_text(Kind::Reverse, &server.base_url, &[]);
    std::fs::write(dir.path().join("case.toml"), text).expect("pipeline");
    let ran = cli(dir.path(), &["run", "case.toml"], &[])
        .await
        .expect("ran");
    common_checks("reverse error", &ran, 1, "boom\\x1b[2J").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ran.stdout.matches("error: ").count(), 1, "{}", ran.stdout);
}

/// The emulator's `trickle` fault: a `/file` body sent in small pieces with a pause is cut
/// by the minimum rate, asked again with the same request id (no second request), and
/// exported once the fault has fired its shots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulators_trickle_fault_is_cut_by_the_minimum_rate() {
    use cohort_sync::emulator::{self, AppSpec, CohortSpec, EmulatorConfig, FaultKind, FaultRule};
    let mut rule = FaultRule::new(FaultKind::Trickle, "/file", 2);
    rule.chunk_bytes = Some(8);
    rule.delay_secs = Some(2.0);
    let emu = emulator::start(EmulatorConfig {
        time_scale: 0.01,
        apps: vec![AppSpec {
            app_id: 7,
            api_key: "k".into(),
            secret_key: "s".into(),
            usage_used: 0,
            cohorts: vec![CohortSpec {
                id: "c1".into(),
                name: "Cohort one".into(),
                size: 2_000,
                seed: 3,
                ..CohortSpec::default()
            }],
        }],
        faults: vec![rule],
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator starts");
    let dir = tempfile::tempdir().expect("tempdir");
    export_file(dir.path(), &emu.base_url, "app_id = 7");
    let ran = cli(dir.path(), &["run", "case.toml"], &[])
        .await
        .expect("ran");
    assert_eq!(ran.code, 0, "{}", ran.text());
    assert!(
        ran.stderr
            .contains("below download.min_bytes_per_sec = 65536"),
        "{}",
        ran.stderr
    );
    assert!(ran.stdout.contains("/file asked 3 times"), "{}", ran.stdout);
    assert_eq!(parquet_files(dir.path()).len(), 1);
    let log = emulator_requests(&emu.base_url).await;
    let requested = log
        .iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/api/5/cohorts/request/") && !p.ends_with("/file"))
        })
        .count();
    assert_eq!(requested, 1, "one request, its file asked again: {log:?}");
}

async fn emulator_requests(base: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value = reqwest::get(format!("{base}/_emulator/requests"))
        .await
        .expect("log")
        .json()
        .await
        .expect("json");
    v.as_array().cloned().unwrap_or_default()
}

/// `cohorts` and `usage` check `--base-url` as pipeline files check `base_url`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_base_url_flag_is_checked_like_the_pipelines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [("AMPLITUDE_API_KEY", "k"), ("AMPLITUDE_SECRET_KEY", "s")];
    for (url, expect) in [
        ("http://10.0.0.1:8080", "add --allow-insecure-http"),
        ("https://amplitude.com?x=1", "must not have a query"),
        ("https://amplitude.com:99999", "a port is 1..=65535"),
        (
            "https://key:secret@amplitude.com",
            "must not hold user info",
        ),
        ("https://amplitude.com/a/../b", "'..' segment"),
    ] {
        for command in ["cohorts", "usage"] {
            let ran = cli(dir.path(), &[command, "--base-url", url], &env)
                .await
                .expect("ran");
            common_checks(url, &ran, 2, expect).unwrap_or_else(|e| panic!("{command}: {e}"));
        }
    }
}

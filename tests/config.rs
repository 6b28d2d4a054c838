//! Pipeline files end to end: `cohort-sync validate` on good and bad files (exact
//! `file:line:col`, one error per bad file, exit codes), the example pipelines, `${VAR}`
//! interpolation, the library API others build on, and the committed JSON Schema (current,
//! and accepted by an independent validator).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cohort_sync::amplitude::types::IdKind;
use cohort_sync::config::{self, Baseline, ConfigError, Kind, PipelineSpec, ReconcileMode, Target};
use cohort_sync::export::{BadRowPolicy, ColumnType, Compression};
use cohort_sync::quota::Pace;
use cohort_sync::reverse::source::Format;
use cohort_sync::runner::plan::Priority;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/examples")
}

/// Variables the example files use.
const EXAMPLE_ENV: &[(&str, &str)] = &[
    ("EXPORT_BUCKET", "warehouse-bucket"),
    ("AMPLITUDE_EU_API_KEY", "eu-key-value"),
    ("AMPLITUDE_EU_SECRET_KEY", "eu-secret-value"),
    ("OPENLINEAGE_API_KEY", "lineage-key-value"),
];

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `cohort-sync validate ARGS` in `dir` with `env` set and the Amplitude credential
/// variables removed (validate must not need them).
fn validate(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cohort-sync"));
    cmd.arg("validate")
        .args(args)
        .current_dir(dir)
        .env_remove("AMPLITUDE_API_KEY")
        .env_remove("AMPLITUDE_SECRET_KEY")
        .env_remove("COHORT_SYNC_TEST_UNSET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run cohort-sync");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

const EXPORT_TAIL: &str = "[select]\nids = [\"a\"]\n[output]\nurl = \"out\"\n";
const REVERSE_TAIL: &str = "[source]\nurl = \"crm.csv\"\n[target]\ncohort_id = \"c1\"\n";

/// One bad file: its text, the expected `line:col` and a fragment of the message.
struct Bad {
    name: &'static str,
    text: String,
    at: &'static str,
    says: &'static str,
}

fn bad(name: &'static str, text: impl Into<String>, at: &'static str, says: &'static str) -> Bad {
    Bad {
        name,
        text: text.into(),
        at,
        says,
    }
}

fn bad_files() -> Vec<Bad> {
    let export = |s: &str| format!("kind = \"export\"\n{s}");
    let reverse = |s: &str| format!("kind = \"reverse\"\n{s}");
    vec![
        bad(
            "syntax",
            "kind = \"export\n",
            "1:15",
            "invalid basic string",
        ),
        bad("no_kind", EXPORT_TAIL, "1:1", "missing field `kind`"),
        bad(
            "bad_kind",
            format!("kind = \"import\"\n{EXPORT_TAIL}"),
            "1:8",
            "unknown variant `import`",
        ),
        bad(
            "bad_refresh",
            export(&format!("{EXPORT_TAIL}[quota]\nrefresh = \"daily\"\n")),
            "7:11",
            "is not a duration such as",
        ),
        bad(
            "bad_cohort_refresh",
            export(
                "[select]\nids = [\"a\"]\nrefresh = { a = \"400d\" }\n[output]\nurl = \"out\"\n",
            ),
            "4:17",
            "longer than a year",
        ),
        bad(
            "bad_refresh_id",
            export(
                "[select]\nids = [\"a\"]\nrefresh = { \"a/b\" = \"1h\" }\n[output]\nurl = \"out\"\n",
            ),
            "4:13",
            "select.refresh: ",
        ),
        bad(
            "bad_pace",
            export(&format!("{EXPORT_TAIL}[quota]\npace = \"fast\"\n")),
            "7:8",
            "unknown variant `fast`",
        ),
        bad(
            "unknown_top",
            export(&format!("colour = 1\n{EXPORT_TAIL}")),
            "2:1",
            "unknown field `colour`",
        ),
        bad(
            "unknown_in_section",
            export("[select]\nids = [\"a\"]\n  idz = [\"b\"]\n[output]\nurl = \"out\"\n"),
            "4:3",
            "unknown field `idz`",
        ),
        bad(
            "unknown_in_inline",
            reverse(
                "[source]\nurl = \"crm.csv\"\n[target]\ncreate = { name = \"n\", owner = \"o\", colour = \"red\" }\n[connection]\napp_id = 1\n",
            ),
            "5:37",
            "unknown field `colour`",
        ),
        bad(
            "wrong_type",
            export("[select]\nids = \"abc\"\n[output]\nurl = \"out\"\n"),
            "3:7",
            "invalid type: string \"abc\", expected a sequence",
        ),
        bad(
            "wrong_type_in_array",
            export("[select]\nids = [\"a\", 7]\n[output]\nurl = \"out\"\n"),
            "3:13",
            "invalid type: integer `7`, expected a string",
        ),
        bad(
            "missing_url",
            export("[select]\nids = [\"a\"]\n\n[output]\nlayout = \"{cohort_id}.parquet\"\n"),
            "5:1",
            "missing field `url`",
        ),
        bad(
            "unset_var",
            export(
                "[select]\nids = [\"a\"]\n[output]\nurl = \"s3://bucket/${COHORT_SYNC_TEST_UNSET}/x\"\n",
            ),
            "5:20",
            "environment variable COHORT_SYNC_TEST_UNSET is not set",
        ),
        bad(
            "bad_region",
            export(&format!("[connection]\nregion = \"mars\"\n{EXPORT_TAIL}")),
            "3:10",
            "unknown variant `mars`, expected `us` or `eu`",
        ),
        bad(
            "region_and_base_url",
            export(&format!(
                "[connection]\nregion = \"eu\"\nbase_url = \"http://127.0.0.1:8080\"\n{EXPORT_TAIL}"
            )),
            "4:1",
            "either connection.region or connection.base_url, not both",
        ),
        bad(
            "base_url_not_http",
            export(&format!(
                "[connection]\nbase_url = \"ftp://127.0.0.1\"\n{EXPORT_TAIL}"
            )),
            "3:12",
            "must start with http:// or https://",
        ),
        bad(
            "ftp_output",
            export("[select]\nids = [\"a\"]\n[output]\nurl = \"ftp://host/dir\"\n"),
            "5:7",
            "unsupported URL scheme \"ftp\"",
        ),
        bad(
            "s3_without_bucket",
            export("[select]\nids = [\"a\"]\n[output]\nurl = \"s3://\"\n"),
            "5:7",
            "has no bucket",
        ),
        bad(
            "s3_state_without_bucket",
            export(&format!("{EXPORT_TAIL}[state]\nurl = \"s3:///state\"\n")),
            "7:7",
            "has no bucket",
        ),
        bad(
            "export_section_in_reverse",
            reverse(&format!("{REVERSE_TAIL}\n[select]\nids = [\"a\"]\n")),
            "7:2",
            "[select] belongs to export pipelines; this file has kind = \"reverse\"",
        ),
        bad(
            "reverse_section_in_export",
            export(&format!("{EXPORT_TAIL}[reconcile]\nmode = \"mirror\"\n")),
            "6:2",
            "[reconcile] belongs to reverse pipelines",
        ),
        bad(
            "select_nothing",
            export("[select]\nall_published = false\n[output]\nurl = \"out\"\n"),
            "2:2",
            "[select] selects nothing",
        ),
        bad(
            "no_select",
            export("[output]\nurl = \"out\"\n"),
            "1:8",
            "needs a [select] section",
        ),
        bad(
            "target_both",
            reverse(
                "[source]\nurl = \"crm.csv\"\n[target]\ncohort_id = \"c\"\ncreate = { name = \"n\", owner = \"o\" }\n",
            ),
            "6:1",
            "either target.cohort_id or target.create, not both",
        ),
        bad(
            "target_neither",
            reverse("[source]\nurl = \"crm.csv\"\n[target]\n"),
            "4:2",
            "[target] needs cohort_id",
        ),
        bad(
            "chunk_too_big",
            reverse(&format!("{REVERSE_TAIL}[reconcile]\nchunk_size = 100001\n")),
            "7:14",
            "chunk_size must be 1..=100000",
        ),
        bad(
            "zero_poll",
            export(&format!("{EXPORT_TAIL}[download]\npoll_initial_secs = 0\n")),
            "7:21",
            "download.poll_initial_secs must be at least 1",
        ),
        bad(
            "negative_reserve",
            export(&format!("{EXPORT_TAIL}[quota]\nreserve = -5\n")),
            "7:11",
            "invalid value: integer `-5`, expected u32",
        ),
        bad(
            "too_parallel",
            export(&format!("{EXPORT_TAIL}[quota]\nmax_parallel = 9\n")),
            "7:16",
            "quota.max_parallel must be 1..=5",
        ),
        bad(
            "unknown_placeholder",
            export(
                "[select]\nids = [\"a\"]\n[output]\nurl = \"out\"\nlayout = \"{cohort_id}/{cohort}.parquet\"\n",
            ),
            "6:10",
            "unknown placeholder {cohort}",
        ),
        bad(
            "layout_without_cohort_id",
            export(
                "[select]\nids = [\"a\"]\n[output]\nurl = \"out\"\nlayout = \"{date}.parquet\"\n",
            ),
            "6:10",
            "must contain {cohort_id}",
        ),
        bad(
            "bad_glob",
            export("[select]\nnames = [\"Paid*\", \"Churn[a\"]\n[output]\nurl = \"out\"\n"),
            "3:19",
            "invalid name pattern \"Churn[a\"",
        ),
        bad(
            "level_without_zstd",
            export(
                "[select]\nids = [\"a\"]\n[output]\nurl = \"out\"\ncompression = \"snappy\"\ncompression_level = 5\n",
            ),
            "7:1",
            "compression_level applies to compression = \"zstd\" only",
        ),
        bad(
            "snapshot_without_snapshots",
            reverse(&format!(
                "{REVERSE_TAIL}[reconcile]\nbaseline = \"snapshot\"\n"
            )),
            "7:12",
            "needs reconcile.snapshots",
        ),
        bad(
            "create_without_app_id",
            reverse(
                "[source]\nurl = \"crm.csv\"\n[target]\ncreate = { name = \"n\", owner = \"o\" }\n",
            ),
            "5:1",
            "creating a cohort needs connection.app_id",
        ),
        bad(
            "unknown_source_format",
            reverse("[source]\nurl = \"crm/list.txt\"\n[target]\ncohort_id = \"c\"\n"),
            "3:7",
            "cannot tell the format of \"list.txt\"",
        ),
        bad(
            "bad_column_type",
            export(&format!(
                "{EXPORT_TAIL}[download.column_types]\n\"gp:age\" = \"int32\"\n"
            )),
            "7:12",
            "unknown column type \"int32\"",
        ),
        bad(
            "bad_name",
            format!("kind = \"export\"\nname = \"../escape\"\n{EXPORT_TAIL}"),
            "2:8",
            "pipeline name \"../escape\" may only use",
        ),
        bad(
            "layout_in_runs",
            export(
                "[select]\nids = [\"a\"]\n[output]\nurl = \"out\"\nlayout = \"_runs/{cohort_id}.parquet\"\n",
            ),
            "6:10",
            "layout \"_runs/{cohort_id}.parquet\" writes under _runs/, which cohort-sync keeps for its own files (_runs/, _staging/, _history/)",
        ),
        bad(
            "changes_layout_like_the_snapshots",
            export(
                "[select]\nids = [\"a\"]\n[output]\nurl = \"out\"\nchanges = true\nchanges_layout = \"cohort_id={cohort_id}/{date}/part-0.parquet\"\n",
            ),
            "7:18",
            "changes_layout \"cohort_id={cohort_id}/{date}/part-0.parquet\" can render the same keys as layout",
        ),
        bad(
            "changes_layout_in_staging",
            export(
                "[select]\nids = [\"a\"]\n[output]\nurl = \"out\"\nchanges = true\nchanges_layout = \"_staging/{cohort_id}.parquet\"\n",
            ),
            "7:18",
            "writes under _staging/",
        ),
        bad(
            "layout_in_history",
            export(
                "[select]\nids = [\"a\"]\n[output]\nurl = \"out\"\nlayout = \"_history/{cohort_id}/{date}.parquet\"\n",
            ),
            "6:10",
            "writes under _history/",
        ),
        bad(
            "output_is_state",
            export("[select]\nids = [\"a\"]\n[output]\nurl = \"st\"\n[state]\nurl = \"./st/\"\n"),
            "5:7",
            "output \"st\" is the state folder \"./st/\"",
        ),
        bad(
            "output_inside_state",
            export("[select]\nids = [\"a\"]\n[output]\nurl = \"st/out\"\n[state]\nurl = \"st\"\n"),
            "5:7",
            "output \"st/out\" is inside the state folder \"st\"",
        ),
        bad(
            "lineage_url_and_file",
            export(&format!(
                "{EXPORT_TAIL}[lineage]\nurl = \"https://m.example.com/api/v1/lineage\"\nfile = \"e.ndjson\"\n"
            )),
            "8:1",
            "set either lineage.url (an HTTP endpoint) or lineage.file",
        ),
        bad(
            "lineage_key_over_plain_http",
            export(&format!(
                "{EXPORT_TAIL}[lineage]\nurl = \"http://marquez:5000/api/v1/lineage\"\napi_key = \"k\"\n"
            )),
            "7:7",
            "lineage.api_key would travel unencrypted; use https://",
        ),
        bad(
            "lineage_timeout",
            export(&format!(
                "{EXPORT_TAIL}[lineage]\nfile = \"e.ndjson\"\ntimeout_secs = 0\n"
            )),
            "8:16",
            "lineage.timeout_secs must be at least 1 (allowed 1..=60 seconds), not 0",
        ),
        bad(
            "lineage_unknown_key",
            export(&format!("{EXPORT_TAIL}[lineage]\nendpoint = \"x\"\n")),
            "7:1",
            "unknown field `endpoint`",
        ),
        bad(
            "state_inside_output",
            export(&format!("{EXPORT_TAIL}[state]\nurl = \"out/state\"\n")),
            "5:7",
            "output \"out\" holds the state folder \"out/state\"",
        ),
    ]
}

#[test]
fn each_bad_file_gives_one_positioned_error_and_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut failures = Vec::new();
    for case in bad_files() {
        let file = format!("{}.toml", case.name);
        std::fs::write(dir.path().join(&file), &case.text).expect("write fixture");
        let out = validate(dir.path(), &[&file], &[]);
        let lines: Vec<&str> = out.stderr.lines().collect();
        let prefix = format!("{file}:{}: ", case.at);
        let ok = out.code == 2
            && out.stdout.is_empty()
            && lines.len() == 1
            && lines[0].starts_with(&prefix)
            && lines[0].contains(case.says);
        if !ok {
            failures.push(format!(
                "{}: exit {}, want `{prefix}…{}…`, got stderr {:?} stdout {:?}",
                case.name, out.code, case.says, out.stderr, out.stdout
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn good_and_bad_files_together_exit_2_and_report_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("good.toml"),
        format!("kind = \"export\"\n{EXPORT_TAIL}"),
    )
    .expect("write");
    std::fs::write(dir.path().join("bad.toml"), "kind = \"export\"\n").expect("write");
    let out = validate(dir.path(), &["good.toml", "bad.toml", "missing.toml"], &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let stdout: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        stdout[0],
        "good.toml: ok (export pipeline \"good\": 1 id → out, zstd level 3)"
    );
    assert!(
        stdout.len() == 2
            && stdout[1].starts_with(
                "good.toml: note: state.url \".cohort-sync/state\" is a local directory:"
            ),
        "{}",
        out.stdout
    );
    let errors: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(errors.len(), 2, "{}", out.stderr);
    assert_eq!(
        errors[0],
        "bad.toml:1:8: an export pipeline needs a [select] section (ids, names or all_published)"
    );
    assert!(
        errors[1].starts_with("missing.toml: cannot read the pipeline file: "),
        "{}",
        errors[1]
    );
}

/// Files fine alone that cannot run together: the files (name, text), and per file either
/// `ok` or the expected `line:col` and a fragment of the message (errors between two files
/// are reported on the later one).
struct Together {
    name: &'static str,
    files: Vec<(&'static str, String)>,
    expect: Vec<&'static str>,
}

fn together_cases() -> Vec<Together> {
    let export = |select: &str, output: &str| {
        format!("kind = \"export\"\n[select]\n{select}\n[output]\n{output}\n")
    };
    let case = |name, files: Vec<(&'static str, String)>, expect: Vec<&'static str>| Together {
        name,
        files,
        expect,
    };
    vec![
        case(
            "overlapping_selections_on_one_output",
            vec![
                ("a.toml", export("names = [\"Paid*\"]", "url = \"out\"")),
                ("b.toml", export("ids = [\"a\"]", "url = \"./out/\"")),
            ],
            vec![
                "ok",
                "5:7: output \"./out/\" with layout \"cohort_id={cohort_id}/snapshot_date={date}/part-0.parquet\" can write the same files as a.toml (line 5), which writes there with the same layout; give one of them its own output.url or layout, or select disjoint ids in both (select.ids only)",
            ],
        ),
        case(
            "overlapping_ids",
            vec![
                ("a.toml", export("ids = [\"a\", \"b\"]", "url = \"out\"")),
                ("b.toml", export("ids = [\"b\", \"c\"]", "url = \"out\"")),
            ],
            vec!["ok", "5:7: output \"out\" with layout"],
        ),
        case(
            "disjoint_ids",
            vec![
                ("a.toml", export("ids = [\"a\", \"b\"]", "url = \"out\"")),
                ("b.toml", export("ids = [\"c\"]", "url = \"out\"")),
            ],
            vec!["ok", "ok"],
        ),
        case(
            "different_layouts",
            vec![
                ("a.toml", export("all_published = true", "url = \"out\"")),
                (
                    "b.toml",
                    export(
                        "names = [\"*\"]",
                        "url = \"out\"\nlayout = \"cohort_id={cohort_id}/run={run_id}/part-0.parquet\"",
                    ),
                ),
            ],
            vec!["ok", "ok"],
        ),
        case(
            "layouts_differing_only_in_placeholders",
            vec![
                (
                    "a.toml",
                    export(
                        "all_published = true",
                        "url = \"out\"\nlayout = \"{cohort_id}/{date}.parquet\"",
                    ),
                ),
                (
                    "b.toml",
                    export(
                        "names = [\"*\"]",
                        "url = \"out\"\nlayout = \"{cohort_id}/{run_id}.parquet\"",
                    ),
                ),
            ],
            vec![
                "ok",
                "5:7: output \"out\" with layout \"{cohort_id}/{run_id}.parquet\" can write the same files as a.toml (line 5), whose layout \"{cohort_id}/{date}.parquet\" can render the same keys (placeholders may take any value); give one",
            ],
        ),
        case(
            "different_outputs",
            vec![
                ("a.toml", export("all_published = true", "url = \"out/a\"")),
                ("b.toml", export("all_published = true", "url = \"out/b\"")),
            ],
            vec!["ok", "ok"],
        ),
        case(
            "same_name_and_state",
            vec![
                (
                    "a.toml",
                    format!(
                        "name = \"daily\"\n{}",
                        export("ids = [\"a\"]", "url = \"out-a\"")
                    ),
                ),
                (
                    "b.toml",
                    format!(
                        "name = \"daily\"\nkind = \"reverse\"\n{REVERSE_TAIL}[state]\nurl = \".cohort-sync/state/\"\n"
                    ),
                ),
            ],
            vec![
                "ok",
                "1:8: pipeline name \"daily\" with state \".cohort-sync/state/\" is also that of a.toml (line 1): their state (requests, leases, journals) would mix; give one of them another name or state.url",
            ],
        ),
        case(
            "same_name_other_state",
            vec![
                (
                    "a.toml",
                    format!(
                        "name = \"daily\"\n{}",
                        export("ids = [\"a\"]", "url = \"out-a\"")
                    ),
                ),
                (
                    "b.toml",
                    format!(
                        "name = \"daily\"\nkind = \"reverse\"\n{REVERSE_TAIL}[state]\nurl = \"state-b\"\n"
                    ),
                ),
            ],
            vec!["ok", "ok"],
        ),
        case(
            "output_in_another_state",
            vec![
                (
                    "a.toml",
                    format!("kind = \"reverse\"\n{REVERSE_TAIL}[state]\nurl = \"st\"\n"),
                ),
                ("b.toml", export("ids = [\"a\"]", "url = \"st/out\"")),
            ],
            vec![
                "ok",
                "5:7: output \"st/out\" overlaps the state folder \"st\" of a.toml (line 7)",
            ],
        ),
        case(
            "one_file_twice",
            vec![
                ("a.toml", export("ids = [\"a\"]", "url = \"out\"")),
                ("a.toml", String::new()),
            ],
            vec![
                "ok",
                "5:7: output \"out\" with layout",
                "a.toml: pipeline name \"a\" with state \".cohort-sync/state\" is also that of a.toml",
            ],
        ),
    ]
}

#[test]
fn files_that_cannot_run_together_are_refused_on_the_later_one() {
    let mut failures = Vec::new();
    for case in together_cases() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in &case.files {
            if !text.is_empty() {
                std::fs::write(dir.path().join(name), text).expect("write fixture");
            }
        }
        let args: Vec<&str> = case.files.iter().map(|(n, _)| *n).collect();
        let out = validate(dir.path(), &args, &[]);
        // Notes on local state folders are `validate_notes_a_state_store_without_conditional_writes`'s.
        let mut ok_lines = out.stdout.lines().filter(|l| !l.contains(": note: "));
        let mut err_lines = out.stderr.lines();
        let mut ok = out.code
            == if case.expect.iter().all(|e| *e == "ok") {
                0
            } else {
                2
            };
        for (i, want) in case.expect.iter().enumerate() {
            let file = case.files[i.min(case.files.len() - 1)].0;
            if *want == "ok" {
                ok &= ok_lines
                    .next()
                    .is_some_and(|l| l.starts_with(&format!("{file}: ok (")));
            } else if want.starts_with(file) {
                // A whole-file error (no position): the next line of the same file.
                ok &= err_lines.next().is_some_and(|l| l.starts_with(want));
            } else {
                ok &= err_lines
                    .next()
                    .is_some_and(|l| l.starts_with(&format!("{file}:{want}")));
            }
        }
        ok &= ok_lines.next().is_none() && err_lines.next().is_none();
        if !ok {
            failures.push(format!(
                "{}: exit {}, want {:?}, got stdout {:?} stderr {:?}",
                case.name, out.code, case.expect, out.stdout, out.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// `plan` (like `run`) refuses files that cannot run together before contacting Amplitude.
#[test]
fn plan_refuses_files_that_cannot_run_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "kind = \"export\"\n[connection]\nbase_url = \"http://127.0.0.1:9\"\n[select]\nall_published = true\n[output]\nurl = \"out\"\n";
    std::fs::write(dir.path().join("a.toml"), text).expect("write");
    std::fs::write(dir.path().join("b.toml"), text).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_cohort-sync"))
        .args(["plan", "a.toml", "b.toml"])
        .current_dir(dir.path())
        .env("AMPLITUDE_API_KEY", "k")
        .env("AMPLITUDE_SECRET_KEY", "s")
        .output()
        .expect("run cohort-sync");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("b.toml:7:7: output \"out\" with layout"),
        "{stderr}"
    );
}

#[test]
fn validate_without_files_is_a_usage_error() {
    let out = validate(Path::new("."), &[], &[]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("FILE"), "{}", out.stderr);
}

#[test]
fn validate_notes_a_state_store_without_conditional_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let with_state = |name: &str, state: &str| {
        let file = format!("{name}.toml");
        std::fs::write(
            dir.path().join(&file),
            format!("kind = \"export\"\n{EXPORT_TAIL}[state]\nurl = \"{state}\"\n"),
        )
        .expect("write");
        file
    };
    let files = [
        with_state("local", "./state"),
        with_state("file-url", "file:///var/lib/cohort-sync"),
        with_state("s3", "s3://bucket/state"),
        with_state("gcs", "gs://bucket/state"),
        with_state("azure", "az://container/state"),
    ];
    // One file at a time: they share an output, which validate refuses together.
    let mut notes = Vec::new();
    for file in &files {
        let out = validate(
            dir.path(),
            &[file],
            &[("AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1")],
        );
        assert_eq!(out.code, 0, "{file}: {}", out.stderr);
        notes.extend(
            out.stdout
                .lines()
                .filter(|l| l.contains(": note: "))
                .map(str::to_string),
        );
    }
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes[0].starts_with("local.toml: note: state.url \"./state\" is a local directory")
            && notes[1]
                .starts_with("file-url.toml: note: state.url \"file:///var/lib/cohort-sync\"")
            && notes
                .iter()
                .all(|n| n.contains("last-writer-wins") && n.contains("s3://, gs:// or az://")),
        "{notes:?}"
    );
}

const EXAMPLES: &[&str] = &[
    "export-local.toml",
    "export-s3.toml",
    "reverse-create.toml",
    "reverse-existing.toml",
];

#[test]
fn example_pipelines_validate_without_credentials() {
    let paths: Vec<String> = EXAMPLES
        .iter()
        .map(|f| examples_dir().join(f).display().to_string())
        .collect();
    let args: Vec<&str> = paths.iter().map(String::as_str).collect();
    let out = validate(Path::new(env!("CARGO_MANIFEST_DIR")), &args, EXAMPLE_ENV);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    let (notes, lines): (Vec<&str>, Vec<&str>) =
        out.stdout.lines().partition(|l| l.contains(": note: "));
    // The examples with a local state folder: all but the S3 export.
    let noted: Vec<&str> = notes
        .iter()
        .filter_map(|l| l.split(": note: ").next())
        .collect();
    assert_eq!(
        noted,
        vec![paths[0].as_str(), paths[2].as_str(), paths[3].as_str()],
        "{}",
        out.stdout
    );
    assert_eq!(
        lines,
        vec![
            format!(
                "{}: ok (export pipeline \"daily-cohorts\": 2 ids + 1 name pattern → out/cohorts, zstd level 3)",
                paths[0]
            ),
            format!(
                "{}: ok (export pipeline \"eu-warehouse\": all published → s3://warehouse-bucket/amplitude/cohorts, snappy)",
                paths[1]
            ),
            format!(
                "{}: ok (reverse pipeline \"reverse-create\": s3://crm-exports/lists/beta-testers.parquet → new cohort \"Beta testers (CRM)\", mode add_only, baseline auto)",
                paths[2]
            ),
            format!(
                "{}: ok (reverse pipeline \"vip-sync\": crm/vip.csv.gz → cohort abc123, mode mirror, baseline auto)",
                paths[3]
            ),
        ]
    );
    // Every file in the examples folder is covered here.
    let mut on_disk: Vec<String> = std::fs::read_dir(examples_dir())
        .expect("examples dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, EXAMPLES);
}

#[test]
fn example_with_an_unset_variable_names_it() {
    let file = examples_dir().join("export-s3.toml").display().to_string();
    let env: Vec<(&str, &str)> = EXAMPLE_ENV
        .iter()
        .copied()
        .filter(|(k, _)| *k != "EXPORT_BUCKET")
        .collect();
    let out = validate(Path::new("."), &[&file], &env);
    assert_eq!(out.code, 2);
    // The first use: `url = "s3://${EXPORT_BUCKET}/...` in [output].
    assert!(
        out.stderr.starts_with(&format!(
            "{file}:17:13: environment variable EXPORT_BUCKET is not set"
        )),
        "{}",
        out.stderr
    );
}

fn example_env(name: &str) -> Option<String> {
    EXAMPLE_ENV
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn load_example(name: &str) -> config::Pipeline {
    config::load_with_env(&examples_dir().join(name), &example_env)
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn export_example_maps_to_the_runner_and_export_types() {
    let p = load_example("export-local.toml");
    assert_eq!(p.kind(), Kind::Export);
    assert_eq!(p.name, "daily-cohorts");
    assert_eq!(p.state.url.as_str(), ".cohort-sync/state");
    assert_eq!(p.connection.base_url(), "https://amplitude.com");
    let poll = p.download.poll_settings();
    assert_eq!(poll.initial, Duration::from_secs(2));
    assert_eq!(poll.max_interval, Duration::from_secs(60));
    assert_eq!(poll.max_wait, Duration::from_secs(3600));
    assert!(p.download.wants_props());
    assert_eq!(p.download.on_bad_row, BadRowPolicy::Fail);
    assert_eq!(
        p.download.column_types.get("gp:age"),
        Some(&ColumnType::Int64)
    );
    let PipelineSpec::Export(e) = &p.spec else {
        panic!("not an export: {:?}", p.spec)
    };
    let sel = e.select.selection();
    assert_eq!(sel.ids, vec!["abc123", "def456"]);
    assert!(sel.names[0].matches("Churned last week") && !sel.names[0].matches("Paid"));
    assert!(!sel.all_published && !sel.include_archived);
    assert_eq!(e.output.compression(), Compression::Zstd(3));
    assert_eq!(e.quota.priority, Priority::StaleFirst);
    assert_eq!((e.quota.reserve, e.quota.max_parallel), (20, 4));
    assert!(e.quota.skip_unchanged);

    let s3 = load_example("export-s3.toml");
    let PipelineSpec::Export(e) = &s3.spec else {
        panic!("not an export")
    };
    assert!(e.output.url.is_s3() && s3.state.url.is_s3());
    assert_eq!(
        s3.state.url.as_str(),
        "s3://warehouse-bucket/amplitude/state"
    );
    assert_eq!(e.quota.priority, Priority::SmallestFirst);
    assert_eq!(e.quota.pace, Pace::Even);
    let refresh = e.refresh_targets();
    assert_eq!(refresh.of("abc123"), Some(Duration::from_secs(3600)));
    assert_eq!(refresh.of("other"), Some(Duration::from_secs(86_400)));
    assert_eq!(e.output.compression(), Compression::Snappy);
    assert_eq!(
        s3.connection.base_url(),
        "https://analytics.eu.amplitude.com"
    );
}

#[test]
fn reverse_examples_map_to_targets_and_guards() {
    let p = load_example("reverse-existing.toml");
    let PipelineSpec::Reverse(r) = &p.spec else {
        panic!("not a reverse")
    };
    assert_eq!(
        r.target,
        Target::Existing {
            cohort_id: "abc123".into()
        }
    );
    assert_eq!(r.source.resolved_format(), Some(Format::Csv));
    assert_eq!(r.source.id_kind, IdKind::UserId);
    assert_eq!(r.reconcile.mode, ReconcileMode::Mirror);
    assert_eq!(r.reconcile.baseline, Baseline::Auto);
    assert_eq!(
        (r.reconcile.max_removals, r.reconcile.max_removal_pct),
        (500, 5.0)
    );
    assert_eq!(r.reconcile.chunk_size, 100_000);
    assert_eq!(
        r.reconcile.snapshots.as_ref().map(|s| s.as_str()),
        Some("out/cohorts")
    );

    let c = load_example("reverse-create.toml");
    assert_eq!(c.name, "reverse-create", "defaults to the file stem");
    let PipelineSpec::Reverse(r) = &c.spec else {
        panic!("not a reverse")
    };
    let Target::Create(create) = &r.target else {
        panic!("not a create: {:?}", r.target)
    };
    assert_eq!(
        (
            create.name.as_str(),
            create.owner.as_str(),
            create.published
        ),
        ("Beta testers (CRM)", "ops@example.com", true)
    );
    assert_eq!(r.source.resolved_format(), Some(Format::Parquet));
    assert_eq!(r.source.id_kind, IdKind::AmplitudeId);
    // Defaults of [reconcile] fields the file leaves out.
    assert_eq!(r.reconcile.max_removals, 10_000);
    assert_eq!(r.reconcile.max_removal_pct, 10.0);
    assert_eq!(r.reconcile.lists_dir.as_str(), "plans");
    assert!(r.reconcile.skip_invalid_ids && !r.reconcile.allow_empty_source);
}

fn parse(text: &str, env: &[(&str, &str)]) -> Result<config::Pipeline, ConfigError> {
    let lookup = |name: &str| {
        env.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    config::parse(Path::new("p.toml"), text, &lookup)
}

fn output_url(p: &config::Pipeline) -> String {
    match &p.spec {
        PipelineSpec::Export(e) => e.output.url.to_string(),
        PipelineSpec::Reverse(_) => panic!("not an export"),
    }
}

#[test]
fn interpolation_set_unset_and_escaped() {
    let text = "kind = \"export\"\n[select]\nids = [\"${ID}\", \"x${ID}y\"]\n[output]\nurl = \"s3://${BUCKET}/é/$${NOT_A_VAR}/$HOME\"\n";
    let p = parse(text, &[("ID", "c1"), ("BUCKET", "my-bucket")]).expect("load");
    assert_eq!(output_url(&p), "s3://my-bucket/é/${NOT_A_VAR}/$HOME");
    let PipelineSpec::Export(e) = &p.spec else {
        panic!("not an export")
    };
    assert_eq!(e.select.ids, vec!["c1", "xc1y"]);

    // Unset: named, positioned at its `${` (line 5, after the `url = "` and `s3://`).
    let err = parse(text, &[("ID", "c1")]).unwrap_err();
    assert_eq!((err.line(), err.column()), (Some(5), Some(13)));
    assert_eq!(
        err.message(),
        "environment variable BUCKET is not set (used as `${BUCKET}`)"
    );
    // The first unset use in the file is reported, whatever the key order.
    let err = parse(text, &[]).unwrap_err();
    assert_eq!((err.line(), err.column()), (Some(3), Some(9)));
    assert!(err.message().contains("ID is not set"), "{err}");

    // Positions stay right after multi-byte characters and escapes in the same string.
    let err = parse("kind = \"export\"\nname = \"é\\t${NOPE}\"\n", &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "p.toml:2:12: environment variable NOPE is not set (used as `${NOPE}`)"
    );

    // Keys are not interpolated; a value that becomes invalid is reported at the value.
    let err = parse(
        "kind = \"export\"\n[select]\nids = [\"a\"]\n[output]\nurl = \"${SCHEME}://x\"\n",
        &[("SCHEME", "ftp")],
    )
    .unwrap_err();
    assert_eq!((err.line(), err.column()), (Some(5), Some(7)));
    let err = parse("kind = \"export\"\n[select]\nids = [\"${A\"]\n", &[]).unwrap_err();
    assert!(
        err.to_string().starts_with("p.toml:3:9: unclosed `${`"),
        "{err}"
    );
}

#[test]
fn credentials_resolve_at_run_time_and_stay_secret() {
    let text = "kind = \"export\"\n[connection]\nbase_url = \"http://127.0.0.1:9/\"\napi_key = \"${KEY}\"\n[select]\nall_published = true\n[output]\nurl = \"out\"\n";
    let p = parse(text, &[("KEY", "key-from-file-var")]).expect("load");
    assert!(
        !format!("{p:?}").contains("key-from-file-var"),
        "Debug shows the key"
    );
    let err = p.connection.resolve_with(&|_| None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "p.toml: no credentials: connection.secret_key is not in the file and the environment variable AMPLITUDE_SECRET_KEY is not set"
    );
    let r = p
        .connection
        .resolve_with(&|n| (n == "AMPLITUDE_SECRET_KEY").then(|| "the-secret".to_string()))
        .expect("resolve");
    assert_eq!(r.options.base_url, "http://127.0.0.1:9");
    assert_eq!(r.options.credentials.api_key(), "key-from-file-var");
    assert_eq!(r.options.credentials.secret_key(), "the-secret");
    assert!(
        r.app_key.starts_with("key:") && !r.app_key.contains("key-from"),
        "{}",
        r.app_key
    );
    assert!(!format!("{r:?}").contains("the-secret"));
}

/// The committed schema equals the one generated from the types. This test only reads:
/// regenerate with `make schema` (examples/write_schema.rs).
#[test]
fn committed_schema_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/pipeline.schema.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == config::schema_json(),
        "{} is stale: regenerate it with `make schema`",
        path.display()
    );
}

/// The committed pipeline reference equals the one generated from the schema and the
/// shipped pipeline files (regenerate with `make schema`).
#[test]
fn committed_pipeline_reference_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join(config::reference::REFERENCE_PATH);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let current = config::reference::current_reference(root).expect("generate the reference");
    assert!(
        committed == current,
        "{} is stale: regenerate it with `make schema`",
        path.display()
    );
}

/// An independent validator (Python jsonschema) accepts the examples and rejects files the
/// loader rejects for their shape.
#[test]
fn schema_agrees_with_an_independent_validator() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong_section = dir.path().join("wrong_section.toml");
    std::fs::write(
        &wrong_section,
        format!("kind = \"reverse\"\n{REVERSE_TAIL}[select]\nids = [\"a\"]\n"),
    )
    .expect("write");
    let both_targets = dir.path().join("both_targets.toml");
    std::fs::write(&both_targets, "kind = \"reverse\"\n[source]\nurl = \"a.csv\"\n[target]\ncohort_id = \"c\"\ncreate = { name = \"n\", owner = \"o\" }\n").expect("write");
    let too_big = dir.path().join("too_big.toml");
    std::fs::write(
        &too_big,
        format!("kind = \"reverse\"\n{REVERSE_TAIL}[reconcile]\nchunk_size = 100001\n"),
    )
    .expect("write");
    let unknown = dir.path().join("unknown.toml");
    std::fs::write(
        &unknown,
        format!("kind = \"export\"\ncolour = 1\n{EXPORT_TAIL}"),
    )
    .expect("write");

    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/pipeline.schema.json");
    let mut args = vec![schema.display().to_string()];
    args.extend(
        EXAMPLES
            .iter()
            .map(|f| examples_dir().join(f).display().to_string()),
    );
    for bad in [&wrong_section, &both_targets, &too_big, &unknown] {
        args.push(bad.display().to_string());
    }
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = common::peers::run_python("check_schema.py", &arg_refs);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), EXAMPLES.len() + 4, "{out}");
    for (line, file) in lines.iter().zip(&args[1..]) {
        let is_example = file.contains("pipelines/examples");
        let expected = if is_example {
            format!("{file}: ok")
        } else {
            format!("{file}: invalid: ")
        };
        assert!(line.starts_with(&expected), "{line}");
    }
}

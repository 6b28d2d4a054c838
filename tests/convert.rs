//! `cohort-sync convert` and `export::convert_stream` end to end: CSV edge cases read back
//! by pyarrow and DuckDB, gzip, truncation, bad rows, declared types, S3 on moto, and
//! processes killed mid-upload leaving nothing at the final key.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use common::files::gzip;
use common::harness::exit_code;
use common::peers::{dump, dump_duckdb, layout};
use serde_json::{Value, json};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cohort-sync")
}

fn convert(args: &[&str]) -> Output {
    Command::new(bin())
        .arg("convert")
        .args(args)
        .output()
        .expect("run cohort-sync")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "convert failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write input");
    p
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Every field shape a quoted CSV can have, LF and CRLF line ends mixed.
const EDGE_CSV: &[u8] = b"\"amplitude_id\",\"user_id\",\"city\",\"note\"\n\
\"1\",\"alice@example.com\",\"Paris, France\",\"she said \"\"hi\"\"\"\r\n\
\"2\",\"\",\"M\xc3\xbcnchen\",\"line one\nline two\"\n\
3,bob,,\"crlf\r\ninside\"\r\n\
\"-4\",\"\xe6\x97\xa5\xe6\x9c\xac\xf0\x9f\x98\x80\",\"\",\"\"\"\"\n\
\"5\",\"trailing\",\",\",\"a,\"\"b\"\",c\"\n";

fn edge_rows() -> Value {
    json!([
        {"amplitude_id": 1, "user_id": "alice@example.com", "city": "Paris, France", "note": "she said \"hi\""},
        {"amplitude_id": 2, "user_id": null, "city": "München", "note": "line one\nline two"},
        {"amplitude_id": 3, "user_id": "bob", "city": null, "note": "crlf\r\ninside"},
        {"amplitude_id": -4, "user_id": "日本😀", "city": null, "note": "\""},
        {"amplitude_id": 5, "user_id": "trailing", "city": ",", "note": "a,\"b\",c"},
    ])
}

#[test]
fn quoted_fields_survive_byte_for_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write(dir.path(), "edge.csv", EDGE_CSV);
    let out = dir.path().join("edge.parquet");
    let stdout = ok(&convert(&[s(&input), s(&out)]));
    assert!(stdout.contains("5 rows"), "{stdout}");
    let t = dump(s(&out));
    assert_eq!(t["rows"], edge_rows());
    assert_eq!(
        t["schema"],
        json!([
            ["amplitude_id", "int64", false],
            ["user_id", "string", true],
            ["city", "string", true],
            ["note", "string", true]
        ])
    );
    assert_eq!(t["metadata"]["cohort_sync.rows"], "5");
    // A second, independent reader agrees.
    assert_eq!(dump_duckdb(s(&out))["rows"], edge_rows());
}

#[test]
fn header_only_gives_an_empty_file_with_the_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, body) in [
        ("a.csv", &b"\"amplitude_id\",\"user_id\"\n"[..]),
        ("b.csv", &b"\"amplitude_id\",\"user_id\""[..]),
    ] {
        let input = write(dir.path(), name, body);
        let out = dir.path().join(format!("{name}.parquet"));
        ok(&convert(&[s(&input), s(&out)]));
        let t = dump(s(&out));
        assert_eq!(t["num_rows"], 0);
        assert_eq!(t["rows"], json!([]));
        assert_eq!(t["schema"][1], json!(["user_id", "string", true]));
        assert_eq!(t["metadata"]["cohort_sync.rows"], "0");
    }
}

#[test]
fn empty_body_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write(dir.path(), "empty.csv", b"");
    let out = dir.path().join("empty.parquet");
    let res = convert(&[s(&input), s(&out)]);
    assert_eq!(res.status.code(), Some(1));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("empty.csv") && err.contains("no header"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn repeated_amplitude_id_becomes_amplitude_id_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let body = b"\"amplitude_id\",\"user_id\",\"plan\",\"amplitude_id\"\n\
\"10\",\"u1\",\"pro\",\"10\"\n\"11\",\"u2\",\"\",\"\"\n";
    let input = write(dir.path(), "dup.csv", body);
    let out = dir.path().join("dup.parquet");
    ok(&convert(&[s(&input), s(&out)]));
    let t = dump(s(&out));
    assert_eq!(t["schema"][3], json!(["amplitude_id_2", "int64", true]));
    assert_eq!(
        t["rows"],
        json!([
            {"amplitude_id": 10, "user_id": "u1", "plan": "pro", "amplitude_id_2": 10},
            {"amplitude_id": 11, "user_id": "u2", "plan": null, "amplitude_id_2": null},
        ])
    );
}

#[test]
fn gzip_is_detected_by_magic_bytes_including_multi_member() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Not named .gz: only the magic bytes tell.
    let input = write(dir.path(), "edge.csv", &gzip(EDGE_CSV));
    let out = dir.path().join("gz.parquet");
    let stdout = ok(&convert(&[s(&input), s(&out)]));
    assert!(stdout.contains("5 rows"), "{stdout}");
    assert_eq!(dump(s(&out))["rows"], edge_rows());

    // Two gzip members concatenated (what `cat a.gz b.gz` gives) are one body.
    let split = EDGE_CSV
        .iter()
        .position(|&b| b == b'\n')
        .expect("header line")
        + 1;
    let mut two = gzip(&EDGE_CSV[..split]);
    two.extend(gzip(&EDGE_CSV[split..]));
    let input = write(dir.path(), "two.csv.gz", &two);
    let out = dir.path().join("two.parquet");
    ok(&convert(&[s(&input), s(&out)]));
    assert_eq!(dump(s(&out))["rows"], edge_rows());
}

#[test]
fn truncated_gzip_fails_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut body = String::from("\"amplitude_id\",\"user_id\"\n");
    for i in 0..20_000 {
        body.push_str(&format!("\"{i}\",\"user-{}\"\n", i * 7919 % 100_003));
    }
    let gz = gzip(body.as_bytes());
    let input = write(dir.path(), "cut.csv.gz", &gz[..gz.len() * 2 / 3]);
    let out = dir.path().join("cut.parquet");
    let res = convert(&[s(&input), s(&out)]);
    assert_eq!(res.status.code(), Some(1));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("cut.csv.gz") && err.contains("truncated"),
        "{err}"
    );
    assert!(!out.exists(), "no output after a truncated body");
    assert_no_leftovers(dir.path(), "cut.parquet");
}

#[test]
fn body_ending_inside_a_quoted_field_is_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write(
        dir.path(),
        "q.csv",
        b"\"amplitude_id\",\"user_id\"\n\"1\",\"a\"\n\"2\",\"unfinish",
    );
    let out = dir.path().join("q.parquet");
    let res = convert(&[s(&input), s(&out)]);
    assert_eq!(res.status.code(), Some(1));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("truncated") && err.contains("quoted"), "{err}");
    assert!(!out.exists());
}

const BAD_CSV: &[u8] = b"\"amplitude_id\",\"user_id\",\"p\"\n\
\"1\",\"ok\",\"x\"\n\
\"2\",\"too\",\"many\",\"fields\"\n\
\"x3\",\"bad int\",\"\"\n\
\"4\",\"multi\nline\",\"fine\"\n\
\"5\",\"bad \xff utf8\",\"\"\n\
\"\",\"no id\",\"\"\n\
\"7\",\"ok too\",\"\"\n";

#[test]
fn bad_row_fails_naming_file_row_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write(dir.path(), "bad.csv", BAD_CSV);
    let out = dir.path().join("bad.parquet");
    let res = convert(&[s(&input), s(&out)]);
    assert_eq!(res.status.code(), Some(1));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("bad.csv")
            && err.contains("bad row 2 (line 3)")
            && err.contains("expected 3 fields, found 4"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn bad_rows_skipped_are_counted_and_sampled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write(dir.path(), "bad.csv", BAD_CSV);
    let out = dir.path().join("bad.parquet");
    let res = convert(&[s(&input), s(&out), "--on-bad-row", "skip", "--json"]);
    let stdout = ok(&res);
    let report: Value = serde_json::from_str(stdout.trim()).expect("json");
    assert_eq!(report["rows"], 3);
    assert_eq!(report["skipped_rows"], 4);
    let sample: Vec<(u64, u64, String)> = report["skipped_sample"]
        .as_array()
        .expect("sample")
        .iter()
        .map(|s| {
            (
                s["row"].as_u64().expect("row"),
                s["line"].as_u64().expect("line"),
                s["reason"].as_str().expect("reason").to_string(),
            )
        })
        .collect();
    let rows: Vec<(u64, u64)> = sample.iter().map(|(r, l, _)| (*r, *l)).collect();
    // Row 4 spans lines 5-6, so row 5 starts on line 7.
    assert_eq!(rows, [(2, 3), (3, 4), (5, 7), (6, 8)]);
    assert!(sample[1].2.contains("\"x3\" is not an int64"), "{sample:?}");
    assert!(sample[2].2.contains("not valid UTF-8"), "{sample:?}");
    assert!(sample[3].2.contains("is empty"), "{sample:?}");
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("skipped row 3 (line 4)"), "{err}");
    let t = dump(s(&out));
    assert_eq!(
        t["rows"],
        json!([
            {"amplitude_id": 1, "user_id": "ok", "p": "x"},
            {"amplitude_id": 4, "user_id": "multi\nline", "p": "fine"},
            {"amplitude_id": 7, "user_id": "ok too", "p": null},
        ])
    );
}

#[test]
fn declared_column_types() {
    let dir = tempfile::tempdir().expect("tempdir");
    let body = b"\"amplitude_id\",\"user_id\",\"age\",\"score\",\"paid\",\"zip\"\n\
\"1\",\"u1\",\"42\",\"1.5\",\"true\",\"01234\"\n\
\"2\",\"u2\",\"\",\"-2e3\",\"FALSE\",\"\"\n\
\"3\",\"u3\",\"-7\",\"\",\"\",\"9\"\n";
    let input = write(dir.path(), "typed.csv", body);
    let out = dir.path().join("typed.parquet");
    ok(&convert(&[
        s(&input),
        s(&out),
        "--column-type",
        "age=int64",
        "--column-type",
        "score=float64",
        "--column-type",
        "paid=boolean",
        "--column-type",
        "zip=utf8",
        "--column-type",
        "amplitude_id=utf8",
    ]));
    let t = dump(s(&out));
    assert_eq!(
        t["schema"],
        json!([
            ["amplitude_id", "string", false],
            ["user_id", "string", true],
            ["age", "int64", true],
            ["score", "double", true],
            ["paid", "bool", true],
            ["zip", "string", true]
        ])
    );
    assert_eq!(
        t["rows"],
        json!([
            {"amplitude_id": "1", "user_id": "u1", "age": 42, "score": 1.5, "paid": true, "zip": "01234"},
            {"amplitude_id": "2", "user_id": "u2", "age": null, "score": -2000.0, "paid": false, "zip": null},
            {"amplitude_id": "3", "user_id": "u3", "age": -7, "score": null, "paid": null, "zip": "9"},
        ])
    );
    // A value that does not fit its declared type is a bad row.
    let bad = write(
        dir.path(),
        "bad.csv",
        b"\"amplitude_id\",\"age\"\n\"1\",\"4.5\"\n",
    );
    let res = convert(&[
        s(&bad),
        s(&dir.path().join("x.parquet")),
        "--column-type",
        "age=int64",
    ]);
    assert_eq!(res.status.code(), Some(1));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("bad row 1 (line 2)") && err.contains("\"4.5\" is not an int64"),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write(dir.path(), "e.csv", EDGE_CSV);
    let out = dir.path().join("e.parquet");
    for extra in [
        &["--column-type", "age"][..],
        &["--column-type", "age=int"][..],
        &["--compression", "brotli"][..],
        &["--on-bad-row", "ignore"][..],
    ] {
        let mut args = vec![s(&input), s(&out)];
        args.extend_from_slice(extra);
        let res = convert(&args);
        assert_eq!(
            res.status.code(),
            Some(2),
            "{extra:?}: {}",
            String::from_utf8_lossy(&res.stderr)
        );
    }
    // A declared type for a column the header lacks is reported (exit 1, names it).
    let res = convert(&[s(&input), s(&out), "--column-type", "nope=int64"]);
    assert_eq!(res.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&res.stderr).contains("\"nope\""));
    assert!(!out.exists());
}

/// `convert IN IN`, `convert IN DIR/`, `convert DIR OUT`: refused with a message saying
/// what to give instead (exit 2), the input untouched, nothing written.
#[test]
fn misuse_of_paths_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write(dir.path(), "a.csv", EDGE_CSV);
    let refused = |args: &[&str]| {
        let res = convert(args);
        assert_eq!(
            res.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&res.stderr)
        );
        String::from_utf8_lossy(&res.stderr).to_string()
    };
    // The input as output: as given, through `./` and `..`, through a symbolic link and
    // a hard link.
    let via_dots = format!("{}/./../{}/a.csv", s(dir.path()), {
        dir.path()
            .file_name()
            .expect("name")
            .to_str()
            .expect("utf-8")
    });
    std::os::unix::fs::symlink(&input, dir.path().join("link.csv")).expect("symlink");
    std::fs::hard_link(&input, dir.path().join("hard.csv")).expect("hard link");
    for out in [
        s(&input).to_string(),
        via_dots,
        s(&dir.path().join("link.csv")).to_string(),
        s(&dir.path().join("hard.csv")).to_string(),
    ] {
        let err = refused(&[s(&input), &out]);
        assert!(
            err.contains("is the input file") && err.contains("choose another output path"),
            "{out}: {err}"
        );
    }
    assert_eq!(
        std::fs::read(&input).expect("input"),
        EDGE_CSV,
        "input untouched"
    );
    // A directory as output, existing or written with a trailing slash.
    let out_dir = dir.path().join("OUT");
    std::fs::create_dir(&out_dir).expect("mkdir");
    for out in [
        s(&out_dir).to_string(),
        format!("{}/", s(&dir.path().join("NEW"))),
    ] {
        let err = refused(&[s(&input), &out]);
        assert!(
            err.contains("is a directory: give the Parquet file's path, e.g. ")
                && err.contains("a.parquet"),
            "{out}: {err}"
        );
    }
    assert!(!dir.path().join("NEW").exists());
    assert_eq!(std::fs::read_dir(&out_dir).expect("read_dir").count(), 0);
    // A directory as input.
    let err = refused(&[s(&out_dir), s(&dir.path().join("x.parquet"))]);
    assert!(
        err.contains("OUT is a directory: give the CSV file to convert"),
        "{err}"
    );
    assert!(!err.contains("download failed"), "{err}");
    assert!(!dir.path().join("x.parquet").exists());
    // The limits are options: at least 1.
    refused(&[
        s(&input),
        s(&dir.path().join("y.parquet")),
        "--max-field-bytes",
        "0",
    ]);
}

/// Inputs past a limit: the message names the limit, where, and the flag that raises it;
/// raising it converts the file.
#[test]
fn limits_stop_hostile_inputs_and_can_be_raised() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A field of 100 KiB (a real cohort's are below 32 KiB).
    let mut body = b"\"amplitude_id\",\"note\"\n\"1\",\"short\"\n\"2\",\"".to_vec();
    body.extend(std::iter::repeat_n(b'x', 100 * 1024));
    body.extend(b"\"\n");
    let input = write(dir.path(), "long.csv", &body);
    let out = dir.path().join("long.parquet");
    let res = convert(&[s(&input), s(&out)]);
    assert_eq!(res.status.code(), Some(1));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("long.csv: row 2 (line 3), column \"note\": a field is longer than 65536 bytes (limit max_field_bytes; raise it with --max-field-bytes)"),
        "{err}"
    );
    assert!(!out.exists());
    ok(&convert(&[
        s(&input),
        s(&out),
        "--max-field-bytes",
        "200000",
    ]));
    assert_eq!(dump(s(&out))["num_rows"], 2);

    // A single 8 MiB field compressed (a gzip bomb's shape): stopped at the field limit.
    let input = write(
        dir.path(),
        "bomb.csv.gz",
        &gzip(&{
            let mut b = b"a\n".to_vec();
            b.extend(std::iter::repeat_n(b'0', 8 << 20));
            b
        }),
    );
    let res = convert(&[s(&input), s(&dir.path().join("bomb.parquet"))]);
    assert_eq!(res.status.code(), Some(1));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("limit max_field_bytes"), "{err}");

    // Too many columns.
    let header: Vec<String> = (0..1001).map(|i| format!("c{i}")).collect();
    let input = write(
        dir.path(),
        "wide.csv",
        format!("{}\n", header.join(",")).as_bytes(),
    );
    let res = convert(&[s(&input), s(&dir.path().join("wide.parquet"))]);
    assert_eq!(res.status.code(), Some(1));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("wide.csv: the header has more than 1000 columns (limit max_columns; raise it with --max-columns)"),
        "{err}"
    );
    ok(&convert(&[
        s(&input),
        s(&dir.path().join("wide.parquet")),
        "--max-columns",
        "1001",
    ]));
}

/// `--compression` and `--row-group-rows` as written in the file: the codec of every
/// column chunk and the zstd level are read from the file's own bytes (tests/py
/// parquet_dump.py `layout`), not from anything the tool reports.
#[test]
fn compression_row_groups_and_footer_metadata() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut body = String::from("\"amplitude_id\",\"user_id\"\n");
    for i in 0..10_000 {
        body.push_str(&format!("\"{i}\",\"u{i}\"\n"));
    }
    let input = write(dir.path(), "many.csv", body.as_bytes());
    // zstd levels whose pages a one-shot compression reproduces byte for byte (see
    // parquet_dump.py; the highest levels cannot be told apart that way).
    for (codec, written_as, levels) in [
        ("zstd:4", "ZSTD", json!([4])),
        ("zstd:9", "ZSTD", json!([9])),
        ("zstd:15", "ZSTD", json!([15])),
        ("snappy", "SNAPPY", json!([])),
        ("lz4", "LZ4", json!([])),
        ("none", "UNCOMPRESSED", json!([])),
    ] {
        let out = dir
            .path()
            .join(format!("{}.parquet", codec.replace(':', "")));
        ok(&convert(&[
            s(&input),
            s(&out),
            "--compression",
            codec,
            "--row-group-rows",
            "1000",
            "--batch-rows",
            "700",
            "--metadata",
            "cohort_sync.cohort_id=abc123",
            "--metadata",
            "cohort_sync.cohort_name=My cohort",
        ]));
        let l = layout(s(&out), usize::MAX);
        assert_eq!(l["row_group_rows"], json!(vec![1000; 10]), "{codec}: {l}");
        let codecs = l["codecs"].as_array().expect("codecs");
        assert_eq!(codecs.len(), 20, "{codec}: two columns in ten row groups");
        assert!(codecs.iter().all(|c| c == written_as), "{codec}: {l}");
        assert_eq!(l["zstd_levels"], levels, "{codec}: {l}");
        let t = dump(s(&out));
        assert_eq!(t["num_rows"], 10_000);
        assert_eq!(t["metadata"]["cohort_sync.rows"], "10000");
        assert_eq!(t["metadata"]["cohort_sync.cohort_id"], "abc123");
        assert_eq!(t["metadata"]["cohort_sync.cohort_name"], "My cohort");
        let rows = t["rows"].as_array().expect("rows");
        assert_eq!(rows.len(), 10_000);
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(r["amplitude_id"], i as i64);
            assert_eq!(r["user_id"], format!("u{i}"));
        }
    }
}

/// Without options: zstd at level 3, in row groups of 131,072 rows.
#[test]
fn defaults_are_zstd_level_3_in_row_groups_of_131072() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut body = String::from("\"amplitude_id\",\"user_id\",\"blob\",\"n\"\n");
    body.push_str(&big_rows(0, 140_000));
    let input = write(dir.path(), "default.csv", body.as_bytes());
    let out = dir.path().join("default.parquet");
    ok(&convert(&[s(&input), s(&out)]));
    let l = layout(s(&out), 1);
    assert_eq!(
        l["row_group_rows"],
        json!([131_072, 140_000 - 131_072]),
        "{l}"
    );
    assert!(
        l["codecs"]
            .as_array()
            .expect("codecs")
            .iter()
            .all(|c| c == "ZSTD"),
        "{l}"
    );
    assert_eq!(l["zstd_levels"], json!([3]), "{l}");
}

#[test]
fn writes_to_s3_through_object_store() {
    let bucket = common::s3::create_bucket("convert");
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write(dir.path(), "edge.csv.gz", &gzip(EDGE_CSV));
    let url = format!("s3://{bucket}/exports/edge.parquet");
    let stdout = ok(&convert(&[s(&input), &url]));
    assert!(stdout.contains(&url), "{stdout}");
    let t = dump(&url);
    assert_eq!(t["rows"], edge_rows());
    assert_eq!(t["metadata"]["cohort_sync.rows"], "5");

    // A failed conversion leaves no object and no open multipart upload behind: the
    // bucket holds the good file only, whole (its listed size is the bytes read back).
    let bad = write(dir.path(), "bad.csv", BAD_CSV);
    let res = convert(&[s(&bad), &format!("s3://{bucket}/exports/bad.parquet")]);
    assert_eq!(res.status.code(), Some(1));
    let objects = common::s3::list(&bucket, "");
    let keys: Vec<&str> = objects.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["exports/edge.parquet"]);
    let fetched = common::s3::get(&bucket, "exports/edge.parquet");
    assert_eq!(objects[0].1, fetched.len() as u64);
    assert!(fetched.starts_with(b"PAR1") && fetched.ends_with(b"PAR1"));
    assert!(
        common::s3::uploads(&bucket).is_empty(),
        "the failed upload was aborted"
    );
}

/// A large, poorly compressible body: unique ids and pseudo-random property values.
fn big_rows(from: u64, n: u64) -> String {
    let mut s = String::with_capacity((n * 90) as usize);
    let mut x: u64 = from.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in from..from + n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(&format!(
            "\"{i}\",\"user-{x:016x}\",\"{:016x}{:016x}\",\"{}\"\n",
            x.rotate_left(17),
            x.rotate_left(41),
            x % 1000
        ));
    }
    s
}

/// Converts a large input to `out` with the crash point armed at the second uploaded
/// part: the process SIGKILLs itself there, mid-upload (no timing involved).
fn killed_mid_upload(dir: &Path, out: &str) {
    let input = dir.join("in.csv");
    let mut body = String::from("\"amplitude_id\",\"user_id\",\"blob\",\"n\"\n");
    // ~18 MB of rows, uncompressed: several parts (5 MiB on S3, 1 MiB locally).
    body.push_str(&big_rows(0, 200_000));
    std::fs::write(&input, body).expect("write input");
    let res = Command::new(bin())
        .args([
            "convert",
            s(&input),
            out,
            "--compression",
            "none",
            "--row-group-rows",
            "20000",
        ])
        // Pieces of 128 KiB reach the uploader, parts are 1 MiB locally, at most 2 in
        // flight: before the 25th piece is taken, 3 parts were started and one finished.
        .env(cohort_sync::crash::ENV, "export.upload.part#25")
        .output()
        .expect("run convert");
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(
        exit_code(&res.status),
        -9,
        "killed at its crash point: {stderr}"
    );
    assert!(stderr.contains("export.upload.part #25"), "{stderr}");
}

#[test]
fn killed_mid_upload_to_s3_leaves_no_object() {
    let bucket = common::s3::create_bucket("killed");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("s3://{bucket}/out/cohort.parquet");
    killed_mid_upload(dir.path(), &url);
    assert_eq!(
        common::s3::keys(&bucket, ""),
        Vec::<String>::new(),
        "nothing published at the final key"
    );
    // The upload was really under way: it was started at that key and never completed.
    let uploads = common::s3::uploads(&bucket);
    let keys: Vec<&str> = uploads.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["out/cohort.parquet"], "{uploads:?}");
}

#[test]
fn killed_mid_write_to_a_local_file_leaves_no_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).expect("mkdir");
    let out = out_dir.join("cohort.parquet");
    killed_mid_upload(dir.path(), s(&out));
    assert!(!out.exists(), "nothing published at the final path");
    // Whatever the store left while writing (its staging file, whatever its name) is
    // not a Parquet file where readers look (`*.parquet`), and holds bytes: the write
    // was under way.
    let left: Vec<(String, u64)> = std::fs::read_dir(&out_dir)
        .expect("read_dir")
        .map(|e| {
            let e = e.expect("entry");
            (
                e.file_name().to_string_lossy().to_string(),
                e.metadata().expect("metadata").len(),
            )
        })
        .collect();
    assert!(
        left.iter().all(|(name, _)| !name.ends_with(".parquet")),
        "{left:?}"
    );
    assert!(left.iter().any(|(_, len)| *len > 0), "{left:?}");
}

fn assert_no_leftovers(dir: &Path, name: &str) {
    let left: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(name))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

mod library {
    //! `convert_stream` called the way the runner calls it.
    use super::*;
    use bytes::Bytes;
    use cohort_sync::export::{ConvertOptions, ExportError, convert_stream};
    use object_store::ObjectStore;
    use object_store::local::LocalFileSystem;
    use object_store::path::Path as Key;

    fn store(dir: &Path) -> Arc<dyn ObjectStore> {
        Arc::new(LocalFileSystem::new_with_prefix(dir).expect("local store"))
    }

    fn chunks(body: &[u8], size: usize) -> Vec<Result<Bytes, std::io::Error>> {
        body.chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect()
    }

    #[tokio::test]
    async fn tiny_chunks_give_the_same_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let body = futures::stream::iter(chunks(&gzip(EDGE_CSV), 1));
        let mut opts = ConvertOptions::new("cohort abc (Edge)");
        opts.metadata = vec![("cohort_sync.request_id".into(), "r-1".into())];
        let key = Key::from("a/edge.parquet");
        let stats = convert_stream(body, &opts, store(dir.path()), &key)
            .await
            .expect("convert");
        assert_eq!(stats.rows, 5);
        assert_eq!(stats.columns, ["amplitude_id", "user_id", "city", "note"]);
        let file = dir.path().join("a/edge.parquet");
        let bytes = std::fs::read(&file).expect("read");
        assert_eq!(stats.bytes_written, bytes.len() as u64);
        assert_eq!(stats.body_bytes, gzip(EDGE_CSV).len() as u64);
        let digest = sha2::Sha256::digest(&bytes);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(stats.sha256, hex);
        let t = dump(s(&file));
        assert_eq!(t["rows"], edge_rows());
        assert_eq!(t["metadata"]["cohort_sync.request_id"], "r-1");
    }

    #[tokio::test]
    async fn a_failing_body_is_retryable_and_publishes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut items = chunks(big_rows(0, 50_000).as_bytes(), 64 * 1024);
        items.insert(
            0,
            Ok(Bytes::from_static(
                b"\"amplitude_id\",\"user_id\",\"blob\",\"n\"\n",
            )),
        );
        items.push(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        )));
        let body = futures::stream::iter(items);
        let opts = ConvertOptions::new("cohort xyz");
        let key = Key::from("b/out.parquet");
        let err = convert_stream(body, &opts, store(dir.path()), &key)
            .await
            .expect_err("must fail");
        assert!(matches!(err, ExportError::Download { .. }), "{err}");
        assert!(err.is_retryable_download());
        assert!(
            err.to_string().contains("cohort xyz") && err.to_string().contains("reset"),
            "{err}"
        );
        assert!(!dir.path().join("b/out.parquet").exists());
        // The abort removed the staging file before the error was returned.
        assert_no_leftovers(&dir.path().join("b"), "out.parquet");
    }

    #[tokio::test]
    async fn bad_rows_and_truncation_are_classified() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = ConvertOptions::new("cohort q");
        let body = futures::stream::iter(chunks(BAD_CSV, 7));
        let err = convert_stream(body, &opts, store(dir.path()), &Key::from("c.parquet"))
            .await
            .expect_err("bad row");
        assert_eq!(err.bad_row(), Some(2));
        assert!(!err.is_retryable_download());
        let body = futures::stream::iter(chunks(b"\"amplitude_id\"\n\"1\"\n\"2", 3));
        let err = convert_stream(body, &opts, store(dir.path()), &Key::from("d.parquet"))
            .await
            .expect_err("truncated");
        assert!(matches!(err, ExportError::Truncated { .. }), "{err}");
        assert!(err.is_retryable_download());
        let empty: Vec<Result<Bytes, std::io::Error>> = Vec::new();
        let err = convert_stream(
            futures::stream::iter(empty),
            &opts,
            store(dir.path()),
            &Key::from("e.parquet"),
        )
        .await
        .expect_err("empty");
        assert!(err.is_retryable_download(), "{err}");
        assert!(!dir.path().join("c.parquet").exists());
        assert!(!dir.path().join("d.parquet").exists());
        assert!(!dir.path().join("e.parquet").exists());
    }

    #[tokio::test]
    async fn a_body_that_is_not_the_cohort_publishes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        // An error page served with 200.
        let mut opts = ConvertOptions::new("cohort h");
        opts.expect = Some(BodyExpectation::cohort(Some(2)));
        let body = futures::stream::iter(chunks(b"<html><body>Error</body></html>", 8));
        let err = convert_stream(body, &opts, store(dir.path()), &Key::from("h.parquet"))
            .await
            .expect_err("not a cohort");
        assert!(matches!(err, ExportError::NotACohort { .. }), "{err}");
        assert!(err.is_retryable_download());
        assert!(
            err.to_string()
                .contains("got a header of 1 column: \"<html><body>Error</body></html>\""),
            "{err}"
        );
        // A cut body that still parses: 50,000 rows of a cohort listed with 100,000 fail
        // after the batches went to the encoder, before the file is completed.
        let mut items = chunks(big_rows(0, 50_000).as_bytes(), 64 * 1024);
        items.insert(
            0,
            Ok(Bytes::from_static(
                b"\"amplitude_id\",\"user_id\",\"blob\",\"n\"\n",
            )),
        );
        let mut opts = ConvertOptions::new("cohort s");
        opts.expect = Some(BodyExpectation::cohort(Some(100_000)));
        let key = Key::from("s/out.parquet");
        let err = convert_stream(futures::stream::iter(items), &opts, store(dir.path()), &key)
            .await
            .expect_err("too few rows");
        assert!(
            err.to_string().contains(
                "it has 50000 rows; the cohort's listed size is 100000; accepted 89900..=110100 rows"
            ),
            "{err}"
        );
        assert!(err.is_retryable_download());
        assert!(!dir.path().join("h.parquet").exists());
        assert!(!dir.path().join("s/out.parquet").exists());
        if dir.path().join("s").exists() {
            assert_no_leftovers(&dir.path().join("s"), "out.parquet");
        }
    }

    use cohort_sync::export::BodyExpectation;
    use sha2::Digest;
}

//! Reverse sources read by the library (`reverse::source::read_ids`) from files other
//! tools wrote: CSV with real CRM quirks (plain and gzip), Parquet written by pyarrow, and
//! both on moto's S3 on loopback; the errors a bad source gives (ids out of range, id
//! columns of other types, a cut quote). Nothing here talks to Amplitude: what a reverse
//! run sends is asserted from the emulator's request log in `reverse_apply.rs`.

mod common;

use std::path::Path;

use cohort_sync::amplitude::types::IdKind;
use cohort_sync::config::SourceFormat;
use cohort_sync::reverse::bytes::FileRef;
use cohort_sync::reverse::diff::diff;
use cohort_sync::reverse::idset::IdCollector;
use cohort_sync::reverse::source::{ColumnSpec, ReadError, ReadStats, read_ids};
use common::files::gzip;

/// Reads `url` and returns its distinct ids sorted, with the read stats and duplicates.
async fn read_sorted(
    url: &str,
    column: &str,
    kind: IdKind,
    base: &Path,
) -> (Vec<String>, ReadStats, u64) {
    let file = FileRef::parse(url, base).expect("url");
    let (ids, stats) = read_ids(&file, SourceFormat::Auto, &ColumnSpec::new(column, kind))
        .await
        .unwrap_or_else(|e| panic!("reading {url}: {e}"));
    let d = diff(&ids, &IdCollector::new(), 2).expect("diff");
    let mut v: Vec<String> = d.add.iter_str().map(str::to_string).collect();
    v.sort();
    (v, stats, d.counts.source_duplicates)
}

/// A CRM export with what real ones have: quoted fields holding commas, quotes and
/// newlines, CRLF line ends, surrounding spaces, blank ids and duplicates.
const CRM_CSV: &str = "email,\"user_id\",note\r\n\
a@x.com,alice,\"likes, commas\"\r\n\
b@x.com,\" bob \",\"says \"\"hi\"\"\"\r\n\
c@x.com,,no id\r\n\
d@x.com,\"carol\",\"two\nlines\"\r\n\
e@x.com,alice,duplicate\r\n\
f@x.com,   ,blank\r\n\
g@x.com,\"zoë\",unicode\r\n";

fn crm_expected() -> Vec<String> {
    let mut v: Vec<String> = ["alice", "bob", "carol", "zoë"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.sort();
    v
}

fn write_parquet(path: &Path, spec: serde_json::Value) {
    common::peers::write_parquet(path, &spec);
}

fn parquet_spec() -> serde_json::Value {
    serde_json::json!({
        "columns": {
            "user_id": {"type": "string", "values": ["alice", " bob ", null, "carol", "alice", "  ", "zoë"]},
            "amplitude_id": {"type": "int64", "values": [7, 8, null, 9, 7, 10, 11]},
        }
    })
}

#[tokio::test]
async fn csv_sources_plain_gzip_and_quoted_on_local_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("crm.csv"), CRM_CSV).expect("write");
    std::fs::write(dir.path().join("crm.csv.gz"), gzip(CRM_CSV.as_bytes())).expect("write");
    // Gzip is told by its bytes, not by the name.
    std::fs::write(dir.path().join("crm-gz.csv"), gzip(CRM_CSV.as_bytes())).expect("write");
    for name in ["crm.csv", "crm.csv.gz", "crm-gz.csv"] {
        let (ids, stats, dups) = read_sorted(name, "user_id", IdKind::UserId, dir.path()).await;
        assert_eq!(ids, crm_expected(), "{name}");
        assert_eq!(stats, ReadStats { rows: 7, blank: 2 }, "{name}");
        assert_eq!(dups, 1, "{name}");
    }
}

#[tokio::test]
async fn parquet_source_written_by_pyarrow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("crm.parquet");
    write_parquet(&path, parquet_spec());
    let (ids, stats, dups) =
        read_sorted("crm.parquet", "user_id", IdKind::UserId, dir.path()).await;
    assert_eq!(ids, crm_expected());
    assert_eq!(stats, ReadStats { rows: 7, blank: 2 });
    assert_eq!(dups, 1);
    // An integer column of Amplitude ids.
    let (ids, stats, dups) = read_sorted(
        "crm.parquet",
        "amplitude_id",
        IdKind::AmplitudeId,
        dir.path(),
    )
    .await;
    assert_eq!(ids, vec!["10", "11", "7", "8", "9"]);
    assert_eq!(stats, ReadStats { rows: 7, blank: 1 });
    assert_eq!(dups, 1);
}

#[tokio::test]
async fn sources_on_s3() {
    let bucket = common::s3::create_bucket("crm");
    let dir = tempfile::tempdir().expect("tempdir");
    let files = [
        ("crm.csv", CRM_CSV.as_bytes().to_vec()),
        ("crm.csv.gz", gzip(CRM_CSV.as_bytes())),
    ];
    for (name, bytes) in &files {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        common::s3::put(&bucket, &format!("lists/{name}"), &path);
    }
    let pq = dir.path().join("crm.parquet");
    write_parquet(&pq, parquet_spec());
    common::s3::put(&bucket, "lists/crm.parquet", &pq);
    for name in ["crm.csv", "crm.csv.gz", "crm.parquet"] {
        let url = format!("s3://{bucket}/lists/{name}");
        let (ids, stats, dups) = read_sorted(&url, "user_id", IdKind::UserId, dir.path()).await;
        assert_eq!(ids, crm_expected(), "{url}");
        assert_eq!(stats, ReadStats { rows: 7, blank: 2 }, "{url}");
        assert_eq!(dups, 1, "{url}");
    }
    let missing =
        FileRef::parse(&format!("s3://{bucket}/lists/none.csv"), dir.path()).expect("url");
    let err = read_ids(
        &missing,
        SourceFormat::Auto,
        &ColumnSpec::new("user_id", IdKind::UserId),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("none.csv"), "{err}");
}

#[tokio::test]
async fn a_non_integer_amplitude_id_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("ids.csv"),
        "amplitude_id\n123\n\"456\"\n12x\n",
    )
    .expect("write");
    let file = FileRef::parse("ids.csv", dir.path()).expect("url");
    let err = read_ids(
        &file,
        SourceFormat::Auto,
        &ColumnSpec::new("amplitude_id", IdKind::AmplitudeId),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ReadError::NotAnInteger { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("ids.csv") && text.contains("row 3 (line 4)") && text.contains("\"12x\""),
        "{text}"
    );
}

/// A Parquet id column is read only when its type can hold the id kind: strings for
/// either kind, integers for `amplitude_id`; anything else is refused naming the column
/// and its Arrow type (never stringified into `true`, `2.0`, `[a]` or a date).
#[tokio::test]
async fn parquet_id_columns_of_other_types_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("typed.parquet");
    write_parquet(
        &path,
        serde_json::json!({
            "columns": {
                "s": {"type": "string", "values": ["12", "13"]},
                "ls": {"type": "large_string", "values": ["12", "13"]},
                "sv": {"type": "string_view", "values": ["12", "13"]},
                "dict": {"type": "dictionary", "values": ["12", "12"]},
                "i32": {"type": "int32", "values": [12, 13]},
                "i64": {"type": "int64", "values": [12, null]},
                "u64": {"type": "uint64", "values": [12, 13]},
                "f": {"type": "float64", "values": [2.0, 3.0]},
                "b": {"type": "bool", "values": [true, false]},
                "t": {"type": "timestamp", "values": [1, 2]},
                "l": {"type": "list", "values": [["a"], ["b"]]},
                "bin": {"type": "binary", "values": ["a", "b"]},
            }
        }),
    );
    let read = |column: &'static str, kind: IdKind| {
        let file = FileRef::parse("typed.parquet", dir.path()).expect("url");
        async move { read_ids(&file, SourceFormat::Auto, &ColumnSpec::new(column, kind)).await }
    };
    for column in ["s", "ls", "sv", "dict"] {
        for kind in [IdKind::UserId, IdKind::AmplitudeId] {
            let (ids, stats) = read(column, kind)
                .await
                .unwrap_or_else(|e| panic!("{column} {kind:?}: {e}"));
            assert_eq!(stats.rows, 2, "{column}");
            assert!(ids.total() >= 1, "{column}");
        }
    }
    for column in ["i32", "i64", "u64"] {
        let (ids, stats) = read(column, IdKind::AmplitudeId)
            .await
            .unwrap_or_else(|e| panic!("{column}: {e}"));
        assert_eq!(stats.rows, 2, "{column}");
        assert_eq!(ids.total(), 2 - stats.blank, "{column}");
        let err = read(column, IdKind::UserId).await.unwrap_err();
        assert!(matches!(err, ReadError::Parquet { .. }), "{column}: {err}");
        assert!(
            err.to_string()
                .contains("cannot hold user_id ids: id_kind = \"user_id\" takes a string column"),
            "{err}"
        );
    }
    for (column, arrow_type) in [
        ("f", "Float64"),
        ("b", "Boolean"),
        ("t", "Timestamp("),
        ("l", "List("),
        ("bin", "Binary"),
    ] {
        for kind in [IdKind::UserId, IdKind::AmplitudeId] {
            let err = read(column, kind).await.unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("typed.parquet")
                    && text.contains(&format!("column {column:?} is of Arrow type {arrow_type}")),
                "{column} {kind:?}: {text}"
            );
        }
    }
}

/// An `amplitude_id` outside 1..=i64::MAX (from an unsigned or signed integer column, or
/// text) is an error naming the file, the row and the value: never sent.
#[tokio::test]
async fn amplitude_ids_out_of_range_are_refused_from_parquet_and_csv() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ids.parquet");
    write_parquet(
        &path,
        serde_json::json!({
            "columns": {
                "u": {"type": "uint64", "values": [7, 18446744073709551615u64, 8]},
                "i": {"type": "int64", "values": [7, null, -3]},
                "s": {"type": "string", "values": ["7", "9223372036854775808", "8"]},
            }
        }),
    );
    for (column, row, value) in [
        ("u", 2, "18446744073709551615"),
        ("i", 3, "-3"),
        ("s", 2, "9223372036854775808"),
    ] {
        let file = FileRef::parse("ids.parquet", dir.path()).expect("url");
        let err = read_ids(
            &file,
            SourceFormat::Auto,
            &ColumnSpec::new(column, IdKind::AmplitudeId),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ReadError::OutOfRange { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("ids.parquet")
                && text.contains(&format!("row {row}: amplitude_id {value} is out of range")),
            "{text}"
        );
    }
    std::fs::write(dir.path().join("ids.csv"), "amplitude_id\n7\n0\n").expect("write");
    let file = FileRef::parse("ids.csv", dir.path()).expect("url");
    let err = read_ids(
        &file,
        SourceFormat::Auto,
        &ColumnSpec::new("amplitude_id", IdKind::AmplitudeId),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("ids.csv: row 2 (line 3): amplitude_id 0 is out of range"),
        "{err}"
    );
}

/// A CSV source ending inside an open quote (a cut export) is an error naming the file and
/// the line, plain or gzip, never a shorter list.
#[tokio::test]
async fn a_csv_source_ending_inside_a_quote_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "email,user_id\na@x.com,alice\nb@x.com,\"bob\nc@x.com,carol\n";
    std::fs::write(dir.path().join("cut.csv"), text).expect("write");
    std::fs::write(dir.path().join("cut.csv.gz"), gzip(text.as_bytes())).expect("write");
    for name in ["cut.csv", "cut.csv.gz"] {
        let file = FileRef::parse(name, dir.path()).expect("url");
        let err = read_ids(
            &file,
            SourceFormat::Auto,
            &ColumnSpec::new("user_id", IdKind::UserId),
        )
        .await
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(name)
                && text.contains("ends inside a quoted field of row 2, which starts on line 3"),
            "{text}"
        );
    }
    // A short row, too: the export's strictness.
    std::fs::write(dir.path().join("short.csv"), "email,user_id\na@x.com\n").expect("write");
    let file = FileRef::parse("short.csv", dir.path()).expect("url");
    let err = read_ids(
        &file,
        SourceFormat::Auto,
        &ColumnSpec::new("user_id", IdKind::UserId),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .ends_with("short.csv: bad row 1 (line 2): expected 2 fields, found 1"),
        "{err}"
    );
}

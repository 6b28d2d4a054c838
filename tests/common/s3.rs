//! The S3-compatible server (moto) that `scripts/test.sh` starts on loopback, reached
//! through boto3 (tests/py/s3_admin.py), independently of the code under test.

use serde_json::Value;

use super::peers::run_python;

/// Endpoint of the server. Tests that need S3 fail loudly without it, never skip.
pub fn endpoint() -> String {
    std::env::var("COHORT_SYNC_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
        panic!("COHORT_SYNC_TEST_S3_ENDPOINT is not set: run the tests with `make test`")
    })
}

/// Creates a bucket with a unique name and returns its name.
pub fn create_bucket(prefix: &str) -> String {
    endpoint();
    let name =
        format!("{}-{}-{}", prefix, std::process::id(), fastrand::u32(..)).to_ascii_lowercase();
    let out = run_python("s3_admin.py", &["create-bucket", &name]);
    assert!(out.contains("created"), "{out}");
    name
}

/// `(key, size)` of every object under `prefix`, sorted by key.
pub fn list(bucket: &str, prefix: &str) -> Vec<(String, u64)> {
    let out = run_python("s3_admin.py", &["list", bucket, prefix]);
    let v: Value = serde_json::from_str(out.trim()).expect("list JSON");
    let mut objects: Vec<(String, u64)> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|o| {
            (
                o[0].as_str().expect("key").to_string(),
                o[1].as_u64().expect("size"),
            )
        })
        .collect();
    objects.sort();
    objects
}

/// The keys under `prefix`, sorted.
pub fn keys(bucket: &str, prefix: &str) -> Vec<String> {
    list(bucket, prefix).into_iter().map(|(k, _)| k).collect()
}

/// An object's bytes.
pub fn get(bucket: &str, key: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("object");
    run_python(
        "s3_admin.py",
        &["get", bucket, key, out.to_str().expect("utf-8 path")],
    );
    std::fs::read(&out).expect("downloaded object")
}

/// Uploads a local file as `key`.
pub fn put(bucket: &str, key: &str, file: &std::path::Path) {
    let out = run_python(
        "s3_admin.py",
        &["put", bucket, key, file.to_str().expect("utf-8 path")],
    );
    assert!(out.contains("put"), "{out}");
}

/// `(key, parts uploaded)` of the multipart uploads in progress.
pub fn uploads(bucket: &str) -> Vec<(String, u64)> {
    let out = run_python("s3_admin.py", &["uploads", bucket]);
    let v: Value = serde_json::from_str(out.trim()).expect("uploads JSON");
    v.as_array()
        .expect("array")
        .iter()
        .map(|u| {
            (
                u[0].as_str().expect("key").to_string(),
                u[1].as_u64().expect("parts"),
            )
        })
        .collect()
}

/// The bytes at `target`: an `s3://bucket/key` URL or a local path.
pub fn read(target: &str) -> Vec<u8> {
    match target.strip_prefix("s3://") {
        Some(rest) => {
            let (bucket, key) = rest.split_once('/').expect("s3://bucket/key");
            get(bucket, key)
        }
        None => std::fs::read(target).unwrap_or_else(|e| panic!("reading {target}: {e}")),
    }
}

//! The Azure Blob Storage emulator (Azurite) that `scripts/with_stores.sh` starts, reached
//! through pyarrow's Azure filesystem (tests/py/az_admin.py), independently of the code
//! under test.

use super::peers::run_python;

/// Creates a container with a unique name and returns its name.
pub fn create_container(prefix: &str) -> String {
    assert!(
        std::env::var("COHORT_SYNC_TEST_AZURE_ENDPOINT").is_ok(),
        "COHORT_SYNC_TEST_AZURE_ENDPOINT is not set: run the tests with `make test`"
    );
    let name =
        format!("{}-{}-{}", prefix, std::process::id(), fastrand::u32(..)).to_ascii_lowercase();
    let out = run_python("az_admin.py", &["create-container", &name]);
    assert!(out.contains("created"), "{out}");
    name
}

/// Uploads a local file to `container/key`.
pub fn put(container: &str, key: &str, file: &std::path::Path) {
    let out = run_python(
        "az_admin.py",
        &["put", container, key, &file.to_string_lossy()],
    );
    assert!(out.contains("put"), "{out}");
}

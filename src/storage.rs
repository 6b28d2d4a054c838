//! Opens a storage location given as a URL or path: a local directory, `s3://bucket/prefix`,
//! `gs://bucket/prefix`, `az://container/prefix` or
//! `abfss://container@account.dfs.core.windows.net/prefix` (credentials, region and
//! endpoint from each cloud's standard environment, as object_store reads it). Output,
//! state and reverse sources all go through here.
//!
//! [`check_location`] decides what a location may be, for pipeline files and `open` alike:
//! one of those URLs (bucket or container names checked by each cloud's rules),
//! `file:///absolute/path`, or a local path. Anything that starts like a URL scheme
//! (`name:`) and is not one of those is refused rather than taken as a folder name — so
//! `s3:/bucket/x`, `s3:bucket`, `S3://b`, `s3//b`, `gcs://b` or `file:/x` fail naming the
//! typo instead of writing to a local folder called `s3:`. A local path that really starts
//! with `word:` is written `./word:…`.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;

/// A store plus the key prefix under which everything of this location lives.
#[derive(Clone)]
pub struct Location {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
    /// The URL or path as the user wrote it (for messages; holds no secret).
    pub display: String,
    /// Whether the store is a local directory (no conditional overwrite support).
    pub is_local: bool,
    /// The directory, when the store is local.
    pub local_dir: Option<PathBuf>,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Location")
            .field("display", &self.display)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Location {
    /// The key `prefix/relative` (relative given as `/`-separated, already safe parts).
    pub fn key(&self, relative: &str) -> Path {
        let mut parts: Vec<String> = self
            .prefix
            .parts()
            .map(|p| p.as_ref().to_string())
            .collect();
        parts.extend(
            relative
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
        Path::from_iter(parts)
    }

    /// A readable form of a key of this location, for messages and reports.
    pub fn describe(&self, key: &Path) -> String {
        if self.is_local {
            let base = self.display.trim_end_matches('/');
            let rel = key.as_ref();
            let prefix = self.prefix.as_ref();
            let rel = rel
                .strip_prefix(prefix)
                .unwrap_or(rel)
                .trim_start_matches('/');
            format!("{base}/{rel}")
        } else {
            let url = self.display.trim_end_matches('/');
            let bucket_root = url.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
            format!("{bucket_root}/{key}")
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open {url}: {message}")]
    Open { url: String, message: String },
    #[error(
        "unsupported storage URL scheme in {url:?}: use a local path, s3://, gs://, az:// or abfss://"
    )]
    Scheme { url: String },
    #[error("{message}")]
    Invalid { message: String },
}

/// Checks a location (see the module notes); the message names the problem and what to
/// write instead.
pub fn check_location(s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err("empty location: give a local path or s3://bucket/prefix".into());
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(format!(
            "{s:?} holds the control character {c:?}: give a local path or s3://bucket/prefix"
        ));
    }
    if let Some(cloud) = CloudUrl::parse(s) {
        return cloud.map(|_| ());
    }
    if let Some(path) = s.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(format!(
                "{s:?}: a file:// URL needs an absolute path (file:///dir)"
            ));
        }
        return Ok(());
    }
    let lower = s.to_ascii_lowercase();
    let s3_like = ["s3:", "s3//", "s3a:", "s3n:"]
        .iter()
        .any(|p| lower.starts_with(p));
    if s3_like || lower.starts_with("file:") {
        let (proper, rest) = if s3_like {
            let rest = s
                .split_once(':')
                .map(|(_, r)| r)
                .or_else(|| s.get(3..))
                .unwrap_or("");
            ("s3://", rest.trim_start_matches('/'))
        } else {
            ("file:///", s.get(5..).unwrap_or("").trim_start_matches('/'))
        };
        return Err(format!(
            "{s:?} is not a valid location: did you mean \"{proper}{rest}\"? (URLs are written s3://bucket/prefix or file:///abs/path, lowercase; a local folder with such a name is written ./{s})"
        ));
    }
    if let Some((scheme, _)) = url_scheme(s) {
        return Err(format!(
            "unsupported URL scheme {scheme:?} in {s:?}: use a local path, file:///abs/path, s3://bucket/prefix, gs://bucket/prefix, az://container/prefix or abfss://container@account.dfs.core.windows.net/prefix (a local folder with such a name is written ./{s})"
        ));
    }
    Ok(())
}

/// `Some((scheme, rest))` when `s` starts like a URL (`name:` with a scheme's characters,
/// at least two of them: a one-letter `C:` is a drive, not a scheme).
fn url_scheme(s: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = s.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    let ok = scheme.len() >= 2
        && first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    ok.then_some((scheme, rest))
}

/// Opens `url`: `s3://bucket[/prefix]`, `file:///abs/dir`, or a local path (created if
/// missing; relative paths are taken relative to `base_dir`).
pub fn open(url: &str, base_dir: &FsPath) -> Result<Location, StorageError> {
    check_location(url).map_err(|message| {
        if message.starts_with("unsupported URL scheme") {
            StorageError::Scheme { url: url.into() }
        } else {
            StorageError::Invalid { message }
        }
    })?;
    match CloudUrl::parse(url) {
        Some(Ok(cloud)) => return open_cloud(url, cloud),
        Some(Err(message)) => return Err(StorageError::Invalid { message }),
        None => {}
    }
    if url.contains("://") && !url.starts_with("file://") {
        return Err(StorageError::Scheme { url: url.into() });
    }
    let local = url.strip_prefix("file://").unwrap_or(url);
    open_dir(url, PathBuf::from(local), base_dir)
}

/// Opens a local directory (created if missing; relative to `base_dir`).
fn open_dir(url: &str, mut dir: PathBuf, base_dir: &FsPath) -> Result<Location, StorageError> {
    if dir.is_relative() {
        dir = base_dir.join(dir);
    }
    std::fs::create_dir_all(&dir).map_err(|source| StorageError::CreateDir {
        path: dir.display().to_string(),
        source,
    })?;
    let store = LocalFileSystem::new_with_prefix(&dir)
        .map_err(|e| StorageError::Open {
            url: url.into(),
            message: e.to_string(),
        })?
        .with_automatic_cleanup(true);
    Ok(Location {
        store: Arc::new(store),
        prefix: Path::default(),
        display: dir.display().to_string(),
        is_local: true,
        local_dir: Some(dir),
    })
}

/// Opens a local file's parent directory and returns the file's key in it.
pub fn open_local_file(file: &FsPath) -> Result<(Location, Path), StorageError> {
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .ok_or_else(|| StorageError::Open {
            url: file.display().to_string(),
            message: "not a file path".into(),
        })?;
    // A path given as a file, never a URL: no scheme to read in it.
    let loc = open_dir(&parent.to_string_lossy(), parent.clone(), FsPath::new("."))?;
    let key = loc.key(&name);
    Ok((loc, key))
}

/// The schemes of the cloud object stores a location may name.
pub const CLOUD_SCHEMES: &[&str] = &["s3", "gs", "az", "abfss"];

/// Whether `url` names a cloud object store (`s3://`, `gs://`, `az://`, `abfss://`).
pub fn is_cloud_url(url: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(scheme, _)| CLOUD_SCHEMES.contains(&scheme))
}

/// A cloud URL naming one object, split into its bucket's URL (`scheme://bucket`, or
/// `abfss://container@account.dfs.core.windows.net`) and the key under it; `None` when
/// `url` is not a cloud URL, an error when it names no key.
pub fn split_object_url(url: &str) -> Option<Result<(String, String), String>> {
    if !is_cloud_url(url) {
        return None;
    }
    let (scheme, rest) = url.split_once("://")?;
    Some(
        rest.split_once('/')
            .filter(|(_, key)| !key.trim_matches('/').is_empty())
            .map(|(bucket, key)| {
                (
                    format!("{scheme}://{bucket}"),
                    key.trim_matches('/').to_string(),
                )
            })
            .ok_or_else(|| format!("{url}: a {scheme}:// object needs a key after the bucket")),
    )
}

/// A cloud object-store URL, parsed: which cloud, the bucket (or container) and the prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CloudUrl {
    S3 {
        bucket: String,
        prefix: String,
    },
    Gcs {
        bucket: String,
        prefix: String,
    },
    Azure {
        container: String,
        /// From an `abfss://container@account.dfs.core.windows.net` URL; `az://` takes
        /// the account from `AZURE_STORAGE_ACCOUNT_NAME`.
        account: Option<String>,
        prefix: String,
    },
}

impl CloudUrl {
    /// `None` when `s` is not a cloud URL; `Some(Err)` when it is one with a bad name.
    fn parse(s: &str) -> Option<Result<CloudUrl, String>> {
        let split = |rest: &str| -> (String, String) {
            let (head, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            (head.to_string(), prefix.to_string())
        };
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = split(rest);
            return Some(
                check_bucket(s, "S3 bucket", &bucket, true)
                    .map(|()| CloudUrl::S3 { bucket, prefix }),
            );
        }
        if let Some(rest) = s.strip_prefix("gs://") {
            let (bucket, prefix) = split(rest);
            return Some(
                check_bucket(s, "GCS bucket", &bucket, true)
                    .map(|()| CloudUrl::Gcs { bucket, prefix }),
            );
        }
        if let Some(rest) = s.strip_prefix("az://") {
            let (container, prefix) = split(rest);
            return Some(
                check_bucket(s, "Azure container", &container, false).map(|()| CloudUrl::Azure {
                    container,
                    account: None,
                    prefix,
                }),
            );
        }
        if let Some(rest) = s.strip_prefix("abfss://") {
            let (authority, prefix) = split(rest);
            let parsed = authority
                .split_once('@')
                .and_then(|(container, host)| {
                    let account = host.strip_suffix(".dfs.core.windows.net")?;
                    Some((container.to_string(), account.to_string()))
                })
                .ok_or_else(|| {
                    format!(
                        "{s:?}: write abfss://container@account.dfs.core.windows.net/prefix (or az://container/prefix)"
                    )
                })
                .and_then(|(container, account)| {
                    check_bucket(s, "Azure container", &container, false)?;
                    let ok_account = (3..=24).contains(&account.len())
                        && account
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
                    if !ok_account {
                        return Err(format!(
                            "invalid Azure storage account {account:?} in {s:?} (3 to 24 lowercase letters and digits)"
                        ));
                    }
                    Ok(CloudUrl::Azure {
                        container,
                        account: Some(account),
                        prefix,
                    })
                });
            return Some(parsed);
        }
        None
    }

    fn prefix(&self) -> &str {
        match self {
            CloudUrl::S3 { prefix, .. }
            | CloudUrl::Gcs { prefix, .. }
            | CloudUrl::Azure { prefix, .. } => prefix,
        }
    }
}

/// A bucket (`dots`: S3 and GCS allow `.`) or container name: 3 to 63 of lowercase
/// letters, digits and `-` (GCS also `_`), starting and ending with a letter or digit.
fn check_bucket(url: &str, what: &str, name: &str, dots: bool) -> Result<(), String> {
    if name.is_empty() {
        let scheme = url.split("://").next().unwrap_or("s3");
        let noun = what.rsplit(' ').next().unwrap_or("bucket");
        return Err(format!(
            "{url:?} has no {noun}: write {scheme}://{noun}/prefix"
        ));
    }
    let gcs = what.starts_with("GCS");
    let ok = (3..=63).contains(&name.len())
        && name.chars().all(|c| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || c == '-'
                || (dots && c == '.')
                || (gcs && c == '_')
        })
        && !name.starts_with(['-', '.', '_'])
        && !name.ends_with(['-', '.', '_']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} name {name:?} (3 to 63 characters: lowercase letters, digits, '-'{}{})",
            if dots { ", '.'" } else { "" },
            if gcs { ", '_'" } else { "" }
        ))
    }
}

fn open_cloud(url: &str, cloud: CloudUrl) -> Result<Location, StorageError> {
    let failed = |e: object_store::Error| StorageError::Open {
        url: url.into(),
        message: e.to_string(),
    };
    let store: Arc<dyn ObjectStore> = match &cloud {
        CloudUrl::S3 { bucket, .. } => Arc::new(s3_builder(bucket).build().map_err(failed)?),
        CloudUrl::Gcs { bucket, .. } => Arc::new(
            GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(failed)?,
        ),
        CloudUrl::Azure {
            container, account, ..
        } => {
            let mut builder = MicrosoftAzureBuilder::from_env().with_container_name(container);
            if let Some(account) = account {
                builder = builder.with_account(account);
            }
            Arc::new(builder.build().map_err(failed)?)
        }
    };
    let prefix = Path::from_iter(cloud.prefix().split('/').filter(|s| !s.is_empty()));
    Ok(Location {
        store,
        prefix,
        display: url.to_string(),
        is_local: false,
        local_dir: None,
    })
}

/// S3 settings from the AWS environment; an explicit endpoint (a local S3-compatible
/// server) may be plain HTTP; region `us-east-1` when none is set.
fn s3_builder(bucket: &str) -> AmazonS3Builder {
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    let endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .or_else(|_| std::env::var("AWS_ENDPOINT"))
        .ok();
    if let Some(ep) = endpoint {
        if ep.starts_with("http://") {
            builder = builder.with_allow_http(true);
        }
        builder = builder.with_endpoint(ep);
    }
    if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
        builder = builder.with_region("us-east-1");
    } else if let Ok(region) = std::env::var("AWS_REGION") {
        builder = builder.with_region(region);
    }
    builder
}

/// Creates (or truncates) `path` readable and writable by its owner only (mode 0600 on
/// unix, whatever the umask): for files holding people's ids (reverse lists, run reports).
pub fn create_private(path: &FsPath) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let file = options.open(path)?;
        // An existing file keeps its mode on open: set it.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        Ok(file)
    }
    #[cfg(not(unix))]
    {
        options.open(path)
    }
}

/// Writes `bytes` to `path` through a private temporary file renamed into place: never a
/// half-written file, and the file is readable by its owner only (see [`create_private`]).
pub fn write_private(path: &FsPath, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut f = create_private(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Creates directory `path` (not its parents) accessible by its owner only (0700 on unix).
pub fn create_private_dir(path: &FsPath) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn private_files_are_the_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ids.txt");
        std::fs::write(&path, "old").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write_private(&path, b"a\nb\n").expect("write");
        let meta = std::fs::metadata(&path).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).expect("read"), b"a\nb\n");
        let sub = dir.path().join("spill");
        create_private_dir(&sub).expect("mkdir");
        let mode = std::fs::metadata(&sub).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn keys_join_the_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let loc = open("out", dir.path()).expect("open");
        assert!(dir.path().join("out").is_dir());
        assert_eq!(loc.key("a/b.parquet").as_ref(), "a/b.parquet");
        assert!(loc.describe(&loc.key("a/b")).ends_with("/out/a/b"));
    }

    #[test]
    fn typos_of_urls_are_not_folders() {
        for bad in [
            "s3:/bucket/x",
            "s3:bucket/x",
            "S3://bucket/x",
            "s3//bucket/x",
            "s3:",
            "s3a://bucket/x",
            "S3:/bucket",
            "file:/tmp/x",
            "FILE:///tmp/x",
            "gcs://bucket/x",
            "https://host/x",
            "az:container",
        ] {
            let e = check_location(bad).expect_err(bad);
            assert!(e.contains(bad), "{bad}: {e}");
        }
        assert!(check_location("s3:/bucket/x").is_err_and(|e| e.contains("s3://bucket/x")));
        assert!(check_location("file:/tmp/x").is_err_and(|e| e.contains("file:///tmp/x")));
        for ok in [
            "out",
            "./s3:",
            "s3/exports",
            "/tmp/a:b",
            "C:/x",
            "s3://bucket/x",
            "file:///tmp",
        ] {
            assert_eq!(check_location(ok), Ok(()), "{ok}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(open("s3:/bucket/x", dir.path()).is_err());
        assert!(
            !dir.path().join("s3:").exists(),
            "no folder named after the typo"
        );
    }

    #[test]
    fn rejects_unknown_schemes_and_short_buckets() {
        let dir = std::path::Path::new(".");
        assert!(matches!(
            open("gcs://bucket/x", dir),
            Err(StorageError::Scheme { .. })
        ));
        assert!(matches!(
            open("s3://ab/x", dir),
            Err(StorageError::Invalid { .. })
        ));
    }

    #[test]
    fn cloud_urls_name_their_bucket_or_container() {
        assert_eq!(
            CloudUrl::parse("gs://my_bucket/a/b"),
            Some(Ok(CloudUrl::Gcs {
                bucket: "my_bucket".into(),
                prefix: "a/b".into()
            }))
        );
        assert_eq!(
            CloudUrl::parse("abfss://lake@acct01.dfs.core.windows.net/cohorts"),
            Some(Ok(CloudUrl::Azure {
                container: "lake".into(),
                account: Some("acct01".into()),
                prefix: "cohorts".into()
            }))
        );
        assert_eq!(
            CloudUrl::parse("az://lake"),
            Some(Ok(CloudUrl::Azure {
                container: "lake".into(),
                account: None,
                prefix: String::new()
            }))
        );
        assert_eq!(CloudUrl::parse("out/x"), None);
        for (bad, says) in [
            ("gs:///x", "has no bucket"),
            ("az://Lake/x", "invalid Azure container name \"Lake\""),
            ("az://my.lake/x", "invalid Azure container"),
            (
                "abfss://lake@acct.blob.core.windows.net/x",
                "abfss://container@account",
            ),
            (
                "abfss://lake@ACCT.dfs.core.windows.net/x",
                "invalid Azure storage account",
            ),
            ("s3://-bucket/x", "invalid S3 bucket name"),
        ] {
            let e = check_location(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn s3_prefix_is_kept() {
        let loc = open("s3://my-bucket/exports/daily/", std::path::Path::new("."))
            .expect("s3 location builds without network");
        assert_eq!(loc.prefix.as_ref(), "exports/daily");
        assert_eq!(loc.key("x.json").as_ref(), "exports/daily/x.json");
        assert_eq!(
            loc.describe(&loc.key("x.json")),
            "s3://my-bucket/exports/daily/x.json"
        );
    }
}

//! Opens a storage location given as a URL or path: a local directory or `s3://bucket/prefix`
//! (credentials, region and endpoint from the standard AWS environment variables).
//! Output, state and reverse sources all go through here.
//!
//! [`check_location`] decides what a location may be, for pipeline files and `open` alike:
//! `s3://bucket[/prefix]` (bucket 3 to 63 of `a-z 0-9 . -`), `file:///absolute/path`, or a
//! local path. Anything that starts like a URL scheme (`name:`) and is not one of those is
//! refused rather than taken as a folder name — so `s3:/bucket/x`, `s3:bucket`, `S3://b`,
//! `s3//b`, `gs://b` or `file:/x` fail naming the typo instead of writing to a local
//! folder called `s3:`. A local path that really starts with `word:` is written `./word:…`.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
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
    #[error("unsupported storage URL scheme in {url:?}: use a local path or s3://bucket/prefix")]
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
    if let Some(rest) = s.strip_prefix("s3://") {
        let bucket = rest.split('/').next().unwrap_or("");
        if bucket.is_empty() {
            return Err(format!("{s:?} has no bucket: write s3://bucket/prefix"));
        }
        let ok = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !ok {
            return Err(format!(
                "invalid S3 bucket name {bucket:?} (3 to 63 characters: lowercase letters, digits, '-', '.')"
            ));
        }
        return Ok(());
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
            "unsupported URL scheme {scheme:?} in {s:?}: use a local path, file:///abs/path or s3://bucket/prefix (a local folder with such a name is written ./{s})"
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
    if let Some(rest) = url.strip_prefix("s3://") {
        return open_s3(url, rest);
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

fn open_s3(url: &str, rest: &str) -> Result<Location, StorageError> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.len() < 3 {
        return Err(StorageError::Open {
            url: url.into(),
            message: "bucket name must have at least 3 characters".into(),
        });
    }
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    let endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .or_else(|_| std::env::var("AWS_ENDPOINT"))
        .ok();
    if let Some(ep) = endpoint {
        // An explicitly configured plain-HTTP endpoint (a local S3-compatible server).
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
    let store = builder.build().map_err(|e| StorageError::Open {
        url: url.into(),
        message: e.to_string(),
    })?;
    let prefix = Path::from_iter(prefix.split('/').filter(|s| !s.is_empty()));
    Ok(Location {
        store: Arc::new(store),
        prefix,
        display: url.to_string(),
        is_local: false,
        local_dir: None,
    })
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
            "gs://bucket/x",
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
            open("gs://bucket/x", dir),
            Err(StorageError::Scheme { .. })
        ));
        assert!(matches!(
            open("s3://ab/x", dir),
            Err(StorageError::Invalid { .. })
        ));
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

//! Checked string values of pipeline files. Each is deserialized from a string and rejects a
//! bad one right there, so the error points at that value in the file.

use std::fmt;

use std::marker::PhantomData;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};

use crate::runner::layout::{self, LayoutValues, PLACEHOLDERS};

/// A credential read from the file (usually through `${VAR}`). `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, JsonSchema)]
#[schemars(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret value, for building [`crate::amplitude::Credentials`].
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Secret {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.trim().is_empty() {
            return Err("credential is empty (an empty environment variable?)".into());
        }
        Ok(Secret(s))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where a directory tree lives: a local path (relative to the current directory) or
/// `s3://bucket[/prefix]` (`file:///abs/path` is accepted too). Opened by
/// [`crate::storage::open`].
#[derive(Debug, Clone, PartialEq, Eq, JsonSchema)]
#[schemars(transparent)]
pub struct StorageUrl(String);

impl StorageUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is an `s3://` URL.
    pub fn is_s3(&self) -> bool {
        self.0.starts_with("s3://")
    }

    /// A default location given as a relative local path.
    pub(crate) fn local_default(path: &str) -> Self {
        StorageUrl(path.to_string())
    }
}

impl fmt::Display for StorageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for StorageUrl {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        check_location(&s)?;
        Ok(StorageUrl(s))
    }
}

/// One file: a local path or `s3://bucket/key` (`file:///abs/file` too).
#[derive(Debug, Clone, PartialEq, Eq, JsonSchema)]
#[schemars(transparent)]
pub struct SourceUrl(String);

impl SourceUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is an `s3://` URL.
    pub fn is_s3(&self) -> bool {
        self.0.starts_with("s3://")
    }

    /// The last path level (the file name), used to tell the format by extension.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for SourceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for SourceUrl {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        check_location(&s)?;
        let no_key = matches!(crate::storage::split_object_url(&s), Some(Err(_)));
        if no_key || s.ends_with('/') {
            return Err(format!(
                "{s:?} names a directory; give a file (s3://bucket/key or a path)"
            ));
        }
        Ok(SourceUrl(s))
    }
}

/// Accepts a local path, `file:///...` or a cloud URL (`s3://`, `gs://`, `az://`, `abfss://`;
/// [`crate::storage::check_location`]).
fn check_location(s: &str) -> Result<(), String> {
    crate::storage::check_location(s)
}

/// The Amplitude API root: `https://host[:port][/path]`, or `http://` (the emulator on
/// loopback; another host only with `connection.allow_insecure_http`, checked with the
/// rest of `[connection]`). Refused here: another scheme, user info (credentials go in
/// `api_key` / `secret_key`), a query or fragment (a path is appended to the root), a
/// port outside 1..=65535 or empty, path segments `.`/`..`/empty or with `%`, `\`, and
/// any whitespace or control character — each a way for requests to go elsewhere than
/// written.
#[derive(Debug, Clone, PartialEq, Eq, JsonSchema)]
#[schemars(transparent)]
pub struct BaseUrl(String);

impl BaseUrl {
    /// The URL without a trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether requests would travel as plain HTTP to a host that is not loopback.
    pub fn is_insecure(&self) -> bool {
        match self.0.strip_prefix("http://") {
            Some(rest) => !crate::amplitude::is_loopback_host(host_of(authority_of(rest))),
            None => false,
        }
    }
}

/// `host[:port]` of what follows `scheme://`.
fn authority_of(rest: &str) -> &str {
    rest.split(['/', '?', '#']).next().unwrap_or("")
}

/// The host of an authority (brackets kept for IPv6).
fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

impl TryFrom<String> for BaseUrl {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let shown = crate::text::escape(&s).into_owned();
        let bad = |why: &str| Err(format!("base_url \"{shown}\" {why}"));
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad("holds whitespace or a control character");
        }
        let Some(rest) = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"))
        else {
            return bad(
                "must start with http:// or https:// (lowercase; http:// is for a loopback host such as the emulator's)",
            );
        };
        if s.contains('?') {
            return bad(
                "must not have a query (?...): it is the root the API paths are appended to",
            );
        }
        if s.contains('#') {
            return bad("must not have a fragment (#...)");
        }
        let authority = authority_of(rest);
        if authority.contains('@') {
            return bad("must not hold user info (user@host): set connection.api_key / secret_key");
        }
        let host = host_of(authority);
        if host.is_empty() || host == "[]" {
            return bad("needs a host, like https://amplitude.com or http://127.0.0.1:8080");
        }
        let host_ok = match host.strip_prefix('[') {
            Some(v6) => v6
                .strip_suffix(']')
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
            None => host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')),
        };
        if !host_ok {
            return bad(
                "has a host with a character other than letters, digits, '.' and '-' (or an IPv6 address in brackets)",
            );
        }
        if let Some(port) = authority[host.len()..].strip_prefix(':') {
            let ok = !port.is_empty()
                && port.len() <= 5
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u32>().is_ok_and(|p| (1..=65_535).contains(&p));
            if !ok {
                return bad(&format!(
                    "has the port {:?}: a port is 1..=65535",
                    crate::text::escape(port)
                ));
            }
        } else if authority.len() != host.len() {
            return bad("has text after the host that is not a :port");
        }
        let path = &rest[authority.len()..];
        let path = path.strip_suffix('/').unwrap_or(path);
        if !path.is_empty() {
            let segments_ok = path.strip_prefix('/').is_some_and(|p| {
                p.split('/').all(|seg| {
                    !seg.is_empty()
                        && seg != "."
                        && seg != ".."
                        && seg.bytes().all(|b| {
                            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
                        })
                })
            });
            if !segments_ok {
                return bad(
                    "has a path with an empty, '.' or '..' segment or a character other than letters, digits, '-', '_', '.', '~' (a path is taken as written)",
                );
            }
        }
        if reqwest::Url::parse(&s).is_err() {
            return bad("is not a valid URL");
        }
        Ok(BaseUrl(s.trim_end_matches('/').to_string()))
    }
}

/// An object key template (see [`crate::runner::layout`]): placeholders from
/// [`PLACEHOLDERS`], must contain `{cohort_id}` so that cohorts never share a key.
#[derive(Debug, Clone, PartialEq, Eq, JsonSchema)]
#[schemars(transparent)]
pub struct Layout(String);

impl Layout {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Renders the layout for one cohort file.
    pub fn render(&self, values: &LayoutValues<'_>) -> Result<String, String> {
        layout::render(&self.0, values)
    }
}

/// Where export snapshots go unless the file says otherwise.
pub const DEFAULT_LAYOUT: &str = "cohort_id={cohort_id}/snapshot_date={date}/part-0.parquet";

impl Layout {
    /// The default `output.changes_layout`.
    pub fn changes_default() -> Layout {
        Layout(crate::runner::changes::DEFAULT_CHANGES_LAYOUT.to_string())
    }
}

impl Default for Layout {
    fn default() -> Self {
        Layout(DEFAULT_LAYOUT.to_string())
    }
}

impl TryFrom<String> for Layout {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.starts_with('/') {
            return Err(format!("layout {s:?} must be relative (no leading '/')"));
        }
        let sample = LayoutValues {
            cohort_id: "c",
            cohort_name: "n",
            date: "2000-01-01",
            request_id: "r",
            run_id: "u",
        };
        layout::render(&s, &sample)?;
        if !s.contains("{cohort_id}") {
            return Err(format!(
                "layout {s:?} must contain {{cohort_id}} so that cohorts never overwrite each other (placeholders: {})",
                PLACEHOLDERS.join(", ")
            ));
        }
        Ok(Layout(s))
    }
}

/// A freshness target: how old a cohort's last export may get before a change of the
/// cohort is worth a download. A duration such as `"24h"`, `"1d 12h"`, `"90m"` (humantime
/// units: s, m, h, d, w), or `"none"` (every change is exported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, JsonSchema)]
#[schemars(transparent)]
pub struct Refresh(#[schemars(with = "String")] Option<std::time::Duration>);

/// Longest freshness target: a year.
pub const MAX_REFRESH: std::time::Duration = std::time::Duration::from_secs(366 * 86_400);

impl Refresh {
    /// The target; `None` for `"none"` (or zero).
    pub fn target(&self) -> Option<std::time::Duration> {
        self.0
    }
}

impl TryFrom<String> for Refresh {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let text = s.trim();
        if text.eq_ignore_ascii_case("none") {
            return Ok(Refresh(None));
        }
        let d = humantime::parse_duration(text).map_err(|e| {
            format!(
                "refresh {s:?} is not a duration such as \"24h\", \"6h\", \"7d\" or \"none\" ({e})"
            )
        })?;
        if d > MAX_REFRESH {
            return Err(format!("refresh {s:?} is longer than a year (366d)"));
        }
        Ok(Refresh((!d.is_zero()).then_some(d)))
    }
}

/// A glob pattern on cohort names (`*`, `?`, `[abc]`; case-sensitive).
#[derive(Clone, JsonSchema)]
#[schemars(transparent)]
pub struct NamePattern(#[schemars(with = "String")] glob::Pattern);

impl NamePattern {
    pub fn pattern(&self) -> &glob::Pattern {
        &self.0
    }
}

impl fmt::Debug for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0.as_str())
    }
}

impl TryFrom<String> for NamePattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        glob::Pattern::new(&s).map(NamePattern).map_err(|e| {
            format!(
                "invalid name pattern {s:?}: {} at character {}",
                e.msg,
                e.pos + 1
            )
        })
    }
}

/// Deserializes a checked string through a visitor, so that a rejected value is reported
/// at its own position (also inside arrays).
struct CheckedVisitor<T>(PhantomData<T>);

impl<T: TryFrom<String, Error = String>> serde::de::Visitor<'_> for CheckedVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        T::try_from(v.to_string()).map_err(E::custom)
    }
}

macro_rules! checked_string {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str(CheckedVisitor(PhantomData))
            }
        }
    )*};
}

checked_string!(
    Secret,
    StorageUrl,
    SourceUrl,
    BaseUrl,
    Layout,
    NamePattern,
    Refresh
);

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(s: &str) -> Result<StorageUrl, String> {
        StorageUrl::try_from(s.to_string())
    }

    #[test]
    fn storage_urls() {
        for ok in [
            "out/cohorts",
            "/abs",
            "s3://bucket",
            "s3://my-bucket/a/b",
            "file:///tmp/x",
        ] {
            assert!(storage(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "ftp://host/x",
            "s3://",
            "s3:///x",
            "s3://B/x",
            "file://rel",
            "gs://b/x",
        ] {
            assert!(storage(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn file_urls_need_a_file() {
        assert!(SourceUrl::try_from("s3://bucket/crm/vip.csv".to_string()).is_ok());
        assert!(SourceUrl::try_from("s3://bucket".to_string()).is_err());
        assert!(SourceUrl::try_from("s3://bucket/".to_string()).is_err());
        assert!(SourceUrl::try_from("crm/".to_string()).is_err());
        let f = SourceUrl::try_from("crm/vip.csv.gz".to_string()).expect("url");
        assert_eq!(f.file_name(), "vip.csv.gz");
    }

    #[test]
    fn base_urls() {
        let b = BaseUrl::try_from("http://127.0.0.1:8080/".to_string()).expect("url");
        assert_eq!(b.as_str(), "http://127.0.0.1:8080");
        assert!(!b.is_insecure());
        for ok in [
            "https://amplitude.com",
            "https://proxy.example:8443/amplitude/v1/",
            "http://localhost:1",
            "http://[::1]:65535",
        ] {
            let b = BaseUrl::try_from(ok.to_string()).expect(ok);
            assert!(!b.is_insecure(), "{ok}");
        }
        let proxy = BaseUrl::try_from("http://some-proxy.example:8080".to_string()).expect("http");
        assert!(proxy.is_insecure());
        for bad in [
            "127.0.0.1:8080",
            "ftp://x",
            "http://",
            "https://u:p@host",
            "https://host@evil.example",
            "http://h:99999",
            "http://h:0",
            "http://h:",
            "http://h:80x",
            "https://h/?x=1",
            "https://h?x=1",
            "https://h#frag",
            "https://h/a/../b",
            "https://h/./b",
            "https://h//b",
            "https://h/a%2F..",
            "https://h/a\\b",
            "https://h/a b",
            "https://h\x1b/x",
            " https://h",
            "HTTPS://h",
            "https://[::1",
            "https://amplitude.com\\..\\x",
            "https://h_x.example",
        ] {
            assert!(BaseUrl::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }

    #[test]
    fn layouts() {
        assert!(Layout::try_from(DEFAULT_LAYOUT.to_string()).is_ok());
        assert!(Layout::try_from("{cohort_id}/{run_id}.parquet".to_string()).is_ok());
        for bad in [
            "{date}.parquet",
            "{cohort_id}/{cohort}.parquet",
            "/{cohort_id}",
            "{cohort_id}//x",
            "{cohort_id",
        ] {
            assert!(Layout::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }

    #[test]
    fn refresh_targets() {
        let r = |s: &str| Refresh::try_from(s.to_string());
        assert_eq!(
            r("24h").expect("24h").target(),
            Some(std::time::Duration::from_secs(86_400))
        );
        assert_eq!(
            r("1d 12h").expect("1d 12h").target(),
            Some(std::time::Duration::from_secs(129_600))
        );
        assert_eq!(r("none").expect("none").target(), None);
        assert_eq!(r("0s").expect("0s").target(), None);
        assert!(r("daily").unwrap_err().contains("\"24h\""));
        assert!(r("400d").unwrap_err().contains("year"));
    }

    #[test]
    fn secrets_are_redacted() {
        let s = Secret::try_from("hunter2".to_string()).expect("secret");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert!(Secret::try_from(" ".to_string()).is_err());
    }
}

//! Where a storage URL points, spelled one way, so that URLs written differently can be
//! compared: `s3://bucket/a/b` (any cloud scheme) without empty levels or a trailing `/`; a local path made
//! absolute against the current directory, `file://` dropped, `.` and `..` resolved
//! lexically (symbolic links are not followed: two spellings of one directory through a
//! link are not seen as the same).

use std::path::{Component, Path, PathBuf};

/// A normalised location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Place(String);

impl Place {
    /// `url` as written in a pipeline file (already checked: a local path, `file:///…` or
    /// `s3://bucket[/…]`); relative paths are taken against `cwd`.
    pub fn new(url: &str, cwd: &Path) -> Self {
        let url = url.trim();
        if let Some((scheme, rest)) = url
            .split_once("://")
            .filter(|_| crate::storage::is_cloud_url(url))
        {
            let mut out = format!("{scheme}:/");
            for level in rest.split('/').filter(|l| !l.is_empty()) {
                out.push('/');
                out.push_str(level);
            }
            return Place(out);
        }
        let local = url.strip_prefix("file://").unwrap_or(url);
        let path = Path::new(local);
        let full: PathBuf = if path.is_absolute() {
            path.to_path_buf()
        } else {
            cwd.join(path)
        };
        let mut rooted = false;
        let mut levels: Vec<String> = Vec::new();
        for c in full.components() {
            match c {
                Component::Prefix(p) => levels.push(p.as_os_str().to_string_lossy().into_owned()),
                Component::RootDir => rooted = true,
                Component::CurDir => {}
                Component::ParentDir => {
                    if levels.last().is_some_and(|l| l != "..") {
                        levels.pop();
                    } else if !rooted {
                        levels.push("..".into());
                    }
                }
                Component::Normal(n) => levels.push(n.to_string_lossy().into_owned()),
            }
        }
        let joined = levels.join("/");
        Place(if rooted { format!("/{joined}") } else { joined })
    }

    /// Whether `other` is this location or inside it.
    pub fn contains(&self, other: &Place) -> bool {
        if self.0 == other.0 {
            return true;
        }
        let mut prefix = self.0.clone();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        other.0.starts_with(&prefix)
    }

    /// Whether one of the two is the other or inside it.
    pub fn overlaps(&self, other: &Place) -> bool {
        self.contains(other) || other.contains(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(url: &str) -> Place {
        Place::new(url, Path::new("/work/dir"))
    }

    #[test]
    fn spellings_of_one_location_are_equal() {
        assert_eq!(place("out"), place("/work/dir/out/"));
        assert_eq!(place("./out//"), place("file:///work/dir/out"));
        assert_eq!(place("../dir/out"), place("out/x/.."));
        assert_eq!(place("s3://b-1/a//b/"), place("s3://b-1/a/b"));
        assert_ne!(place("s3://b-1/out"), place("out"));
        assert_ne!(place("out"), place("Out"));
        assert_eq!(place("/../x"), place("/x"));
    }

    #[test]
    fn inside_is_by_whole_levels() {
        assert!(place("state").contains(&place("state/out")));
        assert!(place("state").contains(&place("state")));
        assert!(!place("state").contains(&place("state2")));
        assert!(place("s3://bkt").contains(&place("s3://bkt/x")));
        assert!(!place("s3://bkt/x").contains(&place("s3://bkt")));
        assert!(place("s3://bkt/x").overlaps(&place("s3://bkt")));
        assert!(place("/").contains(&place("out")));
        assert!(!place("s3://bkt/x").overlaps(&place("/x")));
    }
}

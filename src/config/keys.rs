//! Which object keys an output layout can render, compared without rendering: a
//! placeholder stands for any non-empty text without `/` (its value is sanitized to one
//! path level). Used to refuse two export pipelines that could write the same file and a
//! layout that lands among cohort-sync's own files.

/// Folders directly under an output that hold cohort-sync's own files (run manifests,
/// uploads in progress, run history); no layout may write there.
pub const RESERVED_OUTPUT_DIRS: &[&str] = &["_runs", "_staging", "_history"];

/// One piece of a path level: a literal character, or a placeholder's expansion split into
/// one character ([`Piece::One`]) and any run of characters ([`Piece::Any`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    Char(char),
    One,
    Any,
}

/// The path levels of a layout (trimmed), each as pieces.
fn levels(layout: &str) -> Vec<Vec<Piece>> {
    layout.trim().split('/').map(level_pieces).collect()
}

fn level_pieces(level: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut rest = level;
    while let Some(start) = rest.find('{') {
        pieces.extend(rest[..start].chars().map(Piece::Char));
        match rest[start..].find('}') {
            Some(len) => {
                pieces.extend([Piece::One, Piece::Any]);
                rest = &rest[start + len + 1..];
            }
            None => {
                // Not a placeholder (layouts with one are refused earlier): literal text.
                pieces.extend(rest[start..].chars().map(Piece::Char));
                rest = "";
            }
        }
    }
    pieces.extend(rest.chars().map(Piece::Char));
    pieces
}

/// Whether some text matches both piece lists.
fn intersect(a: &[Piece], b: &[Piece]) -> bool {
    let mut seen = std::collections::HashSet::new();
    let mut todo = vec![(0, 0)];
    while let Some((i, j)) = todo.pop() {
        if !seen.insert((i, j)) {
            continue;
        }
        if i == a.len() && j == b.len() {
            return true;
        }
        // A run of any characters takes nothing more, or one more piece of the other side.
        if a.get(i) == Some(&Piece::Any) {
            todo.push((i + 1, j));
            if j < b.len() {
                todo.push((i, j + 1));
            }
        }
        if b.get(j) == Some(&Piece::Any) {
            todo.push((i, j + 1));
            if i < a.len() {
                todo.push((i + 1, j));
            }
        }
        match (a.get(i), b.get(j)) {
            (Some(Piece::Char(x)), Some(Piece::Char(y))) if x == y => todo.push((i + 1, j + 1)),
            (Some(Piece::One), Some(Piece::Char(_) | Piece::One))
            | (Some(Piece::Char(_)), Some(Piece::One)) => todo.push((i + 1, j + 1)),
            _ => {}
        }
    }
    false
}

/// Whether layouts `a` and `b` can render one key, for one cohort or two: the same number
/// of path levels, each pair of which some text matches, placeholders taking any value.
/// Identical layouts always can; `cohort_id={cohort_id}/snapshot_date={date}/part-0.parquet`
/// and `cohort_id={cohort_id}/run={run_id}/part-0.parquet` cannot.
pub(crate) fn can_render_same_key(a: &str, b: &str) -> bool {
    let (a, b) = (levels(a), levels(b));
    a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| intersect(x, y))
}

/// The reserved folder a layout writes into, if any: its first path level (when it has
/// more than one) matches one of [`RESERVED_OUTPUT_DIRS`], a placeholder inside it taking
/// any value. A level that starts with a placeholder is not refused (cohort ids and names
/// do not start with `_runs`): `{cohort_name}/…` stays valid.
pub(crate) fn reserved_dir(layout: &str) -> Option<&'static str> {
    let levels = levels(layout);
    let first = levels.first().filter(|_| levels.len() > 1)?;
    if matches!(first.first(), Some(Piece::One)) {
        return None;
    }
    RESERVED_OUTPUT_DIRS
        .iter()
        .copied()
        .find(|dir| intersect(first, &level_pieces(dir)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = "cohort_id={cohort_id}/snapshot_date={date}/part-0.parquet";

    #[test]
    fn layouts_that_can_render_one_key() {
        for (a, b) in [
            (DEFAULT, DEFAULT),
            (
                DEFAULT,
                " cohort_id={cohort_id}/snapshot_date={date}/part-0.parquet\n",
            ),
            ("{cohort_id}/{date}.parquet", "{cohort_id}/{run_id}.parquet"),
            ("{cohort_id}/x.parquet", "{cohort_name}/x.parquet"),
            ("a{cohort_id}/x", "{cohort_id}a/x"),
            (
                "{cohort_id}/2026-01-01.parquet",
                "{cohort_id}/{date}.parquet",
            ),
            (DEFAULT, "{cohort_id}/{date}/part-0.parquet"),
        ] {
            assert!(can_render_same_key(a, b), "{a} / {b}");
            assert!(can_render_same_key(b, a), "{b} / {a}");
        }
    }

    #[test]
    fn layouts_that_cannot() {
        for (a, b) in [
            (DEFAULT, "cohort_id={cohort_id}/run={run_id}/part-0.parquet"),
            (
                DEFAULT,
                "cohort_id={cohort_id}/snapshot_date={date}/part-1.parquet",
            ),
            (DEFAULT, "{cohort_id}/part-0.parquet"),
            ("{cohort_id}.parquet", "{cohort_id}.csv"),
            ("x/{cohort_id}", "y/{cohort_id}"),
            // A placeholder is never empty.
            ("{cohort_id}/{date}x", "{cohort_id}/x"),
        ] {
            assert!(!can_render_same_key(a, b), "{a} / {b}");
            assert!(!can_render_same_key(b, a), "{b} / {a}");
        }
    }

    #[test]
    fn reserved_folders() {
        assert_eq!(reserved_dir("_runs/{cohort_id}.parquet"), Some("_runs"));
        assert_eq!(reserved_dir("_history/{cohort_id}/x"), Some("_history"));
        assert_eq!(reserved_dir("_{cohort_name}/{cohort_id}"), Some("_runs"));
        assert_eq!(reserved_dir("_staging/{cohort_id}"), Some("_staging"));
        assert_eq!(reserved_dir(DEFAULT), None);
        assert_eq!(reserved_dir("_runs{cohort_id}/x"), None);
        assert_eq!(reserved_dir("x/_runs/{cohort_id}"), None);
        assert_eq!(reserved_dir("{cohort_name}/{cohort_id}"), None);
        // One level: a file beside the folders, not in them.
        assert_eq!(reserved_dir("_runs{cohort_id}"), None);
    }
}

//! Renders the output layout (e.g. `cohort_id={cohort_id}/snapshot_date={date}/part-0.parquet`)
//! into an object key. Every substituted value is sanitized so that no cohort id or name
//! can add a path level or climb out of the output prefix.

/// Values a layout can use.
#[derive(Debug, Clone)]
pub struct LayoutValues<'a> {
    pub cohort_id: &'a str,
    pub cohort_name: &'a str,
    /// `YYYY-MM-DD` (UTC) of the snapshot.
    pub date: &'a str,
    pub request_id: &'a str,
    pub run_id: &'a str,
}

/// The placeholders a layout may contain.
pub const PLACEHOLDERS: &[&str] = &["cohort_id", "cohort_name", "date", "request_id", "run_id"];

/// Renders `layout`. Unknown placeholders are an error naming them (config validation
/// rejects them earlier; this keeps the function total).
pub fn render(layout: &str, v: &LayoutValues<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(layout.len() + 32);
    let mut rest = layout;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in layout {layout:?}"))?;
        let name = &after[..end];
        let value = match name {
            "cohort_id" => v.cohort_id,
            "cohort_name" => v.cohort_name,
            "date" => v.date,
            "request_id" => v.request_id,
            "run_id" => v.run_id,
            other => {
                return Err(format!(
                    "unknown placeholder {{{other}}} in layout {layout:?}; use one of {}",
                    PLACEHOLDERS.join(", ")
                ));
            }
        };
        out.push_str(&sanitize(value));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    let parts: Vec<&str> = out.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(format!(
            "layout {layout:?} renders to {out:?}, which has an empty, '.' or '..' path level"
        ));
    }
    Ok(out)
}

/// Makes a value safe as (part of) one path level: keeps letters, digits and `-_.=@+`,
/// replaces everything else (including `/` and `\`) with `_`, and never yields `.`/`..`
/// or an empty string.
pub fn sanitize(value: &str) -> String {
    let mut s: String = value
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '=' | '@' | '+') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.chars().all(|c| c == '.') {
        s = s.replace('.', "_");
    }
    if s.is_empty() {
        s.push('_');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<'a>(id: &'a str, name: &'a str) -> LayoutValues<'a> {
        LayoutValues {
            cohort_id: id,
            cohort_name: name,
            date: "2026-11-28",
            request_id: "r1",
            run_id: "run",
        }
    }

    #[test]
    fn default_layout_is_hive_style() {
        let key = render(
            "cohort_id={cohort_id}/snapshot_date={date}/part-0.parquet",
            &values("abc123", "Paid"),
        );
        assert_eq!(
            key.as_deref(),
            Ok("cohort_id=abc123/snapshot_date=2026-11-28/part-0.parquet")
        );
    }

    #[test]
    fn names_cannot_escape_the_prefix() {
        for evil in [
            "../x",
            "..",
            ".",
            "a/../../b",
            "/etc/passwd",
            "a\\..\\b",
            "",
        ] {
            let key = render("{cohort_name}/part-0.parquet", &values("c", evil))
                .unwrap_or_else(|e| panic!("{evil:?}: {e}"));
            assert_eq!(key.split('/').count(), 2, "{evil:?} → {key}");
            assert!(
                !key.split('/')
                    .any(|p| p == ".." || p == "." || p.is_empty()),
                "{key}"
            );
        }
        assert_eq!(sanitize("Paid users (EU) ünï"), "Paid_users__EU__ünï");
    }

    #[test]
    fn unknown_placeholders_are_errors() {
        let err = render("{cohort}/x.parquet", &values("c", "n")).unwrap_err();
        assert!(err.contains("{cohort}"), "{err}");
    }
}

//! Chooses the cohorts an export pipeline covers from the list call (which costs no quota):
//! by id, by name pattern, or all published. Listed ids are always exported, archived or
//! not; archived cohorts matched only by a name pattern or `all_published` are set aside
//! unless `include_archived`.

use std::collections::HashSet;

use crate::amplitude::types::Cohort;

/// What the pipeline asks for.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub ids: Vec<String>,
    pub names: Vec<glob::Pattern>,
    pub all_published: bool,
    pub include_archived: bool,
}

/// A cohort the selection matched, and whether it is set aside as archived.
#[derive(Debug, Clone)]
pub struct Selected {
    pub cohort: Cohort,
    /// Position in the pipeline's own order: listed ids first, then name matches, then
    /// the rest of the published cohorts (the `listed` priority).
    pub listed_rank: usize,
    pub archived_skipped: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("cohort id(s) not found in the project: {}", .0.join(", "))]
    UnknownIds(Vec<String>),
}

/// Selects in the pipeline's order; each cohort at most once. Archived cohorts matched by a
/// name pattern or `all_published` are returned with `archived_skipped` unless
/// `include_archived`; a listed id is never skipped as archived.
pub fn select(cohorts: &[Cohort], sel: &Selection) -> Result<Vec<Selected>, SelectError> {
    let missing: Vec<String> = sel
        .ids
        .iter()
        .filter(|id| !cohorts.iter().any(|c| &c.id == *id))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(SelectError::UnknownIds(missing));
    }
    let mut seen: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    let mut push = |c: &Cohort, listed: bool, out: &mut Vec<Selected>| {
        if seen.insert(c.id.clone()) {
            out.push(Selected {
                cohort: c.clone(),
                listed_rank: out.len(),
                archived_skipped: c.archived && !listed && !sel.include_archived,
            });
        }
    };
    for id in &sel.ids {
        if let Some(c) = cohorts.iter().find(|c| &c.id == id) {
            push(c, true, &mut out);
        }
    }
    for pattern in &sel.names {
        for c in cohorts.iter().filter(|c| pattern.matches(&c.name)) {
            push(c, false, &mut out);
        }
    }
    if sel.all_published {
        for c in cohorts.iter().filter(|c| c.published) {
            push(c, false, &mut out);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cohort(id: &str, name: &str, published: bool, archived: bool) -> Cohort {
        Cohort {
            id: id.into(),
            name: name.into(),
            published,
            archived,
            ..Cohort::default()
        }
    }

    fn all() -> Vec<Cohort> {
        vec![
            cohort("a", "Paid users", true, false),
            cohort("b", "Paid trials", false, false),
            cohort("c", "Churned", true, true),
            cohort("d", "Everyone", true, false),
        ]
    }

    #[test]
    fn ids_then_patterns_then_published_each_once() {
        let sel = Selection {
            ids: vec!["d".into()],
            names: vec![glob::Pattern::new("Paid *").expect("pattern")],
            all_published: true,
            include_archived: false,
        };
        let got = select(&all(), &sel).expect("select");
        let ids: Vec<&str> = got.iter().map(|s| s.cohort.id.as_str()).collect();
        assert_eq!(ids, vec!["d", "a", "b", "c"]);
        assert!(got[3].archived_skipped);
        assert!(!got[0].archived_skipped);
    }

    #[test]
    fn unknown_ids_are_named() {
        let sel = Selection {
            ids: vec!["a".into(), "zz".into(), "yy".into()],
            ..Selection::default()
        };
        let err = select(&all(), &sel).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cohort id(s) not found in the project: zz, yy"
        );
    }

    #[test]
    fn listed_ids_are_selected_even_when_archived() {
        let sel = Selection {
            ids: vec!["c".into()],
            ..Selection::default()
        };
        assert!(!select(&all(), &sel).expect("select")[0].archived_skipped);
        let by_name = Selection {
            names: vec![glob::Pattern::new("Churn*").expect("pattern")],
            ..Selection::default()
        };
        assert!(select(&all(), &by_name).expect("select")[0].archived_skipped);
    }

    #[test]
    fn archived_included_when_asked() {
        let sel = Selection {
            all_published: true,
            include_archived: true,
            ..Selection::default()
        };
        let got = select(&all(), &sel).expect("select");
        let churned = got.iter().find(|s| s.cohort.id == "c").expect("c selected");
        assert!(!churned.archived_skipped);
    }
}

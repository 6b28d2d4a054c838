//! Checks across the pipeline files of one `validate`, `plan` or `run`: each file can be
//! fine alone while two of them would overwrite each other's files or mix their state.
//!
//! Rules (conservative: a refused pair can always be made acceptable by giving one of
//! them its own `output.url`, `output.layout`, `name` or `state.url`):
//! - Two **export** pipelines whose `output.url` is one location (after normalising: a
//!   trailing `/`, `file://`, a relative path against the current directory) and whose
//!   layouts can render one key (see [`super::keys::can_render_same_key`]: placeholders
//!   may take any value, so identical layouts always can) are refused, unless both select
//!   cohorts by `select.ids` alone and no id is in both lists.
//! - Two pipelines of any kind with the same `name` and the same `state.url` are refused:
//!   their state (requests, leases, journals) would be one.
//! - An export's `output.url` that is, holds or is inside another pipeline's `state.url`
//!   is refused (within one file, `load` refuses it already).
//!
//! Each error is reported on the later file of the pair, naming the earlier one.

use std::collections::BTreeSet;
use std::path::Path;

use super::error::ConfigError;
use super::export::Select;
use super::keys::can_render_same_key;
use super::location::Place;
use super::pipeline::{Pipeline, PipelineSpec};
use crate::runner::layout::sanitize;

/// Checks pipelines loaded together (in the order given); returns every problem found,
/// empty when they can run side by side.
pub fn check_together(pipelines: &[Pipeline]) -> Vec<ConfigError> {
    check_together_indexed(pipelines)
        .into_iter()
        .map(|(_, e)| e)
        .collect()
}

/// [`check_together`], each error with the index of the pipeline it is reported on (the
/// later of the pair), in that order.
pub fn check_together_indexed(pipelines: &[Pipeline]) -> Vec<(usize, ConfigError)> {
    let cwd = std::env::current_dir().unwrap_or_default();
    check_in(pipelines, &cwd)
}

/// The checks with relative paths taken against `cwd`.
fn check_in(pipelines: &[Pipeline], cwd: &Path) -> Vec<(usize, ConfigError)> {
    let facts: Vec<Facts<'_>> = pipelines.iter().map(|p| Facts::new(p, cwd)).collect();
    let mut errors = Vec::new();
    for (j, later) in facts.iter().enumerate() {
        let earlier = &facts[..j];
        let checks: [fn(&Facts<'_>, &Facts<'_>) -> Option<ConfigError>; 3] =
            [same_files, same_state, output_and_state];
        for check in checks {
            if let Some(e) = earlier.iter().find_map(|a| check(a, later)) {
                errors.push((j, e));
            }
        }
    }
    errors
}

/// What the checks compare of one pipeline.
struct Facts<'a> {
    p: &'a Pipeline,
    state: Place,
    /// Export only: where files go and how they are named.
    output: Option<(Place, &'a str, &'a Select)>,
}

impl<'a> Facts<'a> {
    fn new(p: &'a Pipeline, cwd: &Path) -> Self {
        let output = match &p.spec {
            PipelineSpec::Export(e) => Some((
                Place::new(e.output.url.as_str(), cwd),
                e.output.layout.as_str(),
                &e.select,
            )),
            PipelineSpec::Reverse(_) => None,
        };
        Facts {
            p,
            state: Place::new(p.state.url.as_str(), cwd),
            output,
        }
    }

    fn output_url(&self) -> &str {
        match &self.p.spec {
            PipelineSpec::Export(e) => e.output.url.as_str(),
            PipelineSpec::Reverse(_) => "",
        }
    }

    /// `a.toml (line 12)`, the line of the value at `position` when the file has it.
    fn named(&self, position: Option<(usize, usize)>) -> String {
        match position {
            Some((line, _)) => format!("{} (line {line})", self.p.file.display()),
            None => self.p.file.display().to_string(),
        }
    }

    /// Where a state problem is shown: the name, else the state URL, else the file.
    fn state_position(&self) -> Option<(usize, usize)> {
        self.p.positions.name.or(self.p.positions.state_url)
    }
}

/// Two exports that can write the same files.
fn same_files(a: &Facts<'_>, b: &Facts<'_>) -> Option<ConfigError> {
    let ((a_out, a_layout, a_select), (b_out, b_layout, b_select)) =
        (a.output.as_ref()?, b.output.as_ref()?);
    if a_out != b_out || !can_render_same_key(a_layout, b_layout) {
        return None;
    }
    if let (Some(x), Some(y)) = (ids_only(a_select), ids_only(b_select))
        && x.is_disjoint(&y)
    {
        return None;
    }
    let why = if a_layout.trim() == b_layout.trim() {
        "which writes there with the same layout".to_string()
    } else {
        format!(
            "whose layout {:?} can render the same keys (placeholders may take any value)",
            a_layout.trim()
        )
    };
    Some(ConfigError::at_position(
        &b.p.file,
        b.p.positions.output_url,
        format!(
            "output {:?} with layout {:?} can write the same files as {}, {why}; give one of them its own output.url or layout, or select disjoint ids in both (select.ids only)",
            b.output_url(),
            b_layout.trim(),
            a.named(a.p.positions.output_url),
        ),
    ))
}

/// The cohort ids a selection is limited to (as they appear in keys), when it selects by
/// `ids` only.
fn ids_only(select: &Select) -> Option<BTreeSet<String>> {
    (select.names.is_empty() && !select.all_published)
        .then(|| select.ids.iter().map(|id| sanitize(id.trim())).collect())
}

/// Two pipelines whose state would be one.
fn same_state(a: &Facts<'_>, b: &Facts<'_>) -> Option<ConfigError> {
    if a.p.name != b.p.name || a.state != b.state {
        return None;
    }
    Some(ConfigError::at_position(
        &b.p.file,
        b.state_position(),
        format!(
            "pipeline name {:?} with state {:?} is also that of {}: their state (requests, leases, journals) would mix; give one of them another name or state.url",
            b.p.name,
            b.p.state.url.as_str(),
            a.named(a.state_position()),
        ),
    ))
}

/// An export's output that overlaps another pipeline's state (either way round).
fn output_and_state(a: &Facts<'_>, b: &Facts<'_>) -> Option<ConfigError> {
    let overlap = |x: &Facts<'_>, y: &Facts<'_>| {
        x.output
            .as_ref()
            .is_some_and(|(out, _, _)| out.overlaps(&y.state))
    };
    if overlap(b, a) {
        return Some(ConfigError::at_position(
            &b.p.file,
            b.p.positions.output_url,
            format!(
                "output {:?} overlaps the state folder {:?} of {}: snapshots and state must be kept apart; set output.url elsewhere",
                b.output_url(),
                a.p.state.url.as_str(),
                a.named(a.p.positions.state_url),
            ),
        ));
    }
    if overlap(a, b) {
        return Some(ConfigError::at_position(
            &b.p.file,
            b.p.positions.state_url,
            format!(
                "state {:?} overlaps the output {:?} of {}: snapshots and state must be kept apart; set state.url elsewhere",
                b.p.state.url.as_str(),
                a.output_url(),
                a.named(a.p.positions.output_url),
            ),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(file: &str, text: &str) -> Pipeline {
        super::super::parse(Path::new(file), text, &|_| None).unwrap_or_else(|e| panic!("{e}"))
    }

    fn export(file: &str, select: &str, output: &str) -> Pipeline {
        pipeline(
            file,
            &format!("kind = \"export\"\n[select]\n{select}\n[output]\n{output}\n"),
        )
    }

    fn errors(pipelines: &[Pipeline]) -> Vec<String> {
        check_in(pipelines, Path::new("/work/dir"))
            .into_iter()
            .map(|(i, e)| format!("{i} {e}"))
            .collect()
    }

    #[test]
    fn one_output_spelled_two_ways_is_one_output() {
        let a = export("a.toml", "names = [\"P*\"]", "url = \"out\"");
        let b = export("b.toml", "ids = [\"x\"]", "url = \"file:///work/dir/out/\"");
        let got = errors(&[a, b]);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("1 b.toml:5:7: output \"file:///work/dir/out/\" with layout \"cohort_id={cohort_id}/snapshot_date={date}/part-0.parquet\" can write the same files as a.toml (line 5)"),
            "{got:?}"
        );
    }

    #[test]
    fn ids_alone_and_disjoint_share_an_output() {
        let a = export("a.toml", "ids = [\"x\", \"y\"]", "url = \"out\"");
        let b = export("b.toml", "ids = [\"z\"]", "url = \"out\"");
        assert!(errors(&[a.clone(), b]).is_empty());
        // Ids are Amplitude's alphabet (no '/'), so two ids never sanitize to one folder.
        let c = export("c.toml", "ids = [\"x.y\"]", "url = \"out\"");
        let d = export("d.toml", "ids = [\"x_y\"]", "url = \"out\"");
        assert!(errors(&[c, d]).is_empty());
        // Names may match any cohort: not disjoint from anything.
        let e = export("e.toml", "ids = [\"z\"]\nnames = [\"Q*\"]", "url = \"out\"");
        assert_eq!(errors(&[a, e]).len(), 1);
    }

    #[test]
    fn one_state_per_name() {
        let a = export("a.toml", "ids = [\"x\"]", "url = \"out-a\"");
        let b = pipeline(
            "sub/a.toml",
            "kind = \"reverse\"\n[source]\nurl = \"crm.csv\"\n[target]\ncohort_id = \"c\"\n[state]\nurl = \"/work/dir/.cohort-sync/state/\"\n",
        );
        let got = errors(&[a, b]);
        assert_eq!(
            got,
            [
                "1 sub/a.toml:7:7: pipeline name \"a\" with state \"/work/dir/.cohort-sync/state/\" is also that of a.toml: their state (requests, leases, journals) would mix; give one of them another name or state.url"
            ]
        );
    }

    #[test]
    fn an_output_in_another_pipelines_state() {
        let a = pipeline(
            "a.toml",
            "kind = \"reverse\"\n[source]\nurl = \"crm.csv\"\n[target]\ncohort_id = \"c\"\n[state]\nurl = \"st\"\n",
        );
        let b = export("b.toml", "ids = [\"x\"]", "url = \"st/out\"");
        let got = errors(&[a.clone(), b.clone()]);
        assert!(
            got[0].starts_with("1 b.toml:5:7: output \"st/out\" overlaps the state folder \"st\" of a.toml (line 7)"),
            "{got:?}"
        );
        let got = errors(&[b, a]);
        assert!(
            got[0].starts_with(
                "1 a.toml:7:7: state \"st\" overlaps the output \"st/out\" of b.toml (line 5)"
            ),
            "{got:?}"
        );
    }
}

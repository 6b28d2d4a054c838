//! Checks that need more than one value (or a range) and turn the file's top level into a
//! [`Pipeline`]: kind-specific sections, exactly-one-of rules, positive numbers, limits.

use super::download::Download;
use super::error::ConfigError;
use super::export::{CompressionCodec, ExportSpec, Output, Quota, Select};
use super::keys::{RESERVED_OUTPUT_DIRS, can_render_same_key, reserved_dir};
use super::lineage::{Lineage, TIMEOUT_SECS, check_url};
use super::locate::Locator;
use super::location::Place;
use super::pipeline::{Kind, Pipeline, PipelineFile, PipelineSpec, Positions, State};
use super::reverse::{
    Baseline, MAX_CHUNK_SIZE, Reconcile, ReconcileMode, ReverseSpec, Source, Target, TargetTable,
};
use crate::amplitude::ids::{IdRole, check_id};

const EXPORT_ONLY: &[&str] = &["select", "output", "quota"];
const REVERSE_ONLY: &[&str] = &["source", "target", "reconcile"];

/// Checks `raw` and builds the pipeline.
pub(crate) fn build(loc: &Locator<'_>, raw: PipelineFile) -> Result<Pipeline, ConfigError> {
    let name = pipeline_name(loc, raw.name.as_deref())?;
    let (own, other, other_kind) = match raw.kind {
        Kind::Export => (EXPORT_ONLY, REVERSE_ONLY, "reverse"),
        Kind::Reverse => (REVERSE_ONLY, EXPORT_ONLY, "export"),
    };
    let kind_name = if raw.kind == Kind::Export {
        "export"
    } else {
        "reverse"
    };
    for section in other {
        if loc.find(&[section]).is_some() {
            return Err(loc.at_key(
                &[section],
                format!(
                    "[{section}] belongs to {other_kind} pipelines; this file has kind = \"{kind_name}\" (allowed: {})",
                    own.iter().map(|s| format!("[{s}]")).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    check_connection(loc, &raw)?;
    check_download(loc, &raw.download)?;
    check_lineage(loc, raw.lineage.as_ref())?;
    let spec = match raw.kind {
        Kind::Export => {
            let spec = export_spec(loc, raw.select, raw.output, raw.quota)?;
            check_output_apart_from_state(loc, &spec.output, &raw.state)?;
            PipelineSpec::Export(spec)
        }
        Kind::Reverse => {
            let app_id = raw.connection.app_id;
            PipelineSpec::Reverse(reverse_spec(
                loc,
                raw.source,
                raw.target,
                raw.reconcile,
                app_id,
            )?)
        }
    };
    let mut connection = raw.connection;
    connection.file = loc.file.to_path_buf();
    Ok(Pipeline {
        file: loc.file.to_path_buf(),
        name,
        connection,
        state: raw.state,
        download: raw.download,
        spec,
        lineage: raw.lineage,
        positions: Positions {
            name: loc.position(&["name"]),
            state_url: loc.position(&["state", "url"]),
            output_url: loc.position(&["output", "url"]),
        },
    })
}

/// `[lineage]`: exactly one of `url` / `file`, a usable URL, a key only with a URL, a
/// timeout in range.
fn check_lineage(loc: &Locator<'_>, lineage: Option<&Lineage>) -> Result<(), ConfigError> {
    let Some(l) = lineage else {
        return Ok(());
    };
    match (&l.url, &l.file) {
        (Some(_), Some(_)) => {
            return Err(loc.at_key(
                &["lineage", "file"],
                "set either lineage.url (an HTTP endpoint) or lineage.file (a file of events), not both",
            ));
        }
        (None, None) => {
            return Err(loc.at_key(
                &["lineage"],
                "[lineage] needs url = \"https://…/api/v1/lineage\" or file = \"lineage.ndjson\"",
            ));
        }
        (Some(url), None) => {
            check_url(url, l.api_key.is_some())
                .map_err(|e| loc.at_value(&["lineage", "url"], e))?;
        }
        (None, Some(file)) => {
            if l.api_key.is_some() {
                return Err(loc.at_key(
                    &["lineage", "api_key"],
                    "lineage.api_key goes with lineage.url; a file transport sends no key",
                ));
            }
            if file.as_os_str().is_empty() {
                return Err(loc.at_value(&["lineage", "file"], "lineage.file is empty"));
            }
        }
    }
    if l.namespace.trim().is_empty() {
        return Err(loc.at_value(&["lineage", "namespace"], "lineage.namespace is empty"));
    }
    if l.job_name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        return Err(loc.at_value(
            &["lineage", "job_name"],
            "lineage.job_name is empty (leave it out to use the pipeline name)",
        ));
    }
    in_range(
        loc,
        &["lineage", "timeout_secs"],
        l.timeout_secs,
        TIMEOUT_SECS,
        "seconds",
    )
}

/// The output must not be the state folder, inside it, or hold it: the state would be
/// read as snapshots, or a layout could overwrite it.
fn check_output_apart_from_state(
    loc: &Locator<'_>,
    output: &Output,
    state: &State,
) -> Result<(), ConfigError> {
    let cwd = std::env::current_dir().unwrap_or_default();
    let (out, st) = (
        Place::new(output.url.as_str(), &cwd),
        Place::new(state.url.as_str(), &cwd),
    );
    if out.overlaps(&st) {
        let relation = if out == st {
            "is the state folder"
        } else if st.contains(&out) {
            "is inside the state folder"
        } else {
            "holds the state folder"
        };
        return Err(loc.at_value(
            &["output", "url"],
            format!(
                "output {:?} {relation} {:?}; keep snapshots and state apart (set state.url or output.url elsewhere)",
                output.url.as_str(),
                state.url.as_str()
            ),
        ));
    }
    Ok(())
}

/// `name`, else the file stem; either must be usable as a state folder.
fn pipeline_name(loc: &Locator<'_>, name: Option<&str>) -> Result<String, ConfigError> {
    let valid = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let rule = "letters, digits, '-', '_' and '.'";
    match name {
        Some(n) if valid(n) => Ok(n.to_string()),
        Some(n) => Err(loc.at_value(
            &["name"],
            format!("pipeline name {n:?} may only use {rule}"),
        )),
        None => {
            let stem = loc.file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            if valid(stem) {
                Ok(stem.to_string())
            } else {
                Err(ConfigError::new(
                    loc.file,
                    format!(
                        "the file name {stem:?} is not a valid pipeline name ({rule}); set `name = \"...\"`"
                    ),
                ))
            }
        }
    }
}

/// Allowed ranges of the durations and rates of a pipeline file (seconds unless named
/// otherwise). Every duration is checked: one past its range is an error at its value,
/// never a wait that overflows the clock.
pub const CONNECT_TIMEOUT_SECS: (u64, u64) = (1, 600);
pub const READ_TIMEOUT_SECS: (u64, u64) = (1, 3_600);
pub const POLL_INITIAL_SECS: (u64, u64) = (1, 3_600);
pub const POLL_MAX_SECS: (u64, u64) = (1, 86_400);
/// A request id lives 7 days: waiting longer for its job is pointless.
pub const MAX_WAIT_SECS: (u64, u64) = (1, 604_800);
pub const DEADLINE_SECS: (u64, u64) = (1, 86_400);
pub const RATE_WINDOW_SECS: (u64, u64) = (1, 3_600);
/// 0 turns the rate check off; at most 1 GiB/s.
pub const MIN_BYTES_PER_SEC: (u64, u64) = (0, 1 << 30);

/// `value` within `range` (inclusive), else an error at the value naming the range.
fn in_range(
    loc: &Locator<'_>,
    path: &[&str],
    value: u64,
    (min, max): (u64, u64),
    unit: &str,
) -> Result<(), ConfigError> {
    let side = if value < min {
        format!("at least {min}")
    } else if value > max {
        format!("at most {max}")
    } else {
        return Ok(());
    };
    Err(loc.at_value(
        path,
        format!(
            "{} must be {side} (allowed {min}..={max} {unit}), not {value}",
            path.join(".")
        ),
    ))
}

fn at_least_one(loc: &Locator<'_>, path: &[&str], value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(loc.at_value(path, format!("{} must be at least 1", path.join("."))));
    }
    Ok(())
}

fn check_connection(loc: &Locator<'_>, raw: &PipelineFile) -> Result<(), ConfigError> {
    let c = &raw.connection;
    if c.region.is_some() && c.base_url.is_some() {
        return Err(loc.at_key(
            &["connection", "base_url"],
            "set either connection.region or connection.base_url, not both",
        ));
    }
    in_range(
        loc,
        &["connection", "connect_timeout_secs"],
        c.connect_timeout_secs,
        CONNECT_TIMEOUT_SECS,
        "seconds",
    )?;
    in_range(
        loc,
        &["connection", "read_timeout_secs"],
        c.read_timeout_secs,
        READ_TIMEOUT_SECS,
        "seconds",
    )?;
    if c.insecure() && !c.allow_insecure_http {
        let url = c.base_url.as_ref().map(|u| u.as_str()).unwrap_or_default();
        return Err(loc.at_value(
            &["connection", "base_url"],
            format!(
                "base_url {url:?} is plain http:// to a host that is not loopback: the API key and secret would travel unencrypted; use https://, or set connection.allow_insecure_http = true to accept it (every run then warns)"
            ),
        ));
    }
    if c.app_id == Some(0) {
        return Err(loc.at_value(
            &["connection", "app_id"],
            "connection.app_id must be at least 1",
        ));
    }
    Ok(())
}

fn check_download(loc: &Locator<'_>, d: &Download) -> Result<(), ConfigError> {
    let secs = |path: &[&str], value: u64, range| in_range(loc, path, value, range, "seconds");
    secs(
        &["download", "poll_initial_secs"],
        d.poll_initial_secs,
        POLL_INITIAL_SECS,
    )?;
    secs(
        &["download", "poll_max_secs"],
        d.poll_max_secs,
        POLL_MAX_SECS,
    )?;
    secs(
        &["download", "max_wait_secs"],
        d.max_wait_secs,
        MAX_WAIT_SECS,
    )?;
    secs(
        &["download", "deadline_secs"],
        d.deadline_secs,
        DEADLINE_SECS,
    )?;
    secs(
        &["download", "rate_window_secs"],
        d.rate_window_secs,
        RATE_WINDOW_SECS,
    )?;
    in_range(
        loc,
        &["download", "min_bytes_per_sec"],
        d.min_bytes_per_sec,
        MIN_BYTES_PER_SEC,
        "bytes per second, 0 turns the check off",
    )?;
    at_least_one(loc, &["download", "batch_rows"], d.batch_rows as u64)?;
    if d.poll_max_secs < d.poll_initial_secs {
        return Err(loc.at_value(
            &["download", "poll_max_secs"],
            format!(
                "download.poll_max_secs ({}) must not be below download.poll_initial_secs ({})",
                d.poll_max_secs, d.poll_initial_secs
            ),
        ));
    }
    if let Some(i) = d.prop_keys.iter().position(|k| k.trim().is_empty()) {
        return Err(loc.at_value(
            &["download", "prop_keys"],
            format!("download.prop_keys[{i}] is empty"),
        ));
    }
    Ok(())
}

fn export_spec(
    loc: &Locator<'_>,
    select: Option<Select>,
    output: Option<Output>,
    quota: Option<Quota>,
) -> Result<ExportSpec, ConfigError> {
    let Some(select) = select else {
        return Err(loc.at_value(
            &["kind"],
            "an export pipeline needs a [select] section (ids, names or all_published)",
        ));
    };
    if select.is_empty() {
        return Err(loc.at_key(
            &["select"],
            "[select] selects nothing: set ids, names or all_published = true",
        ));
    }
    if let Some(i) = select.ids.iter().position(|id| id.trim().is_empty()) {
        return Err(loc.at_element(&["select", "ids"], i, format!("select.ids[{i}] is empty")));
    }
    for (i, id) in select.ids.iter().enumerate() {
        if let Err(why) = check_id(IdRole::Cohort, id) {
            return Err(loc.at_element(&["select", "ids"], i, format!("select.ids[{i}]: {why}")));
        }
    }
    for id in select.refresh.keys() {
        if let Err(why) = check_id(IdRole::Cohort, id) {
            return Err(loc.at_key(
                &["select", "refresh", id.as_str()],
                format!("select.refresh: {why}"),
            ));
        }
    }
    let Some(output) = output else {
        return Err(loc.at_value(
            &["kind"],
            "an export pipeline needs an [output] section with url",
        ));
    };
    at_least_one(
        loc,
        &["output", "row_group_rows"],
        output.row_group_rows as u64,
    )?;
    if let Some(dir) = reserved_dir(output.layout.as_str()) {
        return Err(loc.at_value(
            &["output", "layout"],
            format!(
                "layout {:?} writes under {dir}/, which cohort-sync keeps for its own files ({}); start the layout with another folder",
                output.layout.as_str(),
                RESERVED_OUTPUT_DIRS
                    .iter()
                    .map(|d| format!("{d}/"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if output.changes {
        let changes = output.changes_layout.as_str();
        if let Some(dir) = reserved_dir(changes) {
            return Err(loc.at_value(
                &["output", "changes_layout"],
                format!(
                    "changes_layout {changes:?} writes under {dir}/, which cohort-sync keeps for its own files; start it with another folder (the default is {:?})",
                    crate::runner::changes::DEFAULT_CHANGES_LAYOUT
                ),
            ));
        }
        if can_render_same_key(changes, output.layout.as_str()) {
            return Err(loc.at_value(
                &["output", "changes_layout"],
                format!(
                    "changes_layout {changes:?} can render the same keys as layout {:?}: a change file could overwrite a snapshot or be read as one; give change files a folder of their own (the default is {:?})",
                    output.layout.as_str(),
                    crate::runner::changes::DEFAULT_CHANGES_LAYOUT
                ),
            ));
        }
    }
    if let Some(level) = output.compression_level {
        if output.compression != CompressionCodec::Zstd {
            return Err(loc.at_key(
                &["output", "compression_level"],
                "output.compression_level applies to compression = \"zstd\" only",
            ));
        }
        if !(1..=22).contains(&level) {
            return Err(loc.at_value(
                &["output", "compression_level"],
                format!("output.compression_level must be 1..=22 (zstd), not {level}"),
            ));
        }
    }
    let quota = quota.unwrap_or_default();
    if !(1..=5).contains(&quota.max_parallel) {
        return Err(loc.at_value(
            &["quota", "max_parallel"],
            format!(
                "quota.max_parallel must be 1..=5 (Amplitude allows 5 concurrent requests), not {}",
                quota.max_parallel
            ),
        ));
    }
    Ok(ExportSpec {
        select,
        output,
        quota,
    })
}

fn reverse_spec(
    loc: &Locator<'_>,
    source: Option<Source>,
    target: Option<TargetTable>,
    reconcile: Option<Reconcile>,
    app_id: Option<u64>,
) -> Result<ReverseSpec, ConfigError> {
    let Some(source) = source else {
        return Err(loc.at_value(
            &["kind"],
            "a reverse pipeline needs a [source] section with url",
        ));
    };
    if source.resolved_format().is_none() {
        return Err(loc.at_value(
            &["source", "url"],
            format!(
                "cannot tell the format of {:?} from its extension (.csv, .csv.gz, .parquet); set source.format",
                source.url.file_name()
            ),
        ));
    }
    if source.id_column.trim().is_empty() {
        return Err(loc.at_value(&["source", "id_column"], "source.id_column is empty"));
    }
    let Some(target) = target else {
        return Err(loc.at_value(
            &["kind"],
            "a reverse pipeline needs a [target] section (cohort_id or create)",
        ));
    };
    let target = match (target.cohort_id, target.create) {
        (Some(_), Some(_)) => {
            return Err(loc.at_key(
                &["target", "create"],
                "set either target.cohort_id or target.create, not both",
            ));
        }
        (None, None) => {
            return Err(loc.at_key(
                &["target"],
                "[target] needs cohort_id (an existing cohort) or create = { name, owner }",
            ));
        }
        (Some(id), None) if id.trim().is_empty() => {
            return Err(loc.at_value(&["target", "cohort_id"], "target.cohort_id is empty"));
        }
        (Some(id), None) if check_id(IdRole::Cohort, &id).is_err() => {
            let why = check_id(IdRole::Cohort, &id).err().unwrap_or_default();
            return Err(loc.at_value(&["target", "cohort_id"], format!("target.cohort_id: {why}")));
        }
        (Some(cohort_id), None) => Target::Existing { cohort_id },
        (None, Some(create)) => {
            for (field, value) in [("name", &create.name), ("owner", &create.owner)] {
                if value.trim().is_empty() {
                    return Err(loc.at_value(
                        &["target", "create", field],
                        format!("target.create.{field} is empty"),
                    ));
                }
            }
            if app_id.is_none() {
                return Err(loc.at_key(
                    &["target", "create"],
                    "creating a cohort needs connection.app_id",
                ));
            }
            Target::Create(create)
        }
    };
    let reconcile = reconcile.unwrap_or_default();
    check_reconcile(loc, &reconcile, &target, app_id)?;
    Ok(ReverseSpec {
        source,
        target,
        reconcile,
    })
}

fn check_reconcile(
    loc: &Locator<'_>,
    r: &Reconcile,
    target: &Target,
    app_id: Option<u64>,
) -> Result<(), ConfigError> {
    if r.chunk_size == 0 || r.chunk_size > MAX_CHUNK_SIZE {
        return Err(loc.at_value(
            &["reconcile", "chunk_size"],
            format!("reconcile.chunk_size must be 1..={MAX_CHUNK_SIZE} (Amplitude's limit per request), not {}", r.chunk_size),
        ));
    }
    if !(r.max_removal_pct.is_finite() && (0.0..=100.0).contains(&r.max_removal_pct)) {
        return Err(loc.at_value(
            &["reconcile", "max_removal_pct"],
            format!(
                "reconcile.max_removal_pct must be a percentage 0..=100, not {}",
                r.max_removal_pct
            ),
        ));
    }
    if r.baseline == Baseline::Snapshot && r.snapshots.is_none() {
        return Err(loc.at_value(
            &["reconcile", "baseline"],
            "baseline = \"snapshot\" needs reconcile.snapshots (the export output URL)",
        ));
    }
    if r.mode == ReconcileMode::Replace && app_id.is_none() {
        return Err(loc.at_value(
            &["reconcile", "mode"],
            "mode = \"replace\" uploads the cohort and needs connection.app_id",
        ));
    }
    if r.mode == ReconcileMode::RemoveOnly && matches!(target, Target::Create(_)) {
        return Err(loc.at_value(
            &["reconcile", "mode"],
            "mode = \"remove_only\" has nothing to remove from a cohort it creates",
        ));
    }
    Ok(())
}

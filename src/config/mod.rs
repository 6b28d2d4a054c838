//! Pipeline files: TOML, one pipeline per file, `kind = "export"` or `kind = "reverse"`, with
//! `${VAR}` interpolation from the environment, typed with serde (unknown keys are errors)
//! and checked; every error reads `file:line:col: message`.
//!
//! [`load`] reads a file, parses it keeping positions, interpolates `${VAR}` inside string
//! values (so positions still point into the original text; `$${` is a literal `${`, a `$`
//! not followed by `{` stays as is; keys, numbers and booleans are never interpolated; an
//! unset variable is an error naming it), deserializes it and checks what serde cannot.
//! Credentials are not needed to load: they are resolved at run time by
//! [`Connection::resolve`]. The JSON Schema of the format ([`schema_json`]) is generated from
//! these types and committed as `schemas/pipeline.schema.json`; `pipelines/examples/` shows
//! every section.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `kind` | required | `export` or `reverse` |
//! | `name` | file stem | namespaces the state; letters, digits, `-_.` |
//! | `connection.region` / `.base_url` | `us` | `us`, `eu`, or an `https://` root (`http://` on a loopback host); not both; no query, fragment, user info, bad port or `.`/`..`/empty path segment |
//! | `connection.allow_insecure_http` | false | accept plain `http://` to a host that is not loopback (keys travel unencrypted; every run warns) |
//! | `connection.api_key` / `.secret_key` | env `AMPLITUDE_API_KEY` / `AMPLITUDE_SECRET_KEY` | read at run time |
//! | `connection.app_id` | none | rate-limit key; required for `target.create` and `mode = "replace"` |
//! | `connection.connect_timeout_secs` / `.read_timeout_secs` | 30 / 120 | 1..=600 / 1..=3600 |
//! | `state.url` | `.cohort-sync/state` | local path or `s3://bucket/prefix` (`s3:/…`, `S3://…`, other schemes refused: [`crate::storage::check_location`]) |
//! | `download.props` / `.prop_keys` | false / [] | user properties; non-empty keys imply props |
//! | `download.poll_initial_secs` / `.poll_max_secs` / `.max_wait_secs` | 2 / 60 / 3600 | job polling; 1..=3600 / 1..=86400 / 1..=604800 |
//! | `download.deadline_secs` / `.min_bytes_per_sec` / `.rate_window_secs` | 3600 / 65536 / 60 | a file body's deadline and minimum rate (waiting time only); 1..=86400 / 0..=1 GiB (0: off) / 1..=3600 |
//! | `download.on_bad_row` | `fail` | `fail` or `skip` |
//! | `download.batch_rows` | export default | rows per Arrow batch |
//! | `download.column_types` | {} | column → `int64` `float64` `boolean` `utf8` |
//! | `select.ids` / `.names` / `.all_published` | (one required) | export only; listed ids are exported even when archived; ids as [`crate::amplitude::ids`] |
//! | `select.include_archived` | false | archived name / published matches too |
//! | `output.url` | required | export only; local path or `s3://bucket/prefix`; apart from `state.url` |
//! | `output.layout` | [`DEFAULT_LAYOUT`] | must contain `{cohort_id}`; not under `_runs/`, `_staging/`, `_history/` |
//! | `output.compression` / `.compression_level` | `zstd` / 3 | `zstd` `snappy` `lz4` `none`; level 1..=22, zstd only |
//! | `output.row_group_rows` | export default | rows per Parquet row group |
//! | `quota.reserve` / `.skip_unchanged` | 0 / true | export only |
//! | `quota.priority` / `.max_parallel` | `stale_first` / 4 | `stale_first` `listed` `smallest_first`; 1..=5 |
//! | `source.url` | required | reverse only; `.csv`, `.csv.gz`, `.parquet`, local or `s3://bucket/key` |
//! | `source.format` / `.id_column` / `.id_kind` | `auto` / `user_id` / `user_id` | `csv` `parquet`; `user_id` `amplitude_id` |
//! | `target.cohort_id` or `target.create = { name, owner, published }` | exactly one | reverse only |
//! | `reconcile.mode` / `.baseline` | `mirror` / `auto` | `add_only` `remove_only` `replace`; `download` `snapshot` |
//! | `reconcile.snapshots` / `.snapshot_layout` | none / [`DEFAULT_LAYOUT`] | export output to reuse as baseline |
//! | `reconcile.max_removals` / `.max_removal_pct` | 10000 / 10.0 | guards, overridden by `--force` |
//! | `reconcile.allow_empty_source` / `.skip_invalid_ids` | false / true | |
//! | `reconcile.chunk_size` / `.lists_dir` | 100000 / `plans` | 1..=100000; where plan lists go |
mod check;
mod connection;
mod download;
mod error;
mod export;
mod export_types;
mod interpolate;
mod keys;
mod locate;
mod location;
mod pipeline;
mod reverse;
mod schema;
mod together;
mod values;

use std::path::Path;

pub use connection::{API_KEY_VAR, Connection, ResolvedConnection, SECRET_KEY_VAR};
pub use download::Download;
pub use error::ConfigError;
pub use export::{CompressionCodec, ExportSpec, Output, Quota, Select};
pub use keys::RESERVED_OUTPUT_DIRS;
pub use pipeline::{Kind, Pipeline, PipelineSpec, State};
pub use reverse::{
    Baseline, CreateCohort, MAX_CHUNK_SIZE, Reconcile, ReconcileMode, ReverseSpec, Source,
    SourceFormat, Target,
};
pub use schema::{schema, schema_json};
pub use together::{check_together, check_together_indexed};
pub use values::{BaseUrl, DEFAULT_LAYOUT, Layout, NamePattern, Secret, SourceUrl, StorageUrl};

/// Reads, interpolates (from the process environment) and checks one pipeline file. Files
/// used together are checked against each other by [`check_together`].
pub fn load(path: &Path) -> Result<Pipeline, ConfigError> {
    load_with_env(path, &|name| std::env::var(name).ok())
}

/// [`load`] with an explicit lookup for `${VAR}`.
pub fn load_with_env(
    path: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Pipeline, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path, format!("cannot read the pipeline file: {e}")))?;
    parse(path, &text, lookup)
}

/// Checks pipeline text as if read from `path` (which names the file in errors and gives
/// the default pipeline name).
pub fn parse(
    path: &Path,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Pipeline, ConfigError> {
    let toml_error =
        |e: toml::de::Error| ConfigError::at(path, text, e.span(), e.message().trim_end());
    let mut doc = toml::de::DeTable::parse(text).map_err(toml_error)?;
    interpolate::interpolate_table(doc.get_mut(), text, lookup)
        .map_err(|e| ConfigError::at(path, text, Some(e.span), e.message))?;
    let located = doc.clone();
    let raw: pipeline::PipelineFile =
        serde::Deserialize::deserialize(toml::de::Deserializer::from(doc)).map_err(toml_error)?;
    let loc = locate::Locator {
        file: path,
        text,
        root: located.get_ref(),
    };
    check::build(&loc, raw)
}

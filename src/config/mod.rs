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
//! Every key, its type, default, meaning and an example: `docs/pipeline-reference.md`,
//! generated from the schema ([`mod@reference`]).

mod check;
mod connection;
mod download;
mod error;
mod export;
mod export_types;
mod interpolate;
mod keys;
mod lineage;
mod locate;
mod location;
mod pipeline;
pub mod reference;
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
pub use lineage::{DEFAULT_NAMESPACE, Lineage, LineageTransport};
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

//! The JSON Schema of pipeline files, generated from the serde types (committed as
//! `schemas/pipeline.schema.json`; a test fails when it is stale).

use super::pipeline::PipelineFile;

/// The schema as JSON.
pub fn schema() -> serde_json::Value {
    schemars::schema_for!(PipelineFile).to_value()
}

/// The schema as pretty JSON text with a final newline, as committed.
pub fn schema_json() -> String {
    let mut s = serde_json::to_string_pretty(&schema()).unwrap_or_default();
    s.push('\n');
    s
}

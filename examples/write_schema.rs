//! Regenerates `schemas/pipeline.schema.json` from the pipeline types: `make schema`
//! (`cargo run --example write_schema`). `tests/config.rs` only checks that the committed
//! file is current; it never writes it.

use std::process::ExitCode;

fn main() -> ExitCode {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/pipeline.schema.json");
    match std::fs::write(path, cohort_sync::config::schema_json()) {
        Ok(()) => {
            println!("wrote {path}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: writing {path}: {e}");
            ExitCode::FAILURE
        }
    }
}

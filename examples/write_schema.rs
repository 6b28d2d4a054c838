//! Regenerates `schemas/pipeline.schema.json` and `docs/pipeline-reference.md` from the
//! pipeline types: `make schema` (`cargo run --example write_schema`). `tests/config.rs`
//! only checks that the committed files are current; it never writes them.

use std::path::Path;
use std::process::ExitCode;

use cohort_sync::config::reference::{REFERENCE_PATH, current_reference};

fn main() -> ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let reference = match current_reference(root) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let files = [
        (
            root.join("schemas/pipeline.schema.json"),
            cohort_sync::config::schema_json(),
        ),
        (root.join(REFERENCE_PATH), reference),
    ];
    for (path, text) in files {
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, text));
        match written {
            Ok(()) => println!("wrote {}", path.display()),
            Err(e) => {
                eprintln!("error: writing {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

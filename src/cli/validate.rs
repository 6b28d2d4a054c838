//! `cohort-sync validate FILE...`: loads and checks each pipeline file without contacting
//! Amplitude or needing credentials (only `${VAR}`s used in a file must be set).

use std::path::PathBuf;

use clap::Args;
use cohort_sync::{config, exit};

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Pipeline files (TOML).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

/// Prints `FILE: ok (summary)` for each good file on stdout and `file:line:col: message`
/// for each bad one on stderr; exit 2 when any file is bad.
pub fn validate(args: ValidateArgs) -> u8 {
    let mut failed = false;
    for file in &args.files {
        match config::load(file) {
            Ok(p) => println!("{}: ok ({})", file.display(), p.summary()),
            Err(e) => {
                failed = true;
                eprintln!("{e}");
            }
        }
    }
    if failed { exit::USAGE } else { exit::OK }
}

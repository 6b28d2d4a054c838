//! `cohort-sync validate FILE...`: loads and checks each pipeline file without contacting
//! Amplitude or needing credentials (only `${VAR}`s used in a file must be set), then the
//! files against each other (two exports writing the same files, two pipelines sharing a
//! state folder).

use std::path::PathBuf;

use clap::Args;
use cohort_sync::config::{self, ConfigError, Pipeline};
use cohort_sync::exit;
use cohort_sync::text::escape;

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Pipeline files (TOML).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

/// What a pipeline's state store cannot do, when it cannot do everything: S3, GCS and
/// Azure replace an object only if unchanged (leases and the ledger rely on it); a local
/// directory cannot.
fn state_store_note(p: &Pipeline) -> Option<String> {
    let url = p.state.url.as_str();
    (!cohort_sync::storage::is_cloud_url(url)).then(|| {
        format!(
            "state.url {url:?} is a local directory: it cannot replace a file only if \
             unchanged, so an expired lease's takeover and the quota ledger are \
             last-writer-wins there; runners on one machine are fenced by exclusive creates, \
             runners on several machines (or a shared network folder) need s3://, gs:// or \
             az:// state (README: \"Object stores\")"
        )
    })
}

/// Prints `FILE: ok (summary)` for each good file on stdout (and a `FILE: note:` line when
/// its state store cannot do conditional writes) and `file:line:col: message`
/// for each problem on stderr, in the order of the files (a problem between two files is
/// reported on the later one); exit 2 when there is any.
pub fn validate(args: ValidateArgs) -> u8 {
    let loaded: Vec<Result<Pipeline, ConfigError>> =
        args.files.iter().map(|f| config::load(f)).collect();
    let good: Vec<Pipeline> = loaded
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .cloned()
        .collect();
    let mut together = config::check_together_indexed(&good).into_iter().peekable();
    let mut failed = false;
    let mut index = 0;
    for result in &loaded {
        let p = match result {
            Ok(p) => p,
            Err(e) => {
                failed = true;
                eprintln!("{}", escape(&e.to_string()));
                continue;
            }
        };
        let mut ok = true;
        while let Some((_, e)) = together.next_if(|(i, _)| *i == index) {
            ok = false;
            eprintln!("{}", escape(&e.to_string()));
        }
        if ok {
            println!("{}: ok ({})", p.file.display(), p.summary());
            if let Some(note) = state_store_note(p) {
                println!("{}: note: {note}", p.file.display());
            }
        }
        failed |= !ok;
        index += 1;
    }
    if failed { exit::USAGE } else { exit::OK }
}

//! `cohort-sync ddl FILE --dialect D`: prints the statements that expose an export
//! pipeline's Parquet output as warehouse tables (see `cohort_sync::ddl`).

use std::path::PathBuf;

use clap::Args;
use cohort_sync::config;
use cohort_sync::ddl::{Dataset, Dialect};
use cohort_sync::exit;
use cohort_sync::text::escape;

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  cohort-sync ddl pipelines/nightly.toml --dialect duckdb | duckdb warehouse.db
  cohort-sync ddl pipelines/nightly.toml --dialect snowflake > nightly_snowflake.sql
  cohort-sync ddl pipelines/nightly.toml --dialect athena

Tables: <pipeline>_snapshots, one row per member per snapshot, with the layout's
`name={placeholder}` folders as partition columns (`{date}` as DATE) and the file columns
known from the pipeline (amplitude_id, user_id, download.prop_keys, download.column_types);
<pipeline>_history, the sync history under `_history/` (one row per cohort per run,
partitioned by pipeline and date); with output.changes = true also <pipeline>_changes,
one row per member that entered or exited since the previous snapshot
(output.changes_layout).
The one-time setup each warehouse needs (stage, storage integration, connection, external
location) is written as comments above the statements. Snowflake, BigQuery, Athena and
Databricks read object storage only: a local output is refused (exit 2) with the reason.")]
pub struct DdlArgs {
    /// An export pipeline file (TOML).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The warehouse whose SQL to print.
    #[arg(long, value_enum)]
    dialect: Dialect,
}

/// Prints the statements on stdout; exit 2 when the file is bad or the warehouse cannot
/// read its output.
pub fn ddl(args: DdlArgs) -> u8 {
    let pipeline = match config::load(&args.file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}", escape(&e.to_string()));
            return exit::USAGE;
        }
    };
    let cwd = std::env::current_dir().unwrap_or_default();
    let rendered = Dataset::all_of(&pipeline, &cwd).and_then(|all| args.dialect.render(&all));
    match rendered {
        Ok(sql) => {
            print!("{sql}");
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {}: {}", args.file.display(), escape(&e));
            exit::USAGE
        }
    }
}

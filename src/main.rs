//! The `cohort-sync` command line: parses arguments, calls the library, maps errors to the
//! exit codes of the CLI contract (0 done, 1 failed, 2 bad usage/config, 3 stopped by quota;
//! `run` stopped by SIGINT / SIGTERM: 130 / 143).

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cohort-sync",
    version,
    about = "Move Amplitude behavioral cohorts to Parquet and CRM lists back into cohorts"
)]
struct Cli {
    /// Log filter, e.g. `debug` or `cohort_sync=trace`. Without it: `COHORT_SYNC_LOG`,
    /// then `RUST_LOG`, then `info`.
    #[arg(long, global = true, env = "COHORT_SYNC_LOG")]
    log: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Execute pipelines: export cohorts to Parquet, reconcile CRM lists into cohorts.
    Run(cli::run::RunArgs),
    /// Show what `run` would do (downloads, quota, reverse changes) without spending quota.
    Plan(cli::run::PlanArgs),
    /// List the project's cohorts (costs no quota).
    Cohorts(cli::remote::CohortsArgs),
    /// Show this month's cohort download usage (costs no quota).
    Usage(cli::remote::UsageArgs),
    /// Convert a cohort CSV (plain or gzip) to Parquet, locally or to s3://.
    Convert(cli::convert::ConvertArgs),
    /// Check pipeline files; errors as `file:line:col: message` (exit 2).
    Validate(cli::validate::ValidateArgs),
    /// Print the SQL that exposes an export pipeline's Parquet output as warehouse tables.
    Ddl(cli::ddl::DdlArgs),
    /// Run the built-in Amplitude API emulator (first stdout line `listening on http://ADDR`).
    Emulate(Box<cli::emulate::EmulateArgs>),
}

fn main() -> ExitCode {
    cohort_sync::memory::configure_allocator();
    cohort_sync::panics::install();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                cohort_sync::exit::USAGE
            } else {
                cohort_sync::exit::OK
            });
        }
    };
    cli::init_logging(cli.log.as_deref());
    let code = match cli.command {
        Command::Run(args) => cli::block_on(cli::run::run(args)),
        Command::Plan(args) => cli::block_on(cli::run::plan(args)),
        Command::Cohorts(args) => cli::block_on(cli::remote::cohorts(args)),
        Command::Usage(args) => cli::block_on(cli::remote::usage(args)),
        Command::Convert(args) => cli::block_on(cli::convert::convert(args)),
        Command::Validate(args) => cli::validate::validate(args),
        Command::Ddl(args) => cli::ddl::ddl(args),
        Command::Emulate(args) => cli::block_on(cli::emulate::emulate(*args)),
    };
    ExitCode::from(code)
}

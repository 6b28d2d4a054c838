//! The `cohort-sync` command line: parses arguments, calls the library, maps errors to the
//! exit codes of the CLI contract (0 done, 1 failed, 2 bad usage/config, 3 stopped by quota;
//! `run` stopped by SIGINT / SIGTERM: 130 / 143).

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cohort-sync",
    version = cli::version::VERSION,
    about = "Move Amplitude behavioral cohorts to Parquet and CRM lists back into cohorts",
    after_help = cli::examples::TOP
)]
struct Cli {
    /// Log filter, e.g. `debug` or `cohort_sync=trace`. Without it: `COHORT_SYNC_LOG`,
    /// then `RUST_LOG`, then `info`.
    #[arg(long, global = true, env = "COHORT_SYNC_LOG")]
    log: Option<String>,

    /// Log lines as `human` text (default) or `json`: one object a line with time, level,
    /// message and, inside a run, run_id, pipeline, cohort_id and request_id.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "COHORT_SYNC_LOG_FORMAT",
        default_value = "human"
    )]
    log_format: cli::LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Execute pipelines: export cohorts to Parquet, reconcile CRM lists into cohorts.
    #[command(after_help = cli::examples::RUN)]
    Run(cli::run::RunArgs),
    /// Show what `run` would do (downloads, quota, reverse changes) without spending quota.
    #[command(after_help = cli::examples::PLAN)]
    Plan(cli::run::PlanArgs),
    /// List the project's cohorts (costs no quota).
    #[command(after_help = cli::examples::COHORTS)]
    Cohorts(cli::remote::CohortsArgs),
    /// Show this month's cohort download usage (costs no quota).
    #[command(after_help = cli::examples::USAGE)]
    Usage(cli::remote::UsageArgs),
    /// Convert a cohort CSV (plain or gzip) to Parquet, locally or to s3://.
    Convert(cli::convert::ConvertArgs),
    /// Check pipeline files; errors as `file:line:col: message` (exit 2).
    #[command(after_help = cli::examples::VALIDATE)]
    Validate(cli::validate::ValidateArgs),
    /// Print the SQL that exposes an export pipeline's Parquet output as warehouse tables.
    Ddl(cli::ddl::DdlArgs),
    /// Run the built-in Amplitude API emulator (first stdout line `listening on http://ADDR`).
    Emulate(Box<cli::emulate::EmulateArgs>),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    #[command(after_help = cli::examples::COMPLETIONS)]
    Completions(cli::completions::CompletionsArgs),
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
    cli::init_logging(cli.log.as_deref(), cli.log_format);
    let code = match cli.command {
        Command::Run(args) => cli::block_on(cli::run::run(args, cli.log_format)),
        Command::Plan(args) => cli::block_on(cli::run::plan(args)),
        Command::Cohorts(args) => cli::block_on(cli::remote::cohorts(args)),
        Command::Usage(args) => cli::block_on(cli::remote::usage(args)),
        Command::Convert(args) => cli::block_on(cli::convert::convert(args)),
        Command::Validate(args) => cli::validate::validate(args),
        Command::Ddl(args) => cli::ddl::ddl(args),
        Command::Emulate(args) => cli::block_on(cli::emulate::emulate(*args)),
        Command::Completions(args) => cli::completions::print::<Cli>(args),
    };
    ExitCode::from(code)
}

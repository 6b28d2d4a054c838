//! The examples that end each command's `--help` (clap `after_help`): two or three lines a
//! user can copy, kept here so they read as one set.

pub const TOP: &str = "\
Examples:
  cohort-sync validate pipelines/*.toml
  cohort-sync plan pipelines/nightly.toml
  cohort-sync run pipelines/nightly.toml --report run.json --log-format json";

pub const RUN: &str = "\
Examples:
  cohort-sync run pipelines/nightly.toml --report run.json
  cohort-sync run pipelines/*.toml --metrics-file /var/lib/node_exporter/textfile/cohort_sync.prom
  cohort-sync run pipelines/crm-vip.toml --dry-run";

pub const PLAN: &str = "\
Examples:
  cohort-sync plan pipelines/nightly.toml
  cohort-sync plan pipelines/*.toml --force --report plan.json";

pub const COHORTS: &str = "\
Examples:
  AMPLITUDE_API_KEY=... AMPLITUDE_SECRET_KEY=... cohort-sync cohorts
  cohort-sync cohorts --region eu --json";

pub const USAGE: &str = "\
Examples:
  cohort-sync usage
  cohort-sync usage --state s3://warehouse/amplitude/state --app-id 123456 --json";

pub const VALIDATE: &str = "\
Examples:
  cohort-sync validate pipelines/nightly.toml
  cohort-sync validate pipelines/*.toml";

pub const COMPLETIONS: &str = "\
Examples:
  cohort-sync completions bash > /etc/bash_completion.d/cohort-sync
  cohort-sync completions zsh > \"${fpath[1]}/_cohort-sync\"
  cohort-sync completions fish > ~/.config/fish/completions/cohort-sync.fish";

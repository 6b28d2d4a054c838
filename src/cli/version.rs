//! What `--version` prints: the package version and the git commit it was built from
//! (`build.rs` sets `COHORT_SYNC_COMMIT`; `unknown` outside a git checkout).

pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("COHORT_SYNC_COMMIT"),
    ")"
);

//! Fixture files (TOML) for `cohort-sync emulate --fixture FILE`.

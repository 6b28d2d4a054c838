#!/usr/bin/env bash
# Runs every test with the real peers they need (S3, Azure and GCS servers on loopback,
# started and stopped by scripts/with_stores.sh). Called by `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

# With no arguments every test target runs (benches are Criterion binaries, checked by
# `make lint` and run by `make bench`); otherwise the arguments pick (e.g. `--test quota_run`).
if [ $# -eq 0 ]; then set -- --lib --bins --tests --examples --no-fail-fast; fi
RUST_TEST_THREADS="${TEST_THREADS:-4}" exec scripts/with_stores.sh cargo test --locked "$@"

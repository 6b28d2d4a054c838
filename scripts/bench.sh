#!/usr/bin/env bash
# `make bench`: the end-to-end benchmarks against peer tools (not part of `make test`).
# Installs the peers into .venv-bench, builds the release binary, runs scripts/bench/run.py
# (arguments are passed on, e.g. `scripts/bench.sh --cases convert --repeats 3`) and
# writes BENCHMARKS.md. The Criterion micro-benchmarks run with `cargo bench`.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-bench
if [ ! -f "$VENV/.installed" ] || [ scripts/bench/requirements.txt -nt "$VENV/.installed" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r scripts/bench/requirements.txt
  touch "$VENV/.installed"
fi
cargo build --release --locked
exec "$VENV/bin/python" scripts/bench/run.py --bin target/release/cohort-sync "$@"

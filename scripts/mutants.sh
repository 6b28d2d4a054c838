#!/usr/bin/env bash
# `make mutants`: mutation testing of the crash-safety core (files in .cargo/mutants.toml).
# Two passes over one output directory: the unit tests first (fast: most mutants die
# there), then, for the mutants still alive, the integration tests that drive the core
# through the binary on real sockets (S3 on moto, the emulator). Not part of `make test`:
# hours on a 2-core machine. The summary is target/mutants/mutants.out/outcomes.json;
# missed.txt lists survivors.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=target/mutants
mkdir -p "$OUT"
INTEGRATION=(--test state_s3 --test state_stores --test concurrency --test reverse_apply
  --test quota_run --test kill_anywhere)
# Pass 1 may report survivors (exit 2): pass 2 decides.
scripts/with_stores.sh cargo mutants --no-shuffle -o "$OUT" "$@" -- --lib || [ $? -eq 2 ]
scripts/with_stores.sh cargo mutants --no-shuffle --iterate -o "$OUT" "$@" -- --lib "${INTEGRATION[@]}"

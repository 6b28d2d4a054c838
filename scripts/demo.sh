#!/usr/bin/env bash
# `make demo`: starts the built-in Amplitude emulator with the demo fixture, runs the demo
# export pipeline (twice: the second run spends no quota) and the demo reverse pipeline
# against it, prints where the Parquet files are, and stops the emulator.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=target/release/cohort-sync
OUT=demo-out
rm -rf "$OUT"
mkdir -p "$OUT"

# Quota windows and job times run 50x faster than Amplitude's so the demo takes seconds.
export COHORT_SYNC_TIME_SCALE=0.02
"$BIN" emulate --port 0 --fixture pipelines/emulator-demo.toml --time-scale "$COHORT_SYNC_TIME_SCALE" \
  >"$OUT/emulator.out" 2>"$OUT/emulator.log" &
EMULATOR_PID=$!
trap 'kill $EMULATOR_PID 2>/dev/null || true; wait $EMULATOR_PID 2>/dev/null || true' EXIT

ADDR=""
for _ in $(seq 1 100); do
  ADDR=$(sed -n 's/^listening on \(http:\/\/[^ ]*\).*/\1/p' "$OUT/emulator.out" | head -n1)
  [ -n "$ADDR" ] && break
  if ! kill -0 "$EMULATOR_PID" 2>/dev/null; then cat "$OUT/emulator.log"; exit 1; fi
  sleep 0.1
done
[ -n "$ADDR" ] || { echo "emulator did not start"; cat "$OUT/emulator.log"; exit 1; }
echo "== emulator listening on $ADDR"

export COHORT_SYNC_DEMO_BASE_URL="$ADDR" AMPLITUDE_API_KEY=demo-key AMPLITUDE_SECRET_KEY=demo-secret

echo "== cohort-sync validate"
"$BIN" validate pipelines/demo-export.toml pipelines/demo-reverse.toml
echo
echo "== cohort-sync plan pipelines/demo-export.toml"
"$BIN" plan pipelines/demo-export.toml
echo
echo "== cohort-sync run pipelines/demo-export.toml"
"$BIN" run pipelines/demo-export.toml --report "$OUT/export-report.json"
echo
echo "== cohort-sync run pipelines/demo-export.toml (again: nothing changed, spends no quota)"
"$BIN" run pipelines/demo-export.toml --report "$OUT/export-report-2.json"
echo
echo "== cohort-sync plan pipelines/demo-reverse.toml"
"$BIN" plan pipelines/demo-reverse.toml
echo
echo "== cohort-sync run pipelines/demo-reverse.toml"
"$BIN" run pipelines/demo-reverse.toml --report "$OUT/reverse-report.json"
echo
echo "== Parquet files written:"
find "$OUT/cohorts" -name '*.parquet' -not -path '*/_history/*' -printf '  %p  (%s bytes)\n' | sort
echo "== sync history (one file per pipeline per run; DuckDB: read_parquet('$OUT/cohorts/_history/**/*.parquet', hive_partitioning = 1)):"
find "$OUT/cohorts/_history" -name '*.parquet' -printf '  %p\n' | sort
echo "== run reports: $OUT/export-report.json $OUT/export-report-2.json $OUT/reverse-report.json"

#!/usr/bin/env bash
# Starts the real peers the tests need (an S3-compatible server on loopback), runs every
# test, and stops the peers whatever happens. Called by `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

S3_PORT=$(free_port)
S3_LOG=$(mktemp)
.venv/bin/moto_server -H 127.0.0.1 -p "$S3_PORT" >"$S3_LOG" 2>&1 &
S3_PID=$!
trap 'kill $S3_PID 2>/dev/null || true; wait $S3_PID 2>/dev/null || true; rm -f "$S3_LOG"' EXIT

for _ in $(seq 1 100); do
  if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$S3_PORT),0.2)" 2>/dev/null; then break; fi
  sleep 0.1
done
if ! kill -0 $S3_PID 2>/dev/null; then echo "moto_server did not start:"; cat "$S3_LOG"; exit 1; fi

export COHORT_SYNC_TEST_S3_ENDPOINT="http://127.0.0.1:$S3_PORT"
export COHORT_SYNC_PYTHON="$PWD/.venv/bin/python"
export AWS_ENDPOINT_URL="$COHORT_SYNC_TEST_S3_ENDPOINT" AWS_ALLOW_HTTP=true
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
echo "S3-compatible server (moto) on $COHORT_SYNC_TEST_S3_ENDPOINT"

# With no arguments every test target runs (benches are Criterion binaries, checked by
# `make lint` and run by `make bench`); otherwise the arguments pick (e.g. `--test quota_run`).
if [ $# -eq 0 ]; then set -- --lib --bins --tests --examples --no-fail-fast; fi
RUST_TEST_THREADS="${TEST_THREADS:-4}" cargo test --locked "$@"

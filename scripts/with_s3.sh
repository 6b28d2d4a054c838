#!/usr/bin/env bash
# Runs a command with the S3-compatible server (moto) the tests need listening on
# loopback, its endpoint and test keys exported, and stops the server whatever happens.
# Used by scripts/test.sh and scripts/mutants.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

# moto binds port 0 itself (tests/py/s3_server.py) and says which port it got: no port is
# chosen, released and bound again, so no other process can take it in between.
S3_DIR=$(mktemp -d)
mkfifo "$S3_DIR/ready"
.venv/bin/python tests/py/s3_server.py >"$S3_DIR/ready" 2>"$S3_DIR/log" &
S3_PID=$!
trap 'kill $S3_PID 2>/dev/null || true; wait $S3_PID 2>/dev/null || true; rm -rf "$S3_DIR"' EXIT
# The first line, once the socket is listening (or EOF if the server died first).
exec 3<"$S3_DIR/ready"
if ! read -r -t 60 -u 3 READY || [[ "$READY" != "listening on http://"* ]]; then
  echo "the S3 server (moto) did not start:"; cat "$S3_DIR/log"; exit 1
fi
exec 3<&-

export COHORT_SYNC_TEST_S3_ENDPOINT="${READY#listening on }"
export COHORT_SYNC_PYTHON="$PWD/.venv/bin/python"
export AWS_ENDPOINT_URL="$COHORT_SYNC_TEST_S3_ENDPOINT" AWS_ALLOW_HTTP=true
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
echo "S3-compatible server (moto) on $COHORT_SYNC_TEST_S3_ENDPOINT"

"$@"

#!/usr/bin/env bash
# Runs a command with the object-store servers the tests need listening on loopback —
# S3 (moto) and Azure Blob Storage (Azurite) — their endpoints and test credentials
# exported the way object_store reads them, and stops the servers whatever happens. Used by
# scripts/test.sh and scripts/mutants.sh. (No GCS emulator installable here answers
# uploads with the ETag object_store needs: gs:// is not exercised by the tests.)
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=$(mktemp -d)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$DIR"' EXIT

# Starts a server that binds port 0 itself and prints its URL on a line matching
# PATTERN (the port is never chosen, released and bound again); sets URL.
start() {
  local name=$1 pattern=$2; shift 2
  mkfifo "$DIR/$name.out"
  "$@" >"$DIR/$name.out" 2>"$DIR/$name.log" &
  PIDS+=($!)
  exec 3<"$DIR/$name.out"
  URL=""
  local line
  while read -r -t 60 -u 3 line; do
    if [[ "$line" =~ $pattern ]]; then URL="${BASH_REMATCH[1]}"; break; fi
  done
  if [ -z "$URL" ]; then echo "the $name server did not start:"; cat "$DIR/$name.log"; exit 1; fi
  # Keep draining its output so it never blocks on a full pipe.
  cat <&3 >/dev/null &
  PIDS+=($!)
  exec 3<&-
}

start s3 '^listening on (http://[0-9.:]+)$' .venv/bin/python tests/py/s3_server.py
export COHORT_SYNC_TEST_S3_ENDPOINT="$URL"
start azure 'listens on (http://[0-9.:]+)' tests/node/node_modules/.bin/azurite-blob \
  --blobHost 127.0.0.1 --blobPort 0 --inMemoryPersistence --extentMemoryLimit 1024 \
  --disableTelemetry --skipApiVersionCheck --loose
export COHORT_SYNC_TEST_AZURE_ENDPOINT="$URL"

export COHORT_SYNC_PYTHON="$PWD/.venv/bin/python"
# S3: moto, any keys.
export AWS_ENDPOINT_URL="$COHORT_SYNC_TEST_S3_ENDPOINT" AWS_ALLOW_HTTP=true
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
# Azure: Azurite's well-known development account (object_store's emulator mode).
export AZURE_STORAGE_USE_EMULATOR=true AZURITE_BLOB_STORAGE_URL="$COHORT_SYNC_TEST_AZURE_ENDPOINT"
# The same account for the independent readers (pyarrow): Azurite's published
# development account and key (not a secret: every Azurite has them).
export COHORT_SYNC_TEST_AZURE_ACCOUNT=devstoreaccount1
export COHORT_SYNC_TEST_AZURE_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

echo "object stores: S3 (moto) $COHORT_SYNC_TEST_S3_ENDPOINT, Azure (Azurite) $COHORT_SYNC_TEST_AZURE_ENDPOINT"

"$@"

#!/usr/bin/env bash
# Every test, unit and integration. Starts its own DynamoDB Local and kinesis-mock on ports of
# its own (TEST_DYNAMODB_PORT, TEST_KINESIS_PORT; free ones are picked when those are taken), runs
# the whole workspace's tests against them, and stops them, also when a test fails.
# Extra arguments go to the test runner (cargo nextest run, or cargo test without nextest).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/stack.sh"

free_port() {
  local port=$1
  while port_in_use "$port" || port_in_use "$((port + 1))"; do port=$((port + 2)); done
  echo "$port"
}

trap 'stop_started' EXIT
trap 'exit 130' INT TERM

ensure_cargo
ensure_engines
ddb_port="$(free_port "${TEST_DYNAMODB_PORT:-18000}")"
kinesis_port="$(free_port "${TEST_KINESIS_PORT:-14568}")"
log "starting the test stack: DynamoDB Local :$ddb_port, kinesis-mock :$kinesis_port"
# Clear endpoints a developer may have exported for LocalStack: tests run on their own stack.
unset AWS_ENDPOINT_URL AWS_PROFILE
start_engines "$ddb_port" "$kinesis_port" "$ROOT/.devstack/test-logs"
# Integration tests fail, not skip, when this is set and the stack does not answer.
export RESERVATION_STACK_REQUIRED=1

cd "$ROOT"
started=$(date +%s)
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
log "all tests passed in $(( $(date +%s) - started )) s"

#!/usr/bin/env bash
# Benchmarks, reported and never asserted. Starts its own embedded stack on its own ports, builds
# release binaries, runs, stops everything, and writes the figures to docs/benchmarks.md.
#
#   scripts/bench.sh api [CLIENTS] [SECONDS]   POST /reservations rate and latency (default 16, 20)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/stack.sh"

what="${1:-api}"
clients="${2:-16}"
seconds="${3:-20}"
[[ "$what" == "api" ]] || die "unknown benchmark '$what' (available: api)"

trap 'stop_started' EXIT
trap 'exit 130' INT TERM

ensure_cargo
ensure_engines
log "building release binaries"
(cd "$ROOT" && cargo build --quiet --release -p devstack --bin devstack --bin loadgen)

ddb_port=18100; kinesis_port=14668; api_port=13100
unset AWS_ENDPOINT_URL AWS_PROFILE
start_engines "$ddb_port" "$kinesis_port" "$ROOT/.devstack/bench-logs"
RUST_LOG=warn "$ROOT/target/release/devstack" up --addr "127.0.0.1:$api_port" >"$ROOT/.devstack/bench-logs/api.log" 2>&1 &
STARTED_PIDS+=($!)
wait_for_port "$api_port" "the API" "$!" "$ROOT/.devstack/bench-logs/api.log"

run() {
  local slots=$1
  log "POST /reservations: $clients clients, $seconds s, spread over $slots slot(s)"
  "$ROOT/target/release/loadgen" --url "http://127.0.0.1:$api_port" --clients "$clients" --seconds "$seconds" --slots "$slots"
}
spread="$(run 64)"
hot="$(run 1)"
echo "$spread"
echo "$hot"

cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
machine="$(nproc) cores ($cpu), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr)"
row() {
  python3 - "$1" "$2" <<'PY'
import json, sys
r = json.loads(sys.argv[2])
s = r["statuses"]
print(f"| {sys.argv[1]} | {r['clients']} | {r['requests']} | {s.get('201', 0)} | {r['requests'] - s.get('201', 0)} | "
      f"{r['created_per_second']:.0f} | {r['latency_ms']['p50']:.1f} | {r['latency_ms']['p95']:.1f} | {r['latency_ms']['p99']:.1f} |")
PY
}
out="$ROOT/docs/benchmarks.md"
[[ -f "$out" ]] || printf '# Benchmarks\n\nFigures are measured, never asserted in tests. Each section says how to reproduce it.\n' >"$out"
python3 - "$out" <<PY
import re, sys
path = sys.argv[1]
text = open(path).read()
section = """## API: POST /reservations on DynamoDB Local

Command: \`scripts/bench.sh api $clients $seconds\` (release build; local HTTP server in front of the
Lambda handler; DynamoDB Local in memory; client and server on one machine, so they share its cores).
Run on $(date -u +%Y-%m-%d): $machine.

| load | clients | requests | 201 | other | reservations/s | p50 ms | p95 ms | p99 ms |
|---|---|---|---|---|---|---|---|---|
$(row "64 slots" "$spread")
$(row "1 hot slot" "$hot")

A request without an Idempotency-Key is one TransactWriteItems of three items (slot update,
reservation put, outbox event put) and no read. With one hot slot every request touches the same
item; any TransactionConflict is retried inside the API with jittered backoff, so "other" (answers
that were not 201) stays the figure to watch.
"""
pattern = re.compile(r"## API: POST /reservations on DynamoDB Local\n.*?(?=\n## |\Z)", re.S)
text = pattern.sub(lambda _: section.rstrip("\n"), text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
open(path, "w").write(text)
PY
log "wrote $out"

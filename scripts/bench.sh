#!/usr/bin/env bash
# Benchmarks, reported and never asserted. Starts its own embedded stack on its own ports, builds
# release binaries, runs, stops everything, and writes the figures to docs/benchmarks.md.
#
#   scripts/bench.sh api [CLIENTS] [SECONDS]   POST /reservations rate and latency (default 16, 20)
#   scripts/bench.sh relay [EVENTS] [BATCH]    relay CPU per event and rate vs raw PutRecords (10000, 100)
set -euo pipefail
# shellcheck source=lib/stack.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/stack.sh"

what="${1:-api}"
case "$what" in
  api | relay) ;;
  *) die "unknown benchmark '$what' (available: api, relay)" ;;
esac

trap 'stop_started' EXIT
trap 'exit 130' INT TERM

ensure_cargo
ensure_engines
log "building release binaries"
(cd "$ROOT" && cargo build --quiet --release -p devstack --bin devstack --bin loadgen --bin relay-bench)

ddb_port=18100; kinesis_port=14668; api_port=13100
unset AWS_ENDPOINT_URL AWS_PROFILE
start_engines "$ddb_port" "$kinesis_port" "$ROOT/.devstack/bench-logs"

cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
machine="$(nproc) cores ($cpu), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr)"
out="$ROOT/docs/benchmarks.md"
[[ -f "$out" ]] || printf '# Benchmarks\n\nFigures are measured, never asserted in tests. Each section says how to reproduce it.\n' >"$out"

# Replaces the section starting with heading $1 in docs/benchmarks.md by the text on stdin.
write_section() {
  local section
  section="$(cat)"
  python3 - "$out" "$1" "$section" <<'PY'
import re, sys
path, heading, section = sys.argv[1], sys.argv[2], sys.argv[3].rstrip("\n")
text = open(path).read()
pattern = re.compile(re.escape(heading) + r"\n.*?(?=\n## |\Z)", re.S)
text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section + "\n"
open(path, "w").write(text.rstrip("\n") + "\n")
PY
  log "wrote $out"
}

if [[ "$what" == relay ]]; then
  events="${2:-10000}"
  batch="${3:-100}"
  log "relay: $events outbox events per workload, batches of $batch"
  results="$("$ROOT/target/release/relay-bench" --events "$events" --batch-size "$batch")"
  echo "$results"
  python3 - "$results" "$events" "$batch" "$machine" "$(date -u +%Y-%m-%d)" <<'PY' | write_section "## Relay: overhead per event and throughput against kinesis-mock"
import json, sys
rows = [json.loads(line) for line in sys.argv[1].splitlines() if line.strip()]
events, batch, machine, day = sys.argv[2:6]
print(f"""## Relay: overhead per event and throughput against kinesis-mock

Command: `scripts/bench.sh relay {events} {batch}` (release build, one thread). Run on {day}: {machine}.

The events are real: reservations and cancels committed through the API's service on DynamoDB
Local, read back from the outbox table's stream by the local event source mapping in batches of
{batch}, and kept as the JSON Lambda would deliver. Each pass sends all of them through the relay as
the Lambda runtime would (event JSON → `Event`, the relay, response → JSON).

- **Overhead**: the relay with a sink that accepts everything; process CPU time per event (median of
  {rows[0]['overhead']['passes']} passes). Target ≤ 0.2 CPU-ms per event.
- **Against kinesis-mock**: the relay with its Kinesis sink next to the same records sent as plain
  `PutRecords` calls, one per batch, one call at a time ("raw"). Passes run in ABBA order, each on a
  fresh stream with the real stream's shard count (kinesis-mock slows down as a stream fills, so a
  shared stream would favour whichever side runs first), after a warm-up pass of each; mean of
  {rows[0]['kinesis']['passes']} passes each. Target: relay ≥ 90% of raw.

| workload | events | overhead events/s | overhead CPU-ms/event | raw events/s | relay events/s | relay / raw | relay calls | raw calls | relay CPU-ms/event (SDK incl.) |
|---|---|---|---|---|---|---|---|---|---|""")
for r in rows:
    o, k = r["overhead"], r["kinesis"]
    print(f"| {r['workload']} | {r['events']} | {o['events_per_second']:,.0f} | {o['cpu_ms_per_event']:.4f} | "
          f"{k['raw_events_per_second']:,.0f} | {k['relay_events_per_second']:,.0f} | {k['ratio']:.0%} | "
          f"{k['relay_calls']} | {k['raw_calls']} | {k['relay_cpu_ms_per_event']:.4f} |")
pairs = rows[-1]
calls_per_batch = pairs["kinesis"]["relay_calls"] / pairs["invocations"]
print(f"""
The first workload is the usual shape of the stream: a batch rarely holds two events of one
reservation, so the relay makes one call per batch, like raw. The second is the worst case for the
ordering rule (docs/adr/0002-relay-ordering.md): every reservation is cancelled right after it is
created, so a batch holds both events of dozens of reservations. A reservation's next event is sent
only once every record before its previous one is accepted (what keeps a re-delivery after a give-up
from stepping back in version), so such a batch took {calls_per_batch:.1f} calls on average instead of one. Raw
`PutRecords` would be faster there precisely because it gives no order guarantee under
partial failure. kinesis-mock runs on the same cores as the relay.""")
PY
  exit 0
fi

clients="${2:-16}"
seconds="${3:-20}"
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

row() {
  python3 - "$1" "$2" <<'PY'
import json, sys
r = json.loads(sys.argv[2])
s = r["statuses"]
print(f"| {sys.argv[1]} | {r['clients']} | {r['requests']} | {s.get('201', 0)} | {r['requests'] - s.get('201', 0)} | "
      f"{r['created_per_second']:.0f} | {r['latency_ms']['p50']:.1f} | {r['latency_ms']['p95']:.1f} | {r['latency_ms']['p99']:.1f} |")
PY
}
write_section "## API: POST /reservations on DynamoDB Local" <<EOT
## API: POST /reservations on DynamoDB Local

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
EOT

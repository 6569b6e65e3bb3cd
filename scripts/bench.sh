#!/usr/bin/env bash
# Benchmarks, reported and never asserted. Starts its own embedded stack on its own ports, builds
# release binaries, runs, stops everything, and writes the figures (and the latency plot) to
# docs/benchmarks.md with the exact command and the machine.
#
#   scripts/bench.sh [all]                     every benchmark below, in this order (about 25 min)
#   scripts/bench.sh modes [RATE] [SECONDS]    API 201 → consumer applied, CDC vs polling at 1 s and
#                                              100 ms, at RATE reservations/s (20, 30 s each), and
#                                              each mode's DynamoDB calls while idle; plots the CDFs
#   scripts/bench.sh api [CLIENTS] [SECONDS]   POST /reservations next to raw TransactWriteItems (32, 20)
#   scripts/bench.sh hot-slot [CLIENTS] [SECONDS] [WRITE_UNITS] [HOLD_MS] [CAPACITY]
#                                              one slot of 1, 4, 16 and 64 shards against 64 slots, through
#                                              the model of DynamoDB's per-item limits (32, 20, 200, 10), and
#                                              sell-outs of CAPACITY seats (300); plots docs/benchmarks-hot-slot.png
#   scripts/bench.sh relay [EVENTS] [BATCH]    relay CPU per event and rate vs raw PutRecords (10000, 100)
#   scripts/bench.sh buses [EVENTS] [RATE]     the same relay workloads on Kinesis and on Kafka (Tansu), and
#                                              API 201 → projector applied on each bus (10000, 20)
#   scripts/bench.sh functions [RUNS]          each function's zipped arm64 size, init time, peak RSS, the
#                                              registered consumers' included (5 runs)
#   scripts/bench.sh consumers [EVENTS] [BATCH] every registered consumer's CPU, capacity and AWS calls per
#                                              event (10000, 100)
#   scripts/bench.sh cost [RESERVATIONS] [CANCELS]
#                                              measured capacity units and CPU → docs/cost.md, the bill
#                                              per million reservations for each relay (1000, 250)
set -euo pipefail
# shellcheck source=lib/stack.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/stack.sh"

what="${1:-all}"
case "$what" in
  all | modes | api | hot-slot | relay | buses | functions | consumers | cost) ;;
  *) die "unknown benchmark '$what' (available: all, modes, api, hot-slot, relay, buses, functions, consumers, cost)" ;;
esac
[[ "$what" == all ]] && (($# > 1)) && die "'all' takes no arguments; run one benchmark to change its parameters"

trap 'stop_started' EXIT
trap 'exit 130' INT TERM

ensure_cargo
ensure_engines
log "building release binaries"
(cd "$ROOT" && cargo build --quiet --release -p devstack -p bench)
bin="$ROOT/target/release"

ddb_port=18100; kinesis_port=14668; api_port=13100; limits_port=18200; sqs_port="${BENCH_SQS_PORT:-14670}"
kafka_port="${BENCH_KAFKA_PORT:-19100}"
logs="$ROOT/.devstack/bench-logs"
unset AWS_ENDPOINT_URL AWS_PROFILE RELAY_MODE

# DynamoDB Local slows down as it fills (32 clients of raw TransactWriteItems: about 480/s on a
# fresh engine, 240/s on the second run, 190/s on the third), so every measurement that is
# compared with another starts on fresh engines, and none inherits the previous one's data.
fresh_engines() {
  stop_started
  start_engines "$ddb_port" "$kinesis_port" "$logs"
}

cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
machine="$(nproc) cores ($cpu), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr)"
day="$(date -u +%Y-%m-%d)"
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
# A replaced section keeps the blank line before the next one.
text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section + "\n"
open(path, "w").write(text.rstrip("\n") + "\n")
PY
  log "wrote $out ($1)"
}

# The command that reproduces a section: the subcommand with the arguments it ran with.
command_line() { printf 'scripts/bench.sh %s' "$*"; }

bench_modes() {
  local rate="${1:-20}" seconds="${2:-30}" samples="$logs/latency" results
  mkdir -p "$samples"
  results=""
  local run
  for run in "stream stream" "polling-1000 polling --interval-ms 1000" "polling-100 polling --interval-ms 100"; do
    local words name mode
    read -ra words <<<"$run"
    name=${words[0]}
    mode=("${words[@]:1}")
    fresh_engines
    log "modes: $name, end-to-end latency at $rate reservations/s for $seconds s"
    results+="$("$bin/pipeline-bench" latency --mode "${mode[@]}" --rate "$rate" --seconds "$seconds" --samples-out "$samples/$name.txt")"$'\n'
    fresh_engines
    log "modes: $name, DynamoDB calls while idle for 60 s"
    results+="$("$bin/pipeline-bench" idle --mode "${mode[@]}" --seconds 60)"$'\n'
  done
  echo "$results"
  pip_tools "$ROOT/.venv-bench" matplotlib==3.9.2
  "$ROOT/.venv-bench/bin/python" - "$samples" "$ROOT/docs/benchmarks-latency.png" "$rate" <<'PY'
import sys, matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
folder, target, rate = sys.argv[1:4]
fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
for name, label in [("stream", "CDC (DynamoDB Streams relay)"), ("polling-1000", "polling, 1 s interval"), ("polling-100", "polling, 100 ms interval")]:
    values = sorted(float(line) for line in open(f"{folder}/{name}.txt") if line.strip())
    ax.plot(values, [(i + 1) / len(values) for i in range(len(values))], label=f"{label} (n={len(values)})")
ax.set_xscale("log")
ax.set_xlabel("API 201 → projector applied (ms, log scale)")
ax.set_ylabel("share of reservations")
ax.set_title(f"End-to-end latency at {rate} reservations/s")
ax.grid(True, which="both", alpha=0.3)
ax.legend(loc="lower right")
fig.tight_layout()
fig.savefig(target)
PY
  python3 - "$results" "$(command_line modes "$rate" "$seconds")" "$machine" "$day" <<'PY' | write_section "## Relay modes: CDC against polling"
import json, sys
rows = [json.loads(line) for line in sys.argv[1].splitlines() if line.strip().startswith("{")]
command, machine, day = sys.argv[2:5]
latency = [r for r in rows if r["benchmark"] == "latency"]
idle = [r for r in rows if r["benchmark"] == "idle"]
name = lambda r: "CDC (stream relay)" if r["mode"] == "stream" else f"polling, {r['interval_ms']} ms"
print(f"""## Relay modes: CDC against polling

Command: `{command}` (release build; the API, the relay or the poller, and the projector
in one process on the embedded stack, DynamoDB Local and kinesis-mock, both restarted empty before
each run). Run on {day}: {machine}.

**End-to-end latency**: from the API's `201` to the projector having applied the reservation, at a
fixed offered rate (requests start on a schedule, whatever the answers), each mode on fresh
tables and a fresh stream. The local event source mappings wait 100 ms when a shard has nothing
new, as `devstack up` does (Lambda polls a DynamoDB stream 4 times a second and a Kinesis shard
once a second, so deployed figures differ by those intervals).

| mode | reservations | p50 ms | p95 ms | p99 ms | max ms | not applied |
|---|---|---|---|---|---|---|""")
for r in latency:
    l = r["latency_ms"]
    print(f"| {name(r)} | {r['created']} | {l['p50']:.0f} | {l['p95']:.0f} | {l['p99']:.0f} | {l['max']:.0f} | {r['not_applied_within_60s']} |")
cdc = next(r for r in latency if r["mode"] == "stream")["latency_ms"]["p50"]
poll = next(r for r in latency if r.get("interval_ms") == 1000)["latency_ms"]["p50"]
fast = next(r for r in latency if r.get("interval_ms") == 100)["latency_ms"]["p50"]
fast_reads = next((r["table_reads_per_minute"] for r in idle if r.get("interval_ms") == 100), float("nan"))
print(f"""
CDC's median is **{poll / cdc:.1f}× lower** than polling at its default 1 s interval (goal: at least 3×).
Polling every 100 ms comes close to CDC here (p50 {fast:.0f} ms against {cdc:.0f} ms; the local stream
mapping also waits 100 ms between empty reads), and pays {fast_reads:.0f} table reads a minute for it,
busy or idle.

![Latency CDFs of CDC and polling](benchmarks-latency.png)

**DynamoDB calls while idle**, per minute, over 60 s with no traffic, counted by an SDK interceptor on
the relay's clients. Table reads are what the table is billed for; stream reads are the event source
mapping's `GetRecords` (for DynamoDB Streams triggers Lambda makes these itself, free of charge).

| mode | table reads/min | table writes/min | stream GetRecords/min | calls seen |
|---|---|---|---|---|""")
for r in idle:
    calls = {**r["table_calls"], **r["stream_calls"]}
    seen = ", ".join(f"{k} {v}" for k, v in sorted(calls.items())) or "none"
    print(f"| {name(r)} | {r['table_reads_per_minute']:.0f} | {r['table_writes_per_minute']:.0f} | {r['stream_reads_per_minute']:.0f} | {seen} |")
print("""
The stream relay has no table client at all: idle, it costs the table nothing (goal: 0 reads). The
local mapping also asks `DescribeStream` on every empty read to notice new shards; Lambda's
mapping does its own shard discovery.
The poller queries the unpublished-events index once per interval, whether or not anything was
committed, and renews its lease (a write) every 7.5 s; the writes include taking the lease at the
start and giving it up at the end. Polling also doubles the writes per event (the mark is set in
the API's transaction and cleared after publishing); see docs/adr/0004-polling-publisher.md.""")
PY
}

bench_api() {
  local clients="${1:-32}" seconds="${2:-20}" spread hot raw
  fresh_engines
  log "api: raw TransactWriteItems, $clients clients, $seconds s, over 64 slots"
  raw="$("$bin/pipeline-bench" transactions --clients "$clients" --seconds "$seconds")"
  api_load() {
    fresh_engines_and_sns
    RUST_LOG=warn "$bin/devstack" provision >"$logs/provision.log" 2>&1
    RUST_LOG=warn "$bin/devstack" serve --addr "127.0.0.1:$api_port" >"$logs/api.log" 2>&1 &
    STARTED_PIDS+=($!)
    wait_for_port "$api_port" "the API" "$!" "$logs/api.log"
    log "api: POST /reservations, $clients clients, $seconds s, over $1 slot(s)"
    "$bin/loadgen" --url "http://127.0.0.1:$api_port" --clients "$clients" --seconds "$seconds" --slots "$1" >"$logs/api-$1.json"
  }
  # Not in $(...): the engines and the server it starts must stay this shell's to stop.
  api_load 64
  api_load 1
  spread="$(cat "$logs/api-64.json")"
  hot="$(cat "$logs/api-1.json")"
  printf '%s\n%s\n%s\n' "$spread" "$hot" "$raw"
  python3 - "$spread" "$hot" "$raw" "$(command_line api "$clients" "$seconds")" "$machine" "$day" <<'PY' | write_section "## API: POST /reservations on DynamoDB Local"
import json, sys
spread, hot, raw = (json.loads(a) for a in sys.argv[1:4])
command, machine, day = sys.argv[4:7]
def row(label, r):
    s = r["statuses"]
    return (f"| {label} | {r['clients']} | {r['requests']} | {s.get('201', 0)} | {r['requests'] - s.get('201', 0)} | "
            f"{r['created_per_second']:.0f} | {r['latency_ms']['p50']:.1f} | {r['latency_ms']['p95']:.1f} | {r['latency_ms']['p99']:.1f} |")
l = raw["latency_ms"]
print(f"""## API: POST /reservations on DynamoDB Local

Command: `{command}` (release build; `devstack serve`, the local HTTP server in front of the
Lambda handler, alone; DynamoDB Local in memory, restarted empty before each row, because it
slows down as it fills; client and server on one machine, so they share its cores). Run on
{day}: {machine}.

| load | clients | requests | 201 | other | reservations/s | p50 ms | p95 ms | p99 ms |
|---|---|---|---|---|---|---|---|---|
{row("API, 64 slots", spread)}
{row("API, 1 hot slot", hot)}
| raw TransactWriteItems, 64 slots | {raw['clients']} | {raw['committed'] + raw['failed']} | {raw['committed']} | {raw['failed']} | {raw['committed_per_second']:.0f} | {l['p50']:.1f} | {l['p95']:.1f} | {l['p99']:.1f} |

**API / raw = {spread['created_per_second'] / raw['committed_per_second']:.2f}** at {raw['clients']} clients (goal ≥ 0.8). "Raw" is the same
three-item transaction (conditional slot update, reservation put, outbox event put) sent straight
through the SDK from {raw['clients']} tasks: no HTTP, no routing, no validation, no serialization of
domain types. A request without an Idempotency-Key is exactly that one TransactWriteItems and no
read. With one hot slot every request touches the same item; any TransactionConflict is retried
inside the API with jittered backoff, so "other" (answers that were not 201) stays the figure to
watch.""")
PY
}

# One slot under many bookers, through the model of DynamoDB's per-item limits
# (test_support::item_limits) between the API and DynamoDB Local.
bench_hot_slot() {
  local clients="${1:-32}" seconds="${2:-20}" units="${3:-200}" hold="${4:-10}" capacity="${5:-300}" results=""
  # hot_run NAME SLOTS SHARDS [LOADGEN ARGS...]: fresh engines, the model, the API through it, the load.
  hot_run() {
    local name=$1 slots=$2 shards=$3
    fresh_engines_and_sns
    RUST_LOG=warn "$bin/devstack" provision >"$logs/provision.log" 2>&1 || { tail -5 "$logs/provision.log"; die "devstack provision failed"; }
    "$bin/item-limits-proxy" --listen "127.0.0.1:$limits_port" --upstream "$AWS_ENDPOINT_URL_DYNAMODB" \
      --write-units "$units" --hold-ms "$hold" >"$logs/item-limits.log" 2>&1 &
    STARTED_PIDS+=($!)
    wait_for_port "$limits_port" "item-limits-proxy" "$!" "$logs/item-limits.log"
    AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$limits_port" RUST_LOG=warn "$bin/devstack" serve \
      --addr "127.0.0.1:$api_port" >"$logs/api.log" 2>&1 &
    STARTED_PIDS+=($!)
    wait_for_port "$api_port" "the API" "$!" "$logs/api.log"
    log "hot-slot: $name: $clients clients over $slots slot(s) of $shards shard(s)"
    "$bin/loadgen" --url "http://127.0.0.1:$api_port" --clients "$clients" --slots "$slots" --shards "$shards" \
      --slot-prefix "$name" "${@:4}" >"$logs/hot-$name.json"
    python3 - "$name" "$logs/hot-$name.json" "http://127.0.0.1:$limits_port/item-limits/counts" >>"$logs/hot-slot.jsonl" <<'PY'
import json, sys, urllib.request
name, load, counts = sys.argv[1:4]
print(json.dumps({"name": name, "load": json.load(open(load)), "model": json.load(urllib.request.urlopen(counts))}))
PY
  }
  rm -f "$logs/hot-slot.jsonl"
  mkdir -p "$logs"
  local k
  for k in 1 4 16 64; do
    hot_run "k$k" 1 "$k" --seconds "$seconds"
  done
  hot_run spread 64 1 --seconds "$seconds"
  hot_run sellout-k1 1 1 --capacity "$capacity" --until-sold-out --seconds 300
  hot_run sellout-k16 1 16 --capacity "$capacity" --until-sold-out --seconds 300
  results="$(cat "$logs/hot-slot.jsonl")"
  echo "$results"
  pip_tools "$ROOT/.venv-bench" matplotlib==3.9.2
  "$ROOT/.venv-bench/bin/python" - "$logs/hot-slot.jsonl" "$ROOT/docs/benchmarks-hot-slot.png" <<'PY'
import json, sys, matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
rows = {r["name"]: r for r in map(json.loads, open(sys.argv[1]))}
names = ["k1", "k4", "k16", "k64", "spread"]
labels = ["1 slot,\n1 shard", "1 slot,\n4 shards", "1 slot,\n16 shards", "1 slot,\n64 shards", "64 slots,\n1 shard each"]
rates = [rows[n]["load"]["created_per_second"] for n in names]
p99 = [rows[n]["load"]["latency_ms"]["p99"] for n in names]
fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
bars = ax.bar(labels, rates, color=["#c44e52", "#dd8452", "#55a868", "#4c72b0", "#8c8c8c"])
for bar, rate, p in zip(bars, rates, p99):
    ax.annotate(f"{rate:.0f}/s\np99 {p:.0f} ms", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center", va="bottom", fontsize=8)
ax.axhline(0.8 * rates[-1], color="#8c8c8c", linestyle="--", linewidth=1, label="80% of the spread load")
ax.set_ylabel("bookings per second (201)")
ax.set_title("One slot under 32 clients, through the model of DynamoDB's per-item limits")
ax.set_ylim(0, max(rates) * 1.25)
ax.legend(loc="upper left")
fig.tight_layout()
fig.savefig(sys.argv[2])
PY
  python3 - "$logs/hot-slot.jsonl" "$(command_line hot-slot "$clients" "$seconds" "$units" "$hold" "$capacity")" "$machine" "$day" "$units" "$hold" <<'PY' | write_section "## A flash sale on one slot: sharded slots through a model of DynamoDB's item limits"
import json, sys
rows = {r["name"]: r for r in map(json.loads, open(sys.argv[1]))}
command, machine, day, units, hold = sys.argv[2:7]
def other(load):
    s = load["statuses"]
    return sum(v for k, v in s.items() if k not in ("201", "409"))
def row(label, r):
    load, model = r["load"], r["model"]
    l = load["latency_ms"]
    calls = model["requests"].get("TransactWriteItems", 0)
    retries = calls - load["requests"]
    codes = ", ".join(f"{k} {v}" for k, v in sorted(load["codes"].items())) or "none"
    return (f"| {label} | {load['requests']} | {load['statuses'].get('201', 0)} | {load['created_per_second']:.0f} | "
            f"{l['p50']:.0f} | {l['p99']:.0f} | {model['transaction_conflicts']} | {model['transactions_throttled']} | "
            f"{max(retries, 0)} | {other(load)} | {codes} |")
spread = rows["spread"]["load"]["created_per_second"]
k16 = rows["k16"]["load"]["created_per_second"]
k1 = rows["k1"]["load"]["created_per_second"]
clients = rows["k1"]["load"]["clients"]
print(f"""## A flash sale on one slot: sharded slots through a model of DynamoDB's item limits

Command: `{command}` (release build; `devstack serve` in front of the Lambda handler, DynamoDB
Local restarted empty before each row, and between them `item-limits-proxy`, the model of
DynamoDB's per-item limits of `test_support::item_limits`: {units} write units a second per item
and each transaction holding its items for {hold} ms from the moment the model admits it (its
duration; the time DynamoDB Local takes is queueing on this machine and holds nothing), scaled
down from DynamoDB's 1,000 units so that this machine's engines are not the limit). {clients} clients book one
seat at a time, back to back; client, API, model and engine share the machine. Run on {day}: {machine}.

| load | requests | 201 | bookings/s | p50 ms | p99 ms | conflicts | throttled | retries | other than 201/409 | problem codes |
|---|---|---|---|---|---|---|---|---|---|---|
{row("1 slot, 1 shard", rows["k1"])}
{row("1 slot, 4 shards", rows["k4"])}
{row("1 slot, 16 shards", rows["k16"])}
{row("1 slot, 64 shards", rows["k64"])}
{row("64 slots of 1 shard (spread)", rows["spread"])}

**16 shards / spread = {k16 / spread:.2f}** (target ≥ 0.8); one shard reaches {k1 / spread:.2f} of the spread load's rate.
"Conflicts" are the transactions the model cancelled with `TransactionConflict` (an item held by
another transaction), "throttled" those it cancelled with `ThrottlingError`; "retries" are the
API's `TransactWriteItems` calls beyond one per request (its retries of conflicts and throttles,
and a sharded booking's draws on other shards). Answers other than 201 and 409 are the 429
`contended` and 503 `throttled` of requests whose retries ran out: the caller tries again after
`Retry-After`. None is a 409 for contention, and a 409 `sold_out` only when the slot was sold out.

![Bookings per second on one slot by shard count, against 64 slots](benchmarks-hot-slot.png)

**Sell-outs**: {clients} clients book one seat at a time until each is told `sold_out`.

| slot | capacity | requests | 201 | 409 `sold_out` | other | reserved at the end | conflicts | retries |
|---|---|---|---|---|---|---|---|---|""")
for name, label in (("sellout-k1", "1 shard"), ("sellout-k16", "16 shards")):
    r = rows[name]
    load, model = r["load"], r["model"]
    calls = model["requests"].get("TransactWriteItems", 0)
    print(f"| {label} | {load['capacity']} | {load['requests']} | {load['statuses'].get('201', 0)} | "
          f"{load['codes'].get('sold_out', 0)} | {other(load)} | {load['reserved']} | {model['transaction_conflicts']} | {max(calls - load['requests'], 0)} |")
exact = all(
    rows[n]["load"]["reserved"] == rows[n]["load"]["capacity"] == rows[n]["load"]["statuses"].get("201", 0)
    for n in ("sellout-k1", "sellout-k16")
)
print("""
Every sell-out ended with exactly its capacity booked: the 201s and the slot's `reserved` are the
capacity.""" if exact else """
**A sell-out did not end at exactly its capacity** (see the table): that is a defect to report.""")
PY
}

bench_relay() {
  local events="${1:-10000}" batch="${2:-100}" results
  fresh_engines
  log "relay: $events outbox events per workload, batches of $batch"
  results="$("$bin/relay-bench" --events "$events" --batch-size "$batch")"
  echo "$results"
  python3 - "$results" "$events" "$batch" "$machine" "$day" "$(command_line relay "$events" "$batch")" <<'PY' | write_section "## Relay: overhead per event and throughput against kinesis-mock"
import json, sys
rows = [json.loads(line) for line in sys.argv[1].splitlines() if line.strip()]
events, batch, machine, day, command = sys.argv[2:7]
print(f"""## Relay: overhead per event and throughput against kinesis-mock

Command: `{command}` (release build, one thread). Run on {day}: {machine}.

The events are real: reservations and cancels committed through the API's service on DynamoDB
Local, read back from the outbox table's stream by the local event source mapping in batches of
{batch}, and kept as the JSON Lambda would deliver. Each pass sends all of them through the relay as
the Lambda runtime would (event JSON → `Box<RawValue>`, the relay, response → JSON).

- **Overhead**: the relay with a sink that accepts everything; process CPU time per event (median of
  {rows[0]['overhead']['passes']} passes). Goal: ≤ 0.02 CPU-ms (20 µs) per event, with the well-kept readers (ADR 0006); see "Relay hot path" below.
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
}

# Fresh engines and moto for SNS and SQS: `devstack provision` also makes the notifications
# topic and its subscriber queue.
fresh_engines_and_sns() {
  fresh_engines
  ensure_sqs_engine
  start_sqs_engine "$sqs_port" "$logs" BENCH_SQS_PORT
}

# Fresh engines and a fresh Kafka broker (Tansu, memory storage).
fresh_engines_and_kafka() {
  fresh_engines
  ensure_kafka_engine
  start_kafka_engine "$kafka_port" "$logs" BENCH_KAFKA_PORT
}

bench_buses() {
  local events="${1:-10000}" rate="${2:-20}" seconds=30 results
  fresh_engines_and_kafka
  log "buses: the relay's workloads on kinesis-mock and on Kafka, $events events each"
  results="$("$bin/relay-bench" --events "$events" --batch-size 100 --kafka "$KAFKA_BOOTSTRAP_SERVERS")"$'\n'
  local bus
  for bus in kinesis kafka; do
    fresh_engines_and_kafka
    log "buses: $bus, API 201 → projector applied at $rate reservations/s for $seconds s"
    results+="$("$bin/pipeline-bench" latency --mode stream --bus "$bus" --rate "$rate" --seconds "$seconds")"$'\n'
  done
  echo "$results"
  python3 - "$results" "$machine" "$day" "$(command_line buses "$events" "$rate")" <<'PY' | write_section "## The two buses: Kinesis and Kafka"
import json, sys
rows = [json.loads(line) for line in sys.argv[1].splitlines() if line.strip().startswith("{")]
machine, day, command = sys.argv[2:5]
relay = [r for r in rows if "workload" in r]
latency = {r["bus"]: r for r in rows if r.get("benchmark") == "latency"}
print(f"""## The two buses: Kinesis and Kafka

Command: `{command}` (release build, one thread for the relay). Run on {day}: {machine}.

The same captured relay events (as in "Relay" above) through the relay with each bus's sink, next
to the same records sent as one call of that sink per batch ("raw": `PutRecords` on Kinesis, one
produce per partition on Kafka), ABBA order, each pass on a fresh stream (kinesis-mock, the
stream's shard count) or a fresh topic (Tansu, memory storage, {relay[0]['kafka']['partitions']} partitions). CPU per event counts the
relay and its client (the AWS SDK, or rskafka). Both engines run on the same cores as the relay.

| workload | bus | raw events/s | relay events/s | relay / raw | relay calls | calls per batch | relay CPU-ms/event |
|---|---|---|---|---|---|---|---|""")
for r in relay:
    for bus, k in (("Kinesis", r["kinesis"]), ("Kafka", r["kafka"])):
        print(f"| {r['workload']} | {bus} | {k['raw_events_per_second']:,.0f} | {k['relay_events_per_second']:,.0f} | "
              f"{k['ratio']:.0%} | {k['relay_calls']} | {k['relay_calls'] / r['invocations']:.1f} | {k['relay_cpu_ms_per_event']:.4f} |")
print("""
**End-to-end latency**, API `201` → projector applied, stream relay, at a fixed offered rate, each bus
on fresh engines; the local mappings wait 100 ms when a shard or partition has nothing new.

| bus | reservations | p50 ms | p95 ms | p99 ms | max ms | not applied |
|---|---|---|---|---|---|---|""")
for bus, name in (("kinesis", "Kinesis (kinesis-mock)"), ("kafka", "Kafka (Tansu)")):
    r = latency[bus]
    l = r["latency_ms"]
    print(f"| {name} | {r['created']} | {l['p50']:.0f} | {l['p95']:.0f} | {l['p99']:.0f} | {l['max']:.0f} | {r['not_applied_within_60s']} |")
pairs = relay[-1]
print(f"""
The relay sends a reservation's next event only once every record before its previous one is
accepted, on both buses (docs/adr/0002-relay-ordering.md, and ADR 0007 for Kafka); the calls per
batch of the second workload are what that rule costs: {1 - pairs['kinesis']['ratio']:.0%} of raw throughput on Kinesis,
{1 - pairs['kafka']['ratio']:.0%} on Kafka, where a produce to the local broker answers sooner than a `PutRecords` to kinesis-mock.
Local engines, not AWS: Lambda polls a Kinesis shard once a second and keeps MSK pollers reading,
so deployed latencies differ by that.""")
PY
}

bench_functions() {
  local runs="${1:-5}" kinds consumers sizes="" results=""
  # The product's functions, then every consumer in the one list (consumers::ALL); a failure to
  # list them stops the run rather than leaving them out.
  consumers="$("$bin/pipeline-bench" consumers)"
  mapfile -t kinds < <(printf '%s\n' api relay poller "$consumers")
  log "functions: arm64 packages (scripts/build.sh)"
  "$ROOT/scripts/build.sh" >"$logs/build.log" 2>&1 || { tail -20 "$logs/build.log"; die "scripts/build.sh failed"; }
  for kind in "${kinds[@]}"; do
    sizes+="reservations-$kind $(stat -c %s "$ROOT/target/lambda/reservations-$kind/bootstrap.zip")"$'\n'
  done
  log "functions: native release builds for the Runtime API emulator"
  (cd "$ROOT" && cargo build --quiet --release "${kinds[@]/#/--package=reservations-}")
  fresh_engines
  # The notifier's topic and the dead-letter queues: moto stands in for SNS and SQS.
  ensure_sqs_engine
  start_sqs_engine "$sqs_port" "$logs" BENCH_SQS_PORT
  RUST_LOG=warn "$bin/devstack" provision >"$logs/provision.log" 2>&1
  # The notifier starts only with its topic's ARN, which provisioning reports.
  NOTIFICATIONS_TOPIC_ARN="$(sed -n 's/^ready: NOTIFICATIONS_TOPIC_ARN=//p' "$logs/provision.log")"
  export NOTIFICATIONS_TOPIC_ARN
  for kind in "${kinds[@]}"; do
    log "functions: reservations-$kind, $runs cold starts"
    results+="$("$bin/pipeline-bench" init --binary "$bin/reservations-$kind" --kind "$kind" --runs "$runs")"$'\n'
  done
  # The relay on the Kafka bus: it connects to the broker and its topic's partitions at start.
  ensure_kafka_engine
  start_kafka_engine "$kafka_port" "$logs" BENCH_KAFKA_PORT
  EVENT_BUS=kafka RUST_LOG=warn "$bin/devstack" provision >"$logs/provision-kafka.log" 2>&1
  log "functions: reservations-relay on the Kafka bus, $runs cold starts"
  results+="$(EVENT_BUS=kafka "$bin/pipeline-bench" init --binary "$bin/reservations-relay" --kind relay --runs "$runs")"$'\n'
  echo "$results"
  python3 - "$sizes" "$results" "$(command_line functions "$runs")" "$machine" "$day" <<'PY' | write_section "## Functions: package size, init time and memory"
import json, sys
sizes = dict(line.split() for line in sys.argv[1].splitlines() if line.strip())
rows = [json.loads(line) for line in sys.argv[2].splitlines() if line.strip()]
command, machine, day = sys.argv[3:6]
print(f"""## Functions: package size, init time and memory

Command: `{command}`. Run on {day}: {machine}.

- **Zipped size**: `scripts/build.sh` (`cargo lambda build --release --arm64`, the deployed
  `bootstrap`, zipped at level 9). Goal ≤ 5 MB.
- **Init** and **memory**: the same code built natively (x86_64 release: this machine cannot run
  arm64) under a Lambda Runtime API emulator (`pipeline-bench init`): the process starts with
  Lambda's environment variables, builds its config and SDK clients, and calls
  `GET /2018-06-01/runtime/invocation/next`; that call is "ready". The emulator then hands it one
  event of its trigger's real shape (an API Gateway HTTP API request for `GET /slots/{{id}}`, the
  outbox-insert stream record fixture, the AWS sample Kinesis event, a scheduled event) against the
  embedded stack, and reads the peak RSS (`VmHWM`) when the function asks for the next one.
  Median of the runs. Goals: ready ≤ 40 ms, peak RSS ≤ 32 MB.

| function | zipped (arm64) | ready ms (p50 / max) | first event done ms (p50) | peak RSS MiB (max) |
|---|---|---|---|---|""")
for r in rows:
    size = int(sizes[r["binary"]]) / 1_000_000
    name = r["binary"] + (" (EVENT_BUS=kafka)" if r.get("bus") == "kafka" else "")
    print(f"| {name} | {size:.2f} MB | {r['ready_ms']['p50']:.1f} / {r['ready_ms']['max']:.1f} | "
          f"{r['first_invocation_done_ms']['p50']:.1f} | {r['peak_rss_mib']['max']:.1f} |")
print("""
The first event includes the first connection to DynamoDB Local or kinesis-mock; on Lambda it is
a TLS connection to the regional endpoint and takes longer. Each consumer's first event (AWS's
sample Kinesis event) holds a record that is not an event: it goes to the dead-letter file, so
theirs is the cheapest path.
The emulator gives each event a deadline 1.5 s away, inside the poller's 3 s margin, so the poller
answers at once instead of polling until its deadline. The relay with `EVENT_BUS=kafka` connects to
the broker (plaintext here; TLS and an MSK IAM token on AWS) and to its topic's partitions before it
is ready, and its first event is a produce to the local Tansu broker.""")
PY
}

bench_consumers() {
  local events="${1:-10000}" batch="${2:-100}" results
  # The notifier publishes to its topic, on moto's SNS: the consumers are built as their Lambdas are.
  fresh_engines_and_sns
  log "consumers: $events events, batches of $batch, in memory and on the local stack"
  results="$("$bin/consumer-bench" --events "$events" --batch-size "$batch")"
  echo "$results"
  python3 - "$results" "$machine" "$day" "$(command_line consumers "$events" "$batch")" <<'PY' | write_section "## Consumers: cost per event"
import json, sys
r = json.loads(sys.argv[1])
machine, day, command = sys.argv[2:5]
print(f"""## Consumers: cost per event

Command: `{command}` (release build, one thread). Run on {day}: {machine}.

Every consumer the product registers (`consumers::ALL`), built by its registration. The same
{r['events']} Kinesis events (three quarters creates, then cancels of a third of them, the envelopes
as the relay writes them) in {r['invocations']} invocations of {r['batch_size']}, through each consumer's
handler as the Lambda runtime would run it (event JSON → `KinesisEvent`, the handler, response →
JSON).

- **In memory**: the consumer on its in-memory stores (the same version rule), where its
  registration has them: the handler's own work, process CPU per event, median of
  {r['memory_passes']} passes, each on an empty store.
- **Local stack**: the consumer built as its Lambda builds it, through the SDK, each pass on a
  fresh table, mean of {r['dynamodb_passes']} passes after a warm-up: DynamoDB Local, and moto's SNS
  for the notifier's topic, another process on the same cores (a topic no queue subscribes to:
  moto delivers to a subscribed queue inside each publish, ever slower as the queue fills, where
  AWS answers first). Capacity is what DynamoDB Local reports per call
  (`ReturnConsumedCapacity=TOTAL`), per applied event; the calls are every AWS request the
  consumer sent, of any service, counted on the wire.

| consumer | in memory: CPU µs/event | in memory: events/s | local stack: CPU ms/event (SDK incl.) | local stack: events/s | RRU/event | WRU/event | AWS calls/event |
|---|---|---|---|---|---|---|---|""")
for c in r["consumers"]:
    name = c["name"]
    units = c["units_per_event"]
    memory = c["memory"]
    calls = c["calls_per_event"]
    ops = ", ".join(f"{call} {round(n, 2):g}" for call, n in sorted(calls.items()))
    in_memory = (f"{memory['cpu_ms_per_event'] * 1000:.1f} | {memory['events_per_second']:,.0f}"
                 if memory else "— | —")
    print(f"| {name} | {in_memory} | "
          f"{c['dynamodb']['cpu_ms_per_event']:.3f} | {c['dynamodb']['events_per_second']:,.0f} | "
          f"{units['read']:.2f} | {units['write']:.2f} | {sum(calls.values()):.2f} ({ops}) |")
print("""
The projector writes one item per event with a condition on the version. The notifier makes three
steps per notification (docs/adr/0005-notification-delivery.md): it claims the reservation's next
version on its progress item (an update), publishes, then advances the progress and stores the
sent notification in one transaction: sending each notification once costs those writes.
DynamoDB Local and moto run on the same two cores; their latency, not the handler, sets the
events/s.
docs/cost.md prices the consumers with the CPU of a shorter run of its own (`scripts/bench.sh cost`),
on its own day: this machine's speed varies from day to day, so compare figures of one run.""")
PY
}

bench_cost() {
  local reservations="${1:-1000}" cancels="${2:-250}" out="$logs/cost"
  mkdir -p "$out"
  fresh_engines
  log "cost: capacity units of $reservations reservations and $cancels cancels in each relay mode, then the poller idle"
  "$bin/pipeline-bench" capacity --reservations "$reservations" --cancels "$cancels" >"$out/capacity.json"
  fresh_engines_and_sns
  log "cost: the consumers' units, calls and CPU per event"
  "$bin/consumer-bench" --events 2000 --memory-passes 1 --dynamodb-passes 1 >"$out/consumers.json"
  fresh_engines_and_kafka
  log "cost: the relay's CPU per event, on Kinesis and on Kafka"
  "$bin/relay-bench" --events 2000 --kinesis-passes 1 --kafka "$KAFKA_BOOTSTRAP_SERVERS" >"$out/relay.jsonl"
  pip_tools "$ROOT/.venv-bench" matplotlib==3.9.2
  "$ROOT/.venv-bench/bin/python" "$ROOT/scripts/lib/cost-model.py" "$out/capacity.json" "$out/consumers.json" \
    "$out/relay.jsonl" "$ROOT/docs/cost.md" "$ROOT/docs/cost.png" "$(command_line cost "$reservations" "$cancels")" \
    "$machine" "$day"
  log "wrote docs/cost.md and docs/cost.png"
}

case "$what" in
  modes) bench_modes "${@:2}" ;;
  api) bench_api "${@:2}" ;;
  hot-slot) bench_hot_slot "${@:2}" ;;
  relay) bench_relay "${@:2}" ;;
  buses) bench_buses "${@:2}" ;;
  functions) bench_functions "${@:2}" ;;
  consumers) bench_consumers "${@:2}" ;;
  cost) bench_cost "${@:2}" ;;
  all)
    bench_modes
    bench_api
    bench_hot_slot
    bench_relay
    bench_buses
    bench_consumers
    bench_functions
    bench_cost
    ;;
esac

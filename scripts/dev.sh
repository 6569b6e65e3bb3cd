#!/usr/bin/env bash
# The whole product on this machine, no Docker: DynamoDB Local, kinesis-mock and moto (SNS and
# SQS) on 127.0.0.1, tables and stream from infra/resources.json, the notifications topic and its
# subscriber queue, and the API on http://127.0.0.1:3000 served by the Lambda's own handler.
# Ctrl-C stops everything this script started.
#
# Against LocalStack or AWS instead: set AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_DYNAMODB /
# AWS_ENDPOINT_URL_KINESIS, AWS_ENDPOINT_URL_SNS, AWS_ENDPOINT_URL_SQS), or pass --external to use whatever the SDK configuration says
# (profile, region, credentials); no local engine is started then.
#
# Relay mode: --relay stream (default: DynamoDB Streams → relay) or --relay polling (the polling
# publisher, every POLL_INTERVAL_MS, default 1000; the API then marks new events for it).
# Bus: --bus kinesis (default: the Kinesis stream) or --bus kafka (a Kafka broker, Tansu, on
# 127.0.0.1:KAFKA_PORT unless KAFKA_BOOTSTRAP_SERVERS names one, and the topic KAFKA_TOPIC,
# reservation-events by default, created if missing with KAFKA_PARTITIONS partitions, 4 by
# default: the count the relay maps keys by, and refuses a topic without).
#
# A consumer that lives in a stack of its own: --consumer DIR (repeatable), DIR holding its Cargo
# package (one binary, its Lambda function) and its SAM template; its tables are made from the
# template and its binary runs as Lambda runs it, behind a mapping on the bus, for example
# --consumer examples/booking-ledger.
#
# Environment: DYNAMODB_PORT (8000), KINESIS_PORT (4568), SNS_SQS_PORT (4575), KAFKA_PORT (9092),
# API_ADDR (127.0.0.1:3000), RELAY_MODE, EVENT_BUS,
# plus the service's own variables (RESERVATIONS_TABLE, OUTBOX_TABLE, EVENTS_STREAM, ...; README).
set -euo pipefail
# shellcheck source=lib/stack.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/stack.sh"

external=false
outside=()
RELAY_MODE="${RELAY_MODE:-stream}"
EVENT_BUS="${EVENT_BUS:-kinesis}"
while (($#)); do
  case "$1" in
    --external) external=true ;;
    --relay) RELAY_MODE="${2:-}"; shift ;;
    --relay=*) RELAY_MODE="${1#--relay=}" ;;
    --bus) EVENT_BUS="${2:-}"; shift ;;
    --bus=*) EVENT_BUS="${1#--bus=}" ;;
    --consumer) outside+=("${2:-}"); shift ;;
    --consumer=*) outside+=("${1#--consumer=}") ;;
    -h|--help) sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (try --help)" ;;
  esac
  shift
done
case "$RELAY_MODE" in
  stream | polling) export RELAY_MODE ;;
  *) die "--relay must be stream or polling, got '$RELAY_MODE'" ;;
esac
case "$EVENT_BUS" in
  kinesis | kafka) export EVENT_BUS ;;
  *) die "--bus must be kinesis or kafka, got '$EVENT_BUS'" ;;
esac
# One count for the topic devstack creates and for the relay, the poller and the tools.
if [[ "$EVENT_BUS" == kafka ]]; then
  export KAFKA_PARTITIONS="${KAFKA_PARTITIONS:-4}"
fi
if [[ -n "${AWS_ENDPOINT_URL:-}${AWS_ENDPOINT_URL_DYNAMODB:-}${AWS_ENDPOINT_URL_KINESIS:-}" ]]; then
  external=true
fi

DYNAMODB_PORT="${DYNAMODB_PORT:-8000}"
KINESIS_PORT="${KINESIS_PORT:-4568}"
SNS_SQS_PORT="${SNS_SQS_PORT:-4575}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
API_ADDR="${API_ADDR:-127.0.0.1:3000}"
API_URL="http://$API_ADDR"
LOG_DIR="$ROOT/.devstack/logs"

trap 'stop_started; rm -f "$ROOT/.devstack/env"' EXIT
trap 'echo; log "stopping"; exit 0' INT TERM

for dir in "${outside[@]}"; do
  [[ -f "$dir/Cargo.toml" && -f "$dir/template.yaml" ]] ||
    die "--consumer $dir: the folder must hold the consumer's Cargo.toml and its template.yaml"
done

ensure_cargo
log "building the local stack (cargo build -p devstack)"
(cd "$ROOT" && cargo build --quiet -p devstack)
# Each outside consumer's binary: the one binary its package builds, for this machine.
outside_binaries=()
for dir in "${outside[@]}"; do
  log "building the consumer in $dir (cargo build)"
  cargo build --quiet --manifest-path "$dir/Cargo.toml" --bins
  binary=$(cargo metadata --quiet --format-version 1 --no-deps --manifest-path "$dir/Cargo.toml" | python3 -c '
import json, os, sys
metadata = json.load(sys.stdin)
manifest = os.path.realpath(sys.argv[1])
package = next(p for p in metadata["packages"] if os.path.realpath(p["manifest_path"]) == manifest)
bins = [t["name"] for t in package["targets"] if "bin" in t["kind"]]
if len(bins) != 1:
    sys.exit(f"{manifest} must build one binary, its Lambda function, not {len(bins)}")
print(os.path.join(metadata["target_directory"], "debug", bins[0]))
' "$dir/Cargo.toml") || die "--consumer $dir: no binary to run"
  outside_binaries+=("$binary")
done

if $external; then
  log "using the SDK's configuration (external endpoints), starting no local engine"
else
  ensure_engines
  ensure_sqs_engine
  log "starting DynamoDB Local on 127.0.0.1:$DYNAMODB_PORT, kinesis-mock on 127.0.0.1:$KINESIS_PORT and moto (SNS, SQS) on 127.0.0.1:$SNS_SQS_PORT"
  start_engines "$DYNAMODB_PORT" "$KINESIS_PORT" "$LOG_DIR"
  start_sqs_engine "$SNS_SQS_PORT" "$LOG_DIR" SNS_SQS_PORT
  # A broker named by KAFKA_BOOTSTRAP_SERVERS (Kafka in Docker, say) is used as it is.
  if [[ "$EVENT_BUS" == kafka && -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
    ensure_kafka_engine
    log "starting the Tansu Kafka broker on 127.0.0.1:$KAFKA_PORT (memory storage)"
    start_kafka_engine "$KAFKA_PORT" "$LOG_DIR" KAFKA_PORT
  fi
fi

# Tables, stream, the notifications topic and its queue (again in `up`: it changes nothing then);
# the topic's ARN is for the tools below.
provisioned=$("$ROOT/target/debug/devstack" provision) || die "provisioning the local resources failed (logs: $LOG_DIR)"
NOTIFICATIONS_TOPIC_ARN="${NOTIFICATIONS_TOPIC_ARN:-$(sed -n 's/^ready: NOTIFICATIONS_TOPIC_ARN=//p' <<<"$provisioned")}"
export NOTIFICATIONS_TOPIC_ARN

# For scripts/events.sh, scripts/replay.sh and other tools run from another terminal.
mkdir -p "$ROOT/.devstack"
{
  for var in AWS_ENDPOINT_URL AWS_ENDPOINT_URL_DYNAMODB AWS_ENDPOINT_URL_DYNAMODB_STREAMS AWS_ENDPOINT_URL_KINESIS \
    AWS_ENDPOINT_URL_SNS AWS_ENDPOINT_URL_SQS AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION AWS_PROFILE \
    RESERVATIONS_TABLE OUTBOX_TABLE EVENTS_STREAM READ_MODEL_TABLE NOTIFICATIONS_TABLE NOTIFICATIONS_TOPIC \
    NOTIFICATIONS_QUEUE NOTIFICATIONS_TOPIC_ARN RELAY_MODE EVENT_BUS KAFKA_BOOTSTRAP_SERVERS KAFKA_TOPIC KAFKA_AUTH \
    KAFKA_PARTITIONS; do
    [[ -n "${!var:-}" ]] && printf 'export %s=%q\n' "$var" "${!var}"
  done
} >"$ROOT/.devstack/env"

port_in_use "${API_ADDR##*:}" && die "port ${API_ADDR##*:} is already in use; set API_ADDR to another address"
"$ROOT/target/debug/devstack" up --addr "$API_ADDR" &
STARTED_PIDS+=($!)
wait_for_port "${API_ADDR##*:}" "the API" "$!" /dev/null
for i in "${!outside[@]}"; do
  "$ROOT/target/debug/devstack" consumer --template "${outside[$i]}/template.yaml" --binary "${outside_binaries[$i]}" &
  STARTED_PIDS+=($!)
done

cat <<EOT

  The reservations API is up on $API_URL  (relay: $RELAY_MODE, bus: $EVENT_BUS; logs: $LOG_DIR; Ctrl-C stops everything)

  # a slot with 20 seats
  curl -s -X PUT $API_URL/slots/dinner-2026-12-24 -H 'content-type: application/json' -d '{"capacity": 20}'

  # reserve 2 seats (repeat it with the same Idempotency-Key: same answer, nothing booked twice)
  curl -s -X POST $API_URL/reservations -H 'content-type: application/json' \\
       -H 'idempotency-key: demo-1' -d '{"slot_id": "dinner-2026-12-24", "guest_id": "ada", "seats": 2}'

  # look at it, then cancel it (use the reservation_id printed above)
  curl -s $API_URL/reservations/RESERVATION_ID
  curl -s -X POST $API_URL/reservations/RESERVATION_ID/cancel

  # the slot's inventory
  curl -s $API_URL/slots/dinner-2026-12-24

  # ada's reservations, newest first, from the read model the projector builds from the events
  curl -s $API_URL/guests/ada/reservations

  # the events the relay put on the bus ($EVENT_BUS; another terminal; --follow to keep watching)
  scripts/events.sh

  # the guest notifications the notifier published to the SNS FIFO topic, as its subscribed
  # queue receives them, one JSON line each (another terminal; --follow to watch them arrive)
  scripts/notifications.sh --follow

  # rebuild the read model from the stream (the Kinesis bus; idempotent: a second run changes nothing)
  scripts/replay.sh projector

EOT
wait

#!/usr/bin/env bash
# Prints the events on the bus as JSON lines: the Kinesis stream, every shard from the start,
# parents before children; or with EVENT_BUS=kafka (scripts/dev.sh --bus kafka) the Kafka topic,
# every partition from its start. Uses the settings of a running scripts/dev.sh (.devstack/env)
# when there is one, else the SDK's usual configuration. --follow keeps watching.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
[[ -f "$ROOT/.devstack/env" ]] && source "$ROOT/.devstack/env"
cd "$ROOT"
cargo build --quiet -p devstack
exec "$ROOT/target/debug/devstack" events "$@"

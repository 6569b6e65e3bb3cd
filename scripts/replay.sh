#!/usr/bin/env bash
# Runs the replay CLI (reservations-replay) against the stack of a running scripts/dev.sh
# (.devstack/env), else with the SDK's usual configuration. All arguments go to the CLI:
#   scripts/replay.sh projector | notifier | print  [--from ...] [--to ...] [--shard ...] [--dry-run]
# After scripts/dev.sh --bus kafka it reads the Kafka topic (--partition, --from 0:120,1:95).
# With --stack NAME it works on that deployed stack instead (names from its outputs; endpoints,
# region and credentials the SDK's, e.g. AWS_ENDPOINT_URL=http://127.0.0.1:4566 for LocalStack).
# Outside this repository, install it with: cargo install --path crates/replay
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
if [[ -f "$ROOT/.devstack/env" && " $* " != *" --stack "* && " $* " != *" --stack="* ]]; then
  source "$ROOT/.devstack/env"
fi
cd "$ROOT"
cargo build --quiet -p reservations-replay
exec "$ROOT/target/debug/reservations-replay" "$@"

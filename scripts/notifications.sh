#!/usr/bin/env bash
# Prints the notifications the example subscriber queue received, one JSON line each, and removes
# them from the queue (this script is that subscriber). Uses the endpoints of a running
# scripts/dev.sh (.devstack/env) when there is one, else the SDK's usual configuration.
# --follow keeps watching.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
[[ -f "$ROOT/.devstack/env" ]] && source "$ROOT/.devstack/env"
cd "$ROOT"
cargo build --quiet -p devstack
exec "$ROOT/target/debug/devstack" notifications "$@"

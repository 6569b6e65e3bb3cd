#!/usr/bin/env bash
# Prints the events on the Kinesis stream as JSON lines, every shard from the start, parents
# before children. Uses the endpoints of a running scripts/dev.sh (.devstack/env) when there is
# one, else the SDK's usual configuration. --follow keeps watching.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
[[ -f "$ROOT/.devstack/env" ]] && source "$ROOT/.devstack/env"
cd "$ROOT"
cargo build --quiet -p devstack
exec "$ROOT/target/debug/devstack" events "$@"

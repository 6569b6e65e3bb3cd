#!/usr/bin/env bash
# Builds with `sam build` (cargo-lambda build method, arm64) and deploys with `sam deploy`:
# guided the first time (it writes samconfig.toml), then with the saved answers. Extra arguments
# go to `sam deploy`, e.g. --parameter-overrides AuthMode=NONE for a demo.
set -euo pipefail
# shellcheck source=lib/stack.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/stack.sh"

ensure_cargo
ensure_sam
cd "$ROOT"
log "sam build (cargo lambda, arm64)"
sam build --beta-features
if [[ -f samconfig.toml ]]; then
  sam deploy "$@"
else
  [[ -t 0 ]] || die "first deploy is guided and needs a terminal; run it interactively once (it writes samconfig.toml)"
  sam deploy --guided "$@"
fi
log "stack outputs (ApiUrl goes to scripts/smoke.sh):"
sam list stack-outputs 2>/dev/null || true

#!/usr/bin/env bash
# Deploys the real template.yaml into the LocalStack of docker-compose.yml with samlocal, then
# runs scripts/smoke.sh against the API it created. Needs Docker (`docker compose up -d` first);
# HTTP APIs need LocalStack Pro (LOCALSTACK_AUTH_TOKEN).
set -euo pipefail
# shellcheck source=lib/stack.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/stack.sh"

endpoint="${LOCALSTACK_ENDPOINT:-http://localhost:4566}"
stack="${STACK_NAME:-reservations}"
curl -sf "$endpoint/_localstack/init/ready" >/dev/null ||
  die "LocalStack is not ready at $endpoint: run 'docker compose up -d' and wait for it to be healthy"

ensure_cargo
ensure_sam local
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
cd "$ROOT"
log "samlocal build (cargo lambda, arm64)"
samlocal build --beta-features
log "samlocal deploy --stack-name $stack"
samlocal deploy --stack-name "$stack" --s3-bucket reservations-sam-artifacts \
  --capabilities CAPABILITY_IAM --no-confirm-changeset --no-fail-on-empty-changeset \
  --parameter-overrides AuthMode=NONE "$@"
api_url=$(awslocal cloudformation describe-stacks --stack-name "$stack" \
  --query "Stacks[0].Outputs[?OutputKey=='ApiUrl'].OutputValue" --output text)
api_id=$(printf '%s' "$api_url" | sed -E 's#https://([^.]+)\..*#\1#')
local_url="$endpoint/restapis/$api_id/_user_request_"
[[ "$api_url" == https://* ]] && local_url="http://$api_id.execute-api.localhost.localstack.cloud:4566"
log "API: $local_url"
"$ROOT/scripts/smoke.sh" "$local_url"

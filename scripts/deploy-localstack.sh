#!/usr/bin/env bash
# Deploys the real template.yaml to a running LocalStack and runs scripts/smoke.sh against it; the
# stack stays up for you to call (its outputs are printed and kept in .localstack/, with
# LocalApiUrl added: the API's URL as this machine reaches it).
#
#   scripts/localstack.sh start && scripts/deploy-localstack.sh      # host mode, no Docker
#   docker compose up -d && scripts/deploy-localstack.sh             # LocalStack in Docker
#   scripts/deploy-localstack.sh RelayMode=polling                   # more parameter overrides
#
# Without arguments it deploys what LocalStack community can serve: ApiEndpoint=RestApi (API
# Gateway's REST API; HTTP APIs are a Pro feature) with AuthMode=NONE, under the stack name
# `reservations` (STACK_NAME). LocalStack community checks no signature and passes no signer to
# the function (IAM enforcement is a Pro feature), so AuthMode=IAM would refuse every call there;
# requests are signed anyway (SigV4, service execute-api), as on AWS. The API is at LocalStack's
# port by path, http://127.0.0.1:4566/_aws/execute-api/<api id>/prod, which every HTTP client can
# call (the stack's ApiUrl output is a .localhost name behind a self-signed certificate); the
# outputs file names it LocalApiUrl. ApiEndpoint=FunctionUrl deploys a function URL instead (a
# *.localhost host name, which curl resolves and many clients do not).
# The functions are built for where they will run: for this host when LocalStack runs them as host
# processes (scripts/localstack.sh), with cargo lambda for Lambda's Amazon Linux in Docker, both
# for this machine's architecture (the Architecture parameter follows).
# Settings: LOCALSTACK_ENDPOINT (http://127.0.0.1:4566), STACK_NAME (reservations), and in host
# mode PREBUILT_FUNCTIONS: a folder that already holds the functions' binaries for this host (for
# example target/debug after `cargo build --workspace`), deployed as they are instead of built.
set -euo pipefail
# shellcheck source=lib/stack.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/stack.sh"
# shellcheck source=lib/localstack.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/localstack.sh"

endpoint="$LOCALSTACK_ENDPOINT"
stack="${STACK_NAME:-reservations}"
curl -sf "$endpoint/_localstack/health" >/dev/null ||
  die "no LocalStack answers at $endpoint: start one with scripts/localstack.sh start (no Docker) or docker compose up -d"

ensure_cargo
ensure_aws_tools
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}" AWS_PAGER=""
# Every client the CLI makes (package makes its own for S3) goes to LocalStack, S3 by path: a
# bucket's virtual host name would need DNS.
mkdir -p "$LOCALSTACK_DIR"
# One file per stack: two deploys may run side by side.
aws_config="$LOCALSTACK_DIR/aws-config-$stack"
printf '[default]\nregion = %s\ns3 =\n    addressing_style = path\n' "$AWS_DEFAULT_REGION" >"$aws_config"
aws() { AWS_ENDPOINT_URL="$endpoint" AWS_CONFIG_FILE="$aws_config" "$AWS_VENV/bin/aws" "$@"; }

case "$(uname -m)" in
  x86_64 | amd64) architecture=x86_64 ;;
  aarch64 | arm64) architecture=arm64 ;;
  *) die "no Lambda architecture for this machine ($(uname -m))" ;;
esac
mapfile -t binaries < <(sed -n '/^\[\[bin\]\]/,/^name/ s/^name = "\(.*\)"/\1/p' "$ROOT"/functions/*/Cargo.toml)
code="$LOCALSTACK_DIR/deploy/$stack/code"
rm -rf "$code"
mkdir -p "$code"
cd "$ROOT"
if localstack_pid >/dev/null && [[ "$endpoint" == "http://127.0.0.1:$LOCALSTACK_PORT" ]]; then
  # Host mode runs each bootstrap on this machine: a plain build is what runs.
  if [[ -n "${PREBUILT_FUNCTIONS:-}" ]]; then
    built="$PREBUILT_FUNCTIONS"
    for binary in "${binaries[@]}"; do
      [[ -x "$built/$binary" ]] || die "PREBUILT_FUNCTIONS=$built holds no $binary: build the functions first (cargo build --workspace)"
    done
    log "deploying the functions built in $built"
  else
    log "building the functions for this host (cargo build)"
    cargo build --quiet "${binaries[@]/#/--package=}"
    built="$ROOT/target/debug"
  fi
else
  ensure_venv
  export PATH="$VENV/bin:$PATH"
  log "building the functions for Lambda ($architecture, cargo lambda build --release)"
  cargo lambda build --quiet --release "--${architecture/_/-}" "${binaries[@]/#/--package=}"
  built="$ROOT/target/lambda"
fi
for binary in "${binaries[@]}"; do
  mkdir -p "$code/$binary"
  if [[ -f "$built/$binary/bootstrap" ]]; then cp "$built/$binary/bootstrap" "$code/$binary/bootstrap"; else cp "$built/$binary" "$code/$binary/bootstrap"; fi
done

deploy_dir="$LOCALSTACK_DIR/deploy/$stack"
"$AWS_VENV/bin/python" "$ROOT/scripts/lib/template.py" with-code template.yaml "$code" >"$deploy_dir/template.json"
bucket="$stack-artifacts"
aws s3api head-bucket --bucket "$bucket" >/dev/null 2>&1 || aws s3 mb "s3://$bucket" >/dev/null
log "packaging and deploying stack $stack to $endpoint"
# Quiet unless it fails: it reports every upload's progress.
if ! packaged=$(aws cloudformation package --template-file "$deploy_dir/template.json" --s3-bucket "$bucket" \
  --output-template-file "$deploy_dir/packaged.yaml" 2>&1); then
  printf '%s\n' "$packaged" | tail -n 5 >&2
  die "packaging the functions for stack $stack failed"
fi
if ! aws cloudformation deploy --template-file "$deploy_dir/packaged.yaml" --stack-name "$stack" \
  --s3-bucket "$bucket" --capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND --no-fail-on-empty-changeset \
  --parameter-overrides ApiEndpoint=RestApi AuthMode=NONE "Architecture=$architecture" "$@"; then
  aws cloudformation describe-stack-events --stack-name "$stack" \
    --query "StackEvents[?contains(ResourceStatus, 'FAILED')].[LogicalResourceId, ResourceStatusReason]" \
    --output text >&2 || true
  die "stack $stack did not deploy; the failed resources are listed above"
fi
aws cloudformation describe-stacks --stack-name "$stack" --query "Stacks[0].Outputs" --output json \
  >"$deploy_dir/outputs.json"
output() {
  "$AWS_VENV/bin/python" -c 'import json,sys; print(next(o["OutputValue"] for o in json.load(open(sys.argv[1])) if o["OutputKey"] == sys.argv[2]))' \
    "$deploy_dir/outputs.json" "$1"
}
api_url="$(localstack_api_url "$(output ApiUrl)" "$endpoint")"
# The outputs file gets that URL too, as LocalApiUrl: a tool reading the file (crates/e2e) then
# finds a URL that works, next to the stack's own ApiUrl.
"$AWS_VENV/bin/python" - "$deploy_dir/outputs.json" "$api_url" <<'PY'
import json, sys
path, url = sys.argv[1], sys.argv[2]
outputs = [o for o in json.load(open(path)) if o["OutputKey"] != "LocalApiUrl"]
outputs.append({
    "OutputKey": "LocalApiUrl",
    "OutputValue": url,
    "Description": "The API's base URL as this machine reaches it on LocalStack (written by scripts/deploy-localstack.sh).",
})
with open(path, "w") as file:
    json.dump(outputs, file, indent=4)
    file.write("\n")
PY
parameter() {
  aws cloudformation describe-stacks --stack-name "$stack" \
    --query "Stacks[0].Parameters[?ParameterKey=='$1'].ParameterValue" --output text
}
auth_mode=$(parameter AuthMode)
# The poller starts once a minute (rate(1 minute)): its first run can come a minute after the
# deploy, so the smoke check waits that long for the read model in polling mode.
if [[ "$(parameter RelayMode)" == polling ]]; then export SMOKE_READ_MODEL_WAIT="${SMOKE_READ_MODEL_WAIT:-90}"; fi
log "stack $stack is up; its outputs are in ${deploy_dir#"$ROOT"/}/outputs.json"
# Signed as a caller on AWS signs (LocalStack's keys are test/test).
"$ROOT/scripts/smoke.sh" "$api_url" --auth iam
cat <<EOF

  API:  $api_url    (AuthMode $auth_mode)
  curl -s --aws-sigv4 aws:amz:$AWS_DEFAULT_REGION:execute-api --user test:test \\
    -X PUT $api_url/slots/dinner -H 'content-type: application/json' -d '{"capacity": 20}'
  The tools below take LocalStack's endpoint, Region and credentials (any key; test by custom)
  from the SDK's variables:
    export AWS_ENDPOINT_URL=$endpoint AWS_REGION=$AWS_DEFAULT_REGION AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
  Events:  EVENTS_STREAM=$(output EventsStreamName) scripts/events.sh
  Replay, audit, re-drive:  scripts/replay.sh --stack $stack audit
  Delete it: .venv-aws/bin/aws cloudformation delete-stack --stack-name $stack
EOF
if [[ "$api_url" == *.localhost* ]]; then
  host="${api_url#*://}"
  printf '\n  (A host name under .localhost is this machine; where the resolver does not know that, add\n   --resolve %s:%s:127.0.0.1 to curl.)\n' "${host%:*}" "${host##*:}"
fi

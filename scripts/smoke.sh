#!/usr/bin/env bash
# Exercises a running reservations API with curl: a deployed one (the stack's ApiUrl output) or the
# local one of scripts/dev.sh. Exits non-zero at the first unexpected answer.
#   scripts/smoke.sh http://127.0.0.1:3000                                # no auth
#   scripts/smoke.sh https://abc123.execute-api.eu-west-1.amazonaws.com --auth iam
#   SMOKE_JWT="$token" scripts/smoke.sh https://abc123.execute-api.eu-west-1.amazonaws.com --auth jwt
# --auth iam signs every request with SigV4 (curl --aws-sigv4) with the caller's credentials from
# AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN (for a profile:
# eval "$(aws configure export-credentials --format env)"); the service is execute-api for an HTTP
# API and lambda for a function URL, the region is read from the URL (else AWS_REGION).
# --auth jwt sends SMOKE_JWT as a bearer token: an admin's (JwtAdminScope or the group
# reservations-admins), since it creates a slot and books for a guest of its own making.
# --auth none (the default, for AuthMode NONE and scripts/dev.sh) sends neither; a stack deployed
# with the template's default AuthMode, IAM, needs --auth iam.
# Set SMOKE_READ_MODEL_WAIT (seconds, default 20) for how long the read model may take.
set -euo pipefail
usage="usage: scripts/smoke.sh <api-url> [--auth none|iam|jwt]"
url="${1:?$usage}"
url="${url%/}"
auth=none
if [[ $# -ge 2 ]]; then
  [[ $# -eq 3 && "$2" == --auth ]] || { echo "$usage" >&2; exit 2; }
  auth=$3
fi
wait_seconds="${SMOKE_READ_MODEL_WAIT:-20}"
run="smoke-$(date +%s)-$RANDOM"
slot="$run-slot"
guest="$run-guest"

# Names under .localhost are loopback (RFC 6761), as LocalStack's function URLs are
# (<id>.lambda-url.<region>.localhost:4566); older curls ask DNS for them, so say it here.
resolve_args=()
authority="${url#*://}"
authority="${authority%%/*}"
if [[ "${authority%:*}" == *.localhost ]]; then
  port="${authority##*:}"
  [[ "$port" != "$authority" ]] || port=80
  resolve_args=(--resolve "${authority%:*}:$port:127.0.0.1")
fi

auth_args=()
case "$auth" in
  none) ;;
  iam)
    [[ -n "${AWS_ACCESS_KEY_ID:-}" && -n "${AWS_SECRET_ACCESS_KEY:-}" ]] || {
      echo "smoke: --auth iam needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (for a profile: eval \"\$(aws configure export-credentials --format env)\")" >&2
      exit 2
    }
    service=execute-api
    [[ "$authority" == *.lambda-url.* ]] && service=lambda
    region="${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}"
    if [[ "$authority" =~ \.(execute-api|lambda-url)\.([a-z0-9-]+)\. ]]; then region="${BASH_REMATCH[2]}"; fi
    auth_args=(--aws-sigv4 "aws:amz:$region:$service" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY")
    [[ -z "${AWS_SESSION_TOKEN:-}" ]] || auth_args+=(-H "x-amz-security-token: $AWS_SESSION_TOKEN")
    ;;
  jwt)
    [[ -n "${SMOKE_JWT:-}" ]] || { echo "smoke: --auth jwt needs the token in SMOKE_JWT" >&2; exit 2; }
    auth_args=(-H "authorization: Bearer $SMOKE_JWT")
    ;;
  *) echo "$usage" >&2; exit 2 ;;
esac

fail() { printf 'smoke: FAILED: %s\n' "$*" >&2; exit 1; }
# What to do when the API turns the smoke test away (401, 403), for the --auth it ran with.
refused_hint() {
  [[ $status == 401 || $status == 403 ]] || return 0
  case "$auth" in
    none) printf ' (the API wants credentials: --auth iam for AuthMode IAM, --auth jwt with an admin token for JWT)' ;;
    iam) printf " (the signer's IAM policy must allow the stack's CallerPolicy output)" ;;
    jwt) printf " (SMOKE_JWT must be an admin's token: it creates a slot and books for another guest)" ;;
  esac
}
ok() { printf 'smoke: ok   %s\n' "$*"; }

# request METHOD PATH [BODY] -> sets $status and $body
request() {
  local method=$1 path=$2 data=${3:-}
  local args=(-sS -o /tmp/smoke-body.$$ -w '%{http_code}' -X "$method" "${resolve_args[@]}" "${auth_args[@]}" "$url$path")
  [[ -n "$data" ]] && args+=(-H 'content-type: application/json' -d "$data")
  status=$(curl "${args[@]}") || fail "$method $path: no answer from $url"
  body=$(cat /tmp/smoke-body.$$)
  rm -f /tmp/smoke-body.$$
}
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get(sys.argv[2], ""))' "$body" "$1"; }

request PUT "/slots/$slot" '{"capacity": 2}'
[[ $status == 201 ]] || fail "PUT slot: $status $body$(refused_hint)"
ok "PUT /slots/$slot -> 201"

request POST /reservations "{\"slot_id\": \"$slot\", \"guest_id\": \"$guest\", \"seats\": 2}"
[[ $status == 201 ]] || fail "POST reservation: $status $body$(refused_hint)"
id=$(field reservation_id)
ok "POST /reservations -> 201 ($id)"

request POST /reservations "{\"slot_id\": \"$slot\", \"guest_id\": \"$guest\", \"seats\": 1}"
[[ $status == 409 && $(field code) == sold_out ]] || fail "overbooking not refused: $status $body"
ok "POST /reservations on a full slot -> 409 sold_out"

request POST /reservations '{"slot_id": "", "seats": 0}'
[[ $status == 422 && $(field code) == validation_failed ]] || fail "bad input: $status $body"
ok "POST /reservations with bad input -> 422 validation_failed"

request POST "/reservations/$id/cancel"
[[ $status == 200 && $(field status) == CANCELLED ]] || fail "cancel: $status $body"
ok "POST /reservations/$id/cancel -> 200 CANCELLED"

request GET "/slots/$slot"
[[ $status == 200 && $(field available) == 2 ]] || fail "seats not returned: $status $body"
ok "GET /slots/$slot -> 200, 2 seats available again"

# A slot split over 4 shards (docs/design.md, "Sharded slots"): 5 seats dealt 2, 1, 1, 1, so a
# booking of 4 draws on several shards in its one transaction.
request PUT "/slots/$slot-flash" '{"capacity": 5, "shards": 4}'
[[ $status == 201 && $(field shards) == 4 ]] || fail "PUT sharded slot: $status $body"
request POST /reservations "{\"slot_id\": \"$slot-flash\", \"guest_id\": \"$guest-flash\", \"seats\": 4}"
[[ $status == 201 ]] || fail "booking across shards: $status $body"
request GET "/slots/$slot-flash"
[[ $status == 200 && $(field reserved) == 4 && $(field available) == 1 ]] || fail "sharded slot: $status $body"
ok "a slot of 4 shards -> 4 of its 5 seats booked across shards in one reservation"

# The read model is eventually consistent: wait for the cancel to reach it through the pipeline.
deadline=$((SECONDS + wait_seconds))
while :; do
  request GET "/guests/$guest/reservations"
  [[ $status == 200 ]] || fail "guest reservations: $status $body"
  [[ $body == *"$id"*CANCELLED* ]] && break
  ((SECONDS < deadline)) || fail "the cancel did not reach the read model within ${wait_seconds}s: $body"
  sleep 0.5
done
ok "GET /guests/$guest/reservations -> the reservation, CANCELLED (via relay, Kinesis, projector)"
echo "smoke: all checks passed against $url"

#!/usr/bin/env bash
# Deploys the booking ledger as a stack of its own beside a deployed reservation service: builds
# the function, then packages and deploys template.yaml, which imports the service's exported bus.
#
#   examples/booking-ledger/deploy.sh [--stack NAME] [--reservations-prefix PREFIX] [Name=Value ...]
#
# --stack: the ledger's stack (booking-ledger). --reservations-prefix: the service stack's
# ExportPrefix output (reservations). Name=Value: more parameters of template.yaml
# (AlarmTopicArn, StreamKeyArn). The bus, kinesis or kafka, is read from the service's SSM
# parameter /<prefix>/events/bus.
#
# Needs the AWS CLI and cargo-lambda (`cargo lambda build`, for Lambda's arm64), or LEDGER_BOOTSTRAP:
# a bootstrap already built (LocalStack in host mode runs one built for this machine; the
# architecture then follows the machine). Settings: AWS (the aws command: aws), ARTIFACTS_BUCKET
# (<stack>-artifacts, made if missing), OUTPUTS_FILE (where to write the stack's outputs as JSON).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
die() {
  echo "error: $*" >&2
  exit 1
}

stack=booking-ledger
prefix=reservations
overrides=()
while (($#)); do
  case "$1" in
    --stack) stack="${2:-}"; shift ;;
    --reservations-prefix) prefix="${2:-}"; shift ;;
    -h | --help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *=*) overrides+=("$1") ;;
    *) die "unknown argument $1 (try --help)" ;;
  esac
  shift
done
read -r -a aws <<<"${AWS:-aws}"

bus=$("${aws[@]}" ssm get-parameter --name "/$prefix/events/bus" --query Parameter.Value --output text) ||
  die "no SSM parameter /$prefix/events/bus: is the reservation service deployed with ExportPrefix $prefix?"
case "$bus" in
  kinesis) event_bus=Kinesis ;;
  kafka) event_bus=Kafka ;;
  *) die "/$prefix/events/bus is '$bus', not kinesis or kafka" ;;
esac

rm -rf "$here/build"
mkdir -p "$here/build"
if [[ -n "${LEDGER_BOOTSTRAP:-}" ]]; then
  [[ -x "$LEDGER_BOOTSTRAP" ]] || die "LEDGER_BOOTSTRAP=$LEDGER_BOOTSTRAP is not an executable"
  cp "$LEDGER_BOOTSTRAP" "$here/build/bootstrap"
  case "$(uname -m)" in
    aarch64 | arm64) architecture=arm64 ;;
    *) architecture=x86_64 ;;
  esac
else
  architecture=arm64
  cargo lambda build --release --arm64 --manifest-path "$here/Cargo.toml" --lambda-dir "$here/build/lambda"
  mv "$here/build/lambda/booking-ledger/bootstrap" "$here/build/bootstrap"
  rm -rf "$here/build/lambda"
fi

bucket="${ARTIFACTS_BUCKET:-$stack-artifacts}"
"${aws[@]}" s3api head-bucket --bucket "$bucket" >/dev/null 2>&1 || "${aws[@]}" s3 mb "s3://$bucket" >/dev/null
packaged="$(mktemp -d)/packaged.yaml"
"${aws[@]}" cloudformation package --template-file "$here/template.yaml" --s3-bucket "$bucket" \
  --output-template-file "$packaged" >/dev/null
"${aws[@]}" cloudformation deploy --template-file "$packaged" --stack-name "$stack" --s3-bucket "$bucket" \
  --capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND --no-fail-on-empty-changeset \
  --parameter-overrides "ReservationsExportPrefix=$prefix" "EventBus=$event_bus" "Architecture=$architecture" \
  "${overrides[@]}"
outputs=$("${aws[@]}" cloudformation describe-stacks --stack-name "$stack" --query "Stacks[0].Outputs" --output json)
if [[ -n "${OUTPUTS_FILE:-}" ]]; then
  printf '%s\n' "$outputs" >"$OUTPUTS_FILE"
fi
printf 'stack %s is up, reading the %s bus of %s:\n%s\n' "$stack" "$bus" "$prefix" "$outputs"

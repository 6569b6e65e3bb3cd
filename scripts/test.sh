#!/usr/bin/env bash
# Every test, unit and integration. Starts its own DynamoDB Local, kinesis-mock, moto (SNS, SQS)
# and the Tansu Kafka broker on ports of its own (TEST_DYNAMODB_PORT, TEST_KINESIS_PORT,
# TEST_SQS_PORT, TEST_KAFKA_PORT; free ones are picked when those are taken), runs the whole
# workspace's tests against them, and stops them, also when a test fails.
# Then it starts LocalStack in host mode (scripts/localstack.sh), deploys template.yaml to it
# twice, with the stream relay and with the polling publisher (scripts/deploy-localstack.sh, which
# also runs scripts/smoke.sh), runs the end-to-end suite of crates/e2e on the deployed stacks, and
# stops LocalStack. What it installs, it installs beside the build: one waits on the network, the
# other on the CPU.
#
# Extra arguments go to the test runner (cargo nextest run, or cargo test without nextest) and
# select tests of the first phase; with arguments the LocalStack phase does not run.
#
# The chaos, load and fuzz suites run a quick profile by default (1,000 chaos events on Kinesis,
# 1,000 on Kafka, a few hundred generated inputs per property); --long (first argument) runs
# 50,000 and 20,000 chaos events and ten times the generated inputs.
#
# Both engines listen on every interface and have no option not to. Where this machine allows it
# (root, or unprivileged user namespaces), the engines and the tests run in a private network
# namespace that has nothing but loopback, so nothing outside this run can reach them.
set -euo pipefail
# shellcheck source=lib/stack.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/stack.sh"
# The LocalStack phase runs a LocalStack of its own (its own folder and port), whatever else runs.
export LOCALSTACK_DIR="$ROOT/.localstack/test-run" LOCALSTACK_PORT="${TEST_LOCALSTACK_PORT:-14566}"
# shellcheck source=lib/localstack.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/localstack.sh"

if [[ "${1:-}" == --long ]]; then
  shift
  export CHAOS_EVENTS="${CHAOS_EVENTS:-50000}" CHAOS_KAFKA_EVENTS="${CHAOS_KAFKA_EVENTS:-20000}" FUZZ_SCALE="${FUZZ_SCALE:-10}"
fi

# The end-to-end suite (crates/e2e) needs the deployed stack: it runs in the LocalStack phase.
runner=(cargo test --workspace --exclude e2e --no-fail-fast)
e2e_runner=(cargo test -p e2e --no-fail-fast)
e2e_first=(--lib --test localstack)
e2e_then=(--test operations)
if cargo nextest --version >/dev/null 2>&1; then
  runner=(cargo nextest run --workspace --exclude e2e --no-fail-fast)
  # --workspace with a filter: the binaries the first phase built, with the same features.
  e2e_runner=(cargo nextest run --workspace --no-fail-fast)
  e2e_first=(-E 'package(e2e) and not binary(operations)')
  e2e_then=(-E 'package(e2e) and binary(operations)')
fi
# The Lambda packages (the LocalStack phase deploys their binaries from the workspace's build).
mapfile -t function_packages < <(sed -n '/^\[\[bin\]\]/,/^name/ s/^name = "\(.*\)"/--package=\1/p' "$ROOT"/functions/*/Cargo.toml)

cd "$ROOT"
# A fresh clone builds once: incremental caches would only double the size of target/ on CI's disk.
if [[ "${CI:-}" == true ]]; then export CARGO_INCREMENTAL=0; fi
# Everything the run installs. It waits on the network while the build waits on the CPU, so it
# runs beside the build (its output in .devstack/install.log).
install_tools() {
  ensure_engines
  ensure_sqs_engine
  ensure_kafka_engine
  ensure_venv
  ensure_aws_tools
  ensure_asyncapi_parser
  # LocalStack is installed even when arguments skip its phase: the tests of
  # scripts/localstack.sh's refusals start it.
  localstack_install
  # The API fuzz test (crates/devstack/tests/devstack/api_fuzz.rs) runs schemathesis from its own venv.
  pip_tools "$ROOT/.venv-fuzz" schemathesis==4.32.5
  # The example consumer in another language (examples/python-consumer), with its own pins.
  local consumer_requirements
  mapfile -t consumer_requirements < <(grep -v '^#' "$ROOT/examples/python-consumer/requirements.txt")
  pip_tools "$ROOT/.venv-consumer" "${consumer_requirements[@]}"
}

# The checks that no test waits for run beside the build and the tests, at the lowest priority
# (nice 19: they take only the CPU the build and the engines leave idle), and the run waits for
# them at its end. cargo-deny is the one tool built from source (no registry ships a current
# one); its build starts with the workspace's.
start_cargo_deny_build() {
  (
    renice -n 19 -p "$BASHPID" >/dev/null
    ensure_cargo_deny
  ) >"$ROOT/.devstack/cargo-deny-build.log" 2>&1 &
  cargo_deny_pid=$!
}
# The template's and the event contract's checks: cfn-lint, SAM's transform, checkov, AsyncAPI.
start_contract_checks() {
  (
    set -e
    renice -n 19 -p "$BASHPID" >/dev/null
    "$VENV/bin/cfn-lint" template.yaml
    # What CloudFormation will really create: the SAM source hides limits that only the generated
    # resources show. SAM keeps the Conditions, so one transform holds every front door and both
    # buses (tried: the output is the same byte for byte whatever the parameters).
    "$AWS_VENV/bin/python" scripts/lib/template.py transform template.yaml >"$ROOT/.devstack/template.json"
    "$VENV/bin/cfn-lint" "$ROOT/.devstack/template.json"
    # Every failed check fails the run; a check may only be skipped in the template's Metadata,
    # with its reason written next to the resource. --skip-download: no network needed.
    "$VENV/bin/checkov" --quiet --compact --skip-download --framework cloudformation -f template.yaml
    # The consumer in a stack of its own, as a team outside would deploy it.
    "$VENV/bin/cfn-lint" examples/booking-ledger/template.yaml
    "$VENV/bin/checkov" --quiet --compact --skip-download --framework cloudformation -f examples/booking-ledger/template.yaml
    # The event contract for consumer teams: the AsyncAPI document and the schemas it references.
    validate_asyncapi schemas/asyncapi/reservation-events.asyncapi.yaml
  ) >"$ROOT/.devstack/contract-checks.log" 2>&1 &
  contract_checks_pid=$!
}
# A check's process and everything it started (cargo's rustc, checkov's workers).
stop_tree() {
  local child children
  children=$(cat /proc/"$1"/task/*/children 2>/dev/null || true)
  for child in $children; do stop_tree "$child"; done
  kill "$1" 2>/dev/null || true
}
stop_side_checks() {
  local pid
  for pid in "${cargo_deny_pid:-}" "${contract_checks_pid:-}"; do
    [[ -z "$pid" ]] || stop_tree "$pid"
  done
}
# Waits for the checks beside the run, then checks licences, bans and sources (deny.toml) and
# advisories (RustSec) with the cargo-deny they built.
finish_side_checks() {
  log "the checks beside the run: cfn-lint (the SAM source and its transform), checkov, AsyncAPI, cargo deny"
  if ! wait "$contract_checks_pid"; then
    cat "$ROOT/.devstack/contract-checks.log" >&2
    die "a static check of the template or the event contract failed (above)"
  fi
  cat "$ROOT/.devstack/contract-checks.log"
  if ! wait "$cargo_deny_pid"; then
    tail -n 20 "$ROOT/.devstack/cargo-deny-build.log" >&2
    die "building cargo-deny failed; the whole log is .devstack/cargo-deny-build.log"
  fi
  "$CARGO_DENY" --log-level error check licenses bans sources
  check_advisories
}
passed() { log "all tests passed in $(($(date +%s) - ${RESERVATION_TEST_STARTED:-$(date +%s)})) s"; }
export SCHEMATHESIS="$ROOT/.venv-fuzz/bin/st" PYTHON_CONSUMER="$ROOT/.venv-consumer/bin/python"

# Each step says when it began, in seconds since the run started: where a slow run spent its time.
log() {
  printf '\033[1m==> [%4d s] %s\033[0m\n' "$(($(date +%s) - ${RESERVATION_TEST_STARTED:-$(date +%s)}))" "$*" >&2
}

if [[ "${RESERVATION_TEST_IN_NETNS:-}" != 1 ]]; then
  started=$(date +%s)
  export RESERVATION_TEST_STARTED="$started"
  ensure_cargo
  mkdir -p "$ROOT/.devstack"
  install_log="$ROOT/.devstack/install.log"
  log "installing the engines and tools beside the build (log: ${install_log#"$ROOT"/})"
  install_tools >"$install_log" 2>&1 &
  install_pid=$!
  start_cargo_deny_build
  trap 'kill "$install_pid" 2>/dev/null || true; stop_side_checks' EXIT
  # An interrupted run exits through the EXIT trap, which stops what runs beside it.
  trap 'exit 130' INT TERM
  log "static checks of the code: rustfmt"
  cargo fmt --all --check
  # Clippy lints the workspace's code in the build the tests need, not in a check build of its
  # own (which compiled every dependency a second time): cargo runs the workspace's crates, and
  # only those, through clippy-driver, with every warning an error, as `cargo clippy -- -D
  # warnings` does.
  RUSTC_WORKSPACE_WRAPPER="$(rustc --print sysroot)/bin/clippy-driver"
  export RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
  log "building and linting every target (clippy, warnings denied)"
  cargo build --quiet --workspace --all-targets
  log "building the tests"
  if [[ "${runner[1]}" == nextest ]]; then cargo nextest run --workspace --no-run; else cargo test --workspace --no-run; fi
  # The examples in the docs compile (cargo-nextest runs no doctests): the consumer kit's is what
  # a team outside copies first.
  log "the documentation's examples (cargo test --doc)"
  cargo test --quiet --workspace --doc
  log "waiting for the installs"
  if ! wait "$install_pid"; then
    tail -n 20 "$install_log" >&2
    die "installing the engines and tools failed; the whole log is ${install_log#"$ROOT"/}"
  fi
  trap stop_side_checks EXIT
  log "static checks: shellcheck, the scripts' mode, the functions' SDK features, the kit's package"
  "$VENV/bin/shellcheck" -x -P SCRIPTDIR scripts/*.sh scripts/lib/*.sh .ci/run examples/booking-ledger/deploy.sh
  # The docs tell users to run scripts/*.sh as they are: each must be executable in the clone.
  for script in scripts/*.sh; do
    [[ -x "$script" ]] || die "$script is not executable (git update-index --chmod=+x $script)"
  done
  # The Lambdas link no SDK feature they do not use (the CLI tools' credential sources), and pin
  # the SDK's behaviour in code (settings::sdk_config) rather than take the latest.
  for package in "${function_packages[@]}"; do
    extra=$(cargo tree --quiet -e features "$package" |
      grep -oE 'aws-config feature "(sso|credentials-process)"|feature "behavior-version-latest"' | sort -u || true)
    [[ -z "$extra" ]] || die "${package#--package=} links SDK features it does not need: ${extra//$'\n'/, }"
  done
  # The consumer kit is published for teams outside: it packages (a version on every dependency,
  # no path-only one, its README and licence in). Its build is the workspace's, done above.
  cargo package --quiet --no-verify --allow-dirty -p reservation-events-consumer
  start_contract_checks
  # The tests in a private network namespace, as a child: the checks beside the run are this
  # process's, and it waits for them when the tests are done.
  netns=()
  if command -v ip >/dev/null && unshare --net true 2>/dev/null; then
    netns=(unshare --net)
  elif command -v ip >/dev/null && unshare --user --map-root-user --net true 2>/dev/null; then
    netns=(unshare --user --map-root-user --net)
  fi
  if [[ ${#netns[@]} -gt 0 ]]; then
    tests_status=0
    "${netns[@]}" env RESERVATION_TEST_IN_NETNS=1 bash "${BASH_SOURCE[0]}" "$@" || tests_status=$?
    [[ "$tests_status" == 0 ]] || exit "$tests_status"
    finish_side_checks
    passed
    exit 0
  fi
  log "no private network namespace here: the engines listen on all interfaces during the run"
else
  ip link set lo up
fi

free_port() {
  local port=$1
  while port_in_use "$port" || port_in_use "$((port + 1))"; do port=$((port + 2)); done
  echo "$port"
}

trap 'stop_started; localstack_stop >/dev/null 2>&1; stop_side_checks' EXIT
trap 'exit 130' INT TERM

ddb_port="$(free_port "${TEST_DYNAMODB_PORT:-18000}")"
kinesis_port="$(free_port "${TEST_KINESIS_PORT:-14568}")"
sqs_port="$(free_port "${TEST_SQS_PORT:-15999}")"
kafka_port="$(free_port "${TEST_KAFKA_PORT:-19092}")"
log "starting the test stack: DynamoDB Local :$ddb_port, kinesis-mock :$kinesis_port, moto (SNS, SQS) :$sqs_port, Tansu (Kafka) :$kafka_port"
# Clear endpoints a developer may have exported for LocalStack: tests run on their own stack.
unset AWS_ENDPOINT_URL AWS_PROFILE
start_engines "$ddb_port" "$kinesis_port" "$ROOT/.devstack/test-logs"
start_sqs_engine "$sqs_port" "$ROOT/.devstack/test-logs"
start_kafka_engine "$kafka_port" "$ROOT/.devstack/test-logs"
# The Kafka fault tests start (and pause) brokers of their own from the same binary.
export TANSU
# The suites record what they measured here; scripts/figures.sh writes it into docs/guarantees.md.
export RESERVATION_FIGURES_DIR="$ROOT/.devstack/figures"
rm -rf "$RESERVATION_FIGURES_DIR"
mkdir -p "$RESERVATION_FIGURES_DIR"
printf '{"date": "%s", "commit": "%s", "fuzz_scale": %s, "cores": %s}\n' \
  "$(date -u +%Y-%m-%d)" "$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)" \
  "${FUZZ_SCALE:-1}" \
  "$(nproc)" >"$RESERVATION_FIGURES_DIR/run.json"

# examples/booking-ledger deployed as a team outside deploys it, with the bootstrap the first
# build made for this machine (LocalStack runs it in host mode), importing stack reservations'
# exports.
deploy_ledger() {
  local dir="$LOCALSTACK_DIR/deploy/booking-ledger"
  mkdir -p "$dir"
  printf '[default]\nregion = %s\ns3 =\n    addressing_style = path\n' "$AWS_REGION" >"$dir/aws-config"
  AWS_ENDPOINT_URL="$LOCALSTACK_ENDPOINT" AWS_CONFIG_FILE="$dir/aws-config" AWS="$AWS_VENV/bin/aws" \
    LEDGER_BOOTSTRAP="$PREBUILT_FUNCTIONS/booking-ledger" OUTPUTS_FILE="$dir/outputs.json" \
    "$ROOT/examples/booking-ledger/deploy.sh" --stack booking-ledger --reservations-prefix reservations
}

# The LocalStack phase: template.yaml deployed to a LocalStack of its own (host mode), once per
# relay mode, the booking ledger beside them, and the end-to-end suite on the deployed stacks.
localstack_phase() {
  local phase_started
  phase_started=$(date +%s)
  # LocalStack and the functions it runs take endpoints from here, not from the engines above.
  unset AWS_ENDPOINT_URL_DYNAMODB AWS_ENDPOINT_URL_DYNAMODB_STREAMS AWS_ENDPOINT_URL_KINESIS AWS_ENDPOINT_URL_SNS \
    AWS_ENDPOINT_URL_SQS
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
  localstack_start
  # One stack per relay mode: LocalStack cannot switch a deployed stack's schedule on (it does
  # not update an EventBridge rule), so polling mode gets a stack of its own. The two deploy side
  # by side (most of a deploy waits on CloudFormation and on the functions' first starts), with
  # the binaries the first build made: building the five packages alone would compile the SDK
  # and the workspace again, with fewer features unified (tokio's test-util, the SDK's test-util,
  # serde_json's preserve_order), for minutes. The release packages users deploy are checked
  # above for the features they link.
  export PREBUILT_FUNCTIONS="$ROOT/target/debug"
  local mode deploys=() failed=0
  "$ROOT/scripts/deploy-localstack.sh" >"$ROOT/.devstack/deploy-relay.log" 2>&1 &
  deploys+=("$!")
  STACK_NAME=reservations-polling "$ROOT/scripts/deploy-localstack.sh" RelayMode=polling \
    >"$ROOT/.devstack/deploy-polling.log" 2>&1 &
  deploys+=("$!")
  for mode in relay polling; do
    wait "${deploys[0]}" || failed=1
    deploys=("${deploys[@]:1}")
    cat "$ROOT/.devstack/deploy-$mode.log"
    # The booking ledger, a consumer in a stack of its own, imports the first stack's exported bus
    # as soon as it is up, beside the second deploy.
    if [[ "$mode" == relay && "$failed" == 0 ]]; then
      deploy_ledger >"$ROOT/.devstack/deploy-ledger.log" 2>&1 &
      deploys+=("$!")
    fi
  done
  if [[ "$failed" == 0 ]]; then
    wait "${deploys[0]}" || failed=1
    cat "$ROOT/.devstack/deploy-ledger.log"
  fi
  [[ "$failed" == 0 ]] || die "a LocalStack deploy failed; its output is above"
  export AWS_ENDPOINT_URL="$LOCALSTACK_ENDPOINT" E2E_STACK_OUTPUTS="$LOCALSTACK_DIR/deploy/reservations/outputs.json" \
    E2E_POLLING_STACK_OUTPUTS="$LOCALSTACK_DIR/deploy/reservations-polling/outputs.json" \
    E2E_LEDGER_STACK_OUTPUTS="$LOCALSTACK_DIR/deploy/booking-ledger/outputs.json"
  # The operator's suite (the read model emptied and rebuilt) after the others, which read it.
  "${e2e_runner[@]}" "${e2e_first[@]}"
  "${e2e_runner[@]}" "${e2e_then[@]}"
  localstack_stop
  log "LocalStack phase done in $(($(date +%s) - phase_started)) s"
}

"${runner[@]}" "$@"
# The engines of the first phase are done; the LocalStack phase brings its own. It runs after the
# tests, not beside them: on two cores the two starve each other (a load test's requests time out).
stop_started
if [[ $# -eq 0 ]]; then
  log "LocalStack phase: template.yaml deployed to LocalStack (host mode), end to end"
  (localstack_phase)
fi
for figures in "$RESERVATION_FIGURES_DIR"/*.json; do
  [[ "$(basename "$figures")" == run.json ]] || log "figures $(basename "$figures" .json): $(cat "$figures")"
done
# In the namespace's child the parent finishes; run here, this process does.
if [[ "${RESERVATION_TEST_IN_NETNS:-}" != 1 ]]; then
  finish_side_checks
  passed
fi

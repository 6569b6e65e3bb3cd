#!/usr/bin/env bash
# LocalStack init hook (ready stage): the bucket samlocal uploads function code to, so
# scripts/deploy-localstack.sh needs no other setup.
set -euo pipefail
awslocal s3 mb s3://reservations-sam-artifacts 2>/dev/null || true
echo "reservations: artifacts bucket ready"

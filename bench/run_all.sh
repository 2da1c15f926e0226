#!/usr/bin/env bash
# Run every benchmark in turn (pass --smoke for the seconds-long versions).
set -euo pipefail
cd "$(dirname "$0")/.."
for name in latency throughput appends audit memory timing flood reserve accuracy_search smartnoise; do
  echo "=== bench.$name $*"
  .venv/bin/python -m "bench.$name" "$@"
done

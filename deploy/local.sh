#!/usr/bin/env bash
# The local recipe: a one-node Ray cluster on this machine, then the same `ray job submit`
# a multi-node cluster gets.
#
#   deploy/local.sh [--keep] [--num-cpus N] [--] [cluster.train args]
#
# --keep leaves the head running afterwards (dashboard: http://127.0.0.1:8265); otherwise
# `ray stop` runs when the job ends. The dashboard binds to loopback only: it can run jobs,
# so it is never exposed on a network interface by default.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
RAY="$( [ -x "$ROOT/.venv/bin/ray" ] && echo "$ROOT/.venv/bin/ray" || echo ray )"
KEEP=0
CPUS="$(python3 -c 'import os; print(max(4, os.cpu_count() or 1))')"
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) KEEP=1; shift ;;
    --num-cpus) CPUS="$2"; shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
# The job's `python` must be the one with the stack installed.
export PATH="$ROOT/.venv/bin:$PATH"
"$RAY" start --head --dashboard-host=127.0.0.1 --num-cpus="$CPUS" --disable-usage-stats
[ "$KEEP" = 1 ] || trap '"$RAY" stop' EXIT
echo "Ray dashboard: http://127.0.0.1:8265"
RAY_ADDRESS=http://127.0.0.1:8265 RAY="$RAY" "$ROOT/deploy/submit.sh" -- "$@"

#!/usr/bin/env bash
# The local recipe: a one-node Ray cluster on this machine, then the same `ray job submit`
# (deploy/submit.sh) that a multi-node cluster gets.
#
#   deploy/local.sh [--keep] [--no-wait] [--num-cpus N] [--port P] [--dashboard-port P] [--] [cluster.train args]
#
#   --keep            leave the head running when the job ends (default: `ray stop` afterwards,
#                     which stops every Ray started on this machine by this user)
#   --no-wait         submit and return at once (implies --keep: stopping would kill the job)
#   --num-cpus N      logical CPUs of the head (default: max(4, nproc); actors mostly wait on
#                     each other, so a small machine may be oversubscribed)
#   --port P          the head's GCS port (default 6379)
#   --dashboard-port  dashboard / job API port (default 8265)
#   RAY_START_ARGS    more `ray start` flags, e.g. "--object-store-memory=2000000000"
#
# The dashboard binds to 127.0.0.1 only: it can run arbitrary jobs, so it is never exposed on
# a network interface. If a head already answers on the dashboard port it is reused (and left
# running). Example:  deploy/local.sh --keep -- learner.max_steps=10
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Head, driver and actors must agree on the auth mode; core/env.py sets `disabled` in every
# process the run starts (unless `token`: a real cluster, deploy/README.md), so the local head gets the same.
if [ -n "${RAY_AUTH_MODE:-}" ] && [ "$RAY_AUTH_MODE" != disabled ]; then
  echo "local.sh: RAY_AUTH_MODE=$RAY_AUTH_MODE ignored; the osp stack runs with RAY_AUTH_MODE=disabled" >&2
fi
export RAY_AUTH_MODE=disabled
export RAY_USAGE_STATS_ENABLED=0
if [ -z "${RAY:-}" ]; then
  if [ -x "$ROOT/.venv/bin/ray" ]; then RAY="$ROOT/.venv/bin/ray"; else RAY=ray; fi
fi
export RAY
# The job's `python` runs with the head's environment: put the repo venv first on its PATH.
if [ -d "$ROOT/.venv/bin" ]; then
  export PATH="$ROOT/.venv/bin:$PATH"
fi

KEEP=0
SUBMIT_ARGS=()
NPROC="$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)"
CPUS=$(( NPROC > 4 ? NPROC : 4 ))
DASH_PORT=8265
GCS_PORT=6379
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) KEEP=1; shift ;;
    --no-wait) KEEP=1; SUBMIT_ARGS+=(--no-wait); shift ;;
    --num-cpus) CPUS="${2:?--num-cpus needs a number}"; shift 2 ;;
    --num-cpus=*) CPUS="${1#*=}"; shift ;;
    --port) GCS_PORT="${2:?--port needs a port}"; shift 2 ;;
    --port=*) GCS_PORT="${1#*=}"; shift ;;
    --dashboard-port) DASH_PORT="${2:?--dashboard-port needs a port}"; shift 2 ;;
    --dashboard-port=*) DASH_PORT="${1#*=}"; shift ;;
    -h|--help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
URL="http://127.0.0.1:$DASH_PORT"

dashboard_up() {
  if command -v curl >/dev/null 2>&1; then
    curl -fs -o /dev/null --max-time 3 "$URL/api/version" 2>/dev/null
  else
    python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=3)" "$URL/api/version" 2>/dev/null
  fi
}

if dashboard_up; then
  echo "local.sh: a Ray head already answers at $URL; reusing it (and leaving it running)" >&2
  KEEP=1
else
  # shellcheck disable=SC2086  # RAY_START_ARGS: several flags on purpose
  "$RAY" start --head --port="$GCS_PORT" --dashboard-host=127.0.0.1 --dashboard-port="$DASH_PORT" \
    --num-cpus="$CPUS" --include-dashboard=true --disable-usage-stats ${RAY_START_ARGS:-}
  if [ "$KEEP" = 0 ]; then
    trap '"$RAY" stop' EXIT
  fi
  # The dashboard (and its job API) comes up a little after `ray start` returns.
  for _ in $(seq 1 60); do
    dashboard_up && break
    sleep 1
  done
  dashboard_up || { echo "local.sh: the dashboard did not answer at $URL within 60 s" >&2; exit 1; }
fi
echo "Ray dashboard: $URL   (Jobs, Actors, Metrics; TensorBoard: tensorboard --logdir <checkpoint.dir>/tensorboard)"

status=0
RAY_ADDRESS="$URL" "$ROOT/deploy/submit.sh" ${SUBMIT_ARGS[@]+"${SUBMIT_ARGS[@]}"} -- "$@" || status=$?
if [ "$KEEP" = 1 ]; then
  echo "Ray head left running: $URL   (stop it with: $RAY stop)"
fi
exit "$status"

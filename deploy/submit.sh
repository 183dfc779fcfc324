#!/usr/bin/env bash
# Submit the osp main job to a Ray cluster with `ray job submit`.
#
#   deploy/submit.sh [--no-wait] [--gpu] [--] [cluster.train args: --config X key=value ... --resume]
#
# RAY_ADDRESS: the cluster's dashboard/job address (default http://127.0.0.1:8265, the local
# recipe in deploy/local.sh). The repository is uploaded as the job's working_dir; the runtime
# env comes from deploy/runtime_env.yaml (CPU/local) or deploy/runtime_env.gpu.yaml (--gpu).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export RAY_ADDRESS="${RAY_ADDRESS:-http://127.0.0.1:8265}"
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"   # must match how the cluster was started
RAY="${RAY:-$( [ -x "$ROOT/.venv/bin/ray" ] && echo "$ROOT/.venv/bin/ray" || echo ray )}"
RUNTIME_ENV="$ROOT/deploy/runtime_env.yaml"
WAIT=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-wait) WAIT=(--no-wait); shift ;;
    --gpu) RUNTIME_ENV="$ROOT/deploy/runtime_env.gpu.yaml"; shift ;;
    --) shift; break ;;
    *) break ;;
  esac
done
cd "$ROOT"
exec "$RAY" job submit --address "$RAY_ADDRESS" --working-dir "$ROOT" --runtime-env "$RUNTIME_ENV" \
  "${WAIT[@]}" -- python -m cluster.train "$@"

#!/usr/bin/env bash
# Submit the osp main job to a Ray cluster with `ray job submit`.
#
#   deploy/submit.sh [--no-wait] [--gpu | --runtime-env FILE] [--module M] [--] [args]
#
#   args            passed to `python -m cluster.train`: [--config X.yaml] [key=value ...] [--resume]
#   --no-wait       return once the job is submitted (follow it: ray job logs -f <id>)
#   --gpu           use deploy/runtime_env.gpu.yaml (multi-node GPU cluster)
#   --runtime-env   any other runtime env YAML
#   --module M      run `python -m M` instead of cluster.train (e.g. cluster.scale -- --add 2)
#
# Environment:
#   RAY_ADDRESS      the cluster's dashboard / job address (default http://127.0.0.1:8265, the
#                    local recipe in deploy/local.sh; a remote one through `ray dashboard` or
#                    `kubectl port-forward`, never an open port)
#   OSP_RUNTIME_ENV  runtime env YAML (default deploy/runtime_env.yaml; --gpu/--runtime-env win)
#   RAY_AUTH_MODE    exported as `disabled` unless set: it must match how the cluster was started
#   RAY              the `ray` binary (default: the repo's .venv/bin/ray, else `ray` on PATH)
#
# The repository is uploaded as the job's working_dir (excludes in the runtime env YAML).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export RAY_ADDRESS="${RAY_ADDRESS:-http://127.0.0.1:8265}"
if [ -z "${RAY_AUTH_MODE+x}" ]; then
  export RAY_AUTH_MODE=disabled   # as the driver (core/env.py) does unless token auth is chosen
fi
if [ -z "${RAY:-}" ]; then
  if [ -x "$ROOT/.venv/bin/ray" ]; then RAY="$ROOT/.venv/bin/ray"; else RAY=ray; fi
fi
RUNTIME_ENV="${OSP_RUNTIME_ENV:-$ROOT/deploy/runtime_env.yaml}"
MODULE=cluster.train
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-wait) EXTRA+=(--no-wait); shift ;;
    --gpu) RUNTIME_ENV="$ROOT/deploy/runtime_env.gpu.yaml"; shift ;;
    --runtime-env) RUNTIME_ENV="${2:?--runtime-env needs a file}"; shift 2 ;;
    --runtime-env=*) RUNTIME_ENV="${1#*=}"; shift ;;
    --module) MODULE="${2:?--module needs a module name}"; shift 2 ;;
    --module=*) MODULE="${1#*=}"; shift ;;
    -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    *) break ;;   # the first argument that is not ours starts cluster.train's
  esac
done
if [ ! -f "$RUNTIME_ENV" ]; then
  echo "submit.sh: runtime env file $RUNTIME_ENV does not exist" >&2
  exit 2
fi
if ! command -v "$RAY" >/dev/null 2>&1; then
  echo "submit.sh: no \`ray\` binary ($RAY); run scripts/setup.sh or set RAY=/path/to/ray" >&2
  exit 2
fi
cd "$ROOT"
echo "submitting python -m $MODULE $* to $RAY_ADDRESS (runtime env ${RUNTIME_ENV#"$ROOT"/})" >&2
# ${EXTRA[@]+...}: an empty array under `set -u` on bash < 4.4 (macOS) would be an error.
exec "$RAY" job submit --address "$RAY_ADDRESS" --working-dir "$ROOT" --runtime-env "$RUNTIME_ENV" \
  ${EXTRA[@]+"${EXTRA[@]}"} -- python -m "$MODULE" "$@"

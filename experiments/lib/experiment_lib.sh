# Shared by the experiments' run.sh (sourced, not run, from the repository root): one training
# run, one evaluation and its outcomes.
# OUT: where the runs and evaluations go (default runs/exp; runs/ is not committed). Finished
# runs and evaluations are skipped, so a script stopped half-way continues where it was.
# OUTCOMES: the experiment's outcomes folder (experiments/<name>/outcomes[/<arm>]), committed:
# each evaluation's per-prompt outcomes are written there as soon as it ends, so that its
# figures survive the loss of runs/. Commit them.
# RUNS: where the evaluated checkpoints are (default OUT; another arm's runs folder when an
# evaluation only answers another held-out set).
export RAY_AUTH_MODE=disabled
OUT=${OUT:-runs/exp}
mkdir -p "$OUT"

run() {  # name config.yaml seed steps [overrides...]
  local name=$1 config=$2 seed=$3 steps=$4; shift 4
  if [ -e "$OUT/$name/$(printf ckpt-%06d "$steps")" ]; then echo "skip $name (done)"; return; fi
  rm -rf "${OUT:?}/$name"
  echo "$(date +%T) run $name"
  .venv/bin/python -m cluster.train --config "$config" seed="$seed" \
      checkpoint.dir="$OUT/$name" learner.max_steps="$steps" metrics.progress=false "$@" > "$OUT/$name.log" 2>&1
}

evaluate() {  # out step runs...: every run's ckpt-<step> answers the held-out prompts; SFT answers once
  local out=$1 step=$2; shift 2
  : "${OUTCOMES:?set OUTCOMES to the outcomes folder of the experiment}"
  local runs=${RUNS:-$OUT} prompts=${PROMPTS:-instructions-eval}
  if [ -e "$OUT/$out/eval.json" ]; then
    echo "skip $out (done)"
  else
    local paths=()
    for r in "$@"; do paths+=("$runs/$r/$(printf ckpt-%06d "$step")/hf"); done
    echo "$(date +%T) evaluate $out"
    rm -f "$OUTCOMES/$out.json"  # a new evaluation's outcomes replace an earlier one's
    .venv/bin/python -m cluster.evaluate --checkpoint "${paths[@]}" --prompts "$prompts" \
        --max-tokens "${MAX_TOKENS:-48}" --scorers verifier --out "$OUT/$out" > "$OUT/$out.log" 2>&1
  fi
  if [ ! -e "$OUTCOMES/$out.json" ]; then
    # The runs' training is kept with the arm that trained them (RUNS unset), not again here.
    local training=()
    if [ -z "${RUNS:-}" ]; then training=(--runs "$OUT"); fi
    .venv/bin/python experiments/lib/experiment_outcomes.py "$OUT/$out" --prompts "$prompts" "${training[@]}" \
        --out "$OUTCOMES/$out.json"
  fi
}

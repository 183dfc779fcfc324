# Shared by the experiments' run.sh (sourced, not run, from the repository root): one training
# run, one evaluation.
# OUT: the experiment's folder (default runs/exp). Finished runs and evaluations are skipped,
# so a script stopped half-way continues where it was.
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
  if [ -e "$OUT/$out/eval.json" ]; then echo "skip $out (done)"; return; fi
  local paths=()
  for r in "$@"; do paths+=("$OUT/$r/$(printf ckpt-%06d "$step")/hf"); done
  echo "$(date +%T) evaluate $out"
  .venv/bin/python -m cluster.evaluate --checkpoint "${paths[@]}" --prompts "${PROMPTS:-instructions-eval}" \
      --max-tokens "${MAX_TOKENS:-48}" --scorers verifier --out "$OUT/$out" > "$OUT/$out.log" 2>&1
}

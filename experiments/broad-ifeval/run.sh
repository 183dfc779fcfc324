#!/usr/bin/env bash
# Alignment over every IFEval kind (experiments/broad-ifeval/README.md): OSP and online DPO on the
# `broad` prompts (1,200, all 25 kinds, drawn as IFEval draws them), the verifier with partial
# credit as judge, 3 seeds each; then one evaluation of every final checkpoint and of SFT on the
# 300 held-out `broad-eval` prompts, its per-prompt outcomes, and the summary (summarise.py).
#   bash experiments/broad-ifeval/run.sh            # runs, evaluation, outcomes, summary
#   bash experiments/broad-ifeval/run.sh transfer   # an arm's checkpoints (RUNS) on another held-out set
# One run at a time: the machine has 2 cores. STEPS (default 60, the configs' own) learner steps a run.
# OUT (default runs/broad) the arm's folder. ~30-33 min a run on 2 cores.
# The evaluation's outcomes go to experiments/broad-ifeval/outcomes/<basename of OUT>/<EVAL>.json
# as soon as it ends (commit them); the summary reads that folder.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/broad}
STEPS=${STEPS:-60}
HERE=experiments/broad-ifeval
OUTCOMES=$HERE/outcomes/$(basename "$OUT")
source experiments/lib/experiment_lib.sh

# The runs skip the in-run held-out (eval.prompts=null): every checkpoint is scored below, on the
# broad held-out set, at the same cap.
# METHODS (default "osp dpo"): which arms run; METHODS=osp is the README's measured arm.
# OVERRIDES: config overrides for every run, e.g. "judge.truncated=lose" (the README's first attempt).
# BLOCK (default broad): the docs/results.json block the summary writes.
# EVAL (default eval-broad): the evaluation's folder under OUT. A later arm in the same OUT takes
# another name (e.g. METHODS=dpo EVAL=eval-broad-dpo): the summary reads every outcomes file of OUT.
# transfer: no training; RUNS (required) holds the arm's runs, HELD_OUT (default broad-tasks-eval)
# is the held-out set, EVAL_TOKENS (default 160) the answers' cap, OUT the evaluation's own folder.
METHODS=${METHODS:-osp dpo}
names=()
for method in $METHODS; do
  for seed in 0 1 2; do
    if [ "${1:-}" != transfer ]; then
      run "$method-s$seed" "$HERE/broad-$method.yaml" "$seed" "$STEPS" eval.prompts=null ${OVERRIDES:-}
    fi
    names+=("$method-s$seed")
  done
done
if [ "${1:-}" = transfer ]; then
  : "${RUNS:?set RUNS, the folder of the runs whose checkpoints answer}"
  PROMPTS=${HELD_OUT:-broad-tasks-eval} MAX_TOKENS=${EVAL_TOKENS:-160} evaluate "${EVAL:-eval-tasks}" "$STEPS" "${names[@]}"
else
  PROMPTS=broad-eval MAX_TOKENS=${EVAL_TOKENS:-160} evaluate "${EVAL:-eval-broad}" "$STEPS" "${names[@]}"
fi
training=()  # a transfer evaluation's runs: their training is in the outcomes of the arm that trained them
if [ "${1:-}" = transfer ]; then training=(--training "$HERE/outcomes/$(basename "$RUNS")"); fi
.venv/bin/python $HERE/summarise.py --outcomes "$OUTCOMES" "${training[@]}" --step "$STEPS" --block "${BLOCK:-broad}"
echo "$(date +%T) done: docs/results.json (${BLOCK:-broad}); commit $OUTCOMES"

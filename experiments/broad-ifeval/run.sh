#!/usr/bin/env bash
# Alignment over every IFEval kind (experiments/broad-ifeval/README.md): OSP and online DPO on the `broad`
# prompts (1,200, all 25 kinds, drawn as IFEval draws them), the verifier with partial credit
# as judge, 3 seeds each; then one evaluation of every final checkpoint and of SFT on the 300
# held-out `broad-eval` prompts, and the summary (experiments/broad-ifeval/summarise.py).
#   bash experiments/broad-ifeval/run.sh
# One run at a time: the machine has 2 cores. STEPS (default 60, the configs' own) learner steps a run.
# OUT (default runs/broad) the experiment's folder. ~30-33 min a run on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/broad}
STEPS=${STEPS:-60}
HERE=experiments/broad-ifeval
source experiments/lib/experiment_lib.sh

# The runs skip the in-run held-out (eval.prompts=null): every checkpoint is scored below, on the
# broad held-out set, at the same cap.
# METHODS (default "osp dpo"): which arms run; METHODS=osp is the README's measured arm.
# OVERRIDES: config overrides for every run, e.g. "judge.truncated=lose" (the README's first attempt).
# BLOCK (default broad): the docs/results.json block the summary writes.
# EVAL (default eval-broad): the evaluation's folder under OUT. A later arm in the same OUT takes
# another name (e.g. METHODS=dpo EVAL=eval-broad-dpo): the summary reads every eval-* folder there.
METHODS=${METHODS:-osp dpo}
names=()
for method in $METHODS; do
  for seed in 0 1 2; do
    run "$method-s$seed" "$HERE/broad-$method.yaml" "$seed" "$STEPS" eval.prompts=null ${OVERRIDES:-}
    names+=("$method-s$seed")
  done
done
PROMPTS=broad-eval MAX_TOKENS=${EVAL_TOKENS:-160} evaluate "${EVAL:-eval-broad}" "$STEPS" "${names[@]}"
.venv/bin/python "$HERE/summarise.py" --exp "$OUT" --step "$STEPS" --block "${BLOCK:-broad}"

#!/usr/bin/env bash
# Alignment over every IFEval kind (docs/results.md §3): OSP and online DPO on the `broad`
# prompts (1,200, all 25 kinds, drawn as IFEval draws them), the verifier with partial credit
# as judge, 3 seeds each; then one evaluation of every final checkpoint and of SFT on the 300
# held-out `broad-eval` prompts, and the summary (scripts/summarise_broad_experiment.py).
#   bash scripts/run_broad_experiment.sh
# One run at a time: the machine has 2 cores. STEPS (default 30) learner steps a run.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/broad}
STEPS=${STEPS:-30}
source scripts/experiment_lib.sh

# The runs skip the in-run held-out (eval.prompts=null): every checkpoint is scored below, on the
# broad held-out set, at the same cap.
for seed in 0 1 2; do
  run "osp-s$seed" broad-osp "$seed" "$STEPS" eval.prompts=null
  run "dpo-s$seed" broad-dpo "$seed" "$STEPS" eval.prompts=null
done
PROMPTS=broad-eval MAX_TOKENS=${EVAL_TOKENS:-160} evaluate eval-broad "$STEPS" osp-s0 osp-s1 osp-s2 dpo-s0 dpo-s1 dpo-s2
.venv/bin/python scripts/summarise_broad_experiment.py --exp "$OUT" --step "$STEPS"

#!/usr/bin/env bash
# Soft strengths in the paper's small-data setting (experiments/small-data/README.md): three arms
# on the same 64 prompts, each seen 6 times, the checklist self-judge, 3 seeds each:
#   spce   method=osp: SPCE on the judge's soft p
#   dpo    method=dpo: DPO on its verdict
#   cdpo   method=cdpo, ε = the checklist judge's measured error rate against the verifier
#          (1 − 0.630 agreement, experiments/soft-vs-hard/README.md: ε = 0.37)
# then one evaluation of every checkpoint (steps 16, 32, …, 96) on the 200 held-out prompts
# (48 tokens, greedy), its per-prompt outcomes into outcomes/ (commit them), and the summary.
#   bash experiments/small-data/run.sh          # SEEDS="0 1 2" ARMS="spce dpo cdpo"
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/small-data}
HERE=experiments/small-data
OUTCOMES=$HERE/outcomes
source experiments/lib/experiment_lib.sh
declare -A ARM=([spce]="method=osp" [dpo]="method=dpo" [cdpo]="method=cdpo loss.label_smoothing=0.37")
names=()
for seed in ${SEEDS:-0 1 2}; do
  for arm in ${ARMS:-spce dpo cdpo}; do
    # shellcheck disable=SC2086
    run $arm-s$seed $HERE/small-data.yaml $seed 96 ${ARM[$arm]}
    names+=($arm-s$seed)
  done
done
for step in 16 32 48 64 80 96; do
  evaluate eval-step$step $step "${names[@]}"
done
.venv/bin/python $HERE/summarise.py --outcomes "$OUTCOMES" --out docs/results.json
echo "$(date +%T) done: docs/results.json; commit $OUTCOMES"

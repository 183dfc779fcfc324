#!/usr/bin/env bash
# The paper's pair-construction ablation at the main job's settings (experiments/pairing/README.md):
# OSP with the verifier judge, K=4, 15 steps on fresh prompts, three ways to turn a prompt's 4
# judged answers into pairs, 3 seeds each; every arm trains 4 pairs a step from 4 samples a prompt:
#   ranked      K/2 = 2 pairs a prompt: best with worst, second with second-worst (judge.pairing=ranked)
#   bestworst   1 pair a prompt, best with worst (judge.pairing=best_worst: twice the prompts a step)
#   random      2 pairs of a random matching, each oriented by the judge (judge.pairing=random)
# then one evaluation of every step-15 checkpoint on the 200 held-out prompts (48 tokens, greedy),
# its per-prompt outcomes into experiments/pairing/outcomes/ (commit them), and the summary.
#   bash experiments/pairing/run.sh
# One run at a time (2 cores); finished runs are skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/pairing}
CONFIG=experiments/methods-ifeval/ifeval-osp.yaml
OUTCOMES=experiments/pairing/outcomes
source experiments/lib/experiment_lib.sh

# The runs skip the in-run held-out (eval.prompts=null): every checkpoint is scored below, once.
names=()
for seed in ${SEEDS:-0 1 2}; do
  run ranked-s$seed $CONFIG $seed 15 judge.pairing=ranked eval.prompts=null
  run bestworst-s$seed $CONFIG $seed 15 judge.pairing=best_worst eval.prompts=null
  run random-s$seed $CONFIG $seed 15 judge.pairing=random eval.prompts=null
  names+=(ranked-s$seed bestworst-s$seed random-s$seed)
done
evaluate eval-pairing 15 "${names[@]}"
.venv/bin/python experiments/pairing/summarise.py --outcomes "$OUTCOMES" --out docs/results.json
echo "$(date +%T) done: docs/results.json; commit $OUTCOMES"

#!/usr/bin/env bash
# The method comparison of experiments/methods-ifeval/README.md on the IFEval task (8
# instruction kinds, the verifier as judge): OSP (SPCE on soft p), online DPO (the verdict),
# DNO-Prct and SPO, 15 learner steps each, 3 seeds (DNO and SPO: 2), then one evaluation of
# every step-15 checkpoint on the 200 held-out prompts (runs/exp/eval-methods), its per-prompt
# outcomes into experiments/methods-ifeval/outcomes/eval-methods.json (commit it), and the
# summary with intervals that resample runs as well as prompts (summarise.py → docs/results.json).
#   bash experiments/methods-ifeval/run.sh
# One run at a time: the machine has 2 cores. A run takes about 9 minutes, the evaluation
# about 1.2 minutes per answer set: about 2.5 hours in all. Finished runs are skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/exp}
HERE=experiments/methods-ifeval
OUTCOMES=$HERE/outcomes
source experiments/lib/experiment_lib.sh

for seed in 0 1 2; do
  run osp-s$seed $HERE/ifeval-osp.yaml $seed 15
  run dpo-s$seed $HERE/ifeval-dpo.yaml $seed 15
done
# DNO-Prct: K=5 at T=0.7, three iterations of 5 steps, one pair a prompt (the largest win-rate
# gap, ≥ 0.5), DPO on the verdict, reference = the previous iterate, 25% replay.
# SPO: DPO plus the preference-degree loss (λ = 0.1). Same judge, lr and β as OSP.
for seed in 0 1; do
  run dno-s$seed $HERE/ifeval-osp.yaml $seed 15 method=dno dno.iteration_steps=5 rollout.k=5 \
      rollout.temperature=0.7
  run spo-s$seed $HERE/ifeval-osp.yaml $seed 15 method=spo loss.spo_weight=0.1
done
evaluate eval-methods 15 osp-s0 osp-s1 osp-s2 dpo-s0 dpo-s1 dpo-s2 dno-s0 dno-s1 spo-s0 spo-s1
.venv/bin/python $HERE/summarise.py --outcomes "$OUTCOMES" --out docs/results.json
echo "$(date +%T) done: docs/results.json; commit $OUTCOMES"

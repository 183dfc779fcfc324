#!/usr/bin/env bash
# The paper's setting (experiments/paper-self-judge/README.md): OSP and online DPO with the 135M
# self-judge on the shipped questions (cluster/configs/osp.yaml, dpo-online.yaml; 50 steps each),
# every checkpoint against SFT and the two final checkpoints against each other (self-judge and
# heuristic scorers), each evaluation's per-prompt outcomes into
# experiments/paper-self-judge/outcomes/ as soon as it ends (commit them), then the tables.
#   bash experiments/paper-self-judge/run.sh
# One run at a time: the machine has 2 cores; ~13-14 min a run. Finished steps are skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
export RAY_AUTH_MODE=disabled
OUT=${OUT:-runs}
HERE=experiments/paper-self-judge
OUTCOMES=$HERE/outcomes
mkdir -p "$OUT" "$OUTCOMES"

outcomes() {  # eval-folder name [--runs folder]: its per-prompt outcomes (the shipped questions), once
  if [ ! -e "$OUTCOMES/$2.json" ]; then
    .venv/bin/python experiments/lib/experiment_outcomes.py "$1" --prompts questions-eval "${@:3}" \
        --out "$OUTCOMES/$2.json"
  fi
}

for method in osp dpo-online; do
  if [ ! -e "$OUT/$method/ckpt-000050" ]; then
    .venv/bin/python -m cluster.train --config "cluster/configs/$method.yaml" checkpoint.dir="$OUT/$method" \
        metrics.progress=false > "$OUT/$method.log" 2>&1
  fi
  if [ ! -e "$OUT/$method/eval/eval.json" ]; then
    rm -f "$OUTCOMES/$method.json"  # a new evaluation's outcomes replace an earlier one's
    .venv/bin/python -m cluster.evaluate --run "$OUT/$method" --scorers self heuristic
  fi
  outcomes "$OUT/$method/eval" "$method" --runs "$OUT"  # with the run's training
done
# OSP against online DPO at the runs' own 24-token cap, and at 64 (a --checkpoint evaluation's default)
for cap in 24 64; do
  if [ ! -e "$OUT/osp/eval-vs-dpo-$cap/eval.json" ]; then
    .venv/bin/python -m cluster.evaluate --checkpoint "$OUT/osp/ckpt-000050" --baseline "$OUT/dpo-online/ckpt-000050" \
        --scorers self heuristic --max-tokens "$cap" --out "$OUT/osp/eval-vs-dpo-$cap"
    rm -f "$OUTCOMES/osp-vs-dpo-online-$cap.json"
  fi
  outcomes "$OUT/osp/eval-vs-dpo-$cap" "osp-vs-dpo-online-$cap"
done
.venv/bin/python $HERE/summarise.py --outcomes "$OUTCOMES"

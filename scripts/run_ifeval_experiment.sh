#!/usr/bin/env bash
# The experiment of docs/results.md: OSP (SPCE, soft p from the IFEval verifier) vs online DPO
# (hard labels, same judge) vs SFT, two seeds each, plus a noisy judge (ε = 0.35 of verdicts
# flipped), each set followed by one evaluation of its final checkpoints on the 200 held-out prompts.
#   bash scripts/run_ifeval_experiment.sh main        # osp-s0 dpo-s0 osp-s1 dpo-s1, then runs/exp/eval-main
#   bash scripts/run_ifeval_experiment.sh ablation    # osp-flip35 dpo-flip35, then runs/exp/eval-ablation
# One run at a time: the machine has 2 cores. About 17 min a run, 2 min an evaluated answer set.
set -euo pipefail
cd "$(dirname "$0")/.."
export RAY_AUTH_MODE=disabled
OUT=runs/exp
mkdir -p "$OUT"

run() {  # name config seed steps [overrides...]
  local name=$1 config=$2 seed=$3 steps=$4; shift 4
  if [ -e "$OUT/$name/$(printf ckpt-%06d "$steps")" ]; then echo "skip $name (done)"; return; fi
  rm -rf "${OUT:?}/$name"
  echo "$(date +%T) run $name"
  .venv/bin/python -m cluster.train --config "cluster/configs/$config.yaml" seed="$seed" \
      checkpoint.dir="$OUT/$name" learner.max_steps="$steps" metrics.progress=false "$@" > "$OUT/$name.log" 2>&1
}

runs="osp-s0 dpo-s0 osp-s1 dpo-s1 osp-flip35 dpo-flip35"
ckpts="osp-s0/ckpt-000015 dpo-s0/ckpt-000015 osp-s1/ckpt-000015 dpo-s1/ckpt-000015 osp-flip35/ckpt-000015
       dpo-flip35/ckpt-000015 osp-s0/ckpt-000030 dpo-s0/ckpt-000030"
for name in $runs; do
  case $name in
    osp-s0) run osp-s0 ifeval-osp 0 30 ;;
    dpo-s0) run dpo-s0 ifeval-dpo 0 30 ;;
    osp-s1) run osp-s1 ifeval-osp 1 15 ;;
    dpo-s1) run dpo-s1 ifeval-dpo 1 15 ;;
    osp-flip35) run osp-flip35 ifeval-osp 0 15 judge.flip_prob=0.35 ;;
    dpo-flip35) run dpo-flip35 ifeval-dpo 0 15 judge.flip_prob=0.35 ;;
    *) echo "unknown run $name"; exit 2 ;;
  esac
done

echo "$(date +%T) evaluate"
paths=()
for c in $ckpts; do paths+=("$OUT/$c/hf"); done
.venv/bin/python -m cluster.evaluate --checkpoint "${paths[@]}" --prompts instructions-eval --max-tokens 48 \
    --scorers verifier --out "$OUT/eval-all" > "$OUT/eval-all.log" 2>&1
.venv/bin/python scripts/summarise_ifeval_experiment.py --exp "$OUT" --out docs/results.json
echo "$(date +%T) done: $OUT/eval-all/eval.json, docs/results.json"

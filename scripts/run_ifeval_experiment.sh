#!/usr/bin/env bash
# The experiment of docs/results.md: OSP (SPCE, soft p from the IFEval verifier) vs online DPO
# (hard labels, same judge) vs SFT. Two seeds of each compared at step 15, seed 0 continued to
# step 30, a noisy judge (ε = 0.35 of verdicts flipped) at step 15, and DNO and SPO (seed 0,
# step 15). Each set of runs is
# followed by one evaluation of its checkpoints on the 200 held-out prompts (runs/exp/eval-main,
# runs/exp/eval-ablation), then the summary (scripts/summarise_ifeval_experiment.py →
# docs/results.json).
#   bash scripts/run_ifeval_experiment.sh
# One run at a time: the machine has 2 cores. A 15-step run takes about 10 min, a 30-step run
# about 25, an evaluated answer set about 1.5 min: about 2 hours in all. Finished runs are skipped.
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

evaluate() {  # out checkpoints...: one evaluation (the SFT answers once, then each checkpoint's)
  local out=$1; shift
  if [ -e "$OUT/$out/eval.json" ]; then echo "skip $out (done)"; return; fi
  local paths=()
  for c in "$@"; do paths+=("$OUT/$c/hf"); done
  echo "$(date +%T) evaluate $out"
  .venv/bin/python -m cluster.evaluate --checkpoint "${paths[@]}" --prompts instructions-eval --max-tokens 48 \
      --scorers verifier --out "$OUT/$out" > "$OUT/$out.log" 2>&1
}

run osp-s0 ifeval-osp 0 30
run dpo-s0 ifeval-dpo 0 30
run osp-s1 ifeval-osp 1 15
run dpo-s1 ifeval-dpo 1 15
evaluate eval-main osp-s0/ckpt-000015 dpo-s0/ckpt-000015 osp-s1/ckpt-000015 dpo-s1/ckpt-000015 \
    osp-s0/ckpt-000030 dpo-s0/ckpt-000030
run osp-flip35 ifeval-osp 0 15 judge.flip_prob=0.35
run dpo-flip35 ifeval-dpo 0 15 judge.flip_prob=0.35
evaluate eval-ablation osp-flip35/ckpt-000015 dpo-flip35/ckpt-000015
# The other methods on the same task, seed 0, 15 steps, same judge, lr and β as OSP:
# DNO-Prct (K=5 at T=0.7, three iterations of 5 steps, hard labels, reference = the previous
# iterate, 30% replay) and SPO (DPO plus the preference-degree loss, λ = 0.1).
run dno-s0 ifeval-osp 0 15 judge.anchor=dno dno.enabled=true dno.iteration_steps=5 rollout.k=5 \
    rollout.temperature=0.7 loss.name=dpo loss.hard_labels=true
run spo-s0 ifeval-osp 0 15 loss.name=spo loss.spo_weight=0.1
evaluate eval-methods dno-s0/ckpt-000015 spo-s0/ckpt-000015
.venv/bin/python scripts/summarise_ifeval_experiment.py --exp "$OUT" --out docs/results.json
echo "$(date +%T) done: docs/results.json"

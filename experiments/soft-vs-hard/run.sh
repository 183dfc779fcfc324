#!/usr/bin/env bash
# Do soft strengths matter? experiments/soft-vs-hard/README.md.
#  1. The judge report card: every judge on the same sampled answers of the SFT model
#     (100 held-out instruction prompts, K = 4, 48 tokens) against the verifier (runs/judges;
#     each report.json is copied to experiments/soft-vs-hard/outcomes/judges/).
#  2. SPCE (soft p), DPO (the verdict) and cDPO (the verdict smoothed by the judge's measured
#     error rate) under a logit-noise judge, p = σ((s_a − s_b)/τ + ε), ε ~ N(0, σ²), at the σ
#     whose agreement with the verifier is in 65–80% (SIGMA, EPS = 1 − that agreement), 3 seeds,
#     15 steps, on the IFEval task of experiments/methods-ifeval. The σ = 0 arms are its OSP and DPO
#     runs (cDPO at ε = 0 is DPO). With TEMPERATURE (the judge's calibrating T from its report
#     card), a fourth arm: SPCE on p calibrated by judge.temperature (osp-logit-T).
#  3. OSP with the checklist self-judge (the SFT model asked one yes/no question per instruction),
#     3 seeds, 15 steps: the self-judge made as informative as this model allows.
# Each evaluation's per-prompt outcomes go to experiments/soft-vs-hard/outcomes/ as soon as it
# ends (commit them); the summary reads them and methods-ifeval's (the σ = 0 arms).
#   bash experiments/soft-vs-hard/run.sh cards        # step 1 (about 15 minutes)
#   SIGMA=3 EPS=0.27 TEMPERATURE=7.24 bash experiments/soft-vs-hard/run.sh runs   # steps 2 and 3 (about 1 hour)
# SEEDS (default "0 1 2") and CHECKLIST_SEEDS (default "0 1 2"; empty skips step 3) choose the runs.
# One run at a time: the machine has 2 cores. Finished runs are skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/exp}
JUDGES=${JUDGES:-runs/judges}
HERE=experiments/soft-vs-hard
OUTCOMES=$HERE/outcomes
IFEVAL=experiments/methods-ifeval  # the task and configs are that experiment's
source experiments/lib/experiment_lib.sh

case "${1:-}" in
cards)
  mkdir -p "$JUDGES" "$OUTCOMES/judges"
  .venv/bin/python -m cluster.judge_report --num-prompts 100 --k 4 --max-tokens 48 --out "$JUDGES/sft" \
      --judges self checklist verifier verifier+flip:0.2 verifier+logit:1 verifier+logit:2 verifier+logit:3 \
      verifier+logit:4 > "$JUDGES/sft.log" 2>&1
  cp "$JUDGES/sft/report.json" "$OUTCOMES/judges/sft.json"
  if [ -n "${LM_JUDGE:-}" ]; then  # another local model as an LM judge, on the same answers
    .venv/bin/python -m cluster.judge_report --num-prompts 100 --answers "$JUDGES/sft/answers.json" \
        --judges "lm:$LM_JUDGE" --out "$JUDGES/lm" > "$JUDGES/lm.log" 2>&1
    cp "$JUDGES/lm/report.json" "$OUTCOMES/judges/lm-$(basename "$LM_JUDGE").json"
  fi
  ;;
runs)
  : "${SIGMA:?set SIGMA, the noise scale chosen from the report card}" "${EPS:?set EPS, 1 − its agreement}"
  noise="judge.noise=logit judge.noise_scale=$SIGMA"
  runs=()
  for seed in ${SEEDS-0 1 2}; do
    # shellcheck disable=SC2086
    run "osp-logit-s$seed" "$IFEVAL/ifeval-osp.yaml" "$seed" 15 $noise
    # shellcheck disable=SC2086
    run "dpo-logit-s$seed" "$IFEVAL/ifeval-dpo.yaml" "$seed" 15 $noise
    # shellcheck disable=SC2086
    run "cdpo-logit-s$seed" "$IFEVAL/ifeval-osp.yaml" "$seed" 15 $noise method=cdpo "loss.label_smoothing=$EPS"
    runs+=("osp-logit-s$seed" "dpo-logit-s$seed" "cdpo-logit-s$seed")
    if [ -n "${TEMPERATURE:-}" ]; then
      # shellcheck disable=SC2086
      run "osp-logit-T-s$seed" "$IFEVAL/ifeval-osp.yaml" "$seed" 15 $noise "judge.temperature=$TEMPERATURE"
      runs+=("osp-logit-T-s$seed")
    fi
  done
  for seed in ${CHECKLIST_SEEDS-0 1 2}; do
    run "osp-checklist-s$seed" "$IFEVAL/ifeval-osp.yaml" "$seed" 15 judge.kind=checklist
    runs+=("osp-checklist-s$seed")
  done
  evaluate "eval-logit${EVAL_SUFFIX:-}" 15 "${runs[@]}"
  .venv/bin/python $HERE/summarise.py --outcomes "$OUTCOMES" $IFEVAL/outcomes --judges "$OUTCOMES/judges" \
      --sigma "$SIGMA" --eps "$EPS" ${TEMPERATURE:+--temperature "$TEMPERATURE"}
  ;;
*)
  echo "usage: $0 cards | runs" >&2
  exit 2
  ;;
esac

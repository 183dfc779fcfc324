"""What a run that survived faults must show: nothing lost, nothing done twice. Pure functions
over a run folder and the soak's snapshots of it (bench/chaos_soak.py); no Ray.

A run that is stopped and resumed is a chain of attempts. Attempt k starts from the checkpoint of
step r_k (r_1 = 0) and the steps it trains after r_{k+1} are lost with it (the next attempt starts
from r_{k+1} and redoes them). So the history of the weights the run ends with, its lineage, is
attempt 1's steps 1..r_2, attempt 2's steps r_2+1..r_3, …, the last attempt's steps after r_last.
The soak copies journal.jsonl (cluster/driver/journal.py) when each attempt ends and rebuilds the
lineage itself, so the product's own truncation on resume is checked, not trusted.

Checks (each a dict with `ok` and its figures):
- `steps`: metrics.jsonl and journal.jsonl hold steps 1..N once each; the journal equals the
  lineage rebuilt from the attempts; the learner's own optimizer-step count (DeepSpeed's
  global_steps in the final checkpoint) is N less the steps skipped (no verdict): no update
  applied twice.
- `pairs`: the lineage trained N × pairs_per_step pairs, none twice (a pair: its prompt, the
  policy version that sampled it, a digest of each answer's tokens); every one was spilled
  (pipeline.spill_dir) by the attempt that trained it.
- `prompts`: every prompt position the data order handed out (the final run state's
  next_prompt) is accounted for exactly once: done in the lineage (trained, or judging kept no
  pair) or listed in the final checkpoint to be sampled again. `lost` counts positions with
  neither, `double` those with more than one.
- `versions`: the engines' version after each step never goes backwards (and equals the step
  when sync_every is 1); a pair trained at step t was sampled by a version in
  [max(r_k, t − 1 − max_staleness·sync_every), t − 1], so no resumed engine sampled with weights
  older than the checkpoint it resumed from; every pair spilled by attempt k carries ≥ r_k.
- `weights`: weights_check.json of step N within 1e-3 (the engines hold the learner's weights).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

OUTCOME_DONE = ("trained", "no_pair_kept")
WEIGHTS_GAP_OK = 1e-3  # cluster/driver/metrics.write_weights_check's own threshold


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def lineage(attempts: list[dict]) -> list[dict]:
    """The journal lines of the weights the run ends with. `attempts`: in order, each
    {"resumed_from": r_k, "journal": [its journal.jsonl lines when it ended]}."""
    out = []
    for k, attempt in enumerate(attempts):
        start = attempt["resumed_from"]
        end = attempts[k + 1]["resumed_from"] if k + 1 < len(attempts) else None
        out += [line for line in attempt["journal"] if line["step"] > start and (end is None or line["step"] <= end)]
    return out


def check_steps(max_steps: int, metrics_steps: list[int], journal: list[dict], rebuilt: list[dict],
                optimizer_steps: int | None, skipped_steps: int) -> dict[str, Any]:
    want = list(range(1, max_steps + 1))
    journal_steps = [line["step"] for line in journal]
    repeated = sorted({s for steps in (metrics_steps, journal_steps) for s, n in Counter(steps).items() if n > 1})
    out = {
        "metrics_steps_once": metrics_steps == want,
        "journal_steps_once": journal_steps == want,
        "journal_equals_rebuilt_lineage": journal == rebuilt,
        "steps_repeated": repeated,
        "optimizer_steps": optimizer_steps,
        "optimizer_steps_expected": max_steps - skipped_steps,
    }
    optimizer_ok = optimizer_steps is None or optimizer_steps == max_steps - skipped_steps
    out["ok"] = out["metrics_steps_once"] and out["journal_steps_once"] and out["journal_equals_rebuilt_lineage"] \
        and optimizer_ok
    return out


def check_pairs(lineage_lines: list[dict], pairs_per_step: int, spilled_by_attempt: list[set[tuple]],
                attempt_of_step: dict[int, int]) -> dict[str, Any]:
    """`spilled_by_attempt[k]`: the pair keys attempt k spilled; `attempt_of_step`: the attempt
    whose line of each step is in the lineage."""
    trained: Counter[tuple] = Counter()
    unspilled = []
    for line in lineage_lines:
        fresh = line["pairs"][: len(line["pairs"]) - line.get("replayed", 0)]  # a method's replays train again by design
        for pair in fresh:
            key = tuple(pair)
            trained[key] += 1
            if key not in spilled_by_attempt[attempt_of_step[line["step"]]]:
                unspilled.append([line["step"], *pair])
    total = sum(len(line["pairs"]) for line in lineage_lines)
    duplicated = sum(n - 1 for n in trained.values() if n > 1)
    expected = len(lineage_lines) * pairs_per_step
    return {"ok": duplicated == 0 and not unspilled and total == expected, "trained": total, "expected": expected,
            "duplicated": duplicated, "not_spilled": unspilled[:10], "not_spilled_count": len(unspilled),
            "spilled": sum(len(s) for s in spilled_by_attempt)}


def check_prompts(lineage_lines: list[dict], handed_out: list[int], final_state: dict) -> dict[str, Any]:
    """`handed_out`: the prompt index at each data-order position below the final next_prompt."""
    done: Counter[int] = Counter()
    reasons: Counter[str] = Counter()
    for line in lineage_lines:
        for reason, indices in line["prompts"].items():
            reasons[reason] += len(indices)
            if reason in OUTCOME_DONE:
                done.update(indices)
    listed = Counter(final_state["requeued"])
    positions = Counter(handed_out)
    accounted = done + listed
    lost = sum(max(0, positions[i] - accounted[i]) for i in positions)
    double = sum(max(0, accounted[i] - positions[i]) for i in accounted)
    trained_prompts = {pair[0] for line in lineage_lines for pair in line["pairs"]}
    never_handed_out = sorted(trained_prompts - set(positions))
    counts_agree = sum(done.values()) == final_state["prompts_done"]
    return {"ok": lost == 0 and double == 0 and not never_handed_out and counts_agree,
            "handed_out": len(handed_out), "lost": lost, "double": double, "done": sum(done.values()),
            "done_in_run_state": final_state["prompts_done"], "left_to_sample": len(final_state["requeued"]),
            "outcomes": dict(reasons), "trained_but_never_handed_out": never_handed_out}


def check_versions(lineage_lines: list[dict], attempt_of_step: dict[int, int], resumed_from: list[int],
                   spilled_versions: list[list[int]], max_staleness: int, sync_every: int) -> dict[str, Any]:
    backwards, off_step, out_of_window = [], [], []
    previous = 0
    for line in lineage_lines:
        step, version = line["step"], line["version"]
        if version < previous:
            backwards.append([step, previous, version])
        previous = max(previous, version)
        if sync_every == 1 and version != step:
            off_step.append([step, version])
        floor = max(resumed_from[attempt_of_step[step]], step - 1 - max_staleness * sync_every)
        for pair in line["pairs"][: len(line["pairs"]) - line.get("replayed", 0)]:
            if not floor <= pair[1] <= step - 1:
                out_of_window.append([step, pair[1], floor])
    below_resume = [[k, v, resumed_from[k]] for k, versions in enumerate(spilled_versions) for v in versions
                    if v < resumed_from[k]]
    return {"ok": not (backwards or off_step or out_of_window or below_resume),
            "engine_version_backwards": backwards, "engine_version_not_step": off_step,
            "trained_outside_window": out_of_window[:10], "trained_outside_window_count": len(out_of_window),
            "spilled_below_resume_version": below_resume[:10], "spilled_below_resume_count": len(below_resume)}


def check_weights(weights_check: dict | None, max_steps: int) -> dict[str, Any]:
    if weights_check is None:
        return {"ok": False, "why": "no weights_check.json"}
    gap = weights_check.get("max_abs_logprob_gap")
    return {"ok": weights_check.get("step") == max_steps and gap is not None and gap < WEIGHTS_GAP_OK,
            "step": weights_check.get("step"), "max_abs_logprob_gap": gap}


def audit(run: dict) -> dict[str, Any]:
    """Every check of one run. `run`: max_steps, pairs_per_step, max_staleness, sync_every,
    handed_out, final_state, metrics_steps, skipped_steps, journal (the final file's lines),
    attempts ([{resumed_from, journal, spilled: [pair keys]}]), optimizer_steps (or None),
    weights_check (or None)."""
    attempts = run["attempts"]
    rebuilt = lineage(attempts)
    attempt_of_step = {}
    for k, attempt in enumerate(attempts):
        end = attempts[k + 1]["resumed_from"] if k + 1 < len(attempts) else None
        for line in attempt["journal"]:
            if line["step"] > attempt["resumed_from"] and (end is None or line["step"] <= end):
                attempt_of_step[line["step"]] = k
    resumed_from = [a["resumed_from"] for a in attempts]
    spilled = [{tuple(key) for key in a["spilled"]} for a in attempts]
    checks = {
        "steps": check_steps(run["max_steps"], run["metrics_steps"], run["journal"], rebuilt, run["optimizer_steps"],
                             run["skipped_steps"]),
        "pairs": check_pairs(rebuilt, run["pairs_per_step"], spilled, attempt_of_step),
        "prompts": check_prompts(rebuilt, run["handed_out"], run["final_state"]),
        "versions": check_versions(rebuilt, attempt_of_step, resumed_from, [[key[1] for key in a["spilled"]]
                                                                            for a in attempts],
                                   run["max_staleness"], run["sync_every"]),
        "weights": check_weights(run["weights_check"], run["max_steps"]),
    }
    checks["ok"] = all(c["ok"] for c in checks.values())
    return checks

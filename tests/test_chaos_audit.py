"""The chaos soak's audit (bench/chaos_audit.py) on a hand-made run of two attempts: it passes
the run that lost nothing, and each way of losing or repeating something fails its own check.
Each mutation below is a bug the soak exists to catch; a check that let one through would
report a clean soak over a broken run."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from chaos_audit import audit, lineage  # noqa: E402

OUTCOMES = {"trained": [], "no_pair_kept": [], "requeued_stale": [], "requeued_failed": []}


def _line(step: int, version: int, pairs: list[list], **prompts) -> dict:
    return {"step": step, "version": version, "pairs": pairs, "replayed": 0, "prompts": {**OUTCOMES, **prompts}}


def _run() -> dict:
    """4 steps of 2 pairs, max_staleness 1. Attempt 0 trains steps 1-3 and dies; its checkpoint is
    step 2, so attempt 1 resumes at 2 (engines at version 2), redoes step 3 with prompt 3 sampled
    again, and trains step 4. Prompts 0-5 were handed out: 0, 1, 3, 4 trained, 2 kept no pair,
    5 is listed to be sampled again."""
    s1 = _line(1, 1, [[0, 0, "a", "b"], [0, 0, "c", "d"]], trained=[0])
    s2 = _line(2, 2, [[1, 0, "e", "f"], [1, 1, "g", "h"]], trained=[1], no_pair_kept=[2])
    lost_s3 = _line(3, 3, [[3, 1, "i", "j"], [3, 1, "k", "l"]], trained=[3])
    s3 = _line(3, 3, [[3, 2, "m", "n"], [3, 2, "o", "p"]], trained=[3])
    s4 = _line(4, 4, [[4, 3, "q", "r"], [4, 3, "s", "t"]], trained=[4])
    first = {"resumed_from": 0, "journal": [s1, s2, lost_s3], "spilled": [p for line in (s1, s2, lost_s3)
                                                                       for p in line["pairs"]] + [[5, 2, "u", "v"]]}
    second = {"resumed_from": 2, "journal": [s1, s2, s3, s4], "spilled": s3["pairs"] + s4["pairs"]}
    return {"max_steps": 4, "pairs_per_step": 2, "max_staleness": 1, "sync_every": 1,
            "handed_out": [0, 1, 2, 3, 4, 5],
            "final_state": {"next_prompt": 6, "requeued": [5], "prompts_done": 5},
            "metrics_steps": [1, 2, 3, 4], "skipped_steps": 0, "journal": [s1, s2, s3, s4],
            "attempts": [first, second], "optimizer_steps": 4,
            "weights_check": {"step": 4, "max_abs_logprob_gap": 2e-6}}


def test_a_run_that_lost_nothing_passes_and_its_lineage_drops_the_lost_step():
    run = _run()
    assert [line["pairs"][0][1] for line in lineage(run["attempts"])] == [0, 0, 2, 3]  # step 3 of attempt 1
    checks = audit(run)
    assert checks["ok"], checks
    assert checks["pairs"]["trained"] == 8 and checks["pairs"]["duplicated"] == 0
    assert checks["prompts"]["lost"] == 0 and checks["prompts"]["outcomes"]["no_pair_kept"] == 1


def _forget_prompt(run):  # the checkpoint dropped a prompt in flight
    run["final_state"]["requeued"] = []


def _prompt_twice(run):  # a trained prompt also listed to be sampled again
    run["final_state"]["requeued"] = [5, 3]


def _pair_twice(run):  # step 4 trained step 3's pair again (a batch taken twice)
    for journal in (run["journal"], run["attempts"][1]["journal"]):
        journal[3] = _line(4, 4, [[3, 2, "m", "n"], [4, 3, "s", "t"]], trained=[4])


def _journal_kept_a_lost_step(run):  # the resume did not drop the lost attempt's step 3
    run["journal"] = run["journal"][:2] + [run["attempts"][0]["journal"][2]] + run["journal"][2:]


def _metrics_step_twice(run):
    run["metrics_steps"] = [1, 2, 3, 3, 4]


def _update_applied_twice(run):  # the learner stepped 5 times for 4 run steps
    run["optimizer_steps"] = 5


def _stale_engine_after_resume(run):  # a resumed engine sampled with the SFT weights (version 0)
    run["attempts"][1]["spilled"].append([6, 0, "w", "x"])


def _trained_older_than_resume(run):  # a pair of the lost attempt trained after the resume
    run["journal"][2] = run["attempts"][1]["journal"][2] = _line(3, 3, [[3, 1, "i", "j"], [3, 1, "k", "l"]],
                                                                 trained=[3])


def _engine_version_backwards(run):
    run["journal"][3] = run["attempts"][1]["journal"][3] = _line(4, 2, [[4, 3, "q", "r"], [4, 3, "s", "t"]],
                                                                 trained=[4])


def _pair_never_spilled(run):  # trained a pair the judge never made (or the spill lost it)
    run["attempts"][1]["spilled"] = run["attempts"][1]["spilled"][1:]


def _stale_push(run):
    run["weights_check"]["max_abs_logprob_gap"] = 0.02


@pytest.mark.parametrize("mutate, check, figure, value", [
    (_forget_prompt, "prompts", "lost", 1),
    (_prompt_twice, "prompts", "double", 1),
    (_pair_twice, "pairs", "duplicated", 1),
    (_journal_kept_a_lost_step, "steps", "journal_equals_rebuilt_lineage", False),
    (_metrics_step_twice, "steps", "steps_repeated", [3]),
    (_update_applied_twice, "steps", "optimizer_steps", 5),
    (_stale_engine_after_resume, "versions", "spilled_below_resume_count", 1),
    (_trained_older_than_resume, "versions", "trained_outside_window_count", 2),
    (_engine_version_backwards, "versions", "engine_version_backwards", [[4, 3, 2]]),
    (_pair_never_spilled, "pairs", "not_spilled_count", 1),
    (_stale_push, "weights", "max_abs_logprob_gap", 0.02),
])
def test_each_loss_or_repeat_fails_its_check(mutate, check, figure, value):
    run = copy.deepcopy(_run())
    mutate(run)
    checks = audit(run)
    assert not checks[check]["ok"] and not checks["ok"]
    assert checks[check][figure] == value


def test_seconds_lost_counts_only_new_steps_and_redone_ones_as_lost():
    """The soak's time lost per fault (bench/chaos_soak.seconds_lost) on hand-made timelines at a
    fault-free pace of 3 s a step. A rollout actor killed at step 3 (t=10), back at t=20: the
    driver made steps 4 and 5 meanwhile and 6 at t=21, so 11 s less 3 steps = 2 s lost. A learner
    rank killed at step 7 (t=30) of attempt 0: the resumed attempt 1 (from step 6) logs the redone
    step 7 at t=60 and step 8 at t=63: only step 8 is new, 33 − 3 = 30 s lost. Would catch redone
    steps counted as progress, or the struck driver's steps credited to a stop fault."""
    from chaos_soak import seconds_lost

    seen = [[0, 3, 9.0], [0, 4, 12.0], [0, 5, 15.0], [0, 6, 21.0], [0, 7, 24.0], [1, 7, 60.0], [1, 8, 63.0]]
    rollout = {"kind": "rollout", "attempt": 0, "at_step": 3, "injected_at": 10.0}
    assert seconds_lost(rollout, 20.0, seen, 3.0) == 2.0
    learner = {"kind": "learner", "attempt": 0, "at_step": 7, "injected_at": 30.0}
    assert seconds_lost(learner, 63.0, seen, 3.0) == 30.0

"""The driver's accounting without engines: where every prompt is (cluster/prompt_ledger.py)
and how many prompts an idle engine is given (cluster/step_policy.py), against hand counts."""

from __future__ import annotations

import random
from collections import Counter

from cluster.checkpoint import RunState
from cluster.prompt_ledger import PromptLedger
from cluster.step_policy import StepPolicy
from core.config import Config


def _balanced(ledger: PromptLedger) -> bool:
    """Every prompt taken from the data order is done or listed to be sampled again, once."""
    ledger.record()
    state = ledger.state
    return state.prompts_done + len(state.requeued) == state.next_prompt


def test_a_prompts_life_through_the_ledger():
    state = RunState()
    ledger = PromptLedger(10, seed=0, shuffle=False, state=state)
    assert ledger.hand_out(4) == [0, 1, 2, 3] and ledger.prompts_in_flight == 4
    ledger.judged([0, 1], Counter({0: 2}))  # prompt 1 kept no pair: done
    assert state.prompts_done == 1 and ledger.waiting == {0: 2} and ledger.prompts_in_flight == 2
    ledger.trained([0])
    assert state.prompts_done == 1 and ledger.waiting == {0: 1}
    ledger.trained([0])
    assert state.prompts_done == 2 and not ledger.waiting and state.pairs_trained == 2
    ledger.judged([2, 3], Counter({2: 2, 3: 2}))
    assert ledger.stale([2, 2], pairs_per_prompt=2) == [2]  # its two pairs, one handing-out
    assert state.pairs_regenerated == 2 and ledger.waiting == {3: 2}
    assert _balanced(ledger) and state.requeued == [2, 3]
    assert ledger.hand_out(2) == [2, 4]  # the requeued prompt first, then the data order
    ledger.failed([2, 4])  # a call failed for good: both go back
    assert ledger.prompts_in_flight == 0 and ledger.schedule.requeued == [2, 4]
    assert _balanced(ledger) and sorted(state.requeued) == [2, 3, 4]


def _policy(**changes) -> StepPolicy:
    cfg = Config()
    cfg.rollout.k, cfg.rollout.prompts_per_batch = 4, 4
    cfg.learner.pairs_per_step, cfg.learner.max_steps, cfg.learner.sync_every = 4, 10, 1
    cfg.pipeline.max_staleness = 1
    for key, value in changes.items():
        section, name = key.split("__")
        setattr(getattr(cfg, section), name, value)
    return StepPolicy(cfg, RunState(), random.Random(0))


def test_prompts_to_sample_counts_the_buffer_and_what_is_on_its_way():
    policy = _policy()
    assert policy.pairs_per_prompt == 2  # K=4: two ranked pairs
    # Idle learner: pairs made now can feed this step and the next push's (max_staleness=1):
    # 8 useful pairs, 4 prompts' worth.
    assert policy.prompts_to_sample(False, buffered=0, prompts_in_flight=0, buffer_max=16) == 4
    assert policy.prompts_to_sample(False, buffered=6, prompts_in_flight=1, buffer_max=16) == 0  # 6 + 2 = 8
    # A step running: only the next version's step can use new pairs (4), 2 already coming.
    assert policy.prompts_to_sample(True, buffered=0, prompts_in_flight=1, buffer_max=16) == 1
    assert policy.prompts_to_sample(False, buffered=0, prompts_in_flight=0, buffer_max=3) == 1  # a small buffer
    policy.state.step = 9  # the last step is running: nothing more to make
    assert policy.prompts_to_sample(True, buffered=0, prompts_in_flight=0, buffer_max=16) == 0


def test_dno_keeps_one_pair_a_prompt_and_samples_for_this_iteration_only():
    policy = _policy(judge__anchor="dno", dno__enabled=True, dno__iteration_steps=3)
    assert policy.pairs_per_prompt == 1
    policy.state.step = 1  # two steps of this iteration left: 8 pairs, 4 prompts per batch at most
    assert policy.prompts_to_sample(False, buffered=0, prompts_in_flight=0, buffer_max=64) == 4
    assert policy.prompts_to_sample(False, buffered=0, prompts_in_flight=7, buffer_max=64) == 1
    policy.state.step = 2  # its last step running: wait for the next iterate
    assert policy.prompts_to_sample(True, buffered=0, prompts_in_flight=0, buffer_max=64) == 0
    assert policy.oldest_trainable_version() == policy.pushed_versions[-1]

"""The driver's accounting without engines: where every prompt is (cluster/driver/ledger.py)
and how many prompts an idle rollout actor is given (cluster/driver/scheduler.py), against
hand counts."""

from __future__ import annotations

import random
from collections import Counter

from cluster.driver.checkpoint import RunState
from cluster.driver.ledger import PromptLedger
from cluster.driver.scheduler import StepScheduler
from cluster.methods import method_of
from core.config import Config
from core.records import pair_batch


def _balanced(ledger: PromptLedger) -> bool:
    """Every prompt taken from the data order is done or listed to be sampled again, once."""
    state = ledger.record(random.Random(0).getstate(), 0)
    return state.prompts_done + len(state.requeued) == state.next_prompt


def test_a_prompts_life_through_the_ledger():
    state = RunState()
    ledger = PromptLedger(10, seed=0, shuffle=False, state=state)
    assert ledger.hand_out(4) == [0, 1, 2, 3] and ledger.prompts_in_flight == 4
    ledger.judged([0, 1], Counter({0: 2}))  # prompt 1 kept no pair: done
    assert state.prompts_done == 1 and ledger.waiting == {0: 2} and ledger.prompts_in_flight == 2
    ledger.step_trained([0])
    assert state.prompts_done == 1 and ledger.waiting == {0: 1}
    ledger.step_trained([0])
    assert state.prompts_done == 2 and not ledger.waiting and state.pairs_trained == 2
    ledger.judged([2, 3], Counter({2: 2, 3: 2}))
    assert ledger.stale([2, 2], pairs_per_prompt=2) == [2]  # its two pairs, one handing-out
    assert state.pairs_regenerated == 2 and ledger.waiting == {3: 2}
    assert _balanced(ledger) and state.requeued == [2, 3]
    assert ledger.hand_out(2) == [2, 4]  # the requeued prompt first, then the data order
    ledger.failed([2, 4])  # a call failed for good: both go back
    assert ledger.prompts_in_flight == 0 and ledger.schedule.requeued == [2, 4]
    assert _balanced(ledger) and sorted(state.requeued) == [2, 3, 4]


def _pairs(n: int) -> object:
    return pair_batch([{"prompt_id": f"p{i}", "prompt_index": 100 + i, "prompt_tokens": [1], "chosen_tokens": [2],
                        "rejected_tokens": [3], "chosen_text": "a", "rejected_text": "b", "strength": 0.9,
                        "ref_logp_chosen": -1.0, "ref_logp_rejected": -1.0, "policy_version": 0,
                        "source": "round_robin"} for i in range(n)])


def _scheduler(method: str = "osp", **changes) -> StepScheduler:
    cfg = Config()
    cfg.method = method
    cfg.rollout.k, cfg.rollout.prompts_per_batch = 4, 4
    cfg.learner.pairs_per_step, cfg.learner.max_steps, cfg.learner.sync_every = 4, 10, 1
    cfg.pipeline.max_staleness = 1
    for key, value in changes.items():
        section, name = key.split("__")
        setattr(getattr(cfg, section), name, value)
    cfg.data.shuffle = False
    return StepScheduler(cfg, 1000, RunState(), random.Random(0), method_of(cfg))


def _to_sample(scheduler: StepScheduler, step_running: bool, buffered: int, prompts_in_flight: int,
               buffer_max: int) -> int:
    """prompts_to_sample with `buffered` pairs waiting and `prompts_in_flight` prompts handed out."""
    scheduler.buffer.max_pairs = buffer_max
    scheduler.buffer.tables.clear()
    scheduler.buffer.size = 0
    if buffered:
        scheduler.buffer.put(_pairs(buffered))
    scheduler.ledger.in_flight.clear()
    scheduler.ledger.in_flight.update(range(prompts_in_flight))
    return scheduler.prompts_to_sample(step_running)


def test_prompts_to_sample_counts_the_buffer_and_what_is_on_its_way():
    policy = _scheduler()
    assert policy.pairs_per_prompt == 2  # K=4: two ranked pairs
    # Idle learner: pairs made now can feed this step and the next push's (max_staleness=1):
    # 8 useful pairs, 4 prompts' worth.
    assert _to_sample(policy, False, buffered=0, prompts_in_flight=0, buffer_max=16) == 4
    assert _to_sample(policy, False, buffered=6, prompts_in_flight=1, buffer_max=16) == 0  # 6 + 2 = 8
    # A step running: only the next version's step can use new pairs (4), 2 already coming.
    assert _to_sample(policy, True, buffered=0, prompts_in_flight=1, buffer_max=16) == 1
    assert _to_sample(policy, False, buffered=0, prompts_in_flight=0, buffer_max=3) == 1  # a small buffer
    # A dropped tie left 3 pairs, one short of a step, with nothing on its way: one more prompt
    # (without it the run stalls: room for 1 pair < 2 pairs a prompt). Not while a step runs
    # with max_staleness=0: those pairs would be stale before they train.
    fresh = _scheduler(pipeline__max_staleness=0)
    assert _to_sample(fresh, False, buffered=3, prompts_in_flight=0, buffer_max=16) == 1
    assert _to_sample(fresh, True, buffered=3, prompts_in_flight=0, buffer_max=16) == 0
    assert _to_sample(fresh, False, buffered=4, prompts_in_flight=0, buffer_max=16) == 0  # a step's worth: wait
    policy.ledger.state.step = 9  # the last step is running: nothing more to make
    assert _to_sample(policy, True, buffered=0, prompts_in_flight=0, buffer_max=16) == 0


def test_dno_keeps_one_pair_a_prompt_and_samples_for_this_iteration_only():
    policy = _scheduler("dno", dno__iteration_steps=3)
    assert policy.pairs_per_prompt == 1
    policy.ledger.state.step = 1  # two steps of this iteration left: 8 pairs, 4 prompts per batch at most
    assert _to_sample(policy, False, buffered=0, prompts_in_flight=0, buffer_max=64) == 4
    assert _to_sample(policy, False, buffered=0, prompts_in_flight=7, buffer_max=64) == 1
    policy.ledger.state.step = 2  # its last step running: wait for the next iterate
    assert _to_sample(policy, True, buffered=0, prompts_in_flight=0, buffer_max=64) == 0
    assert policy.policy.oldest_trainable(policy.ledger.pushed_versions) == policy.ledger.pushed_versions[-1]


def test_the_ledger_says_what_became_of_each_prompt_once():
    """The outcomes the driver writes to journal.jsonl after each step, against the life of six
    prompts. Would catch an outcome left out (a prompt done without a line saying why), one
    written twice, or outcomes not cleared once taken (each step's line repeating the last)."""
    ledger = PromptLedger(10, seed=0, shuffle=False, state=RunState())
    ledger.hand_out(6)
    ledger.judged([0, 1], Counter({0: 2}))  # 1: judging kept no pair
    ledger.failed([2])  # its call failed for good
    ledger.judged([3, 4], Counter({3: 2, 4: 2}))
    ledger.stale([4, 4], pairs_per_prompt=2)  # 4's pairs went stale
    ledger.step_trained([0, 3])
    assert ledger.take_outcomes() == {"trained": [], "no_pair_kept": [1], "requeued_stale": [4],
                                      "requeued_failed": [2]}
    ledger.step_trained([0, 3])  # the last pair of 0 and of 3
    assert ledger.take_outcomes() == {"trained": [0, 3], "no_pair_kept": [], "requeued_stale": [],
                                      "requeued_failed": []}
    assert ledger.take_outcomes() == {"trained": [], "no_pair_kept": [], "requeued_stale": [], "requeued_failed": []}

"""Pairs too stale to train, without Ray: the driver's scheduler, ledger and pair buffer driven
the way the pipeline drives them (cluster/driver/pipeline.py: deliver judged batches, start a
step, push, hand out prompts), with some rollout calls coming back late.

The engine tests' `staleness/max <= 1` holds even when nothing was ever dropped; these runs make
drops happen and follow every dropped prompt until it is trained."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pyarrow as pa
import pytest

from cluster.driver.checkpoint import RunState
from cluster.driver.scheduler import StepScheduler
from cluster.methods import method_of
from core.config import Config
from core.records import pair_batch

PAIRS_PER_PROMPT = 2  # K = 4, round-robin ranking


def _judged(indices: list[int], version: int, call: int) -> pa.Table:
    """What a judge returns for one rollout call: two pairs a prompt, stamped with the version
    that sampled them; `chosen_text` names the pair (call:prompt:j), so none is trained twice."""
    return pair_batch([{"prompt_id": f"p{i}", "prompt_index": i, "prompt_tokens": [1], "chosen_tokens": [2],
                        "rejected_tokens": [3], "chosen_text": f"{call}:{i}:{j}", "rejected_text": "b",
                        "strength": 0.9, "ref_logp_chosen": -1.0, "ref_logp_rejected": -1.0,
                        "policy_version": version, "source": "round_robin"}
                       for i in indices for j in range(PAIRS_PER_PROMPT)])


@dataclass
class Call:
    """A rollout call in flight: its prompts, the version its engine held, and when it returns
    (after `due_pushes` pushes in all; None: at the next turn of the loop)."""

    number: int
    indices: list[int]
    version: int
    due_pushes: int | None


@dataclass
class Run:
    scheduler: StepScheduler
    versions: list[int] = field(default_factory=lambda: [0])  # the SFT weights, then every push
    calls: list[Call] = field(default_factory=list)
    too_late: set[int] = field(default_factory=set)  # calls back after max_staleness + 1 pushes
    trained: list[dict] = field(default_factory=list)  # every fresh pair trained, with the step's version
    drops: list[tuple[int, int]] = field(default_factory=list)  # (prompt index, the version it was sampled at)
    handed_out: list[int] = field(default_factory=list)


def _buffered(scheduler: StepScheduler) -> dict[str, tuple[int, int]]:
    """Every pair waiting in the buffer: its name → (prompt index, the version that sampled it)."""
    return {row["chosen_text"]: (row["prompt_index"], row["policy_version"]) for table in scheduler.buffer.tables
            for row in table.select(["chosen_text", "prompt_index", "policy_version"]).to_pylist()}


def _run(max_staleness: int, sync_every: int = 1, steps: int = 12, late_every: int = 3) -> Run:
    """Two rollout calls at most in flight; every `late_every`-th call comes back only after
    max_staleness + 1 more pushes (a slow engine), so its pairs are one push too stale, or
    when nothing else is in flight (the driver waits for it)."""
    cfg = Config()
    cfg.rollout.k, cfg.rollout.prompts_per_batch = 4, 2
    cfg.learner.pairs_per_step, cfg.learner.max_steps, cfg.learner.sync_every = 4, steps, sync_every
    cfg.pipeline.max_staleness, cfg.pipeline.buffer_max_pairs = max_staleness, 64
    cfg.data.shuffle = False
    scheduler = StepScheduler(cfg, 1000, RunState(), random.Random(0), method_of(cfg))
    ledger = scheduler.ledger  # read for the assertions; the loop below talks to the scheduler, as the pipeline does
    run = Run(scheduler)
    scheduler = run.scheduler
    made, idle = 0, False
    for _ in range(500):
        if ledger.step == steps:
            return run
        # Judged batches arrive (cluster/driver/pipeline._on_judge → scheduler.add_pairs). A late
        # call is back after its pushes, or sooner when the last turn did nothing (the driver
        # had nothing else to wait for).
        due = [c for c in run.calls if c.due_pushes is None or len(run.versions) - 1 >= c.due_pushes]
        for call in due or (run.calls[:1] if idle else []):
            run.calls.remove(call)
            if call in due and call.due_pushes is not None:
                run.too_late.add(call.number)
            scheduler.judged(call.indices, _judged(call.indices, call.version, call.number))
        # A step starts (_maybe_start_step): stale pairs are dropped and their prompts requeued.
        requeued_before = len(ledger.schedule.requeued)
        buffered = _buffered(scheduler)
        oldest = scheduler.policy.oldest_trainable(ledger.pushed_versions)
        batch = scheduler.next_batch()
        idle = batch is None
        gone = set(buffered) - set(_buffered(scheduler)) - set(batch.pairs["chosen_text"].to_pylist() if batch else [])
        dropped = sorted(buffered[name] for name in gone)  # (prompt index, version), one per pair
        # Each dropped prompt is requeued once (its pairs came from one handing-out).
        assert sorted(ledger.schedule.requeued[requeued_before:]) == sorted({i for i, _ in dropped})
        run.drops += dropped
        if batch is not None:
            rows = batch.pairs.to_pylist()
            assert all(r["policy_version"] >= oldest for r in rows)  # nothing staler than the bound trains
            run.trained += [{**r, "trained_at": ledger.version} for r in rows]
            step = scheduler.trained(batch)  # the step is done (_on_step)
            if scheduler.push_due():
                scheduler.pushed(step)
                run.versions.append(step)
        # Idle rollout calls are handed prompts (_dispatch_rollouts).
        while len(run.calls) < 2 and (n := scheduler.prompts_to_sample(step_running=False)):
            idle = False
            indices = scheduler.take_prompts(n)
            run.handed_out += indices
            made += 1
            due_pushes = len(run.versions) + max_staleness if made % late_every == 0 else None
            run.calls.append(Call(made, indices, ledger.version, due_pushes))
    raise AssertionError(f"stalled at step {ledger.step} of {steps}")


@pytest.mark.parametrize("max_staleness, sync_every", [(1, 1), (2, 1), (1, 2)])
def test_stale_pairs_are_dropped_and_their_prompts_sampled_again_and_trained(max_staleness, sync_every):
    """max_staleness 2 is the main job's (cluster/configs/default.yaml). Bugs it catches: a
    dropped prompt never requeued (lost: handed out once, never trained), requeued but counted
    done or dropped twice (the accounting no longer balances), or the bound off by one push (a
    pair one push too old trains, or none is ever dropped)."""
    run = _run(max_staleness, sync_every)
    ledger = run.scheduler.ledger
    state = ledger.state
    assert run.drops, "no pair was ever dropped: the test did not reach the stale path"
    assert state.pairs_regenerated == len(run.drops)
    for prompt, version in run.drops:
        # Handed out again after the drop (the data order never repeats a prompt in 1000) ...
        assert run.handed_out.count(prompt) >= 2, prompt
        # ... and trained from the new samples: a later version, within the staleness bound.
        again = [r for r in run.trained if r["prompt_index"] == prompt]
        assert again and all(r["policy_version"] > version for r in again), (prompt, version, again)
    # Staleness counts pushes: a pair trains at most max_staleness pushes after the one whose
    # weights sampled it, and the pairs of calls back max_staleness + 1 pushes late never train.
    pushes_behind = [run.versions.index(r["trained_at"]) - run.versions.index(r["policy_version"]) for r in run.trained]
    assert max(pushes_behind) == max_staleness  # the bound is reached, and never passed
    assert run.too_late and not any(int(r["chosen_text"].split(":")[0]) in run.too_late for r in run.trained)
    assert state.pairs_trained == len(run.trained) == 12 * 4
    assert len({r["chosen_text"] for r in run.trained}) == len(run.trained)  # no pair twice
    # Every prompt taken from the data order is done or listed to be sampled again.
    recorded = ledger.record(random.Random(0).getstate(), 0)
    assert recorded.prompts_done + len(recorded.requeued) == recorded.next_prompt

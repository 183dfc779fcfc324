"""DNO (cluster/methods/dno.py): the win-rate pair, its strength, and the iterations with replay."""

import random

import pyarrow as pa
import pytest
import torch
from test_pairing import K4, K6, LengthJudge, TableJudge, as_tuples

from cluster.config import load_config
from cluster.methods import method_of
from cluster.methods.dno import Iterations, replayed_per_step, select_pair, win_rates
from core.records import pair_batch
from judge.pairing import preference_matrix

# 0 beats 1 and 2, 1 beats 2: win rates [1, 0.5, 0]. Diagonal holds junk on purpose.
PREF = torch.tensor([[0.9, 0.7, 0.8], [0.3, 0.1, 0.6], [0.2, 0.4, 0.99]])


def dno(*overrides: str):
    return method_of(load_config(None, ["method=dno", "rollout.k=4", *overrides]))


def test_win_rates():
    assert win_rates(PREF).tolist() == [1.0, 0.5, 0.0]


def test_win_rates_exact_tie_counts_half():
    # 0 vs 1 tied (0.5 both ways); both beat 2 -> r = [(0.5+1)/2, (0.5+1)/2, 0]
    pref = torch.tensor([[0.5, 0.5, 0.9], [0.5, 0.5, 0.8], [0.1, 0.2, 0.5]])
    assert win_rates(pref).tolist() == [0.75, 0.75, 0.0]


def test_win_rates_bad_shape():
    with pytest.raises(ValueError, match="square"):
        win_rates(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="at least 2"):
        win_rates(torch.zeros(1, 1))


def test_select_pair():
    assert select_pair(PREF, margin=0.0) == (0, 2)
    assert select_pair(PREF, margin=1.0) == (0, 2)  # gap exactly 1 is kept


def test_select_pair_margin_filters():
    # a 3-cycle: every response wins once, r = [0.5, 0.5, 0.5]
    cycle = torch.tensor([[0.5, 0.8, 0.3], [0.2, 0.5, 0.7], [0.7, 0.3, 0.5]])
    assert win_rates(cycle).tolist() == [0.5, 0.5, 0.5]
    assert select_pair(cycle, margin=0.0) is None  # nothing separates them
    # 4 responses, r = [2/3, 2/3, 1/3, 1/3]: gap 1/3 passes 0.3, fails 0.5
    pref = torch.tensor(
        [[0.5, 0.6, 0.7, 0.4],
         [0.4, 0.5, 0.6, 0.8],
         [0.3, 0.4, 0.5, 0.9],
         [0.6, 0.2, 0.1, 0.5]]
    )
    assert win_rates(pref).tolist() == pytest.approx([2 / 3, 2 / 3, 1 / 3, 1 / 3])
    assert select_pair(pref, margin=0.3) == (0, 2)  # first index on ties, both ends
    assert select_pair(pref, margin=0.5) is None


def test_select_pair_ties_take_first_index():
    pref = torch.tensor([[0.5, 0.5, 0.9], [0.5, 0.5, 0.8], [0.1, 0.2, 0.5]])
    assert select_pair(pref, margin=0.5) == (0, 2)


def test_select_pair_needs_two():
    with pytest.raises(ValueError):
        select_pair(torch.zeros(1, 1), margin=0.0)


# -- the method's pairs ----------------------------------------------------------------------


def test_dno_picks_best_and_worst_by_win_rate():
    judge = LengthJudge()
    method = dno("dno.margin=0.5")
    pairs = method.pair(K4, judge, None)
    # Win rates: 1 beats all three (1.0), 2 loses to all (0.0): one pair; its strength is the
    # win-rate gap on [0.5, 1]: 0.5 + 0.5·1 = 1 (not the direct comparison 4/5).
    assert as_tuples(pairs) == [(1, 2, 1.0)]
    assert judge.comparisons == method.comparisons_per_prompt() == 6 and method.pairs_per_prompt() == 1
    # The gap in win rate is exactly 1.0: a margin of 1.0 still passes, anything above not.
    assert len(dno("dno.margin=1.0").pair(K4, LengthJudge(), None)) == 1
    assert dno("dno.margin=1.01").pair(K4, LengthJudge(), None) == []
    assert as_tuples(dno("rollout.k=6").pair(K6, LengthJudge(), None)) == [(1, 2, 1.0)]


def test_dno_keeps_the_win_rate_pick_when_the_judge_is_intransitive():
    """Win rates [0.75, 0.5, 0.5, 0.5, 0.25] while the direct comparison prefers 4 over 0.
    DNO's pair is (0, 4) as the win rates rank them. The bug this catches: re-orienting the
    pick by pref[0, 4] trains 4 (the worst response) as chosen."""
    responses = ["r0", "r1", "r2", "r3", "r4"]
    table = {(0, 1): 0.9, (0, 2): 0.9, (0, 3): 0.9, (4, 0): 0.8,  # 0 beats 1–3, loses to 4
             (1, 4): 0.9, (2, 4): 0.9, (3, 4): 0.9,               # 4 loses to 1–3
             (1, 2): 0.7, (2, 3): 0.7, (3, 1): 0.7}               # 1 ≻ 2 ≻ 3 ≻ 1
    pref = preference_matrix(responses, TableJudge(responses, table))
    assert win_rates(pref).tolist() == [0.75, 0.5, 0.5, 0.5, 0.25]
    assert pref[4, 0] == pytest.approx(0.8)
    pairs = dno("rollout.k=5", "dno.margin=0.5").pair(responses, TableJudge(responses, table), None)
    # Strength from the gap: 0.5 + 0.5 · (0.75 − 0.25) = 0.75.
    assert as_tuples(pairs) == [(0, 4, 0.75)]


def test_dno_all_ties_gives_no_pair():
    assert dno().pair(["x", "y", "z", "w"], LengthJudge(), None) == []


def test_dno_takes_an_odd_k_as_the_paper_does():
    judge = LengthJudge()
    k5 = ["aa", "aaaaa", "a", "aaaa", "aaa"]
    method = dno("rollout.k=5", "dno.margin=0.5")
    assert as_tuples(method.pair(k5, judge, None)) == [(1, 2, 1.0)]
    assert judge.comparisons == method.comparisons_per_prompt() == 10


def test_dno_reference_is_the_sampler_and_its_pairs_say_so():
    method = dno()
    assert method.reference == "sampler" and method.source == "dno"
    assert method_of(load_config(None, [])).reference == "sft"


# -- iterations with replay ------------------------------------------------------------------


def _pairs(n: int, start: int = 0) -> pa.Table:
    return pair_batch([{"prompt_id": f"p{i}", "prompt_index": i, "prompt_tokens": [1], "chosen_tokens": [2],
                        "rejected_tokens": [3], "chosen_text": "a", "rejected_text": "b", "strength": 1.0,
                        "ref_logp_chosen": -1.0, "ref_logp_rejected": -2.0, "policy_version": 0, "source": "dno"}
                       for i in range(start, start + n)])


@pytest.mark.parametrize("pairs_per_step", [4, 6, 8])
@pytest.mark.parametrize("fraction", [0.25, 0.3, 0.4])
def test_a_step_never_exceeds_pairs_per_step_and_replays_at_most_the_fraction(pairs_per_step, fraction):
    """One rounding rule: ⌊f·n⌋ replay places, n − that many fresh pairs. The bug this catches:
    6 pairs at f = 0.3 made 5 fresh + 2 replayed = 7 (two roundings that disagreed)."""
    cfg = load_config(None, ["method=dno", f"learner.pairs_per_step={pairs_per_step}", f"dno.replay_fraction={fraction}",
                             "dno.iteration_steps=1", f"pipeline.buffer_max_pairs={pairs_per_step}"])
    policy = Iterations(cfg, random.Random(0))
    assert policy.fresh_pairs_per_step() == pairs_per_step  # no previous iteration yet
    first = policy.batch(_pairs(pairs_per_step))
    assert (first.pairs.num_rows, first.replayed) == (pairs_per_step, 0)
    policy.end_of_step(1)  # iteration 1 ends: its pairs become the replay pool
    fresh = policy.fresh_pairs_per_step()
    batch = policy.batch(_pairs(fresh, start=100))
    replayed = replayed_per_step(pairs_per_step, fraction)
    assert batch.replayed == replayed
    assert fresh + batch.replayed == pairs_per_step and batch.pairs.num_rows == pairs_per_step
    assert batch.replayed / pairs_per_step <= fraction + 1e-12 and batch.replayed == int(fraction * pairs_per_step + 1e-9)
    assert batch.pairs["source"].to_pylist()[fresh:] == ["replay"] * batch.replayed
    assert set(batch.pairs["prompt_index"].to_pylist()[fresh:]) <= set(range(pairs_per_step))
    assert batch.fresh_prompt_indices == list(range(100, 100 + fresh))


def test_replay_takes_what_the_previous_iteration_has_and_is_deterministic():
    cfg = load_config(None, ["method=dno", "learner.pairs_per_step=8", "dno.replay_fraction=0.4", "dno.iteration_steps=1"])
    short = Iterations(cfg, random.Random(0))
    short.batch(_pairs(1))  # the previous iteration trained 1 pair only
    short.end_of_step(1)
    batch = short.batch(_pairs(short.fresh_pairs_per_step(), start=50))
    assert short.fresh_pairs_per_step() == 5 and batch.replayed == 1 and batch.pairs.num_rows == 6
    picks = []
    for _ in range(2):
        policy = Iterations(cfg, random.Random(42))
        policy.batch(_pairs(8))
        policy.end_of_step(1)
        picks.append(policy.batch(_pairs(5, start=50)).pairs["prompt_index"].to_pylist())
    assert picks[0] == picks[1]


def test_iterations_push_once_per_iteration_and_train_only_their_own_samples():
    cfg = load_config(None, ["method=dno", "dno.iteration_steps=5"])
    policy = dno("dno.iteration_steps=5").step_policy(random.Random(0))
    assert [policy.push_due(s) for s in range(1, 11)] == [False] * 4 + [True] + [False] * 4 + [True]
    assert policy.oldest_trainable([0, 5, 10]) == 10
    assert policy.useful_steps(step=7, step_running=True) == 2 and policy.useful_steps(step=10, step_running=False) == 5
    assert cfg.dno.iteration_steps == 5

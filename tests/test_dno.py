import math
import random

import pyarrow as pa
import pytest
import torch

from cluster.driver.checkpoint import RunState
from cluster.driver.ledger import PromptLedger
from cluster.driver.scheduler import StepScheduler, replayed_pairs_per_step
from core.config import Config
from core.records import pair_batch
from judge.pairing import select_dno_pair, win_rates

# 0 beats 1 and 2, 1 beats 2: win rates [1, 0.5, 0]. Diagonal holds junk on purpose.
PREF = torch.tensor([[0.9, 0.7, 0.8], [0.3, 0.1, 0.6], [0.2, 0.4, 0.99]])


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
    assert select_dno_pair(PREF, margin=0.0) == (0, 2)
    assert select_dno_pair(PREF, margin=1.0) == (0, 2)  # gap exactly 1 is kept


def test_select_pair_margin_filters():
    # a 3-cycle: every response wins once, r = [0.5, 0.5, 0.5]
    cycle = torch.tensor([[0.5, 0.8, 0.3], [0.2, 0.5, 0.7], [0.7, 0.3, 0.5]])
    assert win_rates(cycle).tolist() == [0.5, 0.5, 0.5]
    assert select_dno_pair(cycle, margin=0.0) is None  # nothing separates them
    # 4 responses, r = [2/3, 2/3, 1/3, 1/3]: gap 1/3 passes 0.3, fails 0.5
    pref = torch.tensor(
        [[0.5, 0.6, 0.7, 0.4],
         [0.4, 0.5, 0.6, 0.8],
         [0.3, 0.4, 0.5, 0.9],
         [0.6, 0.2, 0.1, 0.5]]
    )
    assert win_rates(pref).tolist() == pytest.approx([2 / 3, 2 / 3, 1 / 3, 1 / 3])
    assert select_dno_pair(pref, margin=0.3) == (0, 2)  # first index on ties, both ends
    assert select_dno_pair(pref, margin=0.5) is None


def test_select_pair_ties_take_first_index():
    pref = torch.tensor([[0.5, 0.5, 0.9], [0.5, 0.5, 0.8], [0.1, 0.2, 0.5]])
    assert select_dno_pair(pref, margin=0.5) == (0, 2)


def test_select_pair_needs_two():
    with pytest.raises(ValueError):
        select_dno_pair(torch.zeros(1, 1), margin=0.0)


def test_replayed_pairs_per_step_rounds_down_by_hand():
    # floor(f · n): 0.3 · 10 = 3 exactly; 0.3 · 6 = 1.8 → 1; 0.4 · 4 = 1.6 → 1; 0.58 · 50 is
    # 28.999999999999996 in floats and still gives 29.
    assert replayed_pairs_per_step(10, 0.3) == 3
    assert replayed_pairs_per_step(6, 0.3) == 1
    assert replayed_pairs_per_step(4, 0.4) == 1
    assert replayed_pairs_per_step(50, 0.58) == 29
    assert replayed_pairs_per_step(2, 0.3) == 0 and replayed_pairs_per_step(8, 0.0) == 0


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_replay_bad_fraction(fraction):
    with pytest.raises(ValueError, match="fraction"):
        replayed_pairs_per_step(4, fraction)


def _pairs(n: int, tag: str, version: int = 0) -> pa.Table:
    return pair_batch([{"prompt_id": f"{tag}{i}", "prompt_index": i, "prompt_tokens": [1], "chosen_tokens": [2],
                        "rejected_tokens": [3], "chosen_text": f"{tag}{i}", "rejected_text": "b", "strength": 1.0,
                        "ref_logp_chosen": -1.0, "ref_logp_rejected": -1.0, "policy_version": version,
                        "source": "dno"} for i in range(n)])


def _dno_scheduler(pairs_per_step: int, fraction: float, previous: int) -> StepScheduler:
    """A DNO scheduler in its second iteration: `previous` pairs of iteration 1 to replay, and
    plenty of fresh pairs buffered."""
    cfg = Config()
    cfg.judge.anchor, cfg.dno.enabled, cfg.dno.replay_fraction = "dno", True, fraction
    cfg.learner.pairs_per_step, cfg.pipeline.buffer_max_pairs = pairs_per_step, 64
    scheduler = StepScheduler(cfg, PromptLedger(1000, 0, False, RunState()), random.Random(0))
    scheduler.previous_iteration_pairs = _pairs(previous, "old") if previous else None
    scheduler.buffer.put(_pairs(3 * pairs_per_step, "new"))
    return scheduler


@pytest.mark.parametrize("pairs_per_step", [4, 6, 8])
@pytest.mark.parametrize("fraction", [0.25, 0.3, 0.4])
def test_a_dno_step_is_exactly_pairs_per_step_with_at_most_its_replay_share(pairs_per_step, fraction):
    """Bug it catches: the step's fresh count and the replayed count rounded by two rules
    (int(f·n) places, then floor(f·fresh/(1−f)) replayed): 6 pairs at f = 0.3 trained 5 fresh +
    2 replayed = 7, and 4 pairs at f = 0.4 trained 3 + 2 = 5, more than learner.pairs_per_step."""
    scheduler = _dno_scheduler(pairs_per_step, fraction, previous=20)
    batch = scheduler.next_batch()
    sources = batch.pairs["source"].to_pylist()
    assert batch.pairs.num_rows == pairs_per_step
    assert batch.replayed == sources.count("replay") == math.floor(fraction * pairs_per_step)
    assert batch.replayed <= fraction * pairs_per_step  # the documented share: at most f of the step
    assert sources[: pairs_per_step - batch.replayed] == ["dno"] * (pairs_per_step - batch.replayed)
    replayed = batch.pairs["chosen_text"].to_pylist()[pairs_per_step - batch.replayed:]
    assert len(set(replayed)) == len(replayed) and all(t.startswith("old") for t in replayed)  # no repeats


def test_a_short_previous_iteration_replays_what_it_has_and_the_first_replays_nothing():
    scheduler = _dno_scheduler(8, 0.4, previous=1)  # 3 places, 1 pair to fill them
    batch = scheduler.next_batch()
    assert (batch.pairs.num_rows, batch.replayed) == (6, 1)
    first = _dno_scheduler(8, 0.4, previous=0)  # iteration 1: nothing to replay, all fresh
    batch = first.next_batch()
    assert (batch.pairs.num_rows, batch.replayed) == (8, 0)


def test_replay_picks_are_reproducible_from_the_seed():
    picks = [_dno_scheduler(8, 0.3, previous=20).next_batch().pairs["chosen_text"].to_pylist() for _ in range(2)]
    assert picks[0] == picks[1]

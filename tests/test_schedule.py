"""The prompt schedule: the run's data position, reproducible from (seed, next_prompt, requeued)."""

from __future__ import annotations

import pytest

from cluster.driver.ledger import PromptSchedule


def _epochs(schedule: PromptSchedule, n: int, epochs: int) -> list[list[int]]:
    return [schedule.take(n) for _ in range(epochs)]


def test_pinned_order_for_seed_0():
    # Pinned literally: a checkpoint stores only next_prompt, so a change of the shuffle would
    # make every resumed run visit different prompts than the run it continues.
    assert PromptSchedule(5, seed=0).take(15) == [2, 1, 0, 4, 3, 2, 3, 4, 0, 1, 2, 1, 3, 4, 0]
    assert PromptSchedule(8, seed=7).take(8) == [7, 3, 0, 4, 6, 1, 5, 2]


def test_same_seed_same_sequence_and_other_seeds_differ():
    a = PromptSchedule(50, seed=3).take(200)
    b = PromptSchedule(50, seed=3).take(200)
    c = PromptSchedule(50, seed=4).take(200)
    assert a == b
    assert a != c


def test_each_epoch_is_a_permutation_and_epochs_differ():
    n = 40
    epochs = _epochs(PromptSchedule(n, seed=11), n, 4)
    for order in epochs:
        assert sorted(order) == list(range(n))
    assert len({tuple(order) for order in epochs}) == 4  # each epoch has its own order
    assert epochs[0] != list(range(n))  # actually shuffled


def test_wraps_around_across_epoch_boundaries_in_one_take():
    n = 7
    reference = PromptSchedule(n, seed=5)
    full = reference.take(3 * n)
    s = PromptSchedule(n, seed=5)
    first = s.take(5)
    straddling = s.take(6)  # positions 5..10: the end of epoch 0 and the start of epoch 1
    rest = s.take(3 * n - 11)
    assert first + straddling + rest == full
    assert s.next_prompt == 3 * n
    assert s.epoch == 3.0
    assert [s.index_at(p) for p in range(3 * n)] == full
    assert PromptSchedule(n, seed=5).index_at(n + 2) == full[n + 2]  # random access, no history


def test_epoch_property_counts_fractional_epochs():
    s = PromptSchedule(4, seed=0)
    assert s.epoch == 0.0
    s.take(6)
    assert s.epoch == 1.5


def test_requeued_prompts_come_first_then_the_data_order():
    order = PromptSchedule(6, seed=2).take(6)
    s = PromptSchedule(6, seed=2)
    assert s.take(2) == order[:2]
    s.requeue([order[0], 5])
    assert s.take(3) == [order[0], 5, order[2]]  # requeued first, then position 2 onwards
    assert s.requeued == []
    assert s.next_prompt == 3


def test_requeued_longer_than_take_is_consumed_in_order():
    s = PromptSchedule(10, seed=0, requeued=[9, 8, 7])
    assert s.take(2) == [9, 8]
    assert s.requeued == [7]
    assert s.next_prompt == 0  # the data position did not move
    assert s.take(1) == [7]
    assert s.take(0) == []
    assert s.next_prompt == 0


def test_a_prompt_requeued_twice_is_handed_out_twice():
    s = PromptSchedule(10, seed=0)
    s.requeue([4])
    s.requeue([4])
    s.requeue([1, 4])
    assert s.take(4) == [4, 4, 1, 4]
    assert s.next_prompt == 0


def test_constructor_copies_the_requeued_list():
    pending = [3, 1]
    s = PromptSchedule(5, seed=0, requeued=pending)
    s.take(1)
    s.requeue([2])
    assert pending == [3, 1]


def _drive(schedule: PromptSchedule, log: list[int], rounds: list[tuple[int, list[int]]]) -> None:
    """Take n, then requeue some of what was taken (by position in the take)."""
    for n, requeue_positions in rounds:
        got = schedule.take(n)
        log += got
        schedule.requeue([got[i] for i in requeue_positions])


ROUNDS_BEFORE = [(3, []), (4, [1, 3]), (5, [0]), (2, [1, 0])]
ROUNDS_AFTER = [(6, [2, 2]), (9, []), (4, [0, 1, 2, 3]), (11, [5]), (7, [])]


def test_resume_from_next_prompt_and_requeued_continues_the_same_sequence():
    n, seed = 9, 21
    uninterrupted = PromptSchedule(n, seed)
    log_a: list[int] = []
    _drive(uninterrupted, log_a, ROUNDS_BEFORE + ROUNDS_AFTER)

    first = PromptSchedule(n, seed)
    log_b: list[int] = []
    _drive(first, log_b, ROUNDS_BEFORE)
    # What a checkpoint stores: two numbers (and the list); a fresh object is built on resume.
    saved_next, saved_requeued = first.next_prompt, list(first.requeued)
    assert saved_requeued  # the interesting case: a pending requeue crosses the checkpoint
    resumed = PromptSchedule(n, seed, next_prompt=saved_next, requeued=saved_requeued)
    _drive(resumed, log_b, ROUNDS_AFTER)

    assert log_b == log_a
    assert resumed.next_prompt == uninterrupted.next_prompt
    assert resumed.requeued == uninterrupted.requeued
    assert uninterrupted.next_prompt > 2 * n  # the run crossed epoch boundaries


def test_resume_in_a_later_epoch_without_history():
    n = 5
    full = PromptSchedule(n, seed=8).take(4 * n)
    resumed = PromptSchedule(n, seed=8, next_prompt=2 * n + 3)
    assert resumed.take(n + 2) == full[2 * n + 3: 3 * n + 5]


def test_shuffle_false_is_file_order_every_epoch():
    s = PromptSchedule(4, seed=123, shuffle=False)
    assert s.take(10) == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]


@pytest.mark.parametrize("num_prompts", [0, -1])
def test_an_empty_prompt_set_is_refused(num_prompts):
    with pytest.raises(ValueError, match="the prompt set is empty"):
        PromptSchedule(num_prompts, seed=0)


def test_a_single_prompt_set_repeats_it():
    assert PromptSchedule(1, seed=9).take(3) == [0, 0, 0]

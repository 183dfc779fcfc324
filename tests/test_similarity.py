"""cluster/data/similarity.py: when a held-out prompt is near a training one, and the shipped
held-out tasks checked with it."""

from __future__ import annotations

import json

import pytest

from cluster.data.prompts import DATA_DIR, SHIPPED_TRAIN, read_prompt_rows
from cluster.data.similarity import NEAR_MIN_SHARED, NEAR_SHARE, content_words, describe, is_near, near_pairs, share, shared_words


def _texts(path) -> list[str]:
    return [r.text for r in read_prompt_rows(path)[0]]


def test_share_is_the_candidates_content_words_found_in_the_reference():
    """Hand-counted: 'Write a toast for your best friend's wedding.' has the content words toast,
    best, friend, wedding (write, a, for, your, 's are frame or function words); the training
    question holds three of them (short is a frame word), so its share is 3/4 and the other way
    round 3/3. Would catch a stop list that lets `write`/`short` count, a stemmer that keeps
    `wedding` and `weddings` apart, or a symmetric share."""
    task, question = "Write a toast for your best friend's wedding.", "Write a short toast for a friend's weddings."
    assert content_words(task) == {"toast", "best", "friend", "wed"}
    assert shared_words(task, question) == {"toast", "friend", "wed"}
    assert share(task, question) == pytest.approx(3 / 4)
    assert share(question, task) == pytest.approx(1.0)
    # A stem of ≥ 4 letters that begins another matches it (snow / snowfall); a shorter one does not.
    assert shared_words("the first snowfall of winter", "first snow in winter") == {"first", "snowfal", "winter"}
    assert shared_words("a cat", "a catalogue") == set()
    assert share("Write it.", "anything") == 0.0  # no content words: nothing to be near


def test_near_needs_half_the_words_and_two_of_them():
    """The bound: share ≥ ½ with ≥ 2 words found. One shared word (`poem`) is never near, however
    short the task; two of four is. Would catch a bound moved off ½ or the two-word floor dropped."""
    assert (NEAR_SHARE, NEAR_MIN_SHARED) == (0.5, 2)
    assert not is_near("Write a poem.", "Write a poem about autumn.")  # share 1, but one word
    assert is_near("Write a poem about the sea at dawn.", "Write a poem about the sea.")  # 2 of 3
    assert is_near("Write a riddle whose answer is a clock.", "Write a riddle whose answer is a shadow.")  # 2 of 3
    assert not is_near("Write a riddle for children whose answer is a big old clock.",
                       "Write a riddle whose answer is a shadow.")  # 2 of 6


# The writing tasks that `broad-tasks-eval` was first built on (writing_tasks.jsonl lines 9, 19,
# 20, 29, 31, 39) and the training questions (prompts_train.jsonl lines) they reword.
REWORDED = [
    ("Write a poem about the first snowfall of the winter.", 32),
    ("Write a riddle whose answer is a clock, and explain the answer.", 135),
    ("Write a thank-you note to a neighbor who helped you move furniture.", 203),
    ("Write a toast for your best friend's wedding.", 45),
    ("Write a set of instructions for making a paper airplane.", 173),
    ("Write an apology message to a friend for missing their birthday party.", 68),
]


def test_the_first_transfer_sets_reworded_tasks_are_near_their_training_questions():
    """The six tasks replaced in broad-tasks-eval are found, each beside the training question it
    rewords (shares ¾, ½, ½, ¾, ½, ½). Would catch a bound too loose to see a reworded task."""
    train = _texts(SHIPPED_TRAIN)
    pairs = near_pairs([t for t, _ in REWORDED], train)
    assert [(p.candidate, p.reference + 1) for p in pairs] == [(i, line) for i, (_, line) in enumerate(REWORDED)]
    assert [p.share for p in pairs] == pytest.approx([3 / 4, 1 / 2, 1 / 2, 3 / 4, 1 / 2, 1 / 2])


def test_no_transfer_task_is_near_a_training_question():
    """broad-tasks-eval's writing tasks against the training questions: every training row
    (`questions`, `instructions`, `broad`) is built on prompts_train.jsonl's questions, so those
    are what a held-out task must not reword. Failed on the first set, flagging tasks 9, 19, 20,
    29, 31 and 39 (see REWORDED)."""
    tasks, train = _texts(DATA_DIR / "writing_tasks.jsonl"), _texts(SHIPPED_TRAIN)
    assert len(tasks) == 50
    pairs = near_pairs(tasks, train)
    assert not pairs, f"{len(pairs)} writing task(s) near a training question: {describe(pairs, tasks, train)}"
    # The set is the tasks, 3 rows each, in order.
    rows = [json.loads(line) for line in (DATA_DIR / "broad_tasks_eval.jsonl").read_text().splitlines()]
    assert len(rows) == 150 and all(tasks[i // 3] in r["prompt"] for i, r in enumerate(rows))

"""The realistic prompt sets (`realistic`, `realistic-eval`): tasks like users' with IFEval
instructions of every kind, written by scripts/make_broad_prompts.py --realistic from the
hand-written tasks in cluster/data/realistic_tasks_{train,eval}.jsonl."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from cluster.data.prompts import DATA_DIR, SHIPPED, SHIPPED_TRAIN, load_prompts, read_prompt_rows
from cluster.data.similarity import describe, near_pairs
from judge.verifier import INSTRUCTIONS, verify

MAIN_JOB_MAX_PROMPT_TOKENS = 256  # cluster/configs/default.yaml model.max_prompt_tokens


def _lines(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA_DIR / name).read_text(encoding="utf-8").splitlines() if line.strip()]


TASKS = {"train": _lines("realistic_tasks_train.jsonl"), "eval": _lines("realistic_tasks_eval.jsonl")}


def _request(task: dict) -> str:
    return f"{task['task']}\n\n{task['passage']}" if task.get("passage") else task["task"]


@pytest.mark.parametrize("split, name, tasks, rows_a_task", [("train", "realistic", 306, 4), ("eval", "realistic-eval", 108, 3)])
def test_the_realistic_sets_load_with_every_kind_on_their_own_tasks(tiny_tokenizer, split, name, tasks, rows_a_task):
    """Each set loads by its shipped name with no bad row; ≥ 300 training tasks over ≥ 12 genres
    (≥ 1,200 prompts), ≥ 100 held-out tasks (≥ 300 prompts); each row is its own task's request
    (the task, then its passage) with 1–3 instructions whose kwargs IFEval's checkers accept,
    multi-instruction rows included, every one of the verifier's 25 kinds in each set, and the
    instructions first in about a quarter of the rows. Would catch a set not registered, a
    regenerated set that lost a kind or a task's passage, or rows built on the wrong task."""
    by_id = {t["id"]: t for t in TASKS[split]}
    assert len(by_id) == len(TASKS[split]) == tasks
    assert len({t["task"] for t in TASKS[split]}) == tasks  # distinct tasks
    assert len({t["genre"] for t in TASKS[split]}) == 18
    rows, bad = read_prompt_rows(SHIPPED[name])
    assert bad == [] and len(rows) == tasks * rows_a_task
    raw = _lines(SHIPPED[name].name)
    assert Counter(r["task_id"] for r in raw) == {i: rows_a_task for i in by_id}
    first = 0
    for r, line in zip(rows, raw):
        request = _request(by_id[line["task_id"]])
        assert request in r.text and line["genre"] == by_id[line["task_id"]]["genre"]
        first += not r.text.startswith(request)
        assert 1 <= len(r.instructions.ids) <= 3
        verify("An answer.", r.instructions)
    assert {k for r in rows for k in r.instructions.ids} == set(INSTRUCTIONS)
    sizes = Counter(len(r.instructions.ids) for r in rows)
    assert sizes[2] + sizes[3] >= len(rows) // 6, sizes  # IFEval's mix: a third of rows with 2 or 3
    assert 0.15 <= first / len(rows) <= 0.35, first
    # Loads by name (the tiny test tokenizer splits far finer than SmolLM2's: its budget is the test below's).
    assert len(load_prompts(name, tiny_tokenizer, 4096)) == len(rows)


def test_no_held_out_task_is_near_a_training_task_or_question():
    """cluster/data/similarity.py's bound (share of a held-out task's content words found in one
    training text ≥ ½ with ≥ 2 words): no held-out task near a realistic training task or a broad
    training question (prompts_train.jsonl, behind every training row of `questions`,
    `instructions` and `broad`), no held-out passage near a training passage, and no writing task
    of broad-tasks-eval near a realistic training task (so broad-tasks-eval stays held out for a
    run trained on `realistic`). Would catch a held-out task written as a rewording of a training one."""
    train, held_out = TASKS["train"], TASKS["eval"]
    questions = [r.text for r in read_prompt_rows(SHIPPED_TRAIN)[0]]
    checks = {
        "held-out task ~ training task or question": ([t["task"] for t in held_out], [t["task"] for t in train] + questions),
        "held-out passage ~ training passage": ([t["passage"] for t in held_out if "passage" in t],
                                                [t["passage"] for t in train if "passage" in t]),
        "writing task ~ realistic training task": ([r.text for r in read_prompt_rows(DATA_DIR / "writing_tasks.jsonl")[0]],
                                                   [t["task"] for t in train]),
    }
    assert [len(c) for c, _ in checks.values()][1] == 16  # held-out passages: the check has something to check
    for what, (candidates, references) in checks.items():
        pairs = near_pairs(candidates, references)
        assert not pairs, f"{what}: {describe(pairs, candidates, references)}"


def test_the_shipped_files_are_the_generators_output():
    """scripts/make_broad_prompts.py --realistic, seeded, writes exactly the shipped prompt files
    from the shipped task files. Would catch a task file edited without regenerating its prompts,
    or a prompt file edited by hand."""
    path = Path(__file__).resolve().parent.parent / "scripts" / "make_broad_prompts.py"
    spec = importlib.util.spec_from_file_location("make_broad_prompts", path)
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    made = generator.realistic_sets()
    assert made["train"] == _lines("realistic_train.jsonl")
    assert made["eval"] == _lines("realistic_eval.jsonl")


def test_realistic_prompts_fit_the_main_jobs_prompt_budget_with_smollm2():
    """Encoded with the embedded SmolLM2-135M-Instruct tokenizer and its chat template (system
    turn included), every realistic prompt fits model.max_prompt_tokens = 256 (measured: at most
    189 tokens in training, 206 held out; one held-out row is over the broad experiment's 192).
    Would catch a passage or task long enough to be refused by the main job."""
    from transformers import AutoTokenizer

    from core.models import embedded_default_model

    tokenizer = AutoTokenizer.from_pretrained(embedded_default_model())
    for name in ("realistic", "realistic-eval"):
        prompts = load_prompts(name, tokenizer, MAIN_JOB_MAX_PROMPT_TOKENS)  # refuses any row over the budget
        print(f"\n{name}: longest prompt {max(len(p.tokens) for p in prompts)} tokens")

"""Write the broad instruction-following prompt sets (IFEval format) over every checkable kind.

    .venv/bin/python scripts/make_broad_prompts.py          # cluster/data/broad_{train,eval}.jsonl
    .venv/bin/python scripts/make_broad_prompts.py --scan   # runs/broad_scan.jsonl: 10 held-out rows per kind
    .venv/bin/python scripts/make_broad_prompts.py --tasks  # cluster/data/broad_tasks_eval.jsonl
    .venv/bin/python scripts/make_broad_prompts.py --realistic  # cluster/data/realistic_{train,eval}.jsonl

Each row is one of the shipped everyday questions followed by one, two or three verifiable
instructions (two thirds of rows have one, a quarter two, a twelfth three, about as IFEval
mixes them). Every instruction is drawn by IFEval's own checker: `build_description()` with no
arguments draws its kwargs from IFEval's own ranges (word counts 100–500, up to 5 paragraphs,
a random language, random keywords from its word list, ...) and phrases it as IFEval does;
nothing is narrowed to what a small model can pass. Kinds that IFEval forbids together
(its INSTRUCTION_CONFLICTS) never share a row. Training rows use only the training questions
(cluster/data/prompts_train.jsonl, 5 rows each: 1,200), held-out rows only the held-out
questions (prompts_eval.jsonl, 3 rows each: 300). Kinds are dealt from a shuffled deck so each
appears about equally often. Deterministic: IFEval draws from Python's `random`, seeded here.

`--tasks` writes a second held-out set built unlike the training rows, a stand-in for an
external IFEval-format set: 50 writing tasks (cluster/data/writing_tasks.jsonl: letters, poems,
stories, ads, essays; none near a training question by cluster/data/similarity.py, which this
mode checks before writing), 3 rows each (150), the same instruction draw, and in a third of the
rows the instructions come before the task instead of after it.

`--realistic` writes a training set and a held-out set of tasks like users' (letters, emails,
summaries and rewrites of a given passage, product descriptions, poems, resumes, speeches, ...:
cluster/data/realistic_tasks_{train,eval}.jsonl, 18 genres, hand-written, a passage where the
task works from one). Each task gets the same instruction draw, 4 rows a training task and 3 a
held-out one, instructions before the task in a quarter of the rows; a task with a passage keeps
its passage and the instructions in paragraphs of their own. The mode refuses held-out tasks
(or passages) near a training task (passage) or a training question, and training tasks near
which a `broad-tasks-eval` writing task lies (cluster/data/similarity.py).

All 25 of IFEval's kinds are used: the two that count sentences check with nltk's punkt data,
built offline (judge/punkt.py); repeat_prompt's text to repeat is the row's question.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
from pathlib import Path

from if_verifiable.ifeval.instructions_registry import INSTRUCTION_CONFLICTS, INSTRUCTION_DICT, conflict_make

from cluster.data.similarity import describe, near_pairs
from judge.verifier import INSTRUCTIONS

DATA = Path(__file__).resolve().parent.parent / "cluster" / "data"
KINDS = list(INSTRUCTIONS)  # every kind the verifier can check here
CONFLICTS = conflict_make(copy.deepcopy(INSTRUCTION_CONFLICTS))
SEED = 20261204
TASKS_SEED = 20261206  # its own seed: writing the transfer set leaves the two splits as they were
REALISTIC_SEED = 20261210  # its own seed too
REALISTIC_ROWS = {"train": 4, "eval": 3}  # rows a task
INSTRUCTIONS_PER_ROW = ((1, 8 / 12), (2, 3 / 12), (3, 1 / 12))


def read_questions(path: Path) -> list[str]:
    return [json.loads(line)["prompt"] for line in path.read_text().splitlines() if line.strip()]


def refuse_near(held_out: list[str], train: list[str], what: str) -> None:
    """Stop before writing a held-out set with a task near a training one (cluster/data/similarity.py)."""
    pairs = near_pairs(held_out, train)
    if pairs:
        raise SystemExit(f"{len(pairs)} {what} near a training one; rewrite them: {describe(pairs, held_out, train)}")


def draw(kind: str, question: str) -> tuple[str, dict]:
    """IFEval's own phrasing and kwargs for `kind` (its checker draws them from `random`)."""
    checker = INSTRUCTION_DICT[kind](kind)
    if kind == "combination:repeat_prompt":
        text = checker.build_description(prompt_to_repeat=question)
    else:
        text = checker.build_description()
    kwargs = {k: v for k, v in (checker.get_instruction_args() or {}).items() if v is not None}
    return text, kwargs


def read_tasks(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def request(task: dict) -> str:
    """A task's text as the user sends it: the task, then its passage (if any) in a paragraph of its own."""
    return f"{task['task']}\n\n{task['passage']}" if task.get("passage") else task["task"]


def row(prompt_id: str, question: str, kinds: list[str], instructions_first: bool = False) -> dict:
    texts, kwargs = zip(*(draw(k, question) for k in kinds))
    # A request with a passage keeps the instructions in a paragraph of their own; a one-line
    # request is followed (or preceded) by them on its line, as in IFEval.
    sep = "\n\n" if "\n" in question else " "
    instructions = " ".join(texts)
    parts = [instructions, question] if instructions_first else [question, instructions]
    return {"id": prompt_id, "prompt": sep.join(parts), "instruction_id_list": list(kinds), "kwargs": list(kwargs)}


def compatible(kind: str, chosen: list[str]) -> bool:
    return all(kind not in CONFLICTS[c] and c not in CONFLICTS[kind] for c in chosen)


def make_split(questions: list[str], prefix: str, per_question: int, rng: random.Random,
               share_instructions_first: float = 0.0, fields: list[dict] | None = None) -> list[dict]:
    """`per_question` rows a question; `fields`: more fields for each question's rows (its task id, genre)."""
    rows, deck = [], []
    for q, question in enumerate(questions):
        for _ in range(per_question):
            n = rng.choices([n for n, _ in INSTRUCTIONS_PER_ROW], [w for _, w in INSTRUCTIONS_PER_ROW])[0]
            chosen: list[str] = []
            tries = 0
            while len(chosen) < n and tries < 3 * len(KINDS):
                if not deck:
                    deck = list(KINDS)
                    rng.shuffle(deck)
                kind = deck.pop()
                tries += 1
                if compatible(kind, chosen):
                    chosen.append(kind)
                else:
                    deck.insert(0, kind)  # dealt later, so every kind keeps its share
            # Drawn only where asked for: the two splits' rows (share 0) keep their random stream.
            first = share_instructions_first > 0 and rng.random() < share_instructions_first
            rows.append(row(f"{prefix}-{len(rows) + 1:04d}", question, chosen, first) | (fields[q] if fields else {}))
    return rows


def realistic_sets() -> dict[str, list[dict]]:
    """The realistic training and held-out rows (seeded: the shipped files), after refusing any
    held-out task near a training one."""
    random.seed(REALISTIC_SEED)  # IFEval's checkers draw their kwargs from the module-level random
    rng = random.Random(REALISTIC_SEED)
    train, held_out = read_tasks(DATA / "realistic_tasks_train.jsonl"), read_tasks(DATA / "realistic_tasks_eval.jsonl")
    questions = read_questions(DATA / "prompts_train.jsonl")
    refuse_near([t["task"] for t in held_out], [t["task"] for t in train] + questions, "held-out realistic task(s)")
    refuse_near([t["passage"] for t in held_out if t.get("passage")], [t["passage"] for t in train if t.get("passage")],
                "held-out passage(s)")
    refuse_near(read_questions(DATA / "writing_tasks.jsonl"), [t["task"] for t in train], "broad-tasks-eval writing task(s)")
    return {split: make_split([request(t) for t in tasks], f"realistic-{split}", REALISTIC_ROWS[split], rng, 1 / 4,
                              [{"task_id": t["id"], "genre": t["genre"]} for t in tasks])
            for split, tasks in (("train", train), ("eval", held_out))}


def write(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} rows to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", action="store_true",
                        help="one-instruction rows: 10 held-out questions × every kind (SFT's pass rate per kind)")
    parser.add_argument("--tasks", action="store_true",
                        help="the transfer set: writing tasks, not questions, instructions before the task in a third")
    parser.add_argument("--realistic", action="store_true",
                        help="tasks like users' (cluster/data/realistic_tasks_*.jsonl): a training and a held-out set")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    random.seed(SEED)  # IFEval's checkers draw their kwargs from the module-level random
    rng = random.Random(SEED)
    if args.scan:
        questions = read_questions(DATA / "prompts_eval.jsonl")
        picked = rng.sample(questions, 10)
        write([row(f"scan-{i:04d}", q, [k]) for i, (k, q) in enumerate(((k, q) for k in KINDS for q in picked), 1)],
              Path(args.out or "runs/broad_scan.jsonl"))
        return
    if args.realistic:
        for split, rows in realistic_sets().items():
            write(rows, DATA / f"realistic_{split}.jsonl")
        return
    if args.tasks:
        random.seed(TASKS_SEED)
        rng = random.Random(TASKS_SEED)
        tasks = read_questions(DATA / "writing_tasks.jsonl")
        refuse_near(tasks, read_questions(DATA / "prompts_train.jsonl"), "writing task(s)")
        write(make_split(tasks, "broad-tasks-eval", 3, rng, 1 / 3),
              Path(args.out or DATA / "broad_tasks_eval.jsonl"))
        return
    write(make_split(read_questions(DATA / "prompts_train.jsonl"), "broad-train", 5, rng), DATA / "broad_train.jsonl")
    write(make_split(read_questions(DATA / "prompts_eval.jsonl"), "broad-eval", 3, rng), DATA / "broad_eval.jsonl")


if __name__ == "__main__":
    main()

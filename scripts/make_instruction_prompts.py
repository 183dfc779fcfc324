"""Write the shipped instruction-following prompt sets (IFEval format) from the shipped questions.

    .venv/bin/python scripts/make_instruction_prompts.py            # the shipped files
    .venv/bin/python scripts/make_instruction_prompts.py --pilot    # every candidate kind, for the baseline scan

Each row is one of the shipped everyday questions (cluster/data/prompts_{train,eval}.jsonl)
followed by one or two verifiable instructions, phrased exactly as IFEval's own checkers
describe them (`build_description(**kwargs)` of if-verifiable's IFEval registry). Train rows
come from the training questions, held-out rows from the evaluation questions, so a gain on
the held-out set is a gain on questions the policy never trained on. Deterministic (seeded).

KINDS lists the instruction kinds kept after measuring SFT's pass rate on every candidate
(experiments/methods-ifeval/README.md, "Choosing the instruction kinds"): neither ~0% nor ~100% at baseline.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from judge.verifier import INSTRUCTIONS, describe

DATA = Path(__file__).resolve().parent.parent / "cluster" / "data"

# Candidate kinds and the kwargs to draw from. Left out: kinds that need nltk data (punkt:
# number_sentences, capital_word_frequency), another language (response_language), or text
# the prompt does not carry (repeat_prompt, rephrase).
CANDIDATES: dict[str, list[dict]] = {
    "punctuation:no_comma": [{}],
    "length_constraints:number_words": [{"relation": "less than", "num_words": n} for n in (15, 20, 30)],
    "keywords:existence": [{"keywords": ks} for ks in (["simple"], ["example"], ["important"], ["today"],
                                                          ["friend"], ["easy"], ["time"], ["idea"])],
    "keywords:forbidden_words": [{"forbidden_words": ws} for ws in (["also", "very"], ["can", "will"],
                                                                      ["help", "make"], ["good", "best"])],
    "keywords:frequency": [{"keyword": w, "frequency": 2, "relation": "at least"} for w in ("you", "and", "good")],
    "keywords:letter_frequency": [{"letter": c, "let_frequency": 3, "let_relation": "at least"} for c in ("z", "q", "k")],
    "change_case:english_lowercase": [{}],
    "change_case:english_capital": [{}],
    "detectable_format:title": [{}],
    "detectable_format:number_highlighted_sections": [{"num_highlights": n} for n in (1, 2)],
    "detectable_format:number_bullet_lists": [{"num_bullets": n} for n in (2, 3)],
    "detectable_content:postscript": [{"postscript_marker": m} for m in ("P.S.", "P.P.S")],
    "startend:quotation": [{}],
    "startend:end_checker": [{"end_phrase": p} for p in ("Is there anything else I can help with?", "Hope this helps.")],
    "detectable_format:constrained_response": [{}],
    "length_constraints:number_paragraphs": [{"num_paragraphs": 2}],
}

# Kept after the baseline scan (see the module docstring).
KINDS = [
    "punctuation:no_comma",
    "length_constraints:number_words",
    "length_constraints:number_paragraphs",
    "keywords:existence",
    "keywords:frequency",
    "detectable_format:number_highlighted_sections",
    "detectable_format:number_bullet_lists",
    "detectable_content:postscript",
]


def read_questions(path: Path) -> list[str]:
    return [json.loads(line)["prompt"] for line in path.read_text().splitlines() if line.strip()]


def row(prompt_id: str, question: str, kinds: list[str], rng: random.Random) -> dict:
    kwargs = [dict(rng.choice(CANDIDATES[k])) for k in kinds]
    text = " ".join([question] + [describe(k, kw) for k, kw in zip(kinds, kwargs)])
    return {"id": prompt_id, "prompt": text, "instruction_id_list": kinds, "kwargs": kwargs}


def make_split(questions: list[str], prefix: str, per_question: int, rng: random.Random, kinds: list[str],
               two_share: float) -> list[dict]:
    """`per_question` rows per question; each row 1 instruction, or 2 with probability `two_share`
    (kinds are dealt round-robin so every kind appears about equally often)."""
    rows, deck = [], []
    for q in questions:
        used: set[str] = set()
        for _ in range(per_question):
            n = 2 if rng.random() < two_share else 1
            chosen = []
            while len(chosen) < n:
                if not deck:
                    deck = list(kinds)
                    rng.shuffle(deck)
                k = deck.pop()
                if k in used or k in chosen:
                    deck.insert(0, k)
                    if all(x in used or x in chosen for x in deck):
                        break
                    continue
                chosen.append(k)
            used.update(chosen)
            rows.append(row(f"{prefix}-{len(rows) + 1:04d}", q, chosen, rng))
    return rows


def write(rows: list[dict], path: Path) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} rows to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pilot", action="store_true", help="one row per (held-out question, candidate kind)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rng = random.Random(20261123)
    assert set(CANDIDATES) <= set(INSTRUCTIONS), set(CANDIDATES) - set(INSTRUCTIONS)
    if args.pilot:
        questions = read_questions(DATA / "prompts_eval.jsonl")[:40]
        rows = [row(f"pilot-{i:04d}", q, [k], rng) for i, (q, k) in
                enumerate(((q, k) for q in questions for k in CANDIDATES), start=1)]
        write(rows, Path(args.out or "runs/pilot_prompts.jsonl"))
        return
    write(make_split(read_questions(DATA / "prompts_train.jsonl"), "if-train", 2, rng, KINDS, 0.3),
          DATA / "instructions_train.jsonl")
    write(make_split(read_questions(DATA / "prompts_eval.jsonl"), "if-eval", 2, rng, KINDS, 0.3),
          DATA / "instructions_eval.jsonl")


if __name__ == "__main__":
    main()

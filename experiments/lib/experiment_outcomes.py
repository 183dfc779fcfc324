"""An experiment's per-prompt outcomes: what its summary needs of every answer, kept in the
experiment's own folder (experiments/<name>/outcomes/, committed), so that every figure can be
recomputed after runs/ is gone.

    .venv/bin/python experiments/lib/experiment_outcomes.py runs/exp/eval-methods --prompts instructions-eval \\
        --runs runs/exp --out experiments/methods-ifeval/outcomes/eval-methods.json

One file per evaluation (cluster.evaluate's eval.json), written as soon as the evaluation ends
(experiments/lib/experiment_lib.sh). JSON, one answer set a line:

    format            "osp-outcomes/1"
    evaluation        the folder it was exported from
    prompts           the held-out set the answers are to
    prompt_ids        the prompts, in order: every per-prompt list below follows it
    kinds             the IFEval instruction kinds of these prompts (absent where they have none)
    instructions      per prompt, its instructions as indices into `kinds`, space-separated
                      ("3 0": kinds[3], then kinds[0])
    answer_sets       by name: "sft", or "<run>@<step>" for a run's checkpoint
    training          by run: its metrics.jsonl, the columns the summaries read (TRAINING_KEYS),
                      one value a step (null where the step did not log it); absent for an
                      evaluation of another arm's runs (that arm's outcomes keep it)

An answer set, per prompt:
    strict, loose                 IFEval's prompt-level verdicts, a character a prompt ("1": every
                                  instruction followed)
    strict_per_instruction,       a string a prompt, a character an instruction, in the order of
    loose_per_instruction         its `instructions`
    truncated                     a character a prompt ("1": cut at the evaluation's max_tokens)
    tokens                        the answer's length in tokens
    repeated_share                the share of its word 4-grams it repeats (judge/repetition.py),
                                  4 decimals
    versus                        a checkpoint's sets only: {"baseline": the set it was compared
                                  with, "identical": a character a prompt ("1": the same text),
                                  "strengths": {scorer: p(policy ≻ baseline) a prompt}}

The answers themselves are not kept (they are large and the figures do not need them). A
300-prompt answer set is 6-9 KiB.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cluster.data.prompts import SHIPPED, read_prompt_rows
from judge.repetition import repeated_share
from judge.verifier import Instructions, Verdict, verify

FORMAT = "osp-outcomes/1"
# The metrics.jsonl columns the summaries read (training tables, samples' repetition).
TRAINING_KEYS = ("step", "time", "run/pairs_trained", "loss", "loss/probe", "step_s", "push_s", "strength/mean",
                 "samples/verifier_pass", "samples/truncated", "samples/repeated_share", "judge/tie_share",
                 "judge/truncated_pair_share")


def flags(values) -> str:
    """[True, False, True] → "101"."""
    return "".join("1" if v else "0" for v in values)


def unflag(text: str) -> tuple[bool, ...]:
    if set(text) - {"0", "1"}:
        raise ValueError(f"{text!r} is not a string of 0 and 1")
    return tuple(c == "1" for c in text)


def set_name(checkpoint: str) -> str:
    """runs/exp/osp-s1/ckpt-000015/hf → "osp-s1@15"; "sft" stays "sft"."""
    if checkpoint == "sft":
        return "sft"
    path = Path(checkpoint)
    ckpt = path.parent if path.name == "hf" else path
    return f"{ckpt.parent.name}@{int(ckpt.name.split('-')[1])}"


def answer_set(answers: list[str], tokens: list[int], truncated: list[bool],
               instructions: list[Instructions] | None) -> dict:
    out = {}
    if instructions is not None:
        verdicts = [verify(a, i) for a, i in zip(answers, instructions)]
        out.update(strict=flags(all(v.strict) for v in verdicts), loose=flags(all(v.loose) for v in verdicts),
                   strict_per_instruction=[flags(v.strict) for v in verdicts],
                   loose_per_instruction=[flags(v.loose) for v in verdicts])
    out.update(truncated=flags(truncated), tokens=[int(t) for t in tokens],
               repeated_share=[round(repeated_share(a), 4) for a in answers])
    return out


def _significant(x):
    """6 significant digits: a float's noise digits cost more than the figures need."""
    return x if x is None or isinstance(x, int) else float(f"{x:.6g}")


def training_series(metrics: Path) -> dict[str, list]:
    """A run's metrics.jsonl as columns (TRAINING_KEYS that it logged; null where a step did not)."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return {key: [_significant(r.get(key)) for r in rows] for key in TRAINING_KEYS if any(key in r for r in rows)}


def export(eval_dir: Path, prompts: str, runs: Path | None = None) -> dict:
    """The outcomes of one evaluation folder (its eval.json): every answer set, verified, and the
    training of each evaluated run found under `runs` (<runs>/<run>/metrics.jsonl)."""
    results = json.loads((eval_dir / "eval.json").read_text())
    if not results:
        raise SystemExit(f"{eval_dir}/eval.json holds no results")
    if "answer_tokens" not in results[0]:
        raise SystemExit(f"{eval_dir}/eval.json has no per-answer tokens (written before cluster.evaluate kept them): "
                         "evaluate again to export its outcomes")
    rows, _ = read_prompt_rows(Path(SHIPPED.get(prompts, prompts)))
    by_id = {r.prompt_id: r for r in rows}
    prompt_ids = results[0]["prompt_ids"]
    missing = [i for i in prompt_ids if i not in by_id]
    if missing:
        raise SystemExit(f"{eval_dir}: prompt {missing[0]!r} (and {len(missing) - 1} more) is not in {prompts!r}: "
                         "pass --prompts the set the evaluation answered")
    instructions = [by_id[i].instructions for i in prompt_ids]
    if any(i is None for i in instructions):
        instructions = None
    baseline = set_name(results[0]["baseline"])
    sets = {baseline: answer_set(results[0]["baseline_answers"], results[0]["baseline_answer_tokens"],
                                 results[0]["baseline_answer_truncated"], instructions)}
    for r in results:
        if r["prompt_ids"] != prompt_ids or set_name(r["baseline"]) != baseline:
            raise SystemExit(f"{eval_dir}: {r['checkpoint']} answered other prompts or another baseline")
        name = set_name(r["checkpoint"])
        sets[name] = answer_set(r["answers"], r["answer_tokens"], r["answer_truncated"], instructions)
        sets[name]["versus"] = {
            "baseline": baseline, "identical": flags(a == b for a, b in zip(r["answers"], r["baseline_answers"])),
            "strengths": {o["scorer"]: [round(p, 4) for p in o["strengths"]] for o in r["outcomes"]}}
    out = {"format": FORMAT, "evaluation": str(eval_dir), "prompts": prompts, "prompt_ids": prompt_ids}
    if instructions is not None:
        kinds = sorted({k for i in instructions for k in i.ids})
        index = {k: n for n, k in enumerate(kinds)}
        out["kinds"] = kinds
        out["instructions"] = [" ".join(str(index[k]) for k in i.ids) for i in instructions]
    out["answer_sets"] = sets
    if runs is not None:
        out["training"] = {run: training_series(runs / run / "metrics.jsonl") for run in
                           dict.fromkeys(name.split("@")[0] for name in sets) if (runs / run / "metrics.jsonl").exists()}
    return out


def dumps(outcomes: dict) -> str:
    """Compact, one answer set (and one run's training) a line: small, and a re-run's diff shows
    which sets changed."""
    def one(x):
        return json.dumps(x, ensure_ascii=False, separators=(",", ":"))

    lines = ["{"]
    items = list(outcomes.items())
    for i, (key, value) in enumerate(items):
        end = "," if i < len(items) - 1 else ""
        if key in ("answer_sets", "training") and value:
            lines.append(f"{one(key)}:{{")
            inner = list(value.items())
            lines += [f"{one(k)}:{one(v)}{',' if j < len(inner) - 1 else ''}" for j, (k, v) in enumerate(inner)]
            lines.append("}" + end)
        else:
            lines.append(f"{one(key)}:{one(value)}{end}")
    return "\n".join(lines + ["}"]) + "\n"


# ---------------------------------------------------------------------------------------------
# Reading them back


@dataclass
class AnswerSet:
    name: str
    truncated: np.ndarray  # per prompt, bool
    tokens: np.ndarray
    repeated_share: np.ndarray
    verdicts: list[Verdict] | None = None
    versus: dict | None = None


@dataclass
class Outcomes:
    """Every answer set of one or more evaluations of the same prompts, and their runs' training."""

    prompts: str
    prompt_ids: list[str]
    instructions: list[Instructions] | None
    sets: dict[str, AnswerSet] = field(default_factory=dict)
    training: dict[str, dict[str, list]] = field(default_factory=dict)


def _read_set(name: str, raw: dict, kinds: list[list[str]] | None, n: int, where: str) -> AnswerSet:
    def per_prompt(key):
        if key not in raw:
            raise SystemExit(f"{where}: {name} has no {key!r}")
        if len(raw[key]) != n:
            raise SystemExit(f"{where}: {name}.{key} has {len(raw[key])} entries for {n} prompts")
        return raw[key]

    def flags_of(key):
        try:
            values = per_prompt(key)
            return unflag(values) if isinstance(values, str) else [unflag(v) for v in values]
        except ValueError as err:
            raise SystemExit(f"{where}: {name}.{key}: {err}") from None

    verdicts = None
    if kinds is not None:
        strict, loose = flags_of("strict_per_instruction"), flags_of("loose_per_instruction")
        for i, (s, lo, k) in enumerate(zip(strict, loose, kinds)):
            if not len(s) == len(lo) == len(k):
                raise SystemExit(f"{where}: {name}, prompt {i}: {len(s)} verdicts for {len(k)} instructions")
        if flags_of("strict") != tuple(all(s) for s in strict) or flags_of("loose") != tuple(all(lo) for lo in loose):
            raise SystemExit(f"{where}: {name}: a prompt-level verdict disagrees with its instructions' verdicts")
        verdicts = [Verdict(s, lo) for s, lo in zip(strict, loose)]
    return AnswerSet(name, np.array(flags_of("truncated")), np.array(per_prompt("tokens"), dtype=float),
                     np.array(per_prompt("repeated_share"), dtype=float), verdicts, raw.get("versus"))


def files_of(paths: list[Path]) -> list[Path]:
    """Each path, a folder standing for its *.json files (not its subfolders)."""
    out = []
    for p in paths:
        if p.is_dir():
            out += sorted(p.glob("*.json"))
        elif p.exists():
            out.append(p)
        else:
            raise SystemExit(f"{p}: no such outcomes file or folder")
    return out


def load(paths: list[Path]) -> Outcomes:
    """The outcomes in these files (folders: their *.json), merged: they must answer the same
    prompts; the SFT answers (greedy) must be the same in each; a set in two files is refused."""
    files = files_of(paths)
    if not files:
        raise SystemExit(f"no outcomes in {', '.join(map(str, paths))} (the measured runs' outcomes may be lost: "
                         "see the experiment's README)")
    merged, origin = None, {}
    for f in files:
        raw = json.loads(f.read_text())
        if raw.get("format") != FORMAT:
            raise SystemExit(f"{f}: not an outcomes file (format {raw.get('format')!r}, expected {FORMAT!r})")
        kinds = _instruction_ids(raw, f)
        n = len(raw["prompt_ids"])
        if merged is None:
            instructions = None if kinds is None else [Instructions(tuple(k), tuple({} for _ in k)) for k in kinds]
            merged = Outcomes(raw["prompts"], raw["prompt_ids"], instructions)
        elif raw["prompt_ids"] != merged.prompt_ids:
            raise SystemExit(f"{f}: other prompts than {files[0]} ({raw['prompts']} vs {merged.prompts})")
        for name, s in raw["answer_sets"].items():
            answers = _read_set(name, s, kinds, n, str(f))
            if name in merged.sets:
                if name == "sft" and _same(merged.sets[name], answers):
                    continue
                why = "the SFT answers differ from" if name == "sft" else "is also in"
                raise SystemExit(f"{f}: {name} {why} {origin[name]}")
            merged.sets[name], origin[name] = answers, f
        for run, series in raw.get("training", {}).items():
            merged.training.setdefault(run, series)
    return merged


def _instruction_ids(raw: dict, where: Path) -> list[list[str]] | None:
    """Per prompt, its instruction kinds by name (from `kinds` and `instructions`)."""
    if "kinds" not in raw:
        return None
    try:
        out = [[raw["kinds"][int(i)] for i in row.split()] for row in raw["instructions"]]
    except (IndexError, ValueError) as err:
        raise SystemExit(f"{where}: `instructions` must index `kinds` ({err})") from None
    if len(out) != len(raw["prompt_ids"]) or not all(out):
        raise SystemExit(f"{where}: `instructions` needs one non-empty entry per prompt")
    return out


def load_training(paths: list[Path]) -> dict[str, dict[str, list]]:
    """The training columns kept in these outcomes (files, or folders of them), by run: for an
    evaluation of another arm's runs, whose own outcomes keep them."""
    training: dict[str, dict[str, list]] = {}
    missing = [p for p in paths if not p.exists()]
    if missing:  # e.g. the outcomes of an arm whose runs were lost: the training summaries stay empty
        print(f"no training outcomes at {', '.join(map(str, missing))}", file=sys.stderr)
    for f in files_of([p for p in paths if p.exists()]):
        for run, series in json.loads(f.read_text()).get("training", {}).items():
            training.setdefault(run, series)
    return training


def _same(a: AnswerSet, b: AnswerSet) -> bool:
    return a.verdicts == b.verdicts and np.array_equal(a.tokens, b.tokens) and np.array_equal(a.truncated, b.truncated)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("eval_dir", type=Path, help="an evaluation folder (cluster.evaluate --out): its eval.json")
    parser.add_argument("--prompts", required=True, help="the held-out set it answered (a shipped name or a JSONL path)")
    parser.add_argument("--runs", type=Path, default=None,
                        help="the folder holding the evaluated runs, whose metrics.jsonl are kept (default: none, "
                             "for an evaluation of another arm's runs: that arm's outcomes keep them)")
    parser.add_argument("--out", type=Path, required=True, help="the outcomes file, under experiments/<name>/outcomes/")
    args = parser.parse_args(argv)
    outcomes = export(args.eval_dir, args.prompts, args.runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dumps(outcomes))
    print(f"wrote {args.out}: {len(outcomes['answer_sets'])} answer sets, {len(outcomes['prompt_ids'])} prompts, "
          f"training of {len(outcomes.get('training', {}))} runs ({args.out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What signal each instruction kind gives the verifier judge at K samples: pass rates, ties,
and what partial credit adds. The measurement behind the broad task's design (experiments/broad-ifeval/README.md).

    .venv/bin/python scripts/make_broad_prompts.py --scan --out runs/broad_scan.jsonl
    .venv/bin/python experiments/broad-ifeval/scan_kinds.py --prompts runs/broad_scan.jsonl --k 8 --max-tokens 192 \
        --out experiments/broad-ifeval/outcomes/scan/sft-192.json

One vLLM engine samples K answers (T = 0.8, as training does) to every row of a one-instruction
set (IFEval's own phrasings and kwargs); each answer is checked. Per kind:
- `pass`: the share of answers that follow the instruction (strict);
- `pass_at_k`: the share of prompts with at least one answer of K that follows it: without one,
  every pair of that prompt ties under the plain verifier, and nothing is learned;
- `pairs_decided` / `pairs_decided_partial`: the share of the K(K−1)/2 answer pairs the plain
  verifier / the verifier with partial credit (judge/partial_credit.py) does not tie;
- `truncated`: the share of answers cut at max_tokens; `mean_tokens`.
pass@k for k < K is estimated without bias from the K answers (the pass@k estimator of Chen
et al., 2021: 1 − C(n−c, k)/C(n, k)).
The report keeps each prompt's counts too (`prompts`: its id, kind, answers passed of K, pairs
decided, cut share, mean tokens), so the per-kind figures can be recomputed from it: write it
into outcomes/ (committed), not runs/.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

from core.env import apply_runtime_env

apply_runtime_env()

from transformers import AutoTokenizer

from actors.rollout import RolloutActor
from cluster.data.prompts import load_prompts
from cluster.driver.ray_setup import init_ray
from core.config import ModelConfig, RolloutConfig
from core.models import resolve_model
from judge.verifier import VerifierJudge, verify


def pass_at(n: int, c: int, k: int) -> float:
    """P(at least one of k answers drawn from n, c of which pass, passes)."""
    return 1.0 if n - c < k else 1.0 - math.comb(n - c, k) / math.comb(n, k)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", default="runs/broad_scan.jsonl")
    parser.add_argument("--model", default=None, help="the policy to sample (default: the embedded SFT model)")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=192)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "outcomes" / "scan" / "sft.json"))
    args = parser.parse_args(argv)

    import ray

    model = str(resolve_model(args.model))
    tokenizer = AutoTokenizer.from_pretrained(model)
    prompts = load_prompts(args.prompts, tokenizer, 512)
    init_ray(None, num_cpus=2, worker_logs=False)
    engine = ray.remote(RolloutActor).options(num_cpus=2).remote(
        model, RolloutConfig(k=args.k, max_tokens=args.max_tokens), ModelConfig(max_prompt_tokens=512), seed=args.seed,
        threads=2)
    table_ref, _ = engine.generate.remote([p.request(i) for i, p in enumerate(prompts)])
    rows = ray.get(table_ref).to_pylist()
    ray.kill(engine)

    plain = VerifierJudge({p.text: p.instructions for p in prompts}, tau=0.5)
    partial = VerifierJudge({p.text: p.instructions for p in prompts}, tau=0.5, partial_credit=True)
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for prompt, row in zip(prompts, rows):
        answers = row["response_texts"]
        passed = [all(verify(a, prompt.instructions).strict) for a in answers]
        pairs = [(i, j) for i in range(len(answers)) for j in range(i + 1, len(answers))]
        ps = plain.compare([prompt.text] * len(pairs), [answers[i] for i, _ in pairs], [answers[j] for _, j in pairs])
        pp = partial.compare([prompt.text] * len(pairs), [answers[i] for i, _ in pairs], [answers[j] for _, j in pairs])
        by_kind[prompt.instructions.ids[0]].append({
            "id": prompt.prompt_id, "passed": sum(passed), "n": len(answers),
            "decided": sum(p != 0.5 for p in ps) / len(pairs), "decided_partial": sum(p != 0.5 for p in pp) / len(pairs),
            "truncated": sum(r == "length" for r in row["finish_reasons"]) / len(answers),
            "tokens": sum(len(t) for t in row["response_tokens"]) / len(answers)})
    report = {}
    for kind, items in sorted(by_kind.items()):
        n = len(items)
        report[kind] = {
            "prompts": n,
            "pass": sum(i["passed"] for i in items) / sum(i["n"] for i in items),
            "pass_at_k": {k: sum(pass_at(i["n"], i["passed"], k) for i in items) / n for k in (1, 2, 4, args.k)},
            "pairs_decided": sum(i["decided"] for i in items) / n,
            "pairs_decided_partial": sum(i["decided_partial"] for i in items) / n,
            "truncated": sum(i["truncated"] for i in items) / n,
            "mean_tokens": sum(i["tokens"] for i in items) / n,
        }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    per_prompt = [{"kind": kind, **{k: round(v, 4) if isinstance(v, float) else v for k, v in item.items()}}
                  for kind, items in sorted(by_kind.items()) for item in items]
    Path(args.out).write_text(json.dumps({"k": args.k, "max_tokens": args.max_tokens, "model": model,
                                          "kinds": report, "prompts": per_prompt}, indent=1))
    print(f"| kind | pass | pass@1 | pass@4 | pass@{args.k} | pairs decided | with partial credit | truncated | tokens |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind, r in report.items():
        a = r["pass_at_k"]
        print(f"| {kind} | {r['pass']:.2f} | {a[1]:.2f} | {a[4]:.2f} | {a[args.k]:.2f} | {r['pairs_decided']:.2f} | "
              f"{r['pairs_decided_partial']:.2f} | {r['truncated']:.2f} | {r['mean_tokens']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

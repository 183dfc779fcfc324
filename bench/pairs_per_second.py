"""Pairs trained per second, end to end: osp against TRL's online DPO trainer, side by side.

    .venv/bin/pip install -e ".[bench]"       # trl==1.16.0 + datasets
    .venv/bin/python bench/pairs_per_second.py [--steps 10] [--warmup 3] [--model PATH] [--only osp|trl]
        [--osp-variants k2,k4,k4-2rollout,k4-2ranks]
    .venv/bin/python bench/pairs_per_second.py --task verifier    # the main job's task

Two tasks. `selfjudge` (below): the everyday questions and the SFT self-judge. `verifier`: the
main job's task (cluster/configs/default.yaml): instruction prompts, K = 4 on osp's side, 48
tokens, the IFEval verifier as judge on both sides (TRL receives it as a reward function: the
share of instructions a completion follows; osp drops the pairs it ties, TRL trains them).

Same model (the embedded SmolLM2-135M-Instruct unless --model), same prompts (the shipped
training set), K=2 samples per prompt, 4 pairs per step, 24 new tokens, temperature 0.8, LoRA
r=8 on the same modules, β=0.1, the same CPU. Both sides judge with the same frozen SFT
self-judge (swap-averaged A/B probability): TRL's trainer gets it as a reward function that
scores each prompt's two completions as a pair (rewards p and 1-p), so both do the same
judging work. TRL generates with transformers (its default; its vLLM modes need a GPU).

Reported: steady-state pairs/s (after --warmup steps, which absorb start-up and first-call
costs) and the whole-run figure including start-up, and their ratios osp/TRL. osp runs in
variants beside the K=2 row that matches TRL's only mode: `k4` (K=4 samples, two ranked pairs
per prompt), `k4-2rollout` (two rollout actors), `k4-2ranks` (two DeepSpeed ranks), and
`k2-stale2`/`k4-stale2` (pipeline.max_staleness=2), with the learner's busy fraction, the push's
share of the step and the mean staleness for each.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from core.env import apply_runtime_env

apply_runtime_env()

PAIRS_PER_STEP = 4
TASKS = {  # task → (new tokens, osp's overrides)
    "selfjudge": (24, ["judge.kind=self", "judge.drop_ties=false", "data.prompts=questions", "learner.lr=5e-5"]),
    # model.max_prompt_tokens as in cluster/configs/default.yaml: instruction prompts reach 103 tokens.
    "verifier": (48, ["judge.kind=verifier", "judge.tau=0.5", "data.prompts=instructions", "learner.lr=3e-4",
                      "model.max_prompt_tokens=256"]),
}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


OSP_VARIANTS = {
    "k2": ["rollout.k=2"],
    "k4": ["rollout.k=4"],
    "k4-2rollout": ["rollout.k=4", "rollout.num_actors=2"],
    "k4-2ranks": ["rollout.k=4", "learner.num_ranks=2"],
    # Rollout may run two weight versions ahead instead of one: the staleness bound idles the
    # rollout less (docs/benchmarks.md, "How close to the limit").
    "k2-stale2": ["rollout.k=2", "pipeline.max_staleness=2"],
    "k4-stale2": ["rollout.k=4", "pipeline.max_staleness=2"],
}


def run_osp(model: str, steps: int, warmup: int, variant: str, task: str = "selfjudge") -> dict:
    import statistics

    import ray

    from cluster.config import load_config
    from cluster.run import run

    run_dir = Path(tempfile.mkdtemp(prefix=f"bench-osp-{task}-{variant}-"))
    max_tokens, task_overrides = TASKS[task]
    overrides = [
        f"model.path={model}", f"rollout.max_tokens={max_tokens}", "rollout.temperature=0.8", "eval.prompts=",
        f"learner.pairs_per_step={PAIRS_PER_STEP}", f"learner.max_steps={warmup + steps}", "learner.lora.r=8",
        "learner.lora.alpha=16", "method=osp", "loss.beta=0.1", "checkpoint.every=0",
        f"checkpoint.dir={run_dir}", "metrics.trackers=[]", "metrics.progress=false", "metrics.probe_every=0",
    ] + task_overrides + OSP_VARIANTS[variant]  # TRL's side judges the same way on the same prompts
    start = time.time()
    run(load_config(None, overrides))
    total = time.time() - start
    ray.shutdown()  # free the machine for the next run
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    t0 = next(r["time"] for r in rows if r["step"] == warmup)
    t1 = rows[-1]["time"]
    steady = [r for r in rows if r["step"] > warmup]
    memory = json.loads((run_dir / "memory.json").read_text())
    return {"steady_pairs_per_s": steps * PAIRS_PER_STEP / (t1 - t0),
            "total_pairs_per_s": (warmup + steps) * PAIRS_PER_STEP / total, "total_s": total,
            "learner_busy": statistics.mean(r["learner/busy"] for r in steady),
            "arrow_share": statistics.mean(r["arrow/share"] for r in steady),
            "push_s": statistics.mean(r["push_s"] for r in steady),
            "step_s": statistics.mean(r["step_s"] for r in steady),
            "staleness_mean": statistics.mean(r["staleness/mean"] for r in steady),
            "push_bytes": steady[-1]["push_bytes"], "memory": memory}


class SelfJudgeReward:
    """TRL reward function: the prompts arrive as [p_1..p_B, p_1..p_B] with the two
    completions of prompt i at i and i+B; each pair is judged once (both orders)."""

    __name__ = "self_judge"

    def __init__(self, model: str):
        from cluster.methods import method_of
        from core.config import Config
        from judge.judge_actor import JudgeActor

        self.judge = JudgeActor(model, Config(), method_of(Config()))

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        b = len(prompts) // 2

        def text(x):
            return x[-1]["content"] if isinstance(x, list) else x

        requests = [(text(prompts[i]), text(completions[i]), text(completions[i + b])) for i in range(b)]
        p = self.judge.strengths(requests)
        return p + [1 - x for x in p]


class VerifierReward:
    """TRL reward function: a completion's share of its prompt's IFEval instructions followed
    (the verifier judge's score s)."""

    __name__ = "verifier"

    def __init__(self, rows):
        self.instructions = {r.text: r.instructions for r in rows}

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        from judge.verifier import verify

        def text(x):
            return x[-1]["content"] if isinstance(x, list) else x

        return [verify(text(c), self.instructions[text(p)]).fraction for p, c in zip(prompts, completions)]


def run_trl(model: str, steps: int, warmup: int, task: str = "selfjudge") -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer, TrainerCallback
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    from cluster.data.prompts import SHIPPED, SHIPPED_TRAIN, read_prompt_rows

    rows, _ = read_prompt_rows(SHIPPED["instructions"] if task == "verifier" else SHIPPED_TRAIN)
    max_tokens, _ = TASKS[task]
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": text}]} for text in [r.text for r in rows[:200]]])
    tokenizer = AutoTokenizer.from_pretrained(model)
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            times.append(time.time())

    out = tempfile.mkdtemp(prefix="bench-trl-")
    args = OnlineDPOConfig(
        output_dir=out, per_device_train_batch_size=PAIRS_PER_STEP, gradient_accumulation_steps=1,
        max_steps=warmup + steps, learning_rate=5e-5, beta=0.1, max_new_tokens=max_tokens, temperature=0.8,
        logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, bf16=False, fp16=False,
        dataloader_num_workers=0, seed=0,
    )
    start = time.time()
    trainer = OnlineDPOTrainer(
        model=model, reward_funcs=[VerifierReward(rows) if task == "verifier" else SelfJudgeReward(model)], args=args,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"),
        callbacks=[Clock()],
    )
    torch.set_num_threads(max(1, torch.get_num_threads()))
    trainer.train()
    total = time.time() - start
    t0, t1 = times[warmup - 1], times[-1]
    return {"steady_pairs_per_s": steps * PAIRS_PER_STEP / (t1 - t0),
            "total_pairs_per_s": (warmup + steps) * PAIRS_PER_STEP / total, "total_s": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--model", default=None)
    parser.add_argument("--only", choices=["osp", "trl"], default=None)
    parser.add_argument("--osp-variants", default=None,
                        help=f"comma-separated, from {', '.join(OSP_VARIANTS)} (default: k2 for selfjudge, k4 for verifier)")
    parser.add_argument("--task", choices=sorted(TASKS), default="selfjudge")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()
    from core.models import resolve_model

    model = str(resolve_model(args.model))
    results = {}
    if args.only in (None, "osp"):
        variants = args.osp_variants or ("k4" if args.task == "verifier" else "k2")
        for variant in variants.split(","):
            results[f"osp-{variant}"] = run_osp(model, args.steps, args.warmup, variant, args.task)
    if args.only in (None, "trl"):
        results["trl"] = run_trl(model, args.steps, args.warmup, args.task)
    print(json.dumps(results, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if "trl" in results:
        for name, r in results.items():
            if name != "trl":
                print(f"{name}: steady {r['steady_pairs_per_s']:.3f} pairs/s = "
                      f"{r['steady_pairs_per_s'] / results['trl']['steady_pairs_per_s']:.2f}x TRL; whole run "
                      f"{r['total_pairs_per_s'] / results['trl']['total_pairs_per_s']:.2f}x")


if __name__ == "__main__":
    main()

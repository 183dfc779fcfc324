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


def step_intervals(end_times: dict[int, float], warmup: int) -> list[float]:
    """The steady window's step times: from step `warmup`'s end to each later step's end, one
    interval a step (`end_times`: step → when it ended, any clock)."""
    last = max(end_times)
    return [end_times[s] - end_times[s - 1] for s in range(warmup + 1, last + 1)]


def steady_figures(end_times: dict[int, float], warmup: int) -> dict:
    """Pairs/s over the steps after `warmup` (PAIRS_PER_STEP each), each step's time, and the
    first steady step against the mean of the others: a start-up effect left in the window
    shows there (docs/benchmarks.md, "What moves the figure")."""
    intervals = step_intervals(end_times, warmup)
    rest = intervals[1:] or intervals
    return {"steady_pairs_per_s": len(intervals) * PAIRS_PER_STEP / sum(intervals),
            "steady_step_s": [round(x, 3) for x in intervals],
            "first_steady_step_s": round(intervals[0], 3), "rest_mean_step_s": round(sum(rest) / len(rest), 3)}


def run_osp(model: str, steps: int, warmup: int, variant: str, task: str = "selfjudge") -> dict:
    import statistics

    import ray
    from run_watch import StepWatch

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
    with StepWatch(run_dir / "metrics.jsonl") as watch:
        run(load_config(None, overrides))
    total = time.time() - start
    ray.shutdown()  # free the machine for the next run
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steady = [r for r in rows if r["step"] > warmup]
    last = rows[-1]["step"]
    memory = json.loads((run_dir / "memory.json").read_text())
    return {**steady_figures({r["step"]: r["time"] for r in rows}, warmup),
            "total_pairs_per_s": (warmup + steps) * PAIRS_PER_STEP / total, "total_s": total,
            "first_step_at_s": rows[0]["time"],  # from the driver's metrics logger start: actors up + first step
            "learner_busy": statistics.mean(r["learner/busy"] for r in steady),
            "arrow_share": statistics.mean(r["arrow/share"] for r in steady),
            "push_s": statistics.mean(r["push_s"] for r in steady),
            "step_s": statistics.mean(r["step_s"] for r in steady),
            "learner_step_s": [round(r["step_s"], 3) for r in rows],
            "staleness_mean": statistics.mean(r["staleness/mean"] for r in steady),
            # Pairs buffered when each step ended: a backlog at step `warmup` is trained in the
            # window without the rollout having to make it.
            "buffer_pairs": [r["buffer/pairs"] for r in rows],
            # Rollout calls in flight per wall second of each step: it falls in the last steps,
            # when what is buffered and on its way covers the steps left and the rollout stops.
            "rollout_calls_in_flight": [round(r.get("rollout/calls_in_flight", 0.0), 3) for r in rows],
            "engine_tokens_per_s": statistics.mean(r.get("rollout/engine_tokens_per_s", 0.0) for r in steady),
            "cpu_by_role": watch.between(warmup, last),
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
    from run_watch import snapshot, window
    from transformers import AutoTokenizer, TrainerCallback
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    from cluster.data.prompts import SHIPPED, SHIPPED_TRAIN, read_prompt_rows

    rows, _ = read_prompt_rows(SHIPPED["instructions"] if task == "verifier" else SHIPPED_TRAIN)
    max_tokens, _ = TASKS[task]
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": text}]} for text in [r.text for r in rows[:200]]])
    tokenizer = AutoTokenizer.from_pretrained(model)
    times: list[float] = []
    snapshots: list[dict] = []  # this process's CPU seconds and threads at each step's end

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            times.append(time.time())
            snapshots.append(snapshot())

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
    return {**steady_figures({i + 1: t for i, t in enumerate(times)}, warmup),
            "total_pairs_per_s": (warmup + steps) * PAIRS_PER_STEP / total, "total_s": total,
            "torch_threads": torch.get_num_threads(),
            "cpu_by_role": window(snapshots[warmup - 1], snapshots[-1], times[-1] - times[warmup - 1])}


def run_sides(args, model: str) -> dict[str, dict]:
    """Every side asked for, one after the other in this process: osp's variants, then TRL."""
    results = {}
    if args.only in (None, "osp"):
        for variant in osp_variants(args):
            results[f"osp-{variant}"] = run_osp(model, args.steps, args.warmup, variant, args.task)
    if args.only in (None, "trl"):
        results["trl"] = run_trl(model, args.steps, args.warmup, args.task)
    return results


def osp_variants(args) -> list[str]:
    return (args.osp_variants or ("k4" if args.task == "verifier" else "k2")).split(",")


def run_invocations(args, model: str) -> dict:
    """`args.invocations` invocations; in each, every side (each osp variant, then TRL) in a fresh
    process of its own. Summarised per row: every invocation's figures, the median, the range,
    and the ratio of the medians to TRL's (bench/invocations.py)."""
    from invocations import run_child, summarise

    common = ["--task", args.task, "--steps", str(args.steps), "--warmup", str(args.warmup), "--model", model]
    sides = ([["--only", "osp", "--osp-variants", v] for v in osp_variants(args)] if args.only in (None, "osp") else [])
    sides += [["--only", "trl"]] if args.only in (None, "trl") else []
    runs: dict[str, list[dict]] = {}
    weights = Path(model) / "model.safetensors"
    for i in range(args.invocations):
        for side in sides:
            for name, figures in run_child(side + common, weights if weights.exists() else None, args.cold_cache).items():
                runs.setdefault(name, []).append({"invocation": i + 1, **figures})
    return {"task": args.task, "steps": args.steps, "warmup": args.warmup, "invocations": args.invocations,
            "cold_cache": args.cold_cache, "rows": summarise(runs)}


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--model", default=None)
    parser.add_argument("--only", choices=["osp", "trl"], default=None)
    parser.add_argument("--osp-variants", default=None,
                        help=f"comma-separated, from {', '.join(OSP_VARIANTS)} (default: k2 for selfjudge, k4 for verifier)")
    parser.add_argument("--task", choices=sorted(TASKS), default="selfjudge")
    parser.add_argument("--invocations", type=int, default=3,
                        help="run every side this many times, each in a fresh process; report the median and range")
    parser.add_argument("--cold-cache", action="store_true",
                        help="drop the page cache before each process (root): libraries and the model read from disk")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one invocation, in this process
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()
    if args.invocations < 1:
        parser.error(f"--invocations must be at least 1, got {args.invocations}")
    from core.models import resolve_model

    model = str(resolve_model(args.model))
    if args.child:
        results = run_sides(args, model)
    else:
        from invocations import table

        results = run_invocations(args, model)
        print(table(results["rows"]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

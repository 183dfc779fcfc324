"""How close the loop runs to this machine's limit: each stage alone, the bound they set, and the
pipeline's pairs/s against it, in one invocation.

    .venv/bin/python bench/stage_bound.py --run default --json stage_default.json
    .venv/bin/python bench/stage_bound.py --run k2 --json stage_k2.json
    .venv/bin/python bench/stage_bound.py --set pipeline.max_staleness=2 --stages-from stage_default.json

1. Each stage alone, created exactly as the run creates it (cluster/driver/actors.py: its Ray
   CPUs and as many compute threads), with nothing else running:
   - rollout: `batches` calls of rollout.prompts_per_batch prompts at the run's K and
     max_tokens (after one warm-up call): seconds and tokens;
   - judge: the same batches judged and paired (after one warm-up): seconds and pairs kept
     (ties dropped, as the run drops them);
   - learner: `steps` learner steps of learner.pairs_per_step of those pairs (after one warm-up).
   A stage's cost per trained pair is t_i = its seconds / the pairs kept (learner: per pair
   trained), on n_i threads.
2. The bound for the run's placement. The stages run concurrently and share the machine's C
   cores (one node, no stage pinned), so the pairs/s cannot exceed
       bound = min( C / Σ_i n_i·t_i ,  min_i 1/t_i )
   — the cores' time split over the stages' CPU-time per pair (time-sharing), and no stage
   faster than it runs alone. With disjoint cores (each stage its own), only min_i 1/t_i applies.
3. The pipeline: the same config run end to end (`cluster.run.run`); pairs/s over the steps
   after --warmup. Reported: pipeline / bound, and the rollout actor's sampling speed in the run
   (tokens per second of its calls) over the same actor's alone; and the rollout's tokens per
   wall second over its engine's speed alone as three factors (`rollout_losses`): the engine's
   speed in the run (contention for the cores), the share of a call spent sampling (a queued
   weight load, Ray's dispatch) and the calls in flight (the staleness bound, the buffer).
The figures are ratios measured in one invocation; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from core.env import apply_runtime_env

apply_runtime_env()

RUNS = {
    # The main job: cluster/configs/default.yaml (K = 4, the verifier, 48 tokens), no held-out check.
    "default": (Path("cluster/configs/default.yaml"), ["eval.prompts="]),
    # bench/pairs_per_second.py's K = 2 row: the SFT self-judge on the everyday questions, 24 tokens.
    "k2": (None, ["rollout.k=2", "rollout.max_tokens=24", "rollout.temperature=0.8", "judge.kind=self",
                  "judge.drop_ties=false", "data.prompts=questions", "learner.pairs_per_step=4", "learner.lr=5e-5",
                  "learner.lora.r=8", "learner.lora.alpha=16", "method=osp", "loss.beta=0.1"]),
}


def measure_stages(spec, batches: int, steps: int) -> dict:
    """Each stage alone, as the run creates it; the pairs kept feed the learner."""
    import pyarrow as pa
    import ray

    from cluster.driver.actors import make_rollout_actor
    from cluster.driver.pools import JudgePool, LearnerGroup

    cfg, prompts = spec.cfg, spec.prompts
    per_batch = cfg.rollout.prompts_per_batch
    requests = [[prompts[i].request(i) for i in range(b * per_batch, (b + 1) * per_batch)] for b in range(batches + 1)]
    rollout = make_rollout_actor(cfg, spec.model_ref, 0, "stage")
    info = ray.get(rollout.info.remote())
    tables, roll_s, sampling_s, tokens = [], [], [], []
    for i, batch in enumerate(requests):
        start = time.perf_counter()
        table, counts = rollout.generate.remote(batch)
        counts = ray.get(counts)
        if i:  # the first call warms up
            roll_s.append(time.perf_counter() - start)
            sampling_s.append(counts["sampling_s"])
            tokens.append(counts["tokens"])
        tables.append(table)
    ray.kill(rollout)

    judges = JudgePool(cfg, spec.model_ref, prompts, "stage")
    judge = judges.judges[0]
    judge_info = ray.get(judge.info.remote())
    judge_s, kept, pairs = [], [], []
    for i, table in enumerate(tables):
        start = time.perf_counter()
        out, stats = ray.get(judge.score.remote(table))
        if i:
            judge_s.append(time.perf_counter() - start)
            kept.append(0 if out is None else out.num_rows)
        if out is not None:
            pairs.append(out)
    judges.shutdown()
    pairs = pa.concat_tables(pairs)

    learner = LearnerGroup(cfg, spec.model_ref, Path(tempfile.mkdtemp()), "stage")
    learner_info = ray.get(learner.ranks[0].info.remote())
    n = cfg.learner.pairs_per_step
    step_s = []
    for i in range(steps + 1):
        batch = pairs.take([(i * n + j) % pairs.num_rows for j in range(n)])
        start = time.perf_counter()
        learner.results(learner.start_step(batch, None), i + 1)
        if i:
            step_s.append(time.perf_counter() - start)
    learner.shutdown()

    kept_pairs = sum(kept)
    return {
        "rollout": {"s_per_pair": sum(roll_s) / kept_pairs, "tokens_per_s": sum(tokens) / sum(roll_s),
                    "engine_tokens_per_s": sum(tokens) / sum(sampling_s),
                    "threads": cfg.rollout.cpus_per_actor, "torch_threads": info["torch_threads"],
                    "os_threads": info["os_threads"]},
        "judge": {"s_per_pair": sum(judge_s) / kept_pairs, "pairs_kept_per_prompt": kept_pairs / (batches * per_batch),
                  "threads": cfg.judge.cpus_per_actor, "torch_threads": judge_info["torch_threads"],
                  "os_threads": judge_info["os_threads"]},
        "learner": {"s_per_pair": statistics.mean(step_s) / n, "step_s": statistics.mean(step_s),
                    "threads": cfg.learner.cpus_per_rank * cfg.learner.num_ranks,
                    "torch_threads": learner_info["torch_threads"], "os_threads": learner_info["os_threads"]},
    }


def bound(stages: dict, cores: int) -> dict:
    cpu_per_pair = sum(s["threads"] * s["s_per_pair"] for s in stages.values())
    alone = min(1 / s["s_per_pair"] for s in stages.values())
    shared = cores / cpu_per_pair
    return {"cores": cores, "cpu_s_per_pair": cpu_per_pair, "shared_cores_pairs_per_s": shared,
            "slowest_stage_pairs_per_s": alone, "bound_pairs_per_s": min(shared, alone),
            "limited_by": "the cores (time-shared)" if shared < alone else
            max(stages, key=lambda k: stages[k]["s_per_pair"])}


def run_pipeline(cfg, warmup: int) -> dict:
    from cluster.run import run

    run(cfg)
    rows = [json.loads(line) for line in (Path(cfg.checkpoint.dir) / "metrics.jsonl").read_text().splitlines()]
    t0 = next(r["time"] for r in rows if r["step"] == warmup)
    steady = [r for r in rows if r["step"] > warmup]
    pairs = sum(cfg.learner.pairs_per_step for _ in steady)
    def mean(key: str) -> float:
        return statistics.mean(r[key] for r in steady if key in r)

    return {"pairs_per_s": pairs / (rows[-1]["time"] - t0),
            "rollout_tokens_per_s": mean("rollout_tokens_per_s"),
            "sampling_tokens_per_s": mean("rollout/sampling_tokens_per_s"),
            "engine_tokens_per_s": mean("rollout/engine_tokens_per_s"),
            "sampling_share_of_call": mean("rollout/sampling_share_of_call"),
            "calls_in_flight": mean("rollout/calls_in_flight"),
            "learner_busy": mean("learner/busy"),
            "steps": len(rows)}


def rollout_losses(stages: dict, pipeline: dict) -> dict:
    """The rollout's tokens per wall second in the run over its speed alone, as the product of
    three factors (cluster/driver/metrics.py): the engine's speed in the run over alone
    (contention for the cores), the share of a call spent sampling (a weight load queued before
    the call, Ray's dispatch), and the calls in flight (the staleness bound, the buffer). Each is
    a step's mean, so the product matches the ratio of the means only approximately."""
    engine = pipeline["engine_tokens_per_s"] / stages["rollout"]["engine_tokens_per_s"]
    return {"engine_speed_in_run_over_alone": engine,
            "sampling_share_of_call": pipeline["sampling_share_of_call"],
            "calls_in_flight": pipeline["calls_in_flight"],
            "product": engine * pipeline["sampling_share_of_call"] * pipeline["calls_in_flight"],
            "rollout_tokens_per_s_in_run_over_alone_wall": pipeline["rollout_tokens_per_s"] /
            stages["rollout"]["engine_tokens_per_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", choices=sorted(RUNS), default="default")
    parser.add_argument("--batches", type=int, default=8, help="rollout batches measured alone (after a warm-up)")
    parser.add_argument("--steps", type=int, default=6, help="learner steps measured alone (after a warm-up)")
    parser.add_argument("--pipeline-steps", type=int, default=14)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", default=None)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides for the stages and the pipeline, e.g. pipeline.max_staleness=2")
    parser.add_argument("--stages-from", default=None,
                        help="a JSON of an earlier invocation: reuse its stages alone, run only the pipeline "
                             "(the comparison then spans two invocations: keep the machine as it was)")
    args = parser.parse_args()

    import ray

    from cluster.config import load_config
    from cluster.driver.ray_setup import init_ray
    from cluster.run import build_run

    path, overrides = RUNS[args.run]
    run_dir = Path(tempfile.mkdtemp(prefix=f"stage-{args.run}-"))
    common = overrides + [f"learner.max_steps={args.pipeline_steps}", "checkpoint.every=0", f"checkpoint.dir={run_dir}/run",
                          "metrics.trackers=[]", "metrics.progress=false", "metrics.probe_every=0", *args.set]
    cfg = load_config(path, common)
    if args.stages_from:
        stages = json.loads(Path(args.stages_from).read_text())["stages"]
    else:
        init_ray(None, max(4, os.cpu_count() or 1), worker_logs=False)
        stages = measure_stages(build_run(cfg), args.batches, args.steps)
        ray.shutdown()  # the pipeline starts its own cluster, as the main job does
    limit = bound(stages, os.cpu_count() or 1)
    pipeline = run_pipeline(cfg, args.warmup)
    result = {"run": args.run, "overrides": args.set, "stages_from": args.stages_from,
              "stages": stages, "bound": limit, "pipeline": pipeline,
              "efficiency": pipeline["pairs_per_s"] / limit["bound_pairs_per_s"],
              "rollout_tokens_per_s_in_run_over_alone": pipeline["sampling_tokens_per_s"] /
              stages["rollout"]["tokens_per_s"],
              "rollout_losses": rollout_losses(stages, pipeline)}
    for name, s in stages.items():
        print(f"{name:8s} alone: {s['s_per_pair']:.2f} s per pair on {s['threads']:g} thread(s) "
              f"(torch {s['torch_threads']}, {s['os_threads']} OS threads)")
    print(f"bound: {limit['bound_pairs_per_s']:.3f} pairs/s ({limit['limited_by']}; {limit['cores']} cores, "
          f"{limit['cpu_s_per_pair']:.2f} CPU-s per pair)")
    print(f"pipeline: {pipeline['pairs_per_s']:.3f} pairs/s = {result['efficiency']:.2f} of the bound; rollout samples "
          f"at {result['rollout_tokens_per_s_in_run_over_alone']:.2f} of its speed alone")
    losses = result["rollout_losses"]
    print(f"rollout tokens per wall second, in run over alone {losses['rollout_tokens_per_s_in_run_over_alone_wall']:.2f}"
          f" ≈ engine speed {losses['engine_speed_in_run_over_alone']:.2f} × sampling share of a call "
          f"{losses['sampling_share_of_call']:.2f} × calls in flight {losses['calls_in_flight']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""Rollout tokens/s: osp's rollout actor against bare `vllm.LLM.generate` in this process.

    .venv/bin/python bench/rollout_throughput.py [--model PATH] [--prompts 32] [--k 2] [--max-tokens 24]

Same model, prompts (the shipped training set, chat-formatted), K, max tokens, sampling
settings and CPU thread budget. The actor path adds Ray, the Arrow rollout batch, per-prompt
seeds and log-prob bookkeeping; the ratio says what they cost. The actor is measured first
and killed before the bare engine starts (one engine at a time on the machine).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.env import apply_runtime_env

apply_runtime_env()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import ray
    from transformers import AutoTokenizer

    from actors.rollout import RolloutActor
    from cluster.data.prompts import SHIPPED_TRAIN, load_prompts
    from cluster.driver.ray_setup import init_ray
    from core.config import ModelConfig, RolloutConfig
    from core.models import resolve_model

    model = str(resolve_model(args.model))
    prompts = load_prompts(SHIPPED_TRAIN, AutoTokenizer.from_pretrained(model), 128, "error", args.prompts)
    batch = [{"prompt_id": p.prompt_id, "prompt_index": i, "prompt_text": p.text, "prompt_tokens": list(p.tokens)}
             for i, p in enumerate(prompts)]
    rollout = RolloutConfig(k=args.k, temperature=0.8, top_p=0.95, max_tokens=args.max_tokens)

    init_ray(None, num_cpus=2)
    actor = ray.remote(RolloutActor).options(num_cpus=1).remote(
        model, rollout, ModelConfig(max_prompt_tokens=256 - args.max_tokens - 8), threads=1)
    ray.get(actor.generate.remote(batch[:2])[0])  # warm-up
    tokens, elapsed = 0, 0.0
    for _ in range(args.rounds):
        start = time.perf_counter()
        table = ray.get(actor.generate.remote(batch)[0])
        elapsed += time.perf_counter() - start
        tokens += sum(len(t) for row in table["response_tokens"].to_pylist() for t in row)
    actor_tps = tokens / elapsed
    ray.kill(actor)
    ray.shutdown()

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    import torch
    from vllm import LLM, SamplingParams, TokensPrompt

    torch.set_num_threads(1)  # the actor's budget (num_cpus=1 → OMP_NUM_THREADS=1)
    llm = LLM(model=model, dtype="float32", enforce_eager=True, max_model_len=256,
              kv_cache_memory_bytes=1 << 30, seed=0)
    requests = [TokensPrompt(prompt_token_ids=list(p.tokens)) for p in prompts]
    params = SamplingParams(n=args.k, seed=0, temperature=rollout.temperature, top_p=rollout.top_p,
                            max_tokens=rollout.max_tokens)
    llm.generate(requests[:2], params, use_tqdm=False)
    tokens, elapsed = 0, 0.0
    for _ in range(args.rounds):
        start = time.perf_counter()
        outs = llm.generate(requests, params, use_tqdm=False)
        elapsed += time.perf_counter() - start
        tokens += sum(len(c.token_ids) for o in outs for c in o.outputs)
    bare_tps = tokens / elapsed
    print(f"rollout actor: {actor_tps:.0f} tok/s   bare vLLM LLM.generate: {bare_tps:.0f} tok/s   "
          f"ratio actor/bare: {actor_tps / bare_tps:.2f}x")


if __name__ == "__main__":
    main()

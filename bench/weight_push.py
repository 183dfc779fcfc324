"""Weight push time against a plain memory copy of the same bytes.

    .venv/bin/python bench/weight_push.py [--model PATH] [--repeats 5]

The push a run makes every `sync_every` steps: the merged policy state dict serialised to
safetensors once, `ray.put` into the object store, and a vLLM rollout actor reloading it
(`reload_weights` + CPU repacking + prefix-cache reset). The floor it is measured against:
copying the same bytes in memory once (`bytearray(blob)`) and cloning the state dict's tensors.
Prints each part's median and the ratio push / memcpy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cluster.env import apply_runtime_env  # noqa: E402

apply_runtime_env()


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import ray
    import torch
    from safetensors.torch import save
    from transformers import AutoModelForCausalLM

    from actors.rollout import RolloutWorker
    from cluster.models import resolve_model_path
    from cluster.ray_setup import init_ray
    from learner.policy import merged_state_dict

    model = str(resolve_model_path(args.model))
    state = merged_state_dict(AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32))
    state = {k: v.contiguous() for k, v in state.items()}
    init_ray(None, num_cpus=2)
    engine = ray.remote(RolloutWorker).options(num_cpus=1).remote(model, k=2, temperature=0.8, top_p=1.0,
                                                                  max_tokens=16, max_model_len=256)
    ray.get(engine.info.remote())

    blob = save(state)
    serialise = median_time(lambda: save(state), args.repeats)
    put = median_time(lambda: ray.put(blob), args.repeats)
    ref = ray.put(blob)
    loads, ends = [], []
    for v in range(args.repeats):
        start = time.perf_counter()
        out = ray.get(engine.update_weights.remote([ref], v + 1))
        ends.append(time.perf_counter() - start)
        loads.append(out["load_s"])
    memcpy = median_time(lambda: bytearray(blob), args.repeats)
    clone = median_time(lambda: {k: v.clone() for k, v in state.items()}, args.repeats)
    push = serialise + put + statistics.median(ends)
    mib = len(blob) / 2**20
    print(f"weights: {mib:.0f} MiB ({len(state)} tensors)")
    print(f"push:   serialise {serialise:.3f}s + ray.put {put:.3f}s + engine load {statistics.median(ends):.3f}s "
          f"(of which reload_weights {statistics.median(loads):.3f}s) = {push:.3f}s")
    print(f"memcpy: bytearray copy {memcpy:.3f}s ({mib / memcpy:.0f} MiB/s), state-dict clone {clone:.3f}s")
    print(f"ratio push / memcpy: {push / memcpy:.1f}x; push / clone: {push / clone:.1f}x")
    ray.kill(engine)


if __name__ == "__main__":
    main()

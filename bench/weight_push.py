"""Weight push time against a plain memory copy of the same bytes, for each payload.

    .venv/bin/python bench/weight_push.py [--model PATH] [--repeats 5] [--json OUT]

The push a run makes every `sync_every` steps, timed from the learner's weights to an engine
sampling with them: export (merge + `ray.put` of a `core.weights` dict) and a vLLM
rollout actor loading it (fetch from the object store, `reload_weights` with CPU repacking,
prefix-cache reset). Three payloads, one engine, one after the other:
- `full` — the merged state dict as numpy arrays (what a run without LoRA pushes);
- `adapter` — the LoRA factors only; the engine merges them into its SFT weights (LoRA's default);
- `safetensors` — the full state dict serialised to bytes (the push before this payload format;
  still how checkpoints load), for comparison.
The floor: one memcpy of the full weights' bytes, into fresh memory (`bytearray`, the ratio's
denominator) and into memory already touched (bare bandwidth), and a state-dict clone.
The LoRA adapter's B matrices are drawn at random so the merge does real work.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from core.env import apply_runtime_env

apply_runtime_env()


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_push(engine, export, repeats: int, first_version: int) -> dict[str, float]:
    """Median export, engine load (of which the engine's own reload) and total."""
    import ray

    exports, ends, loads = [], [], []
    for i in range(repeats):
        start = time.perf_counter()
        ref, size = export()
        exported = time.perf_counter()
        out = ray.get(engine.update_weights.remote([ref], first_version + i))
        ends.append(time.perf_counter() - exported)
        exports.append(exported - start)
        loads.append(out["load_s"])
    total = statistics.median(e + d for e, d in zip(exports, ends))
    return {"export_s": statistics.median(exports), "engine_s": statistics.median(ends),
            "engine_reload_s": statistics.median(loads), "total_s": total, "bytes": float(size)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()

    import ray
    import torch
    from safetensors.torch import save

    from actors.rollout import RolloutActor
    from cluster.driver.ray_setup import init_ray
    from core.config import LoraConfig, ModelConfig, RolloutConfig
    from core.models import resolve_model
    from core.weights import payload_bytes
    from learner.policy import build_policy, merged_state_dict, policy_payload

    model = str(resolve_model(args.model))
    torch.manual_seed(0)
    lm = build_policy(model, "float32", LoraConfig(r=8, alpha=16)).lm  # every projection, as the default run
    with torch.no_grad():
        for name, p in lm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    init_ray(None, num_cpus=2)
    engine = ray.remote(RolloutActor).options(num_cpus=1).remote(
        model, RolloutConfig(k=2, temperature=0.8, top_p=1.0, max_tokens=16), ModelConfig(max_prompt_tokens=232), threads=1)
    ray.get(engine.info.remote())

    def export(kind):  # what LearnerRank.export_weights does on rank 0
        payload = policy_payload(lm, kind)
        return ray.put(payload), payload_bytes(payload)

    def export_safetensors():
        blob = save(merged_state_dict(lm))
        return ray.put(blob), len(blob)

    results = {
        "full": time_push(engine, lambda: export("full"), args.repeats, 1),
        "adapter": time_push(engine, lambda: export("adapter"), args.repeats, 100),
        "safetensors": time_push(engine, export_safetensors, args.repeats, 200),
    }
    state = merged_state_dict(lm)
    blob = save(state)
    # Two floors: a copy into fresh memory (what any transfer pays: the destination's pages are
    # new) and a copy into memory already touched (bare memory bandwidth, the stricter one).
    memcpy = median_time(lambda: bytearray(blob), args.repeats)
    source = np.frombuffer(blob, dtype=np.uint8)
    target = np.empty_like(source)
    np.copyto(target, source)
    memcpy_warm = median_time(lambda: np.copyto(target, source), args.repeats)
    clone = median_time(lambda: {k: v.clone() for k, v in state.items()}, args.repeats)
    mib = len(blob) / 2**20
    print(f"full weights: {mib:.0f} MiB ({len(state)} tensors); adapter: {results['adapter']['bytes'] / 2**20:.1f} MiB")
    print(f"memcpy of the full bytes into fresh memory {memcpy:.3f}s ({mib / memcpy:.0f} MiB/s), into touched memory "
          f"{memcpy_warm:.3f}s ({mib / memcpy_warm:.0f} MiB/s); state-dict clone {clone:.3f}s")
    for name, r in results.items():
        print(f"{name:12s} export {r['export_s']:.3f}s + engine {r['engine_s']:.3f}s (reload {r['engine_reload_s']:.3f}s) "
              f"= {r['total_s']:.3f}s = {r['total_s'] / memcpy:.1f}x memcpy; transfer alone "
              f"(push minus the engine's reload) {(r['total_s'] - r['engine_reload_s']) / memcpy:.2f}x memcpy")
    summary = {"full_mib": mib, "memcpy_s": memcpy, "memcpy_warm_s": memcpy_warm, "clone_s": clone, "payloads": results,
               "push_over_warm_memcpy": results["full"]["total_s"] / memcpy_warm,
               "push_over_memcpy": results["full"]["total_s"] / memcpy,
               "transfer_over_memcpy": (results["full"]["total_s"] - results["full"]["engine_reload_s"]) / memcpy}
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    ray.kill(engine)


if __name__ == "__main__":
    main()

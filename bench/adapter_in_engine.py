"""How the rollout engine should apply a LoRA adapter: vLLM's own LoRA, or merged weights.

    .venv/bin/python bench/adapter_in_engine.py [--model PATH]

Two fresh engines, one after the other, same prompts (8 × K=4 × 48 tokens, ignore_eos, 1
thread): one with plain weights (what `weight_sync.payload=adapter` leaves in the engine after
merging W0 + s·B·A), one with `enable_lora` sampling under an active adapter (what a vLLM
LoRA push would leave). Prints sampling tokens/s of each, their ratio, and add_lora's time
(the push cost of vLLM's way). The adapter is the default LoRA (r=8 on all 7 projections)
with random B, saved by peft.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def measure(mode: str, model: str, adapter: str) -> dict:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from core.env import apply_runtime_env

    apply_runtime_env()
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams, TokensPrompt
    from vllm.lora.request import LoRARequest

    from core.chat import ChatEncoder

    chat = ChatEncoder(AutoTokenizer.from_pretrained(model))  # as the run encodes prompts (core/chat.py)
    requests = [TokensPrompt(prompt_token_ids=chat.user_prompt(f"Tell me about topic number {i} in two sentences."))
                for i in range(8)]
    params = SamplingParams(n=4, max_tokens=48, temperature=0.8, seed=0, ignore_eos=True)
    kwargs = dict(model=model, dtype="float32", enforce_eager=True, max_model_len=512, kv_cache_memory_bytes=1 << 30, seed=0)
    out: dict = {"mode": mode}
    lora = None
    if mode == "vllm_lora":
        llm = LLM(enable_lora=True, max_loras=2, max_lora_rank=8, **kwargs)
        adds = []
        for version in (1, 2, 3):
            start = time.perf_counter()
            llm.llm_engine.add_lora(LoRARequest(f"v{version}", version, adapter))
            adds.append(time.perf_counter() - start)
        out["add_lora_s"] = sorted(adds)[1]
        lora = LoRARequest("v3", 3, adapter)
    else:
        llm = LLM(**kwargs)
    llm.generate(requests[:1], SamplingParams(max_tokens=4), lora_request=lora, use_tqdm=False)  # warm-up
    times = []
    for _ in range(3):
        start = time.perf_counter()
        outputs = llm.generate(requests, params, lora_request=lora, use_tqdm=False)
        times.append(time.perf_counter() - start)
    tokens = sum(len(c.token_ids) for o in outputs for c in o.outputs)
    out.update(tokens=tokens, seconds=times, tokens_per_s=tokens / sorted(times)[1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--mode", choices=["merged", "vllm_lora"], help=argparse.SUPPRESS)  # a child run
    parser.add_argument("--adapter", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print("RESULT " + json.dumps(measure(args.mode, args.model, args.adapter)), flush=True)
        return
    import torch

    from core.config import LoraConfig
    from core.models import resolve_model
    from learner.policy import build_policy

    model = str(resolve_model(args.model))
    torch.manual_seed(0)
    lm = build_policy(model, "float32", LoraConfig(r=8, alpha=16, target_modules=TARGETS)).lm
    with torch.no_grad():
        for name, p in lm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    adapter = tempfile.mkdtemp(prefix="bench-adapter-")
    lm.save_pretrained(adapter)
    del lm
    results = {}
    for mode in ("merged", "vllm_lora"):  # separate processes: each engine gets the machine alone
        env = dict(os.environ, OMP_NUM_THREADS="1")
        proc = subprocess.run([sys.executable, __file__, "--model", model, "--mode", mode, "--adapter", adapter],
                              env=env, capture_output=True, text=True, check=True)
        line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
        results[mode] = json.loads(line.removeprefix("RESULT "))
    ratio = results["vllm_lora"]["tokens_per_s"] / results["merged"]["tokens_per_s"]
    print(json.dumps(results, indent=1))
    print(f"sampling tokens/s: merged weights {results['merged']['tokens_per_s']:.1f}, vLLM LoRA "
          f"{results['vllm_lora']['tokens_per_s']:.1f} (ratio {ratio:.2f}); add_lora {results['vllm_lora']['add_lora_s']:.3f}s")


if __name__ == "__main__":
    main()

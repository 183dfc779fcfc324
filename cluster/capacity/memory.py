"""Each role's memory, estimated from the model's config and the run's config, before anything loads.

The model is built on PyTorch's meta device from its config.json (no weights, under a second for
an 8B model), so parameter counts are exact for any architecture transformers knows. The
estimates (bytes; `b` = bytes per element of model.dtype, P parameters, T trainable ones, N
learner ranks):

- learner rank: the frozen base weights (LoRA: P·b, P·b/N under ZeRO-3), the trainable states
  (T params, grads and AdamW under the ZeRO stage: DeepSpeed's own estimators for ZeRO-2/3 in
  mixed precision, the same accounting written out for fp32 and ZeRO-0/1), and the activations
  of one micro-batch kept for backward (2 sequences a pair; per token and layer 6h + 2·kv + 4·I
  elements for a Llama-shaped block, plus the response-only LM head's logits in fp32);
- judge: the frozen SFT model (the reference and, for the self-judge, the judge), the judge
  model of `lm:`/`reward:` kinds, and one judging batch's activations;
- rollout: vLLM's share of each of its GPUs (`gpu_memory_utilization`), inside which its weight
  shard and the KV cache must fit; on CPU the weights plus `kv_cache_gib`;
- each process's own footprint (Python, torch and the libraries: measured on the CPU main job,
  docs/capacity.md) and, on a GPU, its CUDA context.

Activations assume an attention kernel that stores no score matrix (SDPA); with
learner.gradient_checkpointing only each layer's input is kept, plus one layer's activations
while it is recomputed. They are the least certain part, printed apart so a user can see it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from core.config import Config, LoraConfig

GB = 1e9
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# A process's own footprint before any model: Python, torch and the role's libraries (peak RSS
# after importing them, measured on the CPU stack: torch+transformers+peft+DeepSpeed 0.57 GB,
# torch+transformers 0.25 GB plus Ray's worker, torch+vLLM 0.42 GB; docs/capacity.md).
PROCESS_BYTES = {"learner": 0.6 * GB, "judge": 0.4 * GB, "rollout": 0.5 * GB}
CUDA_CONTEXT_BYTES = 1.0 * GB  # the CUDA context, cuBLAS/NCCL workspaces of a process on one GPU


@dataclass(frozen=True)
class ModelShape:
    """What the estimates need of a model, read off its meta-device build."""

    params: int  # unique parameters (a tied LM head counted once)
    largest_layer_params: int  # the largest module's own parameters (ZeRO-3 gathers one at a time)
    layers: int
    hidden: int
    intermediate: int
    kv_dim: int  # key/value heads × head_dim
    vocab: int
    # LoRA: for each linear module name suffix (q_proj, …), the sum of in + out features over
    # the modules with that suffix: a rank-r adapter on them has r × this many parameters.
    linear_in_out: dict[str, int] = field(default_factory=dict)

    def lora_params(self, lora: LoraConfig) -> int:
        return lora.r * sum(self.linear_in_out.get(name, 0) for name in lora.target_modules)

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return 2 * self.layers * self.kv_dim * dtype_bytes


def model_shape(folder: str | Path) -> ModelShape:
    """The shape of the model whose config.json is in `folder` (no weights are read)."""
    import torch
    from torch import nn
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(folder))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    in_out: dict[str, int] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name != "lm_head":
            suffix = name.rsplit(".", 1)[-1]
            in_out[suffix] = in_out.get(suffix, 0) + module.in_features + module.out_features
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return ModelShape(
        params=sum(p.numel() for p in model.parameters()), largest_layer_params=largest,
        layers=text.num_hidden_layers, hidden=text.hidden_size,
        intermediate=getattr(text, "intermediate_size", 4 * text.hidden_size), kv_dim=kv_heads * head_dim,
        vocab=text.vocab_size, linear_in_out=in_out)


@dataclass
class Estimate:
    """One actor's memory: `parts` on its device (per GPU for a GPU actor, else in RAM) and what
    it needs in RAM besides (`host`: its process, and a GPU learner's weights while loading)."""

    device: str  # "GPU" or "RAM"
    parts: dict[str, float]
    host: float = 0.0
    notes: list[str] = field(default_factory=list)
    shortfalls: list[str] = field(default_factory=list)  # what cannot work wherever it is placed

    @property
    def on_device(self) -> float:
        return sum(self.parts.values())

    @property
    def ram(self) -> float:
        """What the actor takes of its node's RAM."""
        return self.host + (self.on_device if self.device == "RAM" else 0.0)


def _trainable_states(trainable: int, largest: int, ranks: int, zero: int, dtype_bytes: int) -> float:
    """Bytes per rank of the trainable parameters, their gradients and AdamW's states."""
    if dtype_bytes == 2 and zero in (2, 3):  # mixed precision: DeepSpeed's own estimators
        if zero == 2:
            from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

            return float(estimate_zero2_model_states_mem_needs(trainable, ranks, 1, cpu_offload=False)[1])
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

        return float(estimate_zero3_model_states_mem_needs(trainable, largest, ranks, 1, cpu_offload=False,
                                                           cpu_offload_params=False, zero_init=True)[1])
    if dtype_bytes == 2:  # DeepSpeed's multipliers: 2 (bf16 params) + 2 (bf16 grads) + 16 (fp32 grads, master, m, v)
        return float(4 * trainable + 16 * trainable / (ranks if zero == 1 else 1))
    # fp32: params 4, grads 4, m and v 8; ZeRO-1/2 keep an fp32 copy of their partition (4).
    if zero == 0:
        return 16.0 * trainable
    if zero == 1:
        return 8.0 * trainable + 12.0 * trainable / ranks
    if zero == 2:
        return 4.0 * trainable + 16.0 * trainable / ranks
    return 16.0 * trainable / ranks + 4.0 * largest


def learner_estimate(cfg: Config, shape: ModelShape) -> Estimate:
    l, b = cfg.learner, DTYPE_BYTES[cfg.model.dtype]
    lora = l.lora.enabled
    trainable = shape.lora_params(l.lora) if lora else shape.params
    frozen = shape.params if lora else 0
    frozen_bytes = frozen * b / (l.num_ranks if l.zero_stage == 3 else 1)
    sequences = 2 * l.pairs_per_step // l.num_ranks
    tokens = cfg.model.max_prompt_tokens + cfg.rollout.max_tokens
    per_token_layer = 6 * shape.hidden + 2 * shape.kv_dim + 4 * shape.intermediate
    if l.gradient_checkpointing:  # each layer's input kept, one layer's activations live at a time
        activations = sequences * tokens * (shape.layers * shape.hidden + per_token_layer) * b
    else:
        activations = sequences * tokens * shape.layers * per_token_layer * b
    logits = sequences * cfg.rollout.max_tokens * shape.vocab * (b + 8)  # logits, fp32 log-softmax and its grad
    parts = {"weights": frozen_bytes,
             "trainable": _trainable_states(trainable, shape.largest_layer_params if not lora else 0, l.num_ranks,
                                            l.zero_stage, b),
             "activations": activations + logits}
    notes = [f"{'LoRA r=' + str(l.lora.r) if lora else 'full fine-tuning'}: {trainable / 1e6:,.1f}M trainable of "
             f"{shape.params / 1e6:,.1f}M, ZeRO-{l.zero_stage} over {l.num_ranks} rank(s)"]
    if l.gpus_per_rank > 0:
        parts["cuda"] = CUDA_CONTEXT_BYTES
        # Each rank reads the whole model into RAM before DeepSpeed moves its share to the GPU.
        return Estimate("GPU", parts, PROCESS_BYTES["learner"] + shape.params * b, notes)
    return Estimate("RAM", parts, PROCESS_BYTES["learner"], notes)


def judge_estimate(cfg: Config, shape: ModelShape, judge_shape: ModelShape | None = None) -> Estimate:
    """The judge actor: the SFT model (always: the reference), a separate judge model for the
    lm:/reward: kinds (`judge_shape`), and one batch's transient activations."""
    b = DTYPE_BYTES[cfg.model.dtype]
    batch = cfg.judge.batch_size
    tokens = 2 * (cfg.model.max_prompt_tokens + cfg.rollout.max_tokens)  # a judging prompt holds two answers
    activations = batch * tokens * 2 * (shape.hidden + shape.intermediate) * b
    logits = batch * cfg.rollout.max_tokens * shape.vocab * (b + 4)
    parts = {"weights": shape.params * b, "activations": activations + logits}
    if judge_shape is not None:
        parts["judge model"] = judge_shape.params * 4  # lm:/reward: judges load in their own (fp32) dtype
    if cfg.judge.gpus_per_actor > 0:
        parts["cuda"] = CUDA_CONTEXT_BYTES
        return Estimate("GPU", parts, PROCESS_BYTES["judge"] + parts["weights"])
    return Estimate("RAM", parts, PROCESS_BYTES["judge"])


def rollout_estimate(cfg: Config, shape: ModelShape, gpu_memory: float | None) -> Estimate:
    """A vLLM engine: on GPU it claims gpu_memory_utilization of each of its tensor-parallel GPUs
    (`gpu_memory`: one GPU's bytes, None if unknown), and its weight shard and one sequence's KV
    cache must fit inside; on CPU, the weights plus the configured KV cache."""
    r, b = cfg.rollout, DTYPE_BYTES[cfg.model.dtype]
    tp = r.tensor_parallel_size
    weights = shape.params * b / tp
    max_len = cfg.model.max_prompt_tokens + r.max_tokens + 8
    one_sequence_kv = max_len * shape.kv_bytes_per_token(b) / tp
    if r.gpus_per_actor > 0:
        if gpu_memory is None:
            return Estimate("GPU", {"weights": weights, "kv cache": one_sequence_kv, "cuda": CUDA_CONTEXT_BYTES},
                            PROCESS_BYTES["rollout"], ["GPU memory unknown: vLLM's share not checked"])
        claimed = r.gpu_memory_utilization * gpu_memory
        kv = claimed - weights - CUDA_CONTEXT_BYTES
        estimate = Estimate("GPU", {"weights": weights, "kv cache": max(kv, 0.0), "cuda": CUDA_CONTEXT_BYTES},
                            PROCESS_BYTES["rollout"],
                            [f"vLLM claims {r.gpu_memory_utilization:g} of each of its {tp} GPU(s); KV cache ≈ "
                             f"{max(kv, 0) / GB:.1f} GB a GPU, {max(kv, 0) / one_sequence_kv:,.0f} sequences of "
                             f"{max_len} tokens"])
        if kv < one_sequence_kv:
            estimate.shortfalls.append(
                f"vLLM's share of a GPU ({r.gpu_memory_utilization:g} × {gpu_memory / GB:.1f} GB = {claimed / GB:.1f} GB) "
                f"leaves {kv / GB:.2f} GB for the KV cache after its weight shard ({weights / GB:.1f} GB); one sequence of "
                f"{max_len} tokens needs {one_sequence_kv / GB:.2f} GB: {(one_sequence_kv - kv) / GB:.2f} GB short "
                "(raise rollout.gpu_memory_utilization or rollout.tensor_parallel_size)")
        return estimate
    kv = r.kv_cache_gib * (1 << 30)
    # vLLM-CPU repacks the linear layers' weights for its GEMM kernels after loading: two copies.
    estimate = Estimate("RAM", {"weights": 2 * weights, "kv cache": kv}, PROCESS_BYTES["rollout"])
    if kv < one_sequence_kv:
        estimate.shortfalls.append(f"rollout.kv_cache_gib={r.kv_cache_gib:g} holds less than one sequence of {max_len} tokens "
                                   f"({one_sequence_kv / (1 << 20):.2f} MiB)")
    return estimate


def read_memory_report(run_dir: str | Path) -> dict[str, float]:
    """The measured peak RSS of each actor of a finished run (its memory.json), by actor name."""
    return {k: float(v) for k, v in json.loads((Path(run_dir) / "memory.json").read_text())["peak_rss_bytes"].items()}

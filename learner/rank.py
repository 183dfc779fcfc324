"""One DeepSpeed rank of the learner group (a Ray actor per rank, wrapped by cluster.driver.actors).

Each rank receives its shard of the step's pairs as an Arrow table, computes the configured
preference loss against the reference log-probs carried in the pairs (so no reference model
is held), and steps. Rank 0 exports the weights (merged, or the LoRA adapter alone) for the rollout engines.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pyarrow as pa
import ray
import torch

from core.config import Config
from core.env import apply_runtime_env, disable_deepspeed_shm_comm, peak_rss_bytes, thread_report, use_cores
from core.logprobs import pack_right_padded, sequence_logprobs, token_logprobs
from core.models import resolve_model, weight_bytes
from core.net import bind_gloo_to, node_address_and_free_port, tcp_store
from core.records import validate_pair_batch
from core.refs import fetch
from core.tokens import pad_token_id
from core.versions import installed
from core.weights import join_group, payload_bytes, send_tensors, spec_of
from learner.losses import (
    batch_mean,
    decided,
    length_normalized,
    preference_diagnostics,
    preference_margin,
    reward_metrics,
    rpo_nll,
)
from learner.policy import build_policy, merged_state_dict, policy_payload
from learner.rank_checkpoint import RankCheckpoints, save_no_frozen_alias


def deepspeed_config(micro_batch: int, zero_stage: int, grad_clip: float, dtype: str) -> dict[str, Any]:
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": grad_clip,
        "zero_optimization": {"stage": zero_stage},
        # Our own torch AdamW: DeepSpeed's cpu_adam/fused_adam need a 2-min JIT build on CPU.
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": dtype == "bfloat16"},
        "fp16": {"enabled": dtype == "float16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


@dataclass(frozen=True)
class RankGroup:
    """The learner group a rank joins: its size and the first rank's TCP store."""

    world_size: int
    master_addr: str
    master_port: int


class LearnerRank(RankCheckpoints):
    def __init__(self, rank: int, group: RankGroup, model_ref: str | None, cfg: Config, method, threads: int | None = None):
        """`model_ref`: the policy's model (core/models: a pinned hub id, a local folder, or None for
        the embedded default), resolved on this rank's node; `cfg`: the run's config (the learner
        section, the model's dtype, the seed, the loss's parameters); `method` (a
        cluster.methods.Method, passed by the driver): the loss, the labels it reads and any
        auxiliary term with its head."""
        learner, dtype, seed = cfg.learner, cfg.model.dtype, cfg.seed
        world_size, master_addr, master_port = group.world_size, group.master_addr, group.master_port
        apply_runtime_env()
        os.environ.update(
            RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR=master_addr, MASTER_PORT=str(master_port),
            LOCAL_RANK="0" if not torch.cuda.is_available() else os.environ.get("LOCAL_RANK", "0"))
        use_cores(threads)
        # Lazy (here and below): DeepSpeed and transformers read the environment applied just
        # above at import, and the driver imports this module without needing either.
        import deepspeed

        disable_deepspeed_shm_comm()
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        # The group's store is served on the first rank's node address only, and gloo uses this
        # node's own interface (core/net.py): nothing of the learner listens beyond them.
        # DeepSpeed adopts a process group that is already initialised.
        bind_gloo_to(ray.util.get_node_ip_address())
        store = tcp_store(master_addr, master_port, rank, world_size, timedelta(minutes=30))
        torch.distributed.init_process_group(backend, store=store, rank=rank, world_size=world_size,
                                             timeout=timedelta(minutes=30))
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)
        torch.manual_seed(seed + rank)
        self.rng = random.Random(seed * 9973 + rank)
        self.rank, self.world_size = rank, world_size
        self.learner_cfg, self.loss_cfg, self.method = learner, cfg.loss, method
        from transformers import AutoTokenizer

        # `model_ref` (core/models: a pinned hub id, a local folder, or None for the embedded
        # default) is resolved on this rank's node: no shared filesystem needed for the model.
        self.model_folder = str(resolve_model(model_ref))
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_folder)
        self.pad_id = pad_token_id(self.tokenizer)
        policy = build_policy(self.model_folder, dtype, learner.lora, method.degree_classes, learner.gradient_checkpointing)
        params = [p for p in policy.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=learner.lr, weight_decay=learner.weight_decay)
        micro = learner.pairs_per_step // world_size
        self.engine, *_ = deepspeed.initialize(
            model=policy,
            optimizer=optimizer,
            config=deepspeed_config(micro, learner.zero_stage, learner.grad_clip, dtype),
        )
        save_no_frozen_alias(self.engine)
        self.steps = 0

    def info(self) -> dict[str, Any]:
        return {"rank": self.rank, "pid": os.getpid(), "steps": self.steps, "peak_rss_bytes": peak_rss_bytes(),
                "versions": installed(), "model_folder": self.model_folder, "model_bytes": weight_bytes(self.model_folder),
                **thread_report()}

    # -- loss ---------------------------------------------------------------------------
    def _forward_loss(self, pairs: pa.Table, decided_in_step: int | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """The step's loss on this rank's shard. `decided_in_step`: pairs with a verdict (p ≠ 0.5)
        in the whole step, all ranks (learner.losses.batch_mean); None: this shard's own."""
        cfg = self.loss_cfg
        convert_start = time.perf_counter()
        cols = pairs.to_pydict()
        convert_s = time.perf_counter() - convert_start
        n = pairs.num_rows
        prompts = cols["prompt_tokens"] * 2
        responses = cols["chosen_tokens"] + cols["rejected_tokens"]
        policy = self.engine.module
        logps = sequence_logprobs(policy.lm, prompts, responses, self.pad_id)
        pc, pr = logps[:n], logps[n:]
        rc = torch.tensor(cols["ref_logp_chosen"], dtype=logps.dtype, device=logps.device)
        rr = torch.tensor(cols["ref_logp_rejected"], dtype=logps.dtype, device=logps.device)
        lengths = torch.tensor([len(t) for t in responses], dtype=torch.float32, device=logps.device)
        sums = (pc, pr, rc, rr)
        if self.method.length_normalize():
            pc, pr, rc, rr = length_normalized(pc, pr, rc, rr, lengths[:n], lengths[n:])
        h = preference_margin(pc, pr, rc, rr)
        p = self.method.labels(torch.tensor(cols["strength"], dtype=logps.dtype, device=logps.device))
        per_pair = self.method.masked_pair_loss(h, p)
        world = 1 if decided_in_step is None else self.world_size
        loss = batch_mean(per_pair, p, decided_in_step, world)
        metrics = {"loss/pref": float(loss.detach()), "pairs/ties": float((~decided(p)).sum())}
        if cfg.nll_weight:
            nll = rpo_nll(logps[:n], logps[n:], lengths[:n], lengths[n:], p)
            loss = loss + cfg.nll_weight * nll
            metrics["loss/nll_preferred"] = float(nll.detach())
        if (aux := self.method.aux_loss(policy, self.tokenizer, self.pad_id, cols, self.rng)) is not None:
            term, aux_metrics = aux
            loss = loss + term
            metrics.update(aux_metrics)
        metrics.update(reward_metrics(pc, pr, rc, rr, cfg.beta))
        metrics.update(preference_diagnostics(sums, p, cfg.beta, (lengths[:n], lengths[n:]), h=h))
        metrics["strength/mean"] = float(p.mean())
        metrics["arrow/convert_s"] = convert_s
        return loss, metrics

    def train_step(self, pairs: pa.Table | list, probe: pa.Table | list | None = None,
                   decided_in_step: int | None = None) -> dict[str, float]:
        """One optimizer step on this rank's shard. `probe`: a fixed batch whose loss is
        measured first (before the step), to watch the loss fall on the same pairs. Either may
        come as [ref] (the driver's put): fetched here, so the fetch is timed with the step.
        `decided_in_step`: the step's pairs with a verdict, all ranks (ties train nothing); a
        step with none is skipped on every rank alike (Adam's momentum would still move the
        weights on a zero gradient)."""
        start = time.perf_counter()
        pairs, probe = fetch(pairs), fetch(probe)
        fetch_s = time.perf_counter() - start
        validate_pair_batch(pairs)
        probe_loss = self.eval_loss(probe) if probe is not None and probe.num_rows else None
        self.engine.train()
        loss, metrics = self._forward_loss(pairs, decided_in_step)
        if decided_in_step != 0:
            self.engine.backward(loss)
            self.engine.step()
        metrics["step/skipped"] = float(decided_in_step == 0)
        self.steps += 1
        metrics["loss"] = float(loss.detach())
        grad_norm = self.engine.get_global_grad_norm()
        if grad_norm is not None:
            metrics["grad_norm"] = float(grad_norm)
        metrics["step_s"] = time.perf_counter() - start
        metrics["arrow/rank_s"] = fetch_s + metrics.pop("arrow/convert_s")
        if probe_loss is not None:
            metrics["loss/probe"] = probe_loss
        metrics["tokens"] = float(sum(len(x) for side in ("chosen_tokens", "rejected_tokens")
                                      for x in pairs[side].to_pylist()))
        return metrics

    @torch.no_grad()
    def eval_loss(self, pairs: pa.Table) -> float:
        """Loss on a fixed batch without stepping (to watch it fall)."""
        self.engine.eval()
        loss, _ = self._forward_loss(pairs)
        return float(loss)

    # -- weights ------------------------------------------------------------------------
    def _gathered(self):
        """Context giving every rank full parameters (a no-op below ZeRO-3)."""
        import deepspeed

        if self.learner_cfg.zero_stage == 3:
            return deepspeed.zero.GatheredParameters(list(self.engine.module.parameters()), modifier_rank=None)
        return contextlib.nullcontext()

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Merged policy weights on rank 0 (all ranks must call: ZeRO-3 gathers)."""
        with self._gathered():
            if self.rank != 0:
                return None
            return {k: v.detach().to("cpu", copy=True) for k, v in merged_state_dict(self.engine.module.lm).items()}

    def export_weights(self, payload: str = "full") -> dict[str, Any] | None:
        """Rank 0: put the weights in the object store as a `core.weights` dict:
        `full` (the merged policy) or `adapter` (the LoRA factors only). All ranks call it
        (ZeRO-3 gathers); one copy, into the store, inside the gather."""
        start = time.perf_counter()
        with self._gathered():
            if self.rank != 0:
                return None
            out = policy_payload(self.engine.module.lm, payload)
            ref = ray.put(out)
        return {"ref": [ref], "bytes": payload_bytes(out), "export_s": time.perf_counter() - start}

    def free_port(self) -> tuple[str, int]:
        """This node's address and a free port, for the weight group's TCP store."""
        return node_address_and_free_port()

    def join_weight_group(self, host: str, port: int, world_size: int, backend: str) -> bool:
        self.weight_group = join_group(host, port, 0, world_size, backend)
        return True

    def weight_spec(self):
        state = self.full_state_dict()
        return None if state is None else spec_of(state)

    def broadcast_weights(self) -> dict[str, float] | None:
        """Rank 0 broadcasts the merged weights to the engines in the weight group."""
        start = time.perf_counter()
        state = self.full_state_dict()
        if state is None:
            return None
        sent = send_tensors(self.weight_group, state)
        return {"bytes": float(sent), "broadcast_s": time.perf_counter() - start}

    def logprobs_of(self, prompt_tokens: list[int], response_tokens: list[int]) -> list[float]:
        """Per-token log-probs under the learner's current weights: what the rollout engines must
        compute after a push (cluster/driver/weight_sync.check_push)."""
        with torch.no_grad(), self._gathered():
            self.engine.eval()
            ids, attn, resp = pack_right_padded([prompt_tokens], [response_tokens], self.pad_id)
            device = next(self.engine.module.parameters()).device
            logits = self.engine.module.lm(input_ids=ids.to(device), attention_mask=attn.to(device), use_cache=False).logits
            per = token_logprobs(logits, ids.to(device))[0].cpu()
            return per[resp[0, 1:]].tolist()

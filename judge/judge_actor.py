"""Judge worker: turns a rollout batch into a pair batch.

For every prompt it (1) judges its K responses with the configured judge kind (the frozen
SFT self-judge by default; judge/preferences.py), (2) applies ranked pairing, and (3)
computes the SFT log-probs of each kept response (the SPCE reference). All judge calls of a
batch are made together, whatever the pairing needs. It also reports what the fresh samples
are like: the share cut at max_tokens and, on prompts with verifiable instructions, the
share that follows all of them (the signal a user watches rise).
"""

from __future__ import annotations

import os
import time
from typing import Any

import pyarrow as pa
import ray
import torch

from core.chat import ChatEncoder
from core.config import TRUNCATED, Config
from core.env import apply_runtime_env, peak_rss_bytes, thread_report, use_cores
from core.logprobs import sequence_logprobs
from core.models import resolve_model, weight_bytes
from core.records import pair_batch, validate_rollout_batch
from core.tokens import pad_token_id
from core.versions import installed
from judge.pairing import JudgedPair
from judge.preferences import base_judge, make_preference
from judge.repetition import repeated_share
from judge.verifier import parse_instructions, verify


class JudgeActor:
    """Judges rollout batches with `judge.kind` (judge/preferences.py); the SFT model `model_ref`
    is always loaded: it makes the `sft_greedy` anchor and, unless the method's reference is the
    sampling policy, the reference log-probs, whatever the judge kind."""

    def __init__(self, model_ref: str | None, cfg: Config, method, *, threads: int | None = None,
                 instructions: dict[str, dict] | str | None = None):
        """`model_ref`: the SFT model (core/models: a pinned hub id, a local folder, or None for the
        embedded default), resolved on this actor's node, as is an lm:/reward: judge's model;
        `cfg`: the run's config (the judge section: who judges and how; the model's dtype and
        chat template, the one the rollout prompts were encoded with on the driver; the answers'
        length, for the sft_greedy anchor; the seed of noisy judges); `method` (a
        cluster.methods.Method, passed by the driver): which pairs K answers become and whose
        log-probs are the reference; `instructions`: prompt text → its IFEval instructions (JSON
        form), or the name of the actor that holds them (cluster/driver/actors.SharedValue)."""
        judge, model, seed = cfg.judge, cfg.model, cfg.seed
        dtype = model.dtype
        apply_runtime_env()
        # Lazy: transformers reads the environment applied just above at import (the hub settings),
        # and the driver imports this module to create the actor without needing it.
        from transformers import AutoModelForCausalLM, AutoTokenizer

        use_cores(threads)
        self.model_folder = str(resolve_model(model_ref))
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_folder)
        self.chat = ChatEncoder(self.tokenizer, model.chat_template)
        # On a GPU actor (judge.gpus_per_actor > 0) Ray exposes one CUDA device: use it.
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModelForCausalLM.from_pretrained(self.model_folder, dtype=getattr(torch, dtype)).to(self.device)
        self.model.eval().requires_grad_(False)
        self.pad_id = pad_token_id(self.tokenizer)
        # Prompt text → its verifiable instructions (prompt files in IFEval format): the
        # verifier judge's input, and the per-batch pass rate of fresh samples for any kind.
        # From the driver by name: a named actor holds it (a restarted judge fetches it again).
        if isinstance(instructions, str):
            instructions = ray.get(ray.get_actor(instructions).get.remote())
        self.instructions = {text: parse_instructions(v["instruction_id_list"], v["kwargs"])
                             for text, v in (instructions or {}).items()}
        self.preference = make_preference(judge, self.model, self.chat, instructions=self.instructions, seed=seed,
                                          dtype=dtype)
        self.method, self.anchor, self.batch_size = method, judge.anchor, judge.batch_size
        self.drop_ties = judge.drop_ties
        if judge.truncated not in TRUNCATED:
            raise ValueError(f"judge truncated must be one of {TRUNCATED}, got {judge.truncated!r}")
        self.truncated = judge.truncated
        self.anchor_max_tokens = cfg.rollout.max_tokens
        self.comparisons = 0

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "comparisons": self.comparisons, "judge": self.preference.name,
                "peak_rss_bytes": peak_rss_bytes(), "versions": installed(), "model_folder": self.model_folder,
                "model_bytes": weight_bytes(self.model_folder), **thread_report()}

    # -- judging -----------------------------------------------------------------------
    def strengths(self, requests: list[tuple[str, str, str]]) -> list[float]:
        """p(a ≻ b) for (prompt, a, b) triples, from the configured judge kind."""
        if not requests:
            return []
        prompts, a, b = (list(x) for x in zip(*requests))
        self.comparisons += len(requests)
        return [float(p) for p in self.preference.compare(prompts, a, b)]

    @torch.no_grad()
    def greedy_answers(self, prompt_tokens: list[list[int]]) -> list[str]:
        """The SFT model's greedy answer to each prompt (the 'sft_greedy' anchor)."""
        answers = []
        for tokens in prompt_tokens:
            ids = torch.tensor([tokens], device=self.device)
            out = self.model.generate(ids, max_new_tokens=self.anchor_max_tokens, do_sample=False, pad_token_id=self.pad_id)
            answers.append(self.tokenizer.decode(out[0, len(tokens) :], skip_special_tokens=True))
        return answers

    def _pair_all(self, rows: list[dict[str, Any]]) -> list[list]:
        """Ranked pairing for every row, with all judge calls of a round batched together.

        judge_pairs asks for comparisons through a callback; we answer from a cache and note
        the misses, evaluate all misses in one batched pass, and rerun until none are left
        (1 round for round_robin, 2 for anchored pairing). Once a row has missed in a round,
        its later calls depend on answers it has not had yet (placeholders), so they are
        not judged: every comparison made is one the pairing really needs.
        """
        anchors = [None] * len(rows)
        if self.anchor == "sft_greedy":
            anchors = self.greedy_answers([r["prompt_tokens"] for r in rows])
        cache: dict[tuple[str, str, str], float] = {}
        for _ in range(4):
            misses: list[tuple[str, str, str]] = []
            results = []
            for row, anchor in zip(rows, anchors):
                prompt = row["prompt_text"]
                waiting = [False]  # this row has missed this round: what it asks next is moot

                def judge_fn(pairs, prompt=prompt, waiting=waiting, misses=misses):
                    keys = [(prompt, a, b) for a, b in pairs]
                    if not waiting[0]:
                        for key in keys:
                            if key not in cache:
                                waiting[0] = True
                                if key not in misses:
                                    misses.append(key)
                    return [cache.get(key, 0.5) for key in keys]

                results.append(self.method.pair(row["response_texts"], judge_fn, anchor))
            if not misses:
                return results
            cache.update(zip(misses, self.strengths(misses)))
        raise RuntimeError("ranked pairing did not settle in 4 judging rounds")

    @torch.no_grad()
    def reference_logprobs(self, prompts: list[list[int]], responses: list[list[int]]) -> list[float]:
        out = []
        for start in range(0, len(prompts), self.batch_size):
            out.append(
                sequence_logprobs(
                    self.model, prompts[start : start + self.batch_size], responses[start : start + self.batch_size],
                    self.pad_id,
                ).double().cpu()
            )
        return torch.cat(out).tolist() if out else []

    def score(self, rollout: pa.Table) -> tuple[pa.Table, dict[str, float]]:
        """Rollout batch → (pair batch, stats). A prompt may yield no pair (ties dropped, a
        method's margin)."""
        start = time.perf_counter()
        validate_rollout_batch(rollout)
        rows = rollout.to_pylist()
        judged = self._pair_all(rows)
        out_rows, ref_prompts, ref_responses = [], [], []
        ties = cut_pairs = 0
        for row, pairs in zip(rows, judged):
            for pair in pairs:
                cut = [row["finish_reasons"][i] == "length" for i in (pair.chosen, pair.rejected)]
                if any(cut):
                    cut_pairs += 1
                    if self.truncated == "drop":
                        continue
                    if self.truncated == "lose" and cut[0] != cut[1]:  # the complete answer wins outright
                        complete, cut_one = (pair.rejected, pair.chosen) if cut[0] else (pair.chosen, pair.rejected)
                        pair = JudgedPair(complete, cut_one, 1.0)
                if pair.strength == 0.5:
                    ties += 1
                    if self.drop_ties:  # no preference, no gradient direction: not worth a learner pass
                        continue
                out_rows.append((row, pair))
                ref_prompts += [row["prompt_tokens"]] * 2
                ref_responses += [row["response_tokens"][pair.chosen], row["response_tokens"][pair.rejected]]
        if self.method.reference == "sft":
            ref = self.reference_logprobs(ref_prompts, ref_responses)
        else:  # the reference is the policy that sampled (its log-probs came with the rollout)
            ref = []
            for row, pair in out_rows:
                ref += [row["response_logprobs"][pair.chosen], row["response_logprobs"][pair.rejected]]
        pairs = []
        for i, (row, pair) in enumerate(out_rows):
            pairs.append(
                {
                    "prompt_id": row["prompt_id"],
                    "prompt_index": row["prompt_index"],
                    "prompt_tokens": row["prompt_tokens"],
                    "chosen_tokens": row["response_tokens"][pair.chosen],
                    "rejected_tokens": row["response_tokens"][pair.rejected],
                    "chosen_text": row["response_texts"][pair.chosen],
                    "rejected_text": row["response_texts"][pair.rejected],
                    "strength": pair.strength,
                    "ref_logp_chosen": ref[2 * i],
                    "ref_logp_rejected": ref[2 * i + 1],
                    "policy_version": row["policy_version"],
                    "source": self.method.source,
                }
            )
        table = pair_batch(pairs) if pairs else None
        stats = {
            "judge_s": time.perf_counter() - start,
            "prompts": float(len(rows)),
            "pairs": float(len(pairs)),
            "pairs_judged": float(sum(len(pairs) for pairs in judged)),  # before drop_ties / truncated=drop
            "ties": float(ties),
            "pairs_with_truncated": float(cut_pairs),
            **self.sample_stats(rows),
            **self.position_stats(),
        }
        return table, stats

    def position_stats(self) -> dict[str, float]:
        """Σ|p_ab − (1 − p_ba)| and the count since the last batch, for an LM judge (else nothing)."""
        judge = base_judge(self.preference)
        if not hasattr(judge, "position_gap_sum"):
            return {}
        out = {"position_gap_sum": judge.position_gap_sum, "position_gap_count": float(judge.position_gap_count)}
        judge.position_gap_sum, judge.position_gap_count = 0.0, 0
        return out

    def sample_stats(self, rows: list[dict[str, Any]]) -> dict[str, float]:
        """Counts over every sampled response: cut at max_tokens, the share of it that repeats
        itself (summed), and (where the prompt has instructions) checked and following all of
        them (IFEval prompt-level, strict)."""
        responses = truncated = checked = passed = 0
        repeated = 0.0
        for row in rows:
            instructions = self.instructions.get(row["prompt_text"])
            for text, reason in zip(row["response_texts"], row["finish_reasons"]):
                responses += 1
                truncated += reason == "length"
                repeated += repeated_share(text)
                if instructions is not None:
                    checked += 1
                    passed += all(verify(text, instructions).strict)
        return {"responses": float(responses), "truncated": float(truncated), "repeated": repeated,
                "verifier_checked": float(checked), "verifier_passed": float(passed)}

"""Judge worker: the frozen SFT model turns a rollout batch into a pair batch.

For every prompt it (1) judges its K responses by the swap-averaged probability of the
answer tokens, (2) applies ranked pairing, and (3) computes the SFT log-probs of each kept
response (the SPCE reference). All judge prompts of a batch are evaluated together in
padded mini-batches, whatever the pairing needs.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pyarrow as pa
import torch

from cluster.env import apply_runtime_env
from cluster.records import pair_batch, validate_rollout_batch
from judge.pairing import judge_pairs
from judge.strength import JudgeTemplate, answer_token_ids, first_is_better, swap_averaged_strength
from learner.logprobs import sequence_logprobs


class JudgeWorker:
    def __init__(
        self,
        model_path: str,
        anchor: str = "round_robin",
        template: str | None = None,
        answer_tokens: tuple[str, str] | list[str] = ("A", "B"),
        batch_size: int = 8,
        dtype: str = "float32",
        dno_margin: float = 0.0,
        reference: str = "sft",
        anchor_max_tokens: int = 32,
        threads: int | None = None,
        reference_path: str | None = None,
    ):
        apply_runtime_env()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(int(threads))
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.template = JudgeTemplate(
            **({"text": template} if template else {}), answer_tokens=tuple(answer_tokens)
        )
        # Fails here, before any pair is made, if the tokenizer splits an answer token.
        self.answer_ids = answer_token_ids(self.tokenizer, self.template.answer_tokens)
        # On a GPU actor (judge.gpus_per_actor > 0) Ray exposes one CUDA device: use it.
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).to(self.device)
        self.model.eval().requires_grad_(False)
        # The SPCE reference is the policy's SFT model. Normally it is the judge itself; with a
        # separate judge model (judge.model_path) the reference is loaded beside it.
        self.reference_model = self.model
        self.reference_pad_id = None  # set below: a padding id valid in the reference's vocabulary
        if reference_path and os.path.realpath(reference_path) != os.path.realpath(model_path):
            self.reference_model = AutoModelForCausalLM.from_pretrained(reference_path, dtype=getattr(torch, dtype)).to(self.device)
            self.reference_model.eval().requires_grad_(False)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id
        if self.reference_pad_id is None:
            # Padding is masked out; it only has to be a valid id (the judge's own pad id may
            # not exist in a separate reference model's vocabulary).
            self.reference_pad_id = self.pad_id if self.reference_model is self.model else 0
        self.anchor, self.batch_size, self.dno_margin = anchor, batch_size, dno_margin
        if reference not in ("sft", "policy"):
            raise ValueError(f"judge reference must be 'sft' or 'policy' (DNO), got {reference!r}")
        self.reference = reference
        self.anchor_max_tokens = anchor_max_tokens
        self.comparisons = 0

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "comparisons": self.comparisons}

    # -- judging -----------------------------------------------------------------------
    @torch.no_grad()
    def first_better_probs(self, rendered: list[list[int]]) -> torch.Tensor:
        """P(first shown is better) for each rendered judge prompt (left-padded batches)."""
        out = []
        for start in range(0, len(rendered), self.batch_size):
            chunk = rendered[start : start + self.batch_size]
            width = max(len(x) for x in chunk)
            ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, seq in enumerate(chunk):  # left padding: the answer is read at the last column
                ids[i, width - len(seq) :] = torch.tensor(seq)
                mask[i, width - len(seq) :] = 1
            # Position ids must count from the first real token, not from the padding.
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                position_ids=positions.to(self.device), logits_to_keep=1).logits[:, -1]
            logits = logits.double().cpu()
            out.append(first_is_better(logits[:, self.answer_ids[0]], logits[:, self.answer_ids[1]]))
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)

    def strengths(self, requests: list[tuple[str, str, str]]) -> list[float]:
        """Swap-averaged p(a ≻ b) for (prompt, a, b) triples."""
        rendered = []
        for prompt, a, b in requests:
            rendered.append(self.template.render(self.tokenizer, prompt, a, b))
            rendered.append(self.template.render(self.tokenizer, prompt, b, a))
        probs = self.first_better_probs(rendered)
        self.comparisons += len(requests)
        return swap_averaged_strength(probs[0::2], probs[1::2]).tolist()

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
        (1 round for round_robin, 2 for anchored pairing).
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

                def judge_fn(pairs, prompt=prompt):
                    keys = [(prompt, a, b) for a, b in pairs]
                    for key in keys:
                        if key not in cache and key not in misses:
                            misses.append(key)
                    return [cache.get(key, 0.5) for key in keys]

                results.append(
                    judge_pairs(row["response_texts"], judge_fn, self.anchor, anchor, self.dno_margin)
                )
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
                    self.reference_model, prompts[start : start + self.batch_size], responses[start : start + self.batch_size],
                    self.reference_pad_id,
                ).double().cpu()
            )
        return torch.cat(out).tolist() if out else []

    def score(self, rollout: pa.Table) -> tuple[pa.Table, dict[str, float]]:
        """Rollout batch → (pair batch, stats). A prompt may yield no pair (DNO margin)."""
        start = time.perf_counter()
        validate_rollout_batch(rollout)
        rows = rollout.to_pylist()
        judged = self._pair_all(rows)
        out_rows, ref_prompts, ref_responses = [], [], []
        for row, pairs in zip(rows, judged):
            for pair in pairs:
                out_rows.append((row, pair))
                ref_prompts += [row["prompt_tokens"]] * 2
                ref_responses += [row["response_tokens"][pair.chosen], row["response_tokens"][pair.rejected]]
        if self.reference == "sft":
            ref = self.reference_logprobs(ref_prompts, ref_responses)
        else:  # DNO: the reference is the policy that sampled this iteration
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
                    "source": self.anchor,
                }
            )
        table = pair_batch(pairs) if pairs else None
        stats = {
            "judge_s": time.perf_counter() - start,
            "prompts": float(len(rows)),
            "pairs": float(len(pairs)),
        }
        return table, stats

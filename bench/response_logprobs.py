"""Response log-probs with the LM head on response positions only, against the full logits.

    .venv/bin/python bench/response_logprobs.py [--model PATH] [--rounds 2]

core/logprobs.sequence_logprobs asks the model for logits only from the shortest prompt's last
token on (`logits_to_keep`); the peer is the same sum over the full logits, as it was computed
before. Both run in this process, alternately, on the same batch (8 rows, prompts of 86-100
tokens, 48 response tokens, the shapes of the main job's learner and judge reference), one
thread: a forward pass under no_grad (the judge's reference) and forward + backward through
every weight (the learner's step). Prints each round's seconds, the ratio, and the largest
difference between the two sums.
"""

from __future__ import annotations

import argparse
import time

import torch


def full_logits_sum(model, prompts, responses, pad_id):
    from core.logprobs import pack_right_padded, token_logprobs

    ids, attention, response = pack_right_padded(prompts, responses, pad_id)
    out = model(input_ids=ids, attention_mask=attention, use_cache=False)
    return (token_logprobs(out.logits, ids) * response[:, 1:]).sum(-1)


def timed(fn, model, prompts, responses) -> tuple[float, float, torch.Tensor]:
    start = time.perf_counter()
    with torch.no_grad():
        sums = fn(model, prompts, responses, 0)
    forward = time.perf_counter() - start
    model.zero_grad()
    start = time.perf_counter()
    fn(model, prompts, responses, 0).sum().backward()
    return forward, time.perf_counter() - start, sums


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a local model folder (default: the embedded SmolLM2)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM

    from core.logprobs import sequence_logprobs
    from core.models import resolve_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(resolve_model(args.model), dtype=torch.float32)
    prompts = [torch.randint(100, 40000, (100 - 7 * (i % 3),)).tolist() for i in range(8)]
    responses = [torch.randint(100, 40000, (48,)).tolist() for _ in range(8)]
    for r in range(args.rounds):
        full_f, full_fb, full = timed(full_logits_sum, model, prompts, responses)
        kept_f, kept_fb, kept = timed(sequence_logprobs, model, prompts, responses)
        print(f"round {r}: forward {full_f:.2f} s full / {kept_f:.2f} s response-only = {kept_f / full_f:.2f}; "
              f"forward+backward {full_fb:.2f} / {kept_fb:.2f} s = {kept_fb / full_fb:.2f}; "
              f"largest |difference| of the sums {(full - kept).abs().max().item():.2e}")


if __name__ == "__main__":
    main()

"""rollout.greedy_sample: answer 0 of each prompt is the policy's greedy answer, the other K − 1
sampled as before; without it the K answers are the seeded samples they always were. One real
vLLM engine (the tiny model), switched between the two on the same weights."""

from __future__ import annotations

import pytest

from core.config import ModelConfig, RolloutConfig

K, MAX_TOKENS, PROMPTS = 4, 12, 6


@pytest.fixture(scope="module")
def engine(tiny_model_dir, tiny_tokenizer):
    from actors.rollout import RolloutActor
    from cluster.data.prompts import load_prompts

    rollout = RolloutActor(tiny_model_dir, RolloutConfig(k=K, temperature=1.0, top_p=1.0, max_tokens=MAX_TOKENS,
                                                         kv_cache_gib=0.25), ModelConfig(max_prompt_tokens=96), seed=3)
    prompts = load_prompts(None, tiny_tokenizer, 96, limit=PROMPTS)
    yield rollout, [p.request(i) for i, p in enumerate(prompts)]
    del rollout


def _seeded_samples(rollout, request: dict, n: int) -> list[list[int]]:
    """The answers a plain vLLM request with the prompt's seed draws: what "sampled as now" means."""
    from vllm import SamplingParams, TokensPrompt

    params = SamplingParams(n=n, seed=rollout.sample_seed(request["prompt_index"]), logprobs=0, **rollout.sampling)
    out = rollout.llm.generate([TokensPrompt(prompt_token_ids=list(request["prompt_tokens"]))], params, use_tqdm=False)[0]
    return [list(c.token_ids) for c in sorted(out.outputs, key=lambda c: c.index)]


@pytest.mark.engine
def test_without_greedy_sample_the_k_answers_are_the_seeded_samples(engine):
    """The default path unchanged: K answers a prompt, each the one a single request with the
    prompt's seed and n = K draws. Would catch the greedy request leaking into the default path,
    or n = K − 1 samples where the option is off."""
    rollout, requests = engine
    assert rollout.greedy_sample is False  # the config's default
    rows = rollout.generate(requests)[0].to_pylist()
    assert [len(r["response_tokens"]) for r in rows] == [K] * PROMPTS
    for row, request in zip(rows, requests):
        assert row["response_tokens"] == _seeded_samples(rollout, request, K)


@pytest.mark.engine
def test_greedy_sample_puts_the_engines_greedy_answer_first(engine):
    """With the option, answer 0 of every prompt is the engine's own greedy completion
    (RolloutActor.complete, temperature 0) under the same weights, its text and finish reason
    too; its log-prob is the raw log π(y|x) (the sum of the engine's prompt log-probs of those
    tokens), which DNO uses as its reference, not a tempered or zero one; answers 1..K−1 are the
    K − 1 seeded samples. Would catch the greedy answer put elsewhere than index 0, a greedy
    answer sampled at the rollout temperature, a processed log-prob, or sampled answers dropped."""
    rollout, requests = engine
    greedy = rollout.complete([r["prompt_tokens"] for r in requests], MAX_TOKENS)
    rollout.greedy_sample = True
    try:
        rows = rollout.generate(requests)[0].to_pylist()
    finally:
        rollout.greedy_sample = False
    differs = 0
    for row, request, best in zip(rows, requests, greedy):
        assert len(row["response_tokens"]) == len(row["response_logprobs"]) == K
        assert row["response_tokens"][0] == best["tokens"]
        assert row["response_texts"][0] == best["text"]
        assert row["finish_reasons"][0] == best["finish_reason"]
        raw = sum(rollout.logprobs_of(request["prompt_tokens"], best["tokens"]))
        assert row["response_logprobs"][0] == pytest.approx(raw, abs=1e-3)
        assert row["response_logprobs"][0] < -1e-3  # a temperature-0 "distribution" would give 0
        assert row["response_tokens"][1:] == _seeded_samples(rollout, request, K - 1)
        differs += any(tokens != best["tokens"] for tokens in row["response_tokens"][1:])
    assert differs == PROMPTS  # at T = 1 the samples are not the greedy answer: the test can tell them apart

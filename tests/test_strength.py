"""The judge's soft preference strength: answer-token logits → swap-averaged p(a ≻ b)."""

from __future__ import annotations

import math

import pytest
import torch

from judge.strength import DEFAULT_TEMPLATE, JudgeTemplate, answer_token_ids, first_is_better, swap_averaged_strength


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


# -- first_is_better ------------------------------------------------------------------------


def test_first_is_better_hand_values():
    got = first_is_better(t(1.0, 2.0 + math.log(3.0), 0.0, -5.0), t(1.0, 2.0, 2.0, -5.0 + math.log(4.0)))
    assert got.dtype == torch.float64
    # σ(0) = 1/2, σ(ln 3) = 3/4, σ(-2) = 0.11920292202211755, σ(-ln 4) = 1/5
    assert got.tolist() == pytest.approx([0.5, 0.75, 0.11920292202211755, 0.2], rel=1e-12)


def test_first_is_better_depends_only_on_the_logit_gap():
    a, b = t(0.3, -1.2, 7.0), t(-0.4, 0.5, 6.5)
    torch.testing.assert_close(first_is_better(a + 100.0, b + 100.0), first_is_better(a, b), rtol=1e-12, atol=0)
    torch.testing.assert_close(first_is_better(a, b) + first_is_better(b, a), torch.ones(3, dtype=torch.float64))


def test_first_is_better_is_the_two_token_softmax():
    logits = t(1.7, -0.6)
    softmax = torch.softmax(logits, dim=0)[0]
    assert first_is_better(logits[0], logits[1]).item() == pytest.approx(softmax.item(), rel=1e-12)


# -- swap_averaged_strength -------------------------------------------------------------------


def test_swap_averaged_strength_hand_values():
    got = swap_averaged_strength(t(0.8, 0.5, 1.0, 0.0), t(0.4, 0.5, 0.0, 1.0))
    # 0.5·(0.8 + 0.6) = 0.7; 0.5·(0.5 + 0.5) = 0.5; 0.5·(1 + 1) = 1; 0.5·(0 + 0) = 0
    assert got.tolist() == pytest.approx([0.7, 0.5, 1.0, 0.0], abs=1e-15)


def test_purely_position_biased_judge_gives_one_half():
    # A judge that always prefers whichever response is shown first (or second), whatever it is.
    for p_first in (0.9, 0.1, 0.5, 1.0):
        both = t(p_first)
        assert swap_averaged_strength(both, both).item() == pytest.approx(0.5, abs=1e-15)


def test_constant_position_bias_cancels():
    # True p(a ≻ b) = 0.7 plus a bias of +0.15 towards the first position in both orders.
    p, bias = 0.7, 0.15
    got = swap_averaged_strength(t(p + bias), t((1 - p) + bias))
    assert got.item() == pytest.approx(p, abs=1e-15)


def test_swap_averaged_strength_is_antisymmetric():
    p1, p2 = t(0.83, 0.2, 0.61), t(0.35, 0.9, 0.61)
    total = swap_averaged_strength(p1, p2) + swap_averaged_strength(p2, p1)
    torch.testing.assert_close(total, torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-15)


def test_strength_from_logits_end_to_end():
    # a shown first: logits (A, B) = (2, 0); b shown first: (1, 1.5).
    p_a_first = first_is_better(t(2.0), t(0.0))  # σ(2)
    p_b_first = first_is_better(t(1.0), t(1.5))  # σ(-0.5)
    expected = 0.5 * (1 / (1 + math.exp(-2.0)) + 1 - 1 / (1 + math.exp(0.5)))
    got = swap_averaged_strength(p_a_first, p_b_first).item()
    assert got == pytest.approx(expected, rel=1e-12)
    assert got == pytest.approx(0.7516282046, rel=1e-9)


# -- answer_token_ids ----------------------------------------------------------------------------


def test_answer_token_ids_tiny_tokenizer(tiny_tokenizer):
    a, b = answer_token_ids(tiny_tokenizer, ("A", "B"))
    assert a != b
    assert (a, b) == tuple(tiny_tokenizer.convert_tokens_to_ids(["A", "B"]))
    assert tiny_tokenizer.decode([a]) == "A"
    assert tiny_tokenizer.decode([b]) == "B"


def test_answer_token_ids_rejects_multi_token_answer(tiny_tokenizer):
    assert len(tiny_tokenizer("xyzzy", add_special_tokens=False)["input_ids"]) > 1
    with pytest.raises(ValueError, match=r"judge answer 'xyzzy' is not a single token"):
        answer_token_ids(tiny_tokenizer, ("A", "xyzzy"))


def test_answer_token_ids_rejects_identical_answers(tiny_tokenizer):
    with pytest.raises(ValueError, match="map to the same token id"):
        answer_token_ids(tiny_tokenizer, ("A", "A"))


# -- JudgeTemplate ----------------------------------------------------------------------------------

PROMPT = "Name a colour of the sky."
RESP_A = "The sky is blue."
RESP_B = "Seven apples."


def test_template_validation():
    with pytest.raises(ValueError, match=r"must contain \{response_b\}"):
        JudgeTemplate(text="{prompt} {response_a}")
    with pytest.raises(ValueError, match="two distinct answer tokens"):
        JudgeTemplate(answer_tokens=("A", "A"))
    assert JudgeTemplate().text == DEFAULT_TEMPLATE


def test_render_chat_puts_prompt_then_a_then_b_and_ends_with_generation_prompt(tiny_tokenizer):
    ids = JudgeTemplate().render(tiny_tokenizer, PROMPT, RESP_A, RESP_B)
    assert isinstance(ids, list) and all(isinstance(i, int) for i in ids)
    text = tiny_tokenizer.decode(ids)
    body = DEFAULT_TEMPLATE.format(prompt=PROMPT, response_a=RESP_A, response_b=RESP_B)
    assert text == f"<|im_start|>user\n{body}<|im_end|>\n<|im_start|>assistant\n"
    assert text.index(PROMPT) < text.index(RESP_A) < text.index(RESP_B)
    assert text.index("[Response A]\n" + RESP_A) < text.index("[Response B]\n" + RESP_B)


def test_render_swapped_order(tiny_tokenizer):
    text = tiny_tokenizer.decode(JudgeTemplate().render(tiny_tokenizer, PROMPT, RESP_B, RESP_A))
    assert text.index("[Response A]\n" + RESP_B) < text.index("[Response B]\n" + RESP_A)


def test_render_ends_with_answer_prefix(tiny_tokenizer):
    template = JudgeTemplate(answer_prefix="Answer:")
    ids = template.render(tiny_tokenizer, PROMPT, RESP_A, RESP_B)
    prefix_ids = tiny_tokenizer("Answer:", add_special_tokens=False)["input_ids"]
    assert ids[-len(prefix_ids):] == prefix_ids
    assert ids[: -len(prefix_ids)] == JudgeTemplate().render(tiny_tokenizer, PROMPT, RESP_A, RESP_B)
    assert tiny_tokenizer.decode(ids).endswith("<|im_start|>assistant\nAnswer:")


def test_render_plain_text(tiny_tokenizer):
    template = JudgeTemplate(
        text="Q: {prompt}\nA) {response_a}\nB) {response_b}\nBetter:", answer_prefix=" ", chat=False
    )
    ids = template.render(tiny_tokenizer, PROMPT, RESP_A, RESP_B)
    text = f"Q: {PROMPT}\nA) {RESP_A}\nB) {RESP_B}\nBetter:"
    expected = tiny_tokenizer(text, add_special_tokens=True)["input_ids"]
    expected += tiny_tokenizer(" ", add_special_tokens=False)["input_ids"]
    assert ids == expected
    assert tiny_tokenizer.decode(ids) == text + " "

import math
import random

import pytest
import torch

from core.config import SPO_RATIOS as DEGREE_RATIOS
from core.text import degrade, rake_keywords, remove_key_content
from learner.spo import PreferenceDegreeHead, spo_degree_loss

# The classic RAKE example. Candidate phrases (split at "of", "over", "the", "."):
#   compatibility | systems | linear constraints | set | natural numbers
# Word score degree/freq: linear = constraints = natural = numbers = 2/1, the rest 1/1,
# so "linear constraints" = "natural numbers" = 4 (tie -> first appearance), others 1.
TEXT = "Compatibility of systems of linear constraints over the set of natural numbers."


def test_rake_ranking():
    assert rake_keywords(TEXT) == [
        "linear constraints", "natural numbers", "compatibility", "systems", "set"
    ]


def test_rake_repeated_words():
    # phrases: "deep learning" (x2), "learning rate matters"
    # freq: deep 2, learning 3, rate 1, matters 1
    # degree: deep 4, learning 2+2+3 = 7, rate 3, matters 3
    # "learning rate matters" = 7/3 + 3 + 3 = 8.33 beats "deep learning" = 2 + 7/3 = 4.33
    text = "Deep learning, and deep learning: the learning rate matters"
    assert rake_keywords(text) == ["learning rate matters", "deep learning"]


def test_rake_empty():
    assert rake_keywords("") == []
    assert rake_keywords("of the and.") == []


def test_remove_key_content_ratios():
    assert remove_key_content(TEXT, 0.0) == TEXT
    # 0.5 · 5 phrases -> ceil(2.5) = 3 removed: linear constraints, natural numbers, compatibility
    assert remove_key_content(TEXT, 0.5) == "of systems of over the set of."
    assert remove_key_content(TEXT, 1.0) == "of of over the of."


def test_remove_key_content_case_insensitive_whole_word():
    # phrases "red apples" (score 4) and "redapples stay" (score 4, later) -> only the first goes,
    # both of its occurrences, any case, but not inside the longer word "redapples".
    text = "Red apples and RED  APPLES; redapples stay."
    assert remove_key_content(text, 0.5) == "and; redapples stay."


def test_remove_key_content_float_noise_does_not_round_up():
    # 25 single-word phrases; 0.28 · 25 is 7.000000000000001 in floats but must remove 7, not 8.
    text = ", ".join(f"w{i}" for i in range(25))
    # w0..w6 go (ties keep first appearance); spaces before the left-over commas go too.
    assert remove_key_content(text, 0.28) == ",,,,,,, " + ", ".join(f"w{i}" for i in range(7, 25))


@pytest.mark.parametrize("ratio", [-0.1, 1.1])
def test_remove_key_content_bad_ratio(ratio):
    with pytest.raises(ValueError, match="ratio"):
        remove_key_content(TEXT, ratio)


def test_degrade_deterministic():
    a = [degrade(TEXT, DEGREE_RATIOS, random.Random(7)) for _ in range(2)]
    assert a[0] == a[1]
    rng1, rng2 = random.Random(3), random.Random(3)
    draws = [degrade(TEXT, DEGREE_RATIOS, rng1) for _ in range(50)]
    assert draws == [degrade(TEXT, DEGREE_RATIOS, rng2) for _ in range(50)]
    assert {i for _, i in draws} == {0, 1, 2, 3}  # uniform over all degrees
    for text, i in draws:
        assert text == remove_key_content(TEXT, DEGREE_RATIOS[i])


def _head() -> PreferenceDegreeHead:
    head = PreferenceDegreeHead(hidden_size=2, num_degrees=3).double()
    with torch.no_grad():
        head.proj.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))
        head.proj.bias.copy_(torch.tensor([0.0, 0.5, -1.0]))
    return head


def test_head_masked_mean_pooling():
    hidden = torch.tensor(
        [[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
         [[2.0, -2.0], [50.0, 50.0], [60.0, 60.0]]], dtype=torch.float64
    )
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    logits = _head()(hidden, mask)
    assert logits.shape == (2, 3)
    # row 0: mean of (1,2),(3,4) = (2,3) -> (2, 3.5, -2); row 1: (2,-2) -> (2, -1.5, 3)
    expected = torch.tensor([[2.0, 3.5, -2.0], [2.0, -1.5, 3.0]], dtype=torch.float64)
    assert torch.allclose(logits, expected)


def test_head_ignores_padding_values():
    head = PreferenceDegreeHead(hidden_size=4)
    hidden = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 1, 1, 1, 1]], dtype=torch.bool)
    out = head(hidden, mask)
    assert out.shape == (2, len(DEGREE_RATIOS))
    junk = hidden.clone()
    junk[~mask] = float("nan")
    assert torch.allclose(head(junk, mask), out)


def test_degree_loss_hand_computed():
    logits = torch.tensor([[1.0, 2.0, 0.5, -1.0], [0.0, 0.0, 3.0, 1.0]], dtype=torch.float64)
    target = torch.tensor([1, 3])

    def ce(row: list[float], k: int) -> float:
        return -(row[k] - math.log(sum(math.exp(x) for x in row)))

    expected = (ce([1.0, 2.0, 0.5, -1.0], 1) + ce([0.0, 0.0, 3.0, 1.0], 3)) / 2
    assert spo_degree_loss(logits, target).item() == pytest.approx(expected, rel=1e-12)


def test_degree_head_reads_the_response_tokens_own_states(tiny_model_dir):
    """The pooled states are those at the response tokens: the last prompt token is out,
    the final response token is in (pinned against a manual forward pass)."""
    from transformers import AutoModelForCausalLM

    from core.logprobs import sequence_logprobs

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompts, responses = [[5, 6, 7], [8, 9]], [[10, 11], [12, 13, 14]]
    with torch.no_grad():
        _, hidden, mask = sequence_logprobs(model, prompts, responses, pad_id=0, return_hidden=True)
        assert mask.tolist() == [[False, False, False, True, True], [False, False, True, True, True]]
        for row, (p, r) in enumerate(zip(prompts, responses)):
            states = model(input_ids=torch.tensor([p + r]), output_hidden_states=True).hidden_states[-1][0]
            pooled = hidden[row][mask[row]].mean(0)
            assert torch.allclose(pooled, states[len(p):].mean(0), atol=1e-5)
            assert not torch.allclose(pooled, states[len(p) - 1 : -1].mean(0), atol=1e-3)  # the old, shifted read


def test_degree_classes_collapse_on_a_one_phrase_answer():
    """"Yes." has one keyword phrase: every non-zero ratio removes it, so classes 1–3 are the
    same text. Three phrases are enough for the default four classes (0, 1, 2, 3 removed)."""
    from core.text import degrees_distinct

    assert rake_keywords("Yes.") == ["yes"]
    assert {remove_key_content("Yes.", r) for r in DEGREE_RATIOS[1:]} == {"."}
    assert not degrees_distinct("Yes.", DEGREE_RATIOS)
    assert not degrees_distinct("Red apples and green pears.", DEGREE_RATIOS)  # 2 phrases: 0, 1, 1, 2
    assert degrees_distinct("Red apples, green pears and ripe plums.", DEGREE_RATIOS)  # 3 phrases
    assert degrees_distinct("Yes.", [0.0, 1.0])  # two classes: one phrase is enough


def test_spo_degree_term_skips_answers_whose_classes_collapse(tiny_model_dir, tiny_tokenizer):
    """The bug this catches: "Yes." trained with a label the text cannot carry. Its pair is
    left out of the degree loss (the loss equals the one on the other answer alone) and the
    skipped share is reported."""
    from core.config import LoraConfig
    from learner.policy import build_policy
    from learner.spo import spo_degree_term

    torch.manual_seed(0)
    policy = build_policy(tiny_model_dir, lora=LoraConfig(enabled=False), num_degrees=len(DEGREE_RATIOS))
    long = "Red apples, green pears and ripe plums fill the old wooden bowl."
    prompts = [tiny_tokenizer("Fruit?")["input_ids"]] * 2
    both, m_both = spo_degree_term(policy, tiny_tokenizer, 0, prompts, ["Yes.", long], DEGREE_RATIOS,
                                   random.Random(5))
    # The same draws for the long answer alone: the rng advances once per answer either way.
    rng = random.Random(5)
    degrade("Yes.", DEGREE_RATIOS, rng)
    alone, m_alone = spo_degree_term(policy, tiny_tokenizer, 0, prompts[1:], [long], DEGREE_RATIOS, rng)
    assert m_both["spo/skipped_share"] == 0.5 and m_alone["spo/skipped_share"] == 0.0
    assert both.item() == pytest.approx(alone.item(), abs=1e-6)
    none, m_none = spo_degree_term(policy, tiny_tokenizer, 0, prompts[:1], ["Yes."], DEGREE_RATIOS, random.Random(5))
    assert m_none["spo/skipped_share"] == 1.0 and none.item() == 0.0
    none.backward()  # reaches the head, so every rank's backward covers it
    assert policy.degree_head.proj.weight.grad is not None

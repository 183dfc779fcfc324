"""Summed response log-probs by hand: prompt tokens, right padding and a final EOS masked as
they should be (core/logprobs.py), on a 'model' whose next-token logits are a fixed table."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from core.logprobs import pack_right_padded, sequence_logprobs

VOCAB = 4
# Next-token logits depend only on the current token: row = current token id.
TABLE = torch.tensor([[0.0, 1.0, 2.0, 3.0], [3.0, 0.0, 1.0, 2.0], [2.0, 3.0, 0.0, 1.0], [1.0, 2.0, 3.0, 0.0]],
                     dtype=torch.float64)


class TableLM(torch.nn.Module):
    """Logits[t] = TABLE[ids[t]]: log p(next | current) is known in closed form."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def forward(self, input_ids, attention_mask=None, output_hidden_states=False, use_cache=False, logits_to_keep=0):
        self.kept = logits_to_keep  # transformers' meaning: the last N positions' logits (0: all)
        logits = TABLE[input_ids] + 0 * self.dummy
        return SimpleNamespace(logits=logits[:, -logits_to_keep:] if logits_to_keep else logits, hidden_states=None)


def logp(cur: int, nxt: int) -> float:
    row = TABLE[cur].tolist()
    return row[nxt] - math.log(sum(math.exp(x) for x in row))


def test_pack_marks_response_positions_and_pads_right():
    ids, attention, response = pack_right_padded([[1, 2], [3]], [[0, 3], [2, 1, 0]], pad_id=0)
    assert ids.tolist() == [[1, 2, 0, 3], [3, 2, 1, 0]]
    assert attention.tolist() == [[1, 1, 1, 1], [1, 1, 1, 1]]
    assert response.tolist() == [[False, False, True, True], [False, True, True, True]]
    ids, attention, response = pack_right_padded([[1, 2, 3]], [[2]], pad_id=0)
    assert (ids.tolist(), attention.tolist(), response.tolist()) == ([[1, 2, 3, 2]], [[1, 1, 1, 1]],
                                                                      [[False, False, False, True]])


def test_sequence_logprobs_sum_only_the_response_tokens_by_hand():
    # Row 0: prompt [1, 2], response [3, 0] where 0 doubles as the EOS: it counts (a response
    # token); row 1 is shorter and right-padded with id 0, which must not count.
    prompts, responses = [[1, 2], [3]], [[3, 0], [2]]
    got = sequence_logprobs(TableLM(), prompts, responses, pad_id=0)
    expected = [logp(2, 3) + logp(3, 0), logp(3, 2)]
    assert got.tolist() == pytest.approx(expected, abs=1e-6)  # summed in float32
    # The prompt's own tokens never count: a longer prompt leaves the sum unchanged.
    longer = sequence_logprobs(TableLM(), [[0, 1, 2]], [[3, 0]], pad_id=0)
    assert longer.item() == pytest.approx(expected[0], abs=1e-6)  # summed in float32


def test_sequence_logprobs_ask_the_head_only_for_positions_that_predict_a_response_token():
    # Prompts of 4 and 2 tokens: position 1 (the shorter prompt's last token) is the first that
    # predicts a response token, so of the 6 positions the model is asked for the last 5, and the
    # longer row's prompt positions inside that window still do not count.
    model = TableLM()
    prompts, responses = [[1, 2, 3, 1], [2, 3]], [[0, 2], [1, 0, 3, 2]]
    got = sequence_logprobs(model, prompts, responses, pad_id=0)
    assert model.kept == 5
    expected = [logp(1, 0) + logp(0, 2), logp(3, 1) + logp(1, 0) + logp(0, 3) + logp(3, 2)]
    assert got.tolist() == pytest.approx(expected, abs=1e-6)


def test_sequence_logprobs_match_the_full_logits_on_a_real_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from core.logprobs import token_logprobs

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompts, responses = [[5, 9, 13, 7, 21], [8, 4], [30, 31, 32]], [[3, 17, 2], [11, 12, 13, 14, 15], [40]]
    with torch.no_grad():
        got = sequence_logprobs(model, prompts, responses, pad_id=0)
        ids, attention, response = pack_right_padded(prompts, responses, pad_id=0)
        full = token_logprobs(model(input_ids=ids, attention_mask=attention).logits, ids)
    assert got.tolist() == pytest.approx((full * response[:, 1:]).sum(-1).tolist(), abs=1e-5)

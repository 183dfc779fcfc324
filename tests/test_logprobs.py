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

    def forward(self, input_ids, attention_mask=None, output_hidden_states=False, use_cache=False):
        return SimpleNamespace(logits=TABLE[input_ids] + 0 * self.dummy, hidden_states=None)


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

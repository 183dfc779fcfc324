"""SPO (arXiv 2409.17791): DPO on the pair plus λ·(a preference-degree classifier's loss), the
classifier telling how much of a chosen answer's key content was removed (learner/spo.py).
λ is loss.spo_weight, the degrees loss.spo_ratios; the head adds len(ratios) classes."""

from __future__ import annotations

import random
from typing import Any

from torch import Tensor

from cluster.methods.base import Method
from learner.losses import dpo_loss, verdict_sign
from learner.spo import spo_degree_term


class Spo(Method):
    name = "spo"

    @property
    def degree_classes(self) -> int:
        return len(self.cfg.loss.spo_ratios)

    def pair_loss(self, h: Tensor, p: Tensor) -> Tensor:
        return dpo_loss(verdict_sign(p) * h, self.cfg.loss.beta)

    def aux_loss(self, policy: Any, tokenizer: Any, pad_id: int, cols: dict, rng: random.Random
                 ) -> tuple[Tensor, dict[str, float]]:
        term, metrics = spo_degree_term(policy, tokenizer, pad_id, cols["prompt_tokens"], cols["chosen_text"],
                                        self.cfg.loss.spo_ratios, rng)
        return self.cfg.loss.spo_weight * term, metrics

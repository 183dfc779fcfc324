"""IPO: regress the verdict's margin onto 1/(2β) instead of maximising it, (h − 1/(2β))², on
mean per-token log-probs by default (the IPO authors' form, as TRL runs it)."""

from __future__ import annotations

from torch import Tensor

from cluster.methods.base import Method
from learner.losses import ipo_loss, verdict_sign


class Ipo(Method):
    name = "ipo"
    length_normalized_by_default = True

    def pair_loss(self, h: Tensor, p: Tensor) -> Tensor:
        return ipo_loss(verdict_sign(p) * h, self.cfg.loss.beta)

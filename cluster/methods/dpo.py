"""Online DPO: −log σ(β·h) on the judge's verdict (which side of ½ p is on), not its strength."""

from __future__ import annotations

from torch import Tensor

from cluster.methods.base import Method
from learner.losses import dpo_loss, verdict_sign


class Dpo(Method):
    name = "dpo"

    def pair_loss(self, h: Tensor, p: Tensor) -> Tensor:
        return dpo_loss(verdict_sign(p) * h, self.cfg.loss.beta)

"""Conservative DPO: the verdict with label smoothing ε (`loss.label_smoothing`),
−(1 − ε)·log σ(βh) − ε·log σ(−βh): SPCE with a constant p = 1 − ε."""

from __future__ import annotations

from torch import Tensor

from cluster.methods.base import Method
from learner.losses import cdpo_loss, verdict_sign


class Cdpo(Method):
    name = "cdpo"

    def pair_loss(self, h: Tensor, p: Tensor) -> Tensor:
        return cdpo_loss(verdict_sign(p) * h, self.cfg.loss.beta, self.cfg.loss.label_smoothing)

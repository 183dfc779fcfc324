"""OSP: soft-preference cross-entropy (SPCE) on the judge's strengths (arXiv 2405.14103).

    L = −[p·log σ(βh) + (1 − p)·log σ(−βh)]

The only method whose loss reads how far p is from ½; `loss.hard_labels` replaces p by its
verdict, which makes it DPO exactly (the soft-vs-hard ablation).
"""

from __future__ import annotations

from torch import Tensor

from cluster.methods.base import Method
from learner.losses import hard_labels, spce_loss


class Osp(Method):
    name = "osp"
    reads_strength = True

    def labels(self, p: Tensor) -> Tensor:
        return hard_labels(p) if self.cfg.loss.hard_labels else p

    def pair_loss(self, h: Tensor, p: Tensor) -> Tensor:
        return spce_loss(h, p, self.cfg.loss.beta)

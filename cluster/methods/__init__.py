"""The methods: one module each, one line each in METHODS (config key `method`).

    osp   SPCE on the judge's soft strengths (the default)       osp.py
    dpo   DPO on the judge's verdict                              dpo.py
    cdpo  DPO with label smoothing (loss.label_smoothing)         cdpo.py
    ipo   IPO: the verdict's margin regressed onto 1/(2β)         ipo.py
    spo   DPO plus a preference-degree classifier (loss.spo_*)    spo.py
    dno   DNO-Prct: win-rate pairs, the sampler as reference,     dno.py
          iterations with replay (dno.*)
What a method decides, and who asks: cluster/methods/base.py.
"""

from __future__ import annotations

from cluster.methods.base import Method, StepBatch, StepPolicy
from cluster.methods.cdpo import Cdpo
from cluster.methods.dno import Dno
from cluster.methods.dpo import Dpo
from cluster.methods.ipo import Ipo
from cluster.methods.osp import Osp
from cluster.methods.spo import Spo
from core.config import Config

METHODS: dict[str, type[Method]] = {
    "osp": Osp,
    "dpo": Dpo,
    "cdpo": Cdpo,
    "ipo": Ipo,
    "spo": Spo,
    "dno": Dno,
}


def method_of(cfg: Config) -> Method:
    """The method `cfg.method` names, bound to the run's config."""
    return METHODS[cfg.method](cfg)


__all__ = ["METHODS", "Method", "StepBatch", "StepPolicy", "method_of"]

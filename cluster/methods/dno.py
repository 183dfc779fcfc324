"""DNO-Prct (arXiv 2404.03715): iterative Nash optimisation with one large-margin pair a prompt.

- **Pairs**: every pair of a prompt's K answers is judged (any K ≥ 2; the paper samples 5); each
  answer's win rate is the share of the others it beats; the pair is (best, worst) when their
  win rates differ by at least `dno.margin`, else the prompt yields none. The pair keeps that
  orientation even when the judge's direct comparison of the two disagrees (an intransitive
  judge: DNO's reason to exist); its strength is the win-rate gap on [½, 1].
- **Reference**: the policy that sampled (its own log-probs, π_t), not the SFT model.
- **Loss**: DPO on the verdict.
- **Iterations**: the sampling policy is the reference, so it moves only once per iteration of
  `dno.iteration_steps` learner steps: weights are pushed at iteration ends, an iteration trains
  only on pairs its own policy sampled, and a share `dno.replay_fraction` of each step's pairs is
  replayed from the previous iteration's (they keep the reference they were made with).
"""

from __future__ import annotations

import math
import random
from typing import Sequence

import pyarrow as pa
from torch import Tensor

from cluster.methods.base import JudgeFn, Method, StepBatch, StepPolicy
from core.config import Config, ConfigError
from judge.pairing import JudgedPair, preference_matrix
from learner.losses import dpo_loss, verdict_sign


def win_rates(pref: Tensor) -> Tensor:
    """r_i = mean over j≠i of 1[pref[i,j] > ½], an exact tie counting half.

    Hard wins, as DNO-Prct defines the win rate (the share of the others a response beats
    under the oracle). The soft alternative, the mean of pref[i, j], would let a judge that
    is near-indifferent everywhere (p ≈ ½, our 135M self-judge) produce no gap at all, while
    the hard rate still ranks by the judge's verdicts; dno.margin then filters on verdicts."""
    if pref.dim() != 2 or pref.shape[0] != pref.shape[1]:
        raise ValueError(f"pref must be a square K×K matrix, got shape {tuple(pref.shape)}")
    k = pref.shape[0]
    if k < 2:
        raise ValueError(f"need at least 2 responses to compare, got {k}")
    wins = (pref > 0.5).double() + 0.5 * (pref == 0.5).double()
    wins.fill_diagonal_(0)  # a response is not compared with itself
    return wins.sum(dim=1) / (k - 1)


def select_pair(pref: Tensor, margin: float) -> tuple[int, int] | None:
    """(chosen, rejected) = (argmax, argmin) of the win rates, first index on ties; None when
    their win rates differ by less than `margin` (or not at all)."""
    r = win_rates(pref).tolist()
    chosen = max(range(len(r)), key=r.__getitem__)  # max/min return the first extremum
    rejected = min(range(len(r)), key=r.__getitem__)
    if chosen == rejected or r[chosen] - r[rejected] < margin:
        return None
    return chosen, rejected


def picked_pair(pref: Tensor, chosen: int, rejected: int) -> JudgedPair:
    """DNO's pick as a pair: never re-oriented by pref[chosen, rejected]; strength = the win-rate
    gap on [½, 1] (a gap of 1, beats all / loses to all, is certain). DNO trains on the verdict,
    so only its side of ½ matters to the loss."""
    r = win_rates(pref)
    return JudgedPair(chosen, rejected, float(0.5 + 0.5 * (r[chosen] - r[rejected])))


def replayed_per_step(pairs_per_step: int, fraction: float) -> int:
    """The step's places for replayed pairs: ⌊fraction · pairs_per_step⌋, so replays are at most
    that share of the step and fresh + replayed never exceeds pairs_per_step (the epsilon keeps
    float noise, 0.3 · 10 = 2.9999…, from losing a place)."""
    return math.floor(fraction * pairs_per_step + 1e-9)


class Iterations(StepPolicy):
    """DNO's driver side: iterations of dno.iteration_steps steps, each training on its own
    sampler's pairs plus replays from the previous iteration."""

    def __init__(self, cfg: Config, rng: random.Random):
        super().__init__(cfg, rng)
        self.steps = cfg.dno.iteration_steps
        self.previous: pa.Table | None = None  # the pairs the last iteration trained on
        self.current: list[pa.Table] = []

    def useful_steps(self, step: int, step_running: bool) -> int:
        return max(self.steps - step % self.steps - step_running, 0)  # this iteration's steps only

    def oldest_trainable(self, pushed_versions: list[int]) -> int:
        return pushed_versions[-1]  # iteration t trains only on pairs π_t sampled

    def push_due(self, step: int) -> bool:
        return step % self.steps == 0  # the sampler is the reference: it moves once an iteration

    def replay_places(self) -> int:
        if self.previous is None:
            return 0
        return replayed_per_step(self.cfg.learner.pairs_per_step, self.cfg.dno.replay_fraction)

    def fresh_pairs_per_step(self) -> int:
        return self.cfg.learner.pairs_per_step - self.replay_places()

    def batch(self, fresh: pa.Table) -> StepBatch:
        """The fresh pairs, then up to replay_places() pairs of the previous iteration drawn
        without replacement, tagged "replay" (fewer if it has fewer)."""
        self.current.append(fresh)
        places = self.replay_places()
        if not places:
            return StepBatch(fresh)
        picks = self.rng.sample(range(self.previous.num_rows), min(places, self.previous.num_rows))
        old = self.previous.take(picks)
        i = old.schema.get_field_index("source")
        old = old.set_column(i, old.schema.field(i), pa.array(["replay"] * old.num_rows, pa.string()))
        return StepBatch(pa.concat_tables([fresh, old]).combine_chunks(), len(picks))

    def end_of_step(self, step: int) -> None:
        if step % self.steps:
            return
        if self.current:
            self.previous = pa.concat_tables(self.current).combine_chunks()
        self.current = []

    def metrics(self, batch: StepBatch) -> dict[str, float]:
        return {"pairs/replayed": float(batch.replayed)}


class Dno(Method):
    name = "dno"
    reference = "sampler"

    def validate(self, cfg: Config) -> None:
        if cfg.rollout.k < 2:
            raise ConfigError(f"rollout.k: DNO compares K ≥ 2 answers a prompt, got {cfg.rollout.k}")
        if cfg.judge.pairing != "ranked":
            raise ConfigError(f"judge.pairing: method=dno keeps its own win-rate pair; judge.pairing={cfg.judge.pairing} "
                              "does not apply")
        if cfg.judge.anchor != "round_robin":
            raise ConfigError(f"judge.anchor: method=dno judges every pair of answers (win rates); "
                              f"judge.anchor={cfg.judge.anchor} does not apply")
        if cfg.loss.hard_labels:
            raise ConfigError("loss.hard_labels: method=dno trains on the verdict already")

    @property
    def source(self) -> str:
        return "dno"

    def pairs_per_prompt(self) -> int:
        return 1

    def comparisons_per_prompt(self) -> int:
        k = self.cfg.rollout.k
        return k * (k - 1) // 2

    def pair(self, responses: Sequence[str], judge_fn: JudgeFn, anchor_response: str | None) -> list[JudgedPair]:
        pref = preference_matrix(responses, judge_fn)
        picked = select_pair(pref, self.cfg.dno.margin)
        return [] if picked is None else [picked_pair(pref, *picked)]

    def pair_loss(self, h: Tensor, p: Tensor) -> Tensor:
        return dpo_loss(verdict_sign(p) * h, self.cfg.loss.beta)

    def step_policy(self, rng: random.Random) -> StepPolicy:
        return Iterations(self.cfg, rng)




"""Answers to a prompt set with given weights: the one place that asks a rollout actor for them.

`Answerer` holds a rollout actor handle: one it starts for a command line (`Answerer.start`:
cluster.evaluate, cluster.judge_report; killed by `close`), or the run's own (`Answerer.wrap`:
the in-run held-out check, cluster/evaluation/heldout.py; left running). It loads a
checkpoint's weights (`load`: full weights or a LoRA adapter, which the actor merges into its
own SFT weights; nothing loaded, it answers with the SFT weights it started with), answers
one per prompt greedily or at a temperature (`answer`), and samples K per prompt as training
does (`sample`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray

from actors.rollout import RolloutActor
from cluster.data.prompts import Prompt
from cluster.driver.progress import CountBar
from core.config import ModelConfig, RolloutConfig

CHUNK = 50  # prompts per engine call when a command line shows progress: the bar moves, vLLM still batches


class Answerer:
    """Answers from one rollout actor. `chunk`: prompts per engine call (None: every prompt in
    one call, as the in-run held-out check asks)."""

    def __init__(self, engine: Any, chunk: int | None = CHUNK, owned: bool = False):
        self.engine, self.chunk, self.owned = engine, chunk, owned

    @classmethod
    def start(cls, model_path: str, rollout: RolloutConfig, prompts: list[Prompt], seed: int, name: str,
              cpus: int) -> Answerer:
        """A rollout actor of its own on the SFT model in `model_path`, sized for `prompts` (the
        longest one bounds the engine's context), with `cpus` cores and as many threads: nothing
        else runs while a command line answers."""
        engine = ray.remote(RolloutActor).options(num_cpus=cpus).remote(
            model_path, rollout, ModelConfig(max_prompt_tokens=max(len(p.tokens) for p in prompts)), seed=seed,
            name=name, threads=cpus)
        return cls(engine, CHUNK, owned=True)

    @classmethod
    def wrap(cls, engine: Any) -> Answerer:
        """The run's own rollout actor, with the weights it holds now; `close` leaves it running."""
        return cls(engine, None, owned=False)

    def load(self, folder: Path | None) -> None:
        """A checkpoint's hf/ folder (full weights or a LoRA adapter of the SFT model); None keeps
        the weights held now."""
        if folder is not None:
            ray.get(self.engine.load_checkpoint.remote(str(folder)))

    def answer(self, prompts: list[Prompt], max_tokens: int, temperature: float = 0.0, seed: int = 0,
               bar: CountBar | None = None) -> list[dict]:
        """One answer per prompt, in prompt order: {"tokens", "text", "finish_reason"} (greedy at
        temperature 0). `bar` advances by each chunk answered."""
        tokens = [list(p.tokens) for p in prompts]
        size = self.chunk or max(len(tokens), 1)
        out: list[dict] = []
        for start in range(0, len(tokens), size):
            chunk = tokens[start:start + size]
            out += ray.get(self.engine.complete.remote(chunk, max_tokens, temperature, seed))
            if bar is not None:
                bar.advance(len(chunk))
        return out

    def sample(self, prompts: list[Prompt]) -> list[dict]:
        """The actor's K answers per prompt, sampled as in training (its rollout config; each
        prompt's seed from its place in `prompts`): {"prompt_id", "prompt", "answers"} each."""
        table_ref, _ = self.engine.generate.remote([p.request(i) for i, p in enumerate(prompts)])
        return [{"prompt_id": r["prompt_id"], "prompt": r["prompt_text"], "answers": r["response_texts"]}
                for r in ray.get(table_ref).to_pylist()]

    def close(self) -> None:
        """Kills the actor this Answerer started; the run's own stays."""
        if self.owned:
            ray.kill(self.engine)

    def __enter__(self) -> Answerer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

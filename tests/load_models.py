"""Resolve and load models as the run does, in a fresh process (the hub settings are read at
import): `python tests/load_models.py [--engine] REF...`. Each REF is pinned and resolved
(core/models.py), then loaded by transformers (config, tokenizer, weights) and, with --engine,
by a vLLM engine (actors/rollout.RolloutActor, in this process) that answers one prompt.
tests/test_hub_models.py runs it with every outbound request sent to a recorder."""

from __future__ import annotations

import sys

from core.env import apply_runtime_env

apply_runtime_env()

from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from core.models import pin_model, resolve_model  # noqa: E402


def main(argv: list[str]) -> int:
    engine = "--engine" in argv
    for ref in (a for a in argv if a != "--engine"):
        pinned = pin_model(ref)
        folder = resolve_model(pinned)
        AutoConfig.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        AutoModelForCausalLM.from_pretrained(folder)
        if engine:
            from actors.rollout import RolloutActor
            from core.config import ModelConfig, RolloutConfig

            actor = RolloutActor(pinned, RolloutConfig(k=2, max_tokens=4), ModelConfig(max_prompt_tokens=32), threads=1)
            ids = tokenizer("Paris is", add_special_tokens=False)["input_ids"]
            assert len(actor.complete([ids], 4)[0]["tokens"]) >= 1
            assert actor.info()["model_folder"] == str(folder)
        print(f"LOADED {ref} -> {folder}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

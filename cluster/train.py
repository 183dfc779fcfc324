"""The main job: `python -m cluster.train [--config X.yaml] [key=value ...] [--resume]`.

The command line only: the config is read and validated (cluster/config.py), then built into a
checked, immutable run spec and executed (cluster/run.py).

Exit codes (EXIT_CODES): 0 the run finished and its final weights were verified on every rollout
actor; 2 bad input (config, model, prompt file), refused before any actor starts; 3 a learner
rank failed (resume from the last checkpoint); 4 the run trained to the end but a rollout actor
did not hold the final weights even after a second push: the held-out score is refused
(heldout.json: "weights_verified": false) and the final checkpoint is written.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from core.env import apply_runtime_env

apply_runtime_env()  # before vLLM/transformers/Ray are imported anywhere

import yaml

from cluster.config import default_config_path, load_config, parse_overrides
from cluster.data.prompts import PromptFileError
from cluster.driver.pools import LearnerFailed
from cluster.driver.progress import setup_logging
from cluster.driver.pushes import WeightsUnverified
from cluster.run import build_run, execute
from core.config import Config, ConfigError

log = logging.getLogger("osp")

EXIT_CODES = {"ok": 0, "bad input": 2, "learner failed": 3, "weights unverified": 4}


def parse_args(argv: list[str] | None = None, prog: str = "python -m cluster.train") -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Online self-preferring alignment: vLLM rollouts, a frozen SFT judge and a DeepSpeed learner on Ray.",
        epilog="exit codes: " + ", ".join(f"{code} {what}" for what, code in EXIT_CODES.items()),
    )
    parser.add_argument("--config", help="YAML config (default: cluster/configs/default.yaml, the embedded default run)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in checkpoint.dir")
    parser.add_argument("--verbose", action="store_true",
                        help="also print the actors' own logs (vLLM, DeepSpeed, Ray); else they go to <run>/worker-logs")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. learner.max_steps=10 rollout.k=4")
    return parser.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> Config:
    """The config file (the run's own saved one on --resume), with the overrides and --verbose
    applied before validation."""
    path = args.config or default_config_path()
    overrides = list(args.overrides) + (["ray.worker_logs=true"] if args.verbose else [])
    if args.resume and not args.config:
        # Resume with the run's own saved config plus the new overrides, validated together
        # (an override may only make sense with the saved values). Find the run folder from
        # the overrides or the default config without validating anything yet.
        run_dir = parse_overrides(overrides).get("checkpoint", {}).get("dir")
        if run_dir is None:
            run_dir = ((yaml.safe_load(Path(path).read_text()) or {}).get("checkpoint") or {}).get("dir", "runs/osp")
        saved = Path(run_dir) / "config.yaml"
        if saved.exists():
            return load_config(saved, overrides)
    return load_config(path, overrides)


def main(argv: list[str] | None = None, prog: str = "python -m cluster.train") -> int:
    setup_logging()
    args = parse_args(argv, prog)
    try:
        cfg = resolve_config(args)
        execute(build_run(cfg, resume=args.resume))
    except (ConfigError, PromptFileError, FileNotFoundError) as err:
        log.error("%s", err)
        return EXIT_CODES["bad input"]
    except LearnerFailed as err:
        log.error("%s", err)
        logs = Path(cfg.checkpoint.dir) / "worker-logs"
        if logs.exists():
            log.error("the actors' own logs: %s", logs)
        return EXIT_CODES["learner failed"]
    except WeightsUnverified as err:
        log.error("%s", err)
        return EXIT_CODES["weights unverified"]
    return EXIT_CODES["ok"]


if __name__ == "__main__":
    sys.exit(main())

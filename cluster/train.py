"""The main job: `python -m cluster.train [--config X.yaml] [key=value ...] [--resume]`.

Everything that can be checked without actors is checked first (config values, model path,
tokenizer vs. the judge's answer tokens, the prompt file, cluster resources), so a bad run
fails in seconds with a message naming the problem, not minutes later inside an actor.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from pathlib import Path

from core.env import apply_runtime_env

apply_runtime_env()  # before vLLM/transformers/Ray are imported anywhere

import ray  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from cluster import checkpoint as ckpt  # noqa: E402
from cluster.config import (  # noqa: E402
    check_local_machine, check_resources, default_config_path, dump_config, load_config, parse_overrides,
)
from cluster.learner_group import LearnerFailed  # noqa: E402
from cluster.models import resolve_model_path  # noqa: E402
from cluster.pipeline import Pipeline  # noqa: E402
from cluster.progress import Progress, setup_logging  # noqa: E402
from cluster.prompts import PromptFileError, load_prompts  # noqa: E402
from cluster.ray_setup import init_ray, link_worker_logs, ray_address  # noqa: E402
from core.config import Config, ConfigError  # noqa: E402
from judge.preferences import PythonJudge  # noqa: E402
from judge.strength import JudgeTemplate, answer_token_ids  # noqa: E402

log = logging.getLogger("osp")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m cluster.train",
        description="Online self-preferring alignment: vLLM rollouts, a frozen SFT judge and a DeepSpeed learner on Ray.",
    )
    parser.add_argument("--config", help="YAML config (default: cluster/configs/default.yaml, the embedded default run)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in checkpoint.dir")
    parser.add_argument("--verbose", action="store_true",
                        help="also print the actors' own logs (vLLM, DeepSpeed, Ray); else they go to <run>/worker-logs")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. learner.max_steps=10 rollout.k=4")
    return parser.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> Config:
    path = args.config or default_config_path()
    if args.resume and not args.config:
        # Resume with the run's own saved config plus the new overrides, validated together
        # (an override may only make sense with the saved values). Find the run folder from
        # the overrides or the default config without validating anything yet.
        run_dir = parse_overrides(args.overrides).get("checkpoint", {}).get("dir")
        if run_dir is None:
            run_dir = ((yaml.safe_load(Path(path).read_text()) or {}).get("checkpoint") or {}).get("dir", "runs/osp")
        saved = Path(run_dir) / "config.yaml"
        if saved.exists():
            return load_config(saved, args.overrides)
    return load_config(path, args.overrides)


def prepare_inputs(cfg: Config):
    """Model path, judge, tokenizer checks and prompts: all refused here, before any actor
    starts. Returns (model path, judge kind with its model path resolved, prompts)."""
    model_path = str(resolve_model_path(cfg.model.path))
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    kind, _, rest = cfg.judge.kind.partition(":")
    judge = cfg.judge.kind
    if kind in ("lm", "reward"):
        judge = f"{kind}:{resolve_model_path(rest)}"
    if kind in ("self", "lm"):  # an LM judge reads one answer token each for "A" and "B"
        judge_tokenizer = tokenizer if kind == "self" else AutoTokenizer.from_pretrained(judge.partition(":")[2])
        template = JudgeTemplate(**({"text": cfg.judge.template} if cfg.judge.template else {}),
                                 answer_tokens=tuple(cfg.judge.answer_tokens))
        try:
            answer_token_ids(judge_tokenizer, template.answer_tokens)
        except ValueError as err:
            raise ConfigError(f"judge.answer_tokens: {err}") from None
    if kind == "python":
        try:
            PythonJudge(rest)
        except ValueError as err:
            raise ConfigError(f"judge.kind: {err}") from None
    prompts = load_prompts(cfg.data.prompts, tokenizer, cfg.model.max_prompt_tokens, cfg.data.on_bad_rows,
                           cfg.data.num_prompts)
    if kind in ("verifier", "checklist"):
        missing = [p.prompt_id for p in prompts if p.instructions is None]
        if missing:
            raise ConfigError(f"judge.kind: {kind} needs instructions on every prompt; {len(missing)} prompt(s) of "
                              f"data.prompts have none (first: {missing[0]}). Use data.prompts=instructions or a "
                              "file whose rows carry instruction_id_list and kwargs")
    return model_path, judge, prompts


def prepare_eval_prompts(cfg: Config, model_path: str):
    """The held-out prompts of the in-run evaluation (eval.prompts), or None."""
    if cfg.eval.prompts is None:
        return None
    prompts = load_prompts(cfg.eval.prompts, AutoTokenizer.from_pretrained(model_path), cfg.model.max_prompt_tokens,
                           "error", cfg.eval.num_prompts)
    missing = [p.prompt_id for p in prompts if p.instructions is None]
    if missing:
        raise ConfigError(f"eval.prompts: every held-out prompt needs verifiable instructions; "
                          f"{len(missing)} have none (first: {missing[0]})")
    return prompts


def run(cfg: Config, resume: bool = False) -> ckpt.RunState:
    model_path, judge, prompts = prepare_inputs(cfg)
    eval_prompts = prepare_eval_prompts(cfg, model_path)
    if ray_address(cfg.ray.address) is None:  # a local cluster: refuse what this machine can't run
        check_local_machine(cfg, os.cpu_count() or 1, torch.cuda.device_count() if torch.cuda.is_available() else 0)
    cfg.judge.kind = judge
    run_dir = Path(cfg.checkpoint.dir)
    latest = ckpt.latest_checkpoint(run_dir) if run_dir.exists() else None
    if latest and not resume:
        raise ConfigError(
            f"checkpoint.dir {str(run_dir)!r} already holds checkpoints (latest {latest.name}): "
            "pass --resume to continue that run, or set checkpoint.dir=<new folder>"
        )
    state = ckpt.RunState(seed=cfg.seed)
    if resume:
        if latest is None:
            log.warning("--resume: no checkpoint in %s yet, starting from step 0", run_dir)
        else:
            state = ckpt.load_state(latest)
            log.info("resuming from %s: step %d, data position %d", latest, state.step, state.next_prompt)
    if state.step >= cfg.learner.max_steps:
        log.info("nothing to do: the run is at step %d of learner.max_steps=%d", state.step, cfg.learner.max_steps)
        return state
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run_dir / "config.yaml")
    log.info("%d prompts from the data set, model %s, run folder %s", len(prompts), model_path, run_dir)

    cpus = cfg.ray.num_cpus or max(math.ceil(cfg.resources_needed()["CPU"]), os.cpu_count() or 1)
    init_ray(cfg.ray.address, cpus, cfg.ray.dashboard_host,
             cfg.ray.dashboard_port, worker_logs=cfg.ray.worker_logs)
    logs = link_worker_logs(run_dir)
    if not cfg.ray.worker_logs:
        log.info("actors' logs: %s (--verbose prints them here)", logs or "the Ray dashboard's Logs view")
    resources = ray.cluster_resources()
    check_resources(cfg, resources.get("CPU", 0), resources.get("GPU", 0))
    progress = Progress(cfg.learner.max_steps, state.step, enabled=cfg.metrics.progress)
    pipeline = Pipeline(cfg, model_path, prompts, run_dir, state, latest if resume else None, progress.update,
                        eval_prompts)
    start = time.perf_counter()
    try:
        pipeline.start()
        state = pipeline.run()
    finally:
        progress.close()
        pipeline.shutdown()
    log.info("done: %d steps, %d pairs trained, %d prompts done, %d pairs regenerated, %.0fs; checkpoints in %s",
             state.step, state.pairs_trained, state.prompts_done, state.pairs_regenerated,
             time.perf_counter() - start, run_dir)
    return state


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    try:
        cfg = resolve_config(args)
        cfg.ray.worker_logs = cfg.ray.worker_logs or args.verbose
        run(cfg, resume=args.resume)
    except (ConfigError, PromptFileError, FileNotFoundError) as err:
        log.error("%s", err)
        return 2
    except LearnerFailed as err:
        log.error("%s", err)
        logs = Path(cfg.checkpoint.dir) / "worker-logs"
        if logs.exists():
            log.error("the actors' own logs: %s", logs)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())

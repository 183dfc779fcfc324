"""Loading the run's configuration (core/config.py's typed sections) from YAML plus
`key=value` overrides, and validating it.

Unknown keys and impossible values are refused here, before any actor starts, with an
error that names the key. Defaults are the embedded default run (a few minutes on 2 CPUs).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from cluster.driver.trackers import TRACKERS
from cluster.methods import METHODS, method_of
from core.chat import ChatTemplateError, check_choice
from core.config import TRUNCATED, Config, ConfigError
from judge.preferences import KINDS, NOISES, check_kind

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
    return config_from_dict(_merge(data, parse_overrides(overrides or [])))


# Keys that a method replaced (one key picks the method now): refused with what to write instead.
_LOSS_TO_METHOD = {"spce": "osp", "dpo": "dpo", "cdpo": "cdpo", "ipo": "ipo", "spo": "spo"}


def _refuse_replaced_keys(data: dict[str, Any]) -> None:
    loss, dno, judge = (data.get(k) if isinstance(data.get(k), dict) else {} for k in ("loss", "dno", "judge"))
    if "name" in loss:
        method = _LOSS_TO_METHOD.get(str(loss["name"]), loss["name"])
        raise ConfigError(f"loss.name was replaced by the top-level key `method` (did you mean method={method}?)")
    if "enabled" in dno:
        raise ConfigError("dno.enabled was replaced by the top-level key `method` (did you mean method=dno?)")
    if judge.get("anchor") == "dno":
        raise ConfigError("judge.anchor=dno was replaced by the top-level key `method` (did you mean method=dno?)")


def config_from_dict(data: dict[str, Any]) -> Config:
    """A validated Config from nested sections, as a YAML file would give them (the same
    refusals as load_config: unknown keys, wrong types, impossible values)."""
    if isinstance(data, dict):
        _refuse_replaced_keys(data)
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
    _require(cfg.method in METHODS, "method", f"unknown {cfg.method!r}; choose one of {', '.join(METHODS)}")
    _require(not r.greedy_sample or r.k >= 2, "rollout.greedy_sample",
             f"one of the K answers is greedy and the others sampled: needs rollout.k ≥ 2, got {r.k}")
    method_of(cfg).validate(cfg)  # what the method itself cannot run: K, the anchor, its own keys
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
    try:
        check_kind(j.kind)
    except ValueError:
        raise ConfigError(f"judge.kind: unknown {j.kind!r}; choose one of {', '.join(KINDS)}") from None
    _require(j.tau > 0, "judge.tau", f"must be > 0, got {j.tau}")
    unknown = [t for t in cfg.metrics.trackers if t not in TRACKERS]
    _require(not unknown, "metrics.trackers", f"unknown {unknown}; choose from {list(TRACKERS)}")
    _require(not j.partial_credit or j.kind == "verifier", "judge.partial_credit",
             f"grades the verifier's instructions; judge.kind is {j.kind!r}")
    _require(j.loop_penalty >= 0.0, "judge.loop_penalty", f"must be ≥ 0 (0: off), got {j.loop_penalty}")
    _require(not j.loop_penalty or j.kind == "verifier", "judge.loop_penalty",
             f"lowers the verifier's score; judge.kind is {j.kind!r}")
    _require(j.noise in NOISES, "judge.noise", f"unknown {j.noise!r}; choose one of {NOISES}")
    if j.noise == "flip":
        _require(0.0 <= j.noise_scale < 1.0, "judge.noise_scale", f"a flip share must be in [0, 1), got {j.noise_scale}")
    _require(j.noise_scale >= 0.0, "judge.noise_scale", f"must be ≥ 0, got {j.noise_scale}")
    _require(j.temperature > 0, "judge.temperature", f"must be > 0 (1: unchanged), got {j.temperature}")
    _require(j.truncated in TRUNCATED, "judge.truncated",
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
    _require(loss.beta > 0, "loss.beta", f"must be > 0, got {loss.beta}")
    _require(0.0 <= loss.label_smoothing < 0.5, "loss.label_smoothing", f"must be in [0, 0.5), got {loss.label_smoothing}")
    _require(loss.spo_weight >= 0, "loss.spo_weight", f"must be ≥ 0, got {loss.spo_weight}")
    _require(loss.nll_weight >= 0, "loss.nll_weight", f"must be ≥ 0, got {loss.nll_weight}")
    _require(0.0 <= cfg.dno.replay_fraction < 1.0, "dno.replay_fraction", f"must be in [0, 1), got {cfg.dno.replay_fraction}")
    _require(cfg.dno.iteration_steps >= 1, "dno.iteration_steps", f"must be ≥ 1, got {cfg.dno.iteration_steps}")
    _require(len(loss.spo_ratios) >= 2 and all(0 <= x <= 1 for x in loss.spo_ratios), "loss.spo_ratios",
             f"need ≥ 2 ratios in [0, 1], got {loss.spo_ratios}")
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
    _require(cfg.data.on_bad_rows in ("error", "skip"), "data.on_bad_rows",
             f"must be error or skip, got {cfg.data.on_bad_rows!r}")
    _require(cfg.data.num_prompts is None or cfg.data.num_prompts >= 1, "data.num_prompts", "must be ≥ 1 or null")
    _require(cfg.model.max_prompt_tokens >= 1, "model.max_prompt_tokens", "must be ≥ 1")
    _require(cfg.model.dtype in ("float32", "bfloat16", "float16"), "model.dtype", f"unsupported {cfg.model.dtype!r}")
    try:
        check_choice(cfg.model.chat_template)
    except ChatTemplateError as err:
        raise ConfigError(str(err)) from None
    _require(cfg.checkpoint.every >= 0, "checkpoint.every", "must be ≥ 0")
    _require(not cfg.checkpoint.merged or l.lora.enabled, "checkpoint.merged",
             "merges a LoRA adapter, and learner.lora.enabled is false (a full fine-tune's hf/ is the whole model): "
             "drop checkpoint.merged")
    _require(cfg.metrics.probe_every >= 0, "metrics.probe_every", "must be ≥ 0")


def check_local_machine(cfg: Config, cpus: int, gpus: int) -> None:
    """Before starting a local cluster: logical CPUs may be oversubscribed (actors mostly
    wait on each other), but each learner rank needs a core of its own, and GPUs are real."""
    l = cfg.learner
    _require(l.num_ranks <= cpus, "learner.num_ranks",
             f"{l.num_ranks} learner ranks need {l.num_ranks} CPU cores; this machine has {cpus}")
    wanted = cfg.resources_needed()["GPU"]
    _require(wanted <= gpus, "learner.gpus_per_rank",
             f"the actors ask for {wanted:g} GPUs in all; this machine has {gpus}")


def default_config_path() -> Path:
    return Path(__file__).resolve().parent / "configs" / "default.yaml"


def dump_config(cfg: Config, path: str | os.PathLike) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

"""Run configuration: defaults, typed `key=value` overrides, refused keys and values, round trips."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from cluster.config import config_from_dict, default_config_path, dump_config, load_config, parse_overrides, validate
from cluster.methods import METHODS
from core.config import Config, ConfigError

# ---------------------------------------------------------------------------------------
# Defaults.


def test_dataclass_defaults_are_the_embedded_default_run():
    cfg = load_config(None)
    assert cfg == Config()
    assert cfg.seed == 0
    assert cfg.model.path is None and cfg.model.dtype == "float32" and cfg.model.max_prompt_tokens == 96
    assert cfg.data.prompts is None and cfg.data.num_prompts == 200 and cfg.data.on_bad_rows == "error"
    assert cfg.rollout.k == 2 and cfg.rollout.max_tokens == 24 and cfg.rollout.temperature == 0.8
    assert cfg.rollout.greedy_sample is False  # every answer sampled unless asked
    assert cfg.judge.anchor == "round_robin" and cfg.judge.answer_tokens == ["A", "B"]
    assert cfg.learner.num_ranks == 1 and cfg.learner.zero_stage == 2 and cfg.learner.max_steps == 25
    assert cfg.learner.lr == 5e-5 and cfg.learner.pairs_per_step == 4
    assert cfg.learner.lora.enabled is True and cfg.learner.lora.r == 8
    assert cfg.learner.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert cfg.method == "osp" and cfg.loss.beta == 0.1 and cfg.loss.spo_ratios == [0.0, 0.25, 0.5, 0.75]
    assert cfg.weight_sync.method == "auto" and cfg.weight_sync.payload == "auto"
    assert cfg.ray.address is None and cfg.ray.dashboard_host == "127.0.0.1"  # loopback by default


def test_default_list_fields_are_not_shared_between_configs():
    a, b = Config(), Config()
    a.judge.answer_tokens.append("C")
    a.learner.lora.target_modules.clear()
    assert b.judge.answer_tokens == ["A", "B"]
    assert len(b.learner.lora.target_modules) == 7


def test_dno_may_sample_an_odd_k():
    assert load_config(None, ["rollout.k=5", "method=dno"]).rollout.k == 5


def test_default_yaml_loads_and_validates():
    path = default_config_path()
    assert path.name == "default.yaml" and path.parent.name == "configs"
    if not path.is_file():  # not written yet: the dataclass defaults are the default run
        cfg = load_config(None)
        assert cfg == Config()
        return
    cfg = load_config(path)
    validate(cfg)
    assert cfg.rollout.k >= 2 and cfg.rollout.k % 2 == 0
    assert cfg.method in METHODS
    # overrides apply on top of the file
    assert load_config(path, ["learner.max_steps=3", "seed=11"]).learner.max_steps == 3
    assert load_config(path, ["seed=11"]).seed == 11


# ---------------------------------------------------------------------------------------
# key=value overrides, parsed and typed.


def test_parse_overrides_builds_a_nested_tree():
    assert parse_overrides(["learner.max_steps=10", "learner.lora.r=4", "seed=3", "model.path="]) == {
        "learner": {"max_steps": 10, "lora": {"r": 4}},
        "seed": 3,
        "model": {"path": None},
    }
    assert parse_overrides(["judge.answer_tokens=[X, Y]"]) == {"judge": {"answer_tokens": ["X", "Y"]}}
    assert parse_overrides(["checkpoint.dir=runs/a=b"]) == {"checkpoint": {"dir": "runs/a=b"}}
    assert parse_overrides([" seed =5"]) == {"seed": 5}


@pytest.mark.parametrize(
    "override, getter, expected, typ",
    [
        ("learner.max_steps=10", lambda c: c.learner.max_steps, 10, int),
        ("rollout.k=4.0", lambda c: c.rollout.k, 4, int),  # an integral float is an int
        ("ray.num_cpus=8", lambda c: c.ray.num_cpus, 8, int),
        ("learner.lr=1e-5", lambda c: c.learner.lr, 1e-5, float),  # YAML reads "1e-5" as a string
        ("learner.lr=0.001", lambda c: c.learner.lr, 0.001, float),
        ("loss.beta=1", lambda c: c.loss.beta, 1.0, float),
        ("metrics.ray_metrics=false", lambda c: c.metrics.ray_metrics, False, bool),
        ("data.shuffle=no", lambda c: c.data.shuffle, False, bool),
        ("learner.lora.enabled=False", lambda c: c.learner.lora.enabled, False, bool),
        ("metrics.progress=0", lambda c: c.metrics.progress, False, bool),
        ("loss.hard_labels=1", lambda c: c.loss.hard_labels, True, bool),
        ("method=dpo", lambda c: c.method, "dpo", str),
        ("model.path=/models/smol", lambda c: c.model.path, "/models/smol", str),
        ("checkpoint.dir=2024", lambda c: c.checkpoint.dir, "2024", str),
        ("judge.answer_tokens=[X, Y]", lambda c: c.judge.answer_tokens, ["X", "Y"], list),
        ('judge.answer_tokens=["Yes", "No"]', lambda c: c.judge.answer_tokens, ["Yes", "No"], list),
        ("loss.spo_ratios=[0, 0.5, 1]", lambda c: c.loss.spo_ratios, [0.0, 0.5, 1.0], list),
        ("learner.lora.target_modules=[q_proj, v_proj]", lambda c: c.learner.lora.target_modules, ["q_proj", "v_proj"], list),
        ("data.num_prompts=null", lambda c: c.data.num_prompts, None, type(None)),
        ("data.num_prompts=", lambda c: c.data.num_prompts, None, type(None)),
        ("pipeline.spill_dir=/tmp/pairs", lambda c: c.pipeline.spill_dir, "/tmp/pairs", str),
    ],
)
def test_override_values_are_typed(override, getter, expected, typ):
    value = getter(load_config(None, [override]))
    assert value == expected
    assert type(value) is typ
    if typ is list:
        assert all(type(v) is type(expected[0]) for v in value)


def test_overrides_only_touch_their_keys_and_the_last_one_wins():
    cfg = load_config(None, ["learner.max_steps=7", "seed=1", "seed=2"])
    assert cfg.seed == 2
    assert cfg.learner.max_steps == 7
    expected = Config()
    expected.seed, expected.learner.max_steps = 2, 7
    assert cfg == expected


def test_overrides_merge_into_a_yaml_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("method: dpo\nloss:\n  beta: 0.5\nlearner:\n  max_steps: 5\n  lora:\n    r: 16\n")
    cfg = load_config(path, ["learner.max_steps=9", "loss.beta=0.25"])
    assert cfg.method == "dpo"  # from the file
    assert cfg.loss.beta == 0.25  # override beats the file
    assert cfg.learner.max_steps == 9
    assert cfg.learner.lora.r == 16  # sibling keys of an overridden section survive
    assert cfg.learner.lora.alpha == 16 and cfg.learner.lr == 5e-5  # untouched defaults


def test_empty_yaml_file_gives_the_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing set\n")
    assert load_config(path) == Config()


@pytest.mark.parametrize(
    "override, message",
    [
        ("rollout.k=abc", "rollout.k: expected an integer, got 'abc'"),
        ("rollout.k=2.5", "rollout.k: expected an integer, got 2.5"),
        ("rollout.k=true", "rollout.k: expected an integer, got True"),
        ("rollout.k=", "rollout.k: may not be null"),
        ("learner.lr=fast", "learner.lr: expected a number, got 'fast'"),
        ("loss.beta=yes", "loss.beta: expected a number, got True"),
        ("metrics.ray_metrics=maybe", "metrics.ray_metrics: expected true/false, got 'maybe'"),
        ("metrics.ray_metrics=2", "metrics.ray_metrics: expected true/false, got 2"),
        ("judge.answer_tokens=X", "judge.answer_tokens: expected a list, got 'X'"),
        ("loss.spo_ratios=[0, half]", "loss.spo_ratios[1]: expected a number, got 'half'"),
        # YAML reads yes/no/on/off as bools; a string field must not silently become "True"
        ("model.path=yes", "model.path: expected a string, got True"),
        ("judge.answer_tokens=[Yes, No]", "judge.answer_tokens[0]: expected a string, got True"),
        ("model.path={a: 1}", "model.path: expected a string, got {'a': 1}"),
        ("learner=3", "learner: expected a mapping, got 3"),
        ("learner.lora=[1]", "learner.lora: expected a mapping, got [1]"),
    ],
)
def test_badly_typed_values_are_refused(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value).startswith(message)


def test_malformed_overrides_are_refused():
    with pytest.raises(ConfigError, match=r"override 'learner\.max_steps' must look like key=value"):
        load_config(None, ["learner.max_steps"])
    with pytest.raises(ConfigError, match=r"override seed\.x: seed is not a section"):
        load_config(None, ["seed=1", "seed.x=2"])


# ---------------------------------------------------------------------------------------
# Unknown keys.


@pytest.mark.parametrize(
    "override, message",
    [
        ("learner.max_stepz=3", "unknown config key learner.max_stepz (did you mean learner.max_steps?)"),
        ("lerner.max_steps=3", "unknown config key lerner (did you mean learner?)"),
        ("learner.lora.rr=3", "unknown config key learner.lora.rr (did you mean learner.lora.r?)"),
        ("loss.bta=0.2", "unknown config key loss.bta (did you mean loss.beta?)"),
        ("rollout.temprature=1.0", "unknown config key rollout.temprature (did you mean rollout.temperature?)"),
    ],
)
def test_unknown_keys_suggest_the_closest_one(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value) == message


def test_unknown_key_with_no_close_match_lists_the_valid_keys():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["zzz=1"])
    msg = str(err.value)
    assert msg.startswith("unknown config key zzz; valid keys: seed, method, model, data, rollout, judge, learner, loss,")
    assert "did you mean" not in msg


def test_unknown_keys_in_a_yaml_file_and_a_dict_are_refused(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("learner:\n  max_step: 5\n")
    with pytest.raises(ConfigError, match=r"unknown config key learner\.max_step \(did you mean learner\.max_steps\?\)"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"unknown config key judge\.anchr \(did you mean judge\.anchor\?\)"):
        config_from_dict({"judge": {"anchr": "dno"}})


# ---------------------------------------------------------------------------------------
# Bad config files.


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"config file '.*nope\.yaml' does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("learner: [\n")
    with pytest.raises(ConfigError, match=r"config file '.*broken\.yaml' is not valid YAML"):
        load_config(path)


@pytest.mark.parametrize("text, shown", [("- a\n- b\n", "['a', 'b']"), ("42\n", "42"), ("just words\n", "'just words'")])
def test_yaml_file_that_is_not_a_mapping(tmp_path, text, shown):
    path = tmp_path / "list.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"config file {str(path)!r} must be a mapping of sections, got {shown}"


# ---------------------------------------------------------------------------------------
# Impossible values (validate).


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["rollout.k=3"], "rollout.k: ranked pairing needs an even K ≥ 2 (method=dno takes any K ≥ 2), got 3"),
        (["rollout.k=1"], "rollout.k: ranked pairing needs an even K ≥ 2 (method=dno takes any K ≥ 2), got 1"),
        (["rollout.k=0"], "rollout.k: ranked pairing needs an even K ≥ 2 (method=dno takes any K ≥ 2), got 0"),
        (["rollout.k=-2"], "rollout.k: ranked pairing needs an even K ≥ 2 (method=dno takes any K ≥ 2), got -2"),
        (["rollout.greedy_sample=true", "rollout.k=1", "method=dno"],
         "rollout.greedy_sample: one of the K answers is greedy and the others sampled: needs rollout.k ≥ 2, got 1"),
        (["rollout.num_actors=0"], "rollout.num_actors: need at least 1, got 0"),
        (["rollout.max_tokens=0"], "rollout.max_tokens: must be ≥ 1, got 0"),
        (["rollout.top_p=0"], "rollout.top_p: must be in (0, 1], got 0.0"),
        (["rollout.top_p=1.5"], "rollout.top_p: must be in (0, 1], got 1.5"),
        (["rollout.temperature=0"], "rollout.temperature: must be > 0 for K distinct samples, got 0.0"),
        (["rollout.prompts_per_batch=0"], "rollout.prompts_per_batch: must be ≥ 1, got 0"),
        (["judge.num_actors=0"], "judge.num_actors: need at least 1, got 0"),
        (["judge.anchor=best"], "judge.anchor: unknown 'best'; choose one of ('round_robin', 'sample0', 'sft_greedy')"),
        (["judge.answer_tokens=[A, A]"], "judge.answer_tokens: need two distinct strings, got ['A', 'A']"),
        (["judge.answer_tokens=[A, B, C]"], "judge.answer_tokens: need two distinct strings, got ['A', 'B', 'C']"),
        (["judge.temperature=0"], "judge.temperature: must be > 0 (1: unchanged), got 0.0"),
        (["judge.loop_penalty=-0.5"], "judge.loop_penalty: must be ≥ 0 (0: off), got -0.5"),
        (["judge.kind=self", "judge.loop_penalty=0.5"], "judge.loop_penalty: lowers the verifier's score; judge.kind is 'self'"),
        (["learner.num_ranks=0"], "learner.num_ranks: need at least 1, got 0"),
        (["learner.zero_stage=4"], "learner.zero_stage: must be 0-3, got 4"),
        (["learner.lr=0"], "learner.lr: must be > 0, got 0.0"),
        (["learner.max_steps=0"], "learner.max_steps: must be ≥ 1, got 0"),
        (["learner.sync_every=0"], "learner.sync_every: must be ≥ 1, got 0"),
        (["learner.num_ranks=3"], "learner.pairs_per_step: must be a positive multiple of learner.num_ranks=3, got 4"),
        (["learner.pairs_per_step=2", "learner.num_ranks=4"],
         "learner.pairs_per_step: must be a positive multiple of learner.num_ranks=4, got 2"),
        (["learner.lora.r=0"], "learner.lora.r: must be ≥ 1, got 0"),
        (["method=ppo"], "method: unknown 'ppo'; choose one of osp, dpo, cdpo, ipo, spo, dno"),
        (["loss.name=spce"], "loss.name was replaced by the top-level key `method` (did you mean method=osp?)"),
        (["loss.name=ipo"], "loss.name was replaced by the top-level key `method` (did you mean method=ipo?)"),
        (["judge.anchor=dno"], "judge.anchor=dno was replaced by the top-level key `method` (did you mean method=dno?)"),
        (["method=dpo", "loss.hard_labels=true"],
         "loss.hard_labels: method=dpo trains on the judge's verdict already; the switch only changes osp (making it dpo)"),
        (["judge.pairing=random", "judge.anchor=sample0"],
         "judge.pairing: random pairs from the round-robin matrix; it needs judge.anchor=round_robin, got sample0"),
        (["method=dno", "rollout.k=4", "judge.pairing=best_worst"],
         "judge.pairing: method=dno keeps its own win-rate pair; judge.pairing=best_worst does not apply"),
        (["method=dno", "judge.anchor=sample0"],
         "judge.anchor: method=dno judges every pair of answers (win rates); judge.anchor=sample0 does not apply"),
        (["loss.beta=0"], "loss.beta: must be > 0, got 0.0"),
        (["loss.beta=-0.1"], "loss.beta: must be > 0, got -0.1"),
        (["loss.label_smoothing=0.5"], "loss.label_smoothing: must be in [0, 0.5), got 0.5"),
        (["loss.label_smoothing=-0.1"], "loss.label_smoothing: must be in [0, 0.5), got -0.1"),
        (["loss.spo_weight=-1"], "loss.spo_weight: must be ≥ 0, got -1.0"),
        # hard_labels does nothing to the losses that read the verdict alone: a config that
        # sets it there promises a choice the code does not make (it was accepted silently).
        *[([f"method={name}", "loss.hard_labels=true"],
           f"loss.hard_labels: method={name} trains on the judge's verdict already; the switch only changes osp "
           "(making it dpo)") for name in ("cdpo", "ipo", "spo")],
        (["method=dno", "rollout.k=4", "loss.hard_labels=true"], "loss.hard_labels: method=dno trains on the verdict already"),
        (["loss.spo_ratios=[0.5]"], "loss.spo_ratios: need ≥ 2 ratios in [0, 1], got [0.5]"),
        (["loss.spo_ratios=[0, 1.5]"], "loss.spo_ratios: need ≥ 2 ratios in [0, 1], got [0.0, 1.5]"),
        (["dno.replay_fraction=1"], "dno.replay_fraction: must be in [0, 1), got 1.0"),
        (["dno.iteration_steps=0"], "dno.iteration_steps: must be ≥ 1, got 0"),
        (["dno.enabled=true"], "dno.enabled was replaced by the top-level key `method` (did you mean method=dno?)"),
        (["pipeline.max_staleness=-1"], "pipeline.max_staleness: must be ≥ 0, got -1"),
        (["pipeline.buffer_max_pairs=2"], "pipeline.buffer_max_pairs: must hold at least one step (4 pairs), got 2"),
        (["weight_sync.method=nccl"], "weight_sync.method: unknown 'nccl'; choose auto, object_store or broadcast"),
        (["weight_sync.payload=deltas"], "weight_sync.payload: unknown 'deltas'; choose auto, adapter or full"),
        (["weight_sync.payload=adapter", "learner.lora.enabled=false"],
         "weight_sync.payload: adapter needs learner.lora.enabled=true (there is no adapter to push)"),
        (["weight_sync.payload=adapter", "weight_sync.method=broadcast"],
         "weight_sync.payload: adapter travels through the object store: use weight_sync.method=auto or "
         "object_store, or payload=full with broadcast"),
        (["data.on_bad_rows=ignore"], "data.on_bad_rows: must be error or skip, got 'ignore'"),
        (["data.num_prompts=0"], "data.num_prompts: must be ≥ 1 or null"),
        (["model.max_prompt_tokens=0"], "model.max_prompt_tokens: must be ≥ 1"),
        (["model.dtype=int8"], "model.dtype: unsupported 'int8'"),
        (["checkpoint.every=-1"], "checkpoint.every: must be ≥ 0"),
        (["checkpoint.merged=true", "learner.lora.enabled=false"],
         "checkpoint.merged: merges a LoRA adapter, and learner.lora.enabled is false (a full fine-tune's hf/ is "
         "the whole model): drop checkpoint.merged"),
    ],
)
def test_impossible_values_are_refused_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert str(err.value) == message


@pytest.mark.parametrize(
    "overrides",
    [
        ["rollout.k=4"],
        ["rollout.k=8", "rollout.top_p=1.0"],
        ["method=dno", "rollout.k=3"],
        ["rollout.greedy_sample=true", "rollout.k=2"],
        ["learner.num_ranks=2", "learner.pairs_per_step=8"],
        ["learner.zero_stage=0", "method=ipo", "loss.label_smoothing=0"],
        ["loss.spo_ratios=[0, 1]", "loss.spo_weight=0"],
        ["pipeline.max_staleness=0", "pipeline.buffer_max_pairs=4", "checkpoint.every=0"],
        ["checkpoint.merged=true"],
        ["data.on_bad_rows=skip", "data.num_prompts=1", "model.dtype=bfloat16"],
    ],
)
def test_edge_values_that_can_run_are_accepted(overrides):
    """Would catch a validator that refuses a runnable edge value, or a loader that drops or
    coerces one (the config must hold exactly what was asked)."""
    cfg = load_config(None, overrides).to_dict()
    for item in overrides:
        key, _, raw = item.partition("=")
        value = cfg
        for part in key.split("."):
            value = value[part]
        assert value == yaml.safe_load(raw), item


def test_validate_checks_a_config_edited_in_code():
    cfg = Config()
    validate(cfg)
    cfg.rollout.k = 5
    with pytest.raises(ConfigError, match=r"^rollout\.k: ranked pairing needs an even K ≥ 2 \(method=dno .*\), got 5$"):
        validate(cfg)
    assert issubclass(ConfigError, ValueError)


# ---------------------------------------------------------------------------------------
# dump_config → load_config.


def test_dump_then_load_round_trips(tmp_path):
    cfg = load_config(
        None,
        [
            "seed=13",
            "model.path=/models/tiny",
            "data.num_prompts=null",
            "rollout.k=6",
            "learner.lr=2e-4",
            "learner.lora.target_modules=[q_proj]",
            "method=spo",
            "loss.spo_ratios=[0, 0.5, 1]",
            "judge.answer_tokens=[X, Y]",
            "metrics.trackers=[]",
            "pipeline.spill_dir=/tmp/spill",
        ],
    )
    path = tmp_path / "dumped.yaml"
    dump_config(cfg, path)
    loaded = load_config(path)
    assert loaded == cfg
    assert loaded.learner.lr == 2e-4 and loaded.data.num_prompts is None and loaded.rollout.k == 6

    raw = yaml.safe_load(path.read_text())
    assert list(raw) == [f.name for f in dataclasses.fields(Config)]  # sections in declaration order
    assert raw["rollout"]["k"] == 6 and raw["model"]["path"] == "/models/tiny"
    assert config_from_dict(raw) == cfg
    assert config_from_dict(cfg.to_dict()) == cfg


def test_dump_of_defaults_round_trips(tmp_path):
    path = tmp_path / "defaults.yaml"
    dump_config(Config(), path)
    assert load_config(path) == Config()
    # and overrides still apply on top of a dumped file
    assert load_config(path, ["loss.beta=0.3"]).loss.beta == 0.3

"""Hugging Face hub ids wherever osp names a model (core/models.py): telling an id from a path,
pinning, the offline cache, the online download from a stand-in hub (tests/hub_fixtures.py),
the refusals before Ray, the settings forwarded to the actors, and that a local folder or the
embedded default contacts nothing."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hub_fixtures import NO_CONFIG_REPO, TINY_REPO, FakeHub, folder_files, snapshot_of, write_hub_cache

from core.models import HubId, ModelNotFound, parse_hub_id, pin_model, resolve_model

REPO_ROOT = Path(__file__).resolve().parents[1]
OUR_LOGGERS = ("osp", "cluster", "actors", "judge", "learner")


@pytest.fixture
def online_hub(tmp_path, monkeypatch):
    """A stand-in hub (FakeHub) as HF_ENDPOINT, online, with an empty cache: the hub, the cache."""
    import huggingface_hub.constants

    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    # huggingface_hub read HF_HUB_OFFLINE when it was imported: online must hold in this process too.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    cache = tmp_path / "hub-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        yield hub, cache


@pytest.fixture
def restore_loggers():
    """cluster.train.main() installs its own handlers on our loggers; put them back."""
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level, logging.getLogger(n).propagate)
             for n in OUR_LOGGERS}
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


# -- an id or a path --------------------------------------------------------------------------


@pytest.mark.parametrize("ref, expected", [
    ("org/name", HubId("org/name")),
    ("HuggingFaceTB/SmolLM2-135M-Instruct", HubId("HuggingFaceTB/SmolLM2-135M-Instruct")),
    ("org/name@v1.2", HubId("org/name", "v1.2")),
    ("org/name@refs/pr/1", HubId("org/name", "refs/pr/1")),  # a branch may hold '/'
    ("org/name@0123456789abcdef0123456789abcdef01234567", HubId("org/name", "0123456789abcdef0123456789abcdef01234567")),
    ("/models/x", None),  # absolute: a path, even when missing
    ("./org/name", None),
    ("~/org/name", None),
    ("name", None),  # a bare name is never an id here: it would shadow a missing local folder
    ("a/b/c", None),
    ("runs/osp/ckpt-000002/hf", None),
    ("org--x/name", None),  # the hub's own rules
    ("org/na..me", None),
    ("org/name@", None),
    ("", None),
])
def test_parse_hub_id_tells_ids_from_paths(ref, expected):
    """Catches a local path taken for an id (a user's missing /models/x would then ask the hub)
    or an id taken for a path (the issue's 'does not exist or is not a folder')."""
    assert parse_hub_id(ref) == expected


def test_an_existing_local_folder_wins_over_an_id_spelled_the_same(tiny_model_dir, tmp_path, monkeypatch):
    """A relative folder `org/name` that exists is that folder, not a hub id; pinned, it is absolute."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "name").symlink_to(tiny_model_dir, target_is_directory=True)
    assert parse_hub_id("org/name") is None
    assert resolve_model("org/name") == Path("org/name")
    assert pin_model("org/name") == str(tmp_path / "org" / "name")


def test_a_missing_local_path_keeps_its_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model path '.*/models/x' does not exist or is not a folder") as err:
        resolve_model(str(tmp_path / "models" / "x"))
    assert not isinstance(err.value, ModelNotFound)


def test_the_embedded_default_is_never_pinned():
    assert pin_model(None) is None and pin_model("embedded") == "embedded" and pin_model("") == ""


# -- the offline cache ------------------------------------------------------------------------


def test_a_hub_id_resolves_from_the_offline_cache(offline_hub):
    """Every spelling of the id (bare, @branch, @commit), whole or config only, is the one snapshot,
    and transformers loads it through the cache's symlinks."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache, sha = offline_hub
    snapshot = snapshot_of(cache, TINY_REPO, sha)
    assert (snapshot / "model.safetensors").is_symlink()  # the real cache's layout
    for ref in (TINY_REPO, f"{TINY_REPO}@main", f"{TINY_REPO}@{sha}"):
        assert resolve_model(ref) == snapshot
        assert resolve_model(ref, config_only=True) == snapshot
    assert AutoTokenizer.from_pretrained(snapshot).eos_token == "<|im_end|>"
    assert AutoModelForCausalLM.from_pretrained(snapshot).config.num_hidden_layers == 2


def test_pin_model_names_the_commit(offline_hub, tiny_model_dir):
    """Catches actors handed a moving branch (`main`) instead of the commit the driver checked."""
    cache, sha = offline_hub
    assert pin_model(TINY_REPO) == f"{TINY_REPO}@{sha}"
    assert pin_model(f"{TINY_REPO}@main") == f"{TINY_REPO}@{sha}"
    assert pin_model(f"{TINY_REPO}@{sha}") == f"{TINY_REPO}@{sha}"  # pinning is idempotent
    assert pin_model(tiny_model_dir) == tiny_model_dir


@pytest.mark.parametrize("ref, message", [
    ("osp-test/absent", "Hugging Face model 'osp-test/absent' (revision 'main') is not in the cache; "
                        "Hugging Face cache searched: {cache}. HF_HUB_OFFLINE=1 is set, so nothing was downloaded"),
    (f"{TINY_REPO}@nope", f"Hugging Face model '{TINY_REPO}' (revision 'nope') is not in the cache; "
                          "Hugging Face cache searched: {cache}. HF_HUB_OFFLINE=1 is set"),
    (NO_CONFIG_REPO, f"Hugging Face model '{NO_CONFIG_REPO}' (revision 'main'): its snapshot {{cache}}/"
                     "models--osp-test--no-config/snapshots/"),
])
def test_an_unresolvable_id_names_id_revision_and_cache(offline_hub, ref, message):
    cache, _ = offline_hub
    with pytest.raises(ModelNotFound) as err:
        resolve_model(ref)
    text = str(err.value)
    assert message.format(cache=cache) in text and "\n" not in text
    assert ref != NO_CONFIG_REPO or "has no config.json (not a transformers model)" in text
    assert isinstance(err.value, FileNotFoundError)  # the CLIs' exit code 2


def test_a_snapshot_without_weights_serves_the_config_alone(tiny_model_dir, tmp_path, monkeypatch):
    """config_only (the driver's read) needs no weights; a whole resolution (an actor's) refuses a
    snapshot that has none, naming it, instead of a loader's error later."""
    files = {k: v for k, v in folder_files(tiny_model_dir).items() if not k.endswith(".safetensors")}
    sha = write_hub_cache(tmp_path, "osp-test/config-only", files)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model("osp-test/config-only", config_only=True) == snapshot_of(tmp_path, "osp-test/config-only", sha)
    with pytest.raises(ModelNotFound, match=r"holds no weights \(\*\.safetensors, \*\.bin\)"):
        resolve_model("osp-test/config-only")


# -- online, against a stand-in hub -----------------------------------------------------------


def test_online_the_driver_fetches_the_config_and_an_actor_the_weights(online_hub, tiny_model_dir, monkeypatch):
    """An empty cache: pin_model downloads the config and tokenizer only and pins the commit; the
    actor's resolution of the pin downloads the weights; once the branch moves, the pin still
    names the first snapshot; offline afterwards, both resolve from the cache with no request."""
    hub, cache = online_hub
    files = folder_files(tiny_model_dir)
    sha = hub.add(TINY_REPO, files)
    pinned = pin_model(TINY_REPO)
    assert pinned == f"{TINY_REPO}@{sha}"
    fetched = [path.rsplit("/", 1)[-1] for method, path in hub.requests if method == "GET" and "/resolve/" in path]
    assert "config.json" in fetched and "tokenizer.json" in fetched
    assert "model.safetensors" not in fetched  # the driver never downloads the weights
    snapshot = snapshot_of(cache, TINY_REPO, sha)
    assert not (snapshot / "model.safetensors").exists()

    assert resolve_model(pinned) == snapshot
    assert (snapshot / "model.safetensors").read_bytes() == files["model.safetensors"]

    moved = hub.add(TINY_REPO, {**files, "README.md": b"a newer commit"}, salt="2")
    assert resolve_model(pinned) == snapshot  # the pin, not the branch
    assert resolve_model(TINY_REPO) == snapshot_of(cache, TINY_REPO, moved)

    asked = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model(pinned) == snapshot
    assert resolve_model(TINY_REPO) == snapshot_of(cache, TINY_REPO, moved)  # refs/main moved with the download
    assert len(hub.requests) == asked


@pytest.mark.parametrize("ref, message", [
    ("osp-test/absent", "Hugging Face model 'osp-test/absent' (revision 'main'): no such model on the hub "
                        "(a private one needs HF_TOKEN), and not a local folder either; Hugging Face cache searched: "),
    (f"{TINY_REPO}@nope", f"Hugging Face model '{TINY_REPO}' (revision 'nope'): the hub has no revision 'nope' of it; "
                          "Hugging Face cache searched: "),
])
def test_online_a_missing_id_or_revision_is_named(online_hub, tiny_model_dir, ref, message):
    hub, cache = online_hub
    hub.add(TINY_REPO, folder_files(tiny_model_dir))
    with pytest.raises(ModelNotFound) as err:
        pin_model(ref)
    assert str(err.value) == message + str(cache)


# -- the run: checked and pinned before Ray ---------------------------------------------------


def test_build_run_pins_the_model_and_the_judge(offline_hub, tmp_path):
    """The actors get `org/name@<commit>` (RunSpec.model_ref, the judge kind, the saved config's
    model.path for --resume); the driver reads the snapshot's tokenizer."""
    from cluster.config import load_config
    from cluster.run import build_run

    cache, sha = offline_hub
    cfg = load_config(None, [f"model.path={TINY_REPO}", f"judge.kind=lm:{TINY_REPO}", "data.num_prompts=4",
                             f"checkpoint.dir={tmp_path / 'run'}"])
    spec = build_run(cfg)
    pinned = f"{TINY_REPO}@{sha}"
    assert spec.model_ref == pinned and spec.cfg.model.path == pinned
    assert spec.cfg.judge.kind == f"lm:{pinned}"
    assert spec.model_path == str(snapshot_of(cache, TINY_REPO, sha))
    assert cfg.model.path == TINY_REPO  # the caller's config is not changed
    assert len(spec.prompts) == 4 and not (tmp_path / "run").exists()


@pytest.mark.parametrize("override", [
    "model.path=osp-test/absent",
    f"model.path={TINY_REPO}@nope",
    f"model.path={NO_CONFIG_REPO}",
    f"judge.kind=reward:{TINY_REPO}@nope",
])
def test_train_refuses_an_unresolvable_id_before_ray(offline_hub, tiny_model_dir, tmp_path, capsys, restore_loggers,
                                                     override):
    """`python -m cluster.train` (its main): exit 2, one ERROR line naming the id and the cache,
    and no Ray started, no run folder written."""
    from cluster.train import main

    cache, _ = offline_hub
    run_dir = tmp_path / "run"
    code = main([f"model.path={tiny_model_dir}", override, f"checkpoint.dir={run_dir}"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert code == 2, err
    assert len(errors) == 1 and "Hugging Face model 'osp-test/" in errors[0] and str(cache) in errors[0], err
    assert "starting a local Ray cluster" not in err
    assert not run_dir.exists()


# -- actors resolve on their own node ---------------------------------------------------------


def test_a_judge_actor_resolves_its_models_itself(offline_hub):
    """JudgeActor (in this process, as on its node) loads the pinned SFT model and an lm: judge
    model from the cache, and says which folder it loaded; a reward: judge resolves too."""
    from cluster.methods import method_of
    from core.config import Config, JudgeConfig
    from judge.judge_actor import JudgeActor
    from judge.preferences import RewardJudge

    cache, sha = offline_hub
    cfg = Config(judge=JudgeConfig(kind=f"lm:{TINY_REPO}@{sha}"))
    cfg.rollout.max_tokens = 2
    actor = JudgeActor(f"{TINY_REPO}@{sha}", cfg, method_of(cfg))
    info = actor.info()
    assert info["model_folder"] == str(snapshot_of(cache, TINY_REPO, sha))
    assert info["model_bytes"] == (snapshot_of(cache, TINY_REPO, sha) / "model.safetensors").stat().st_size > 0
    assert info["judge"] == f"lm:{TINY_REPO}@{sha}"
    [p] = actor.strengths([("Say hi.", "Hi!", "Bye.")])
    assert 0.0 < p < 1.0
    reward = RewardJudge(TINY_REPO)
    assert all(0.0 <= q <= 1.0 for q in reward.compare(["Say hi."], ["Hi!"], ["Bye."]))


def test_the_hub_settings_are_forwarded_and_nothing_forces_offline(monkeypatch):
    """Catches the old global HF_HUB_OFFLINE=1 coming back (no hub id could ever download), a
    worker that does not see the user's cache, endpoint or offline switch, and HF_TOKEN put into
    a Ray runtime env (Ray logs those in plain text: tests/test_hub_run.py looks)."""
    from cluster.driver.actors import hub_runtime_env
    from core.env import HUB_ENV, apply_runtime_env, runtime_env_vars

    for key in (*HUB_ENV, "HF_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    assert not set(HUB_ENV) & set(runtime_env_vars(cuda=False))
    assert hub_runtime_env() is None
    apply_runtime_env(cuda=False)
    assert "HF_HUB_OFFLINE" not in os.environ and "TRANSFORMERS_OFFLINE" not in os.environ
    settings = {"HF_HUB_OFFLINE": "1", "HF_HOME": "/shared/hf", "HF_HUB_CACHE": "/shared/hf/hub",
                "HF_ENDPOINT": "http://mirror:8080", "HF_TOKEN_PATH": "/etc/hf/token"}
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HF_TOKEN", "hf_never_forwarded")
    env = runtime_env_vars(cuda=False)
    assert {k: env[k] for k in settings} == settings and "HF_TOKEN" not in env
    assert hub_runtime_env() == {"env_vars": settings}


# -- nothing contacted for a local folder or the embedded default -------------------------------


def _load_in_fresh_process(refs: list[str], hub: FakeHub, tmp_path: Path, engine: bool = False,
                           timeout: int = 300) -> subprocess.CompletedProcess:
    """tests/load_models.py in a fresh process, online (no HF_HUB_OFFLINE), with the hub endpoint
    and every HTTP(S) proxy pointed at `hub`: any request the process makes is recorded there."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "NO_PROXY", "no_proxy")}
    env.update(HF_ENDPOINT=hub.url, HF_HUB_CACHE=str(tmp_path / "empty-hub-cache"),
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env[key] = hub.url
    args = [sys.executable, str(REPO_ROOT / "tests" / "load_models.py"), *(["--engine"] if engine else []), *refs]
    return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def test_a_local_folder_and_the_embedded_default_contact_nothing(tiny_model_dir, tmp_path):
    """Online (HF_HUB_OFFLINE unset, as COMMON_ENV now leaves it), resolving and loading a local
    folder and the embedded default with transformers sends no request to the hub endpoint nor
    through any proxy. The control first: a hub id in the same process does reach the recorder."""
    with FakeHub() as hub:
        control = _load_in_fresh_process(["osp-test/not-served"], hub, tmp_path)
        assert control.returncode != 0 and "no such model on the hub" in control.stderr
        assert any("/api/models/osp-test/not-served" in path for _, path in hub.requests), hub.requests
        hub.requests.clear()
        done = _load_in_fresh_process([tiny_model_dir, "embedded"], hub, tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.count("LOADED ") == 2
        assert hub.requests == []


@pytest.mark.engine
@pytest.mark.timeout(900)
def test_a_vllm_engine_on_a_local_folder_contacts_nothing(tiny_model_dir, tmp_path):
    """The same for the rollout actor's vLLM engine (it reads configs and tokenizers itself)."""
    with FakeHub() as hub:
        done = _load_in_fresh_process([tiny_model_dir], hub, tmp_path, engine=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "LOADED " in done.stdout
        assert hub.requests == []


# -- the other command lines ------------------------------------------------------------------


def test_evaluate_takes_a_hub_id_as_a_checkpoint(offline_hub, tiny_model_dir, tmp_path):
    """cluster.evaluate --checkpoint/--baseline (and judge_report --policy): a ckpt-N folder, an
    hf/ folder, or a hub id."""
    from cluster.driver.checkpoint import policy_folder as checkpoint_folder

    cache, sha = offline_hub
    assert checkpoint_folder(TINY_REPO) == snapshot_of(cache, TINY_REPO, sha)
    (tmp_path / "ckpt-000002").mkdir()
    (tmp_path / "ckpt-000002" / "hf").symlink_to(tiny_model_dir, target_is_directory=True)
    assert checkpoint_folder(str(tmp_path / "ckpt-000002")) == tmp_path / "ckpt-000002" / "hf"
    assert checkpoint_folder(tiny_model_dir) == Path(tiny_model_dir)
    with pytest.raises(FileNotFoundError, match="is not an HF checkpoint folder"):
        checkpoint_folder(str(tmp_path))


@pytest.mark.parametrize("argv", [
    ["cluster.evaluate", "--checkpoint", "osp-test/absent"],
    ["cluster.evaluate", "--checkpoint", "{tiny}", "--sft", "osp-test/absent"],
    ["cluster.judge_report", "--judges", "verifier", "--model", "osp-test/absent"],
])
def test_the_other_commands_refuse_an_uncached_id_before_ray(offline_hub, tiny_model_dir, tmp_path, capsys,
                                                             restore_loggers, argv):
    import importlib

    module = importlib.import_module(argv[0])
    code = module.main([a.format(tiny=tiny_model_dir) for a in argv[1:]] + ["--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Hugging Face model 'osp-test/absent' (revision 'main') is not in the cache" in err
    assert "starting a local Ray cluster" not in err and not (tmp_path / "out").exists()

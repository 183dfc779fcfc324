"""`osp`: one command whose subcommands are the `python -m cluster.…` command lines, and `osp plan`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster import cli

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "deploy" / "recipes"
MODEL_CONFIGS = Path(__file__).resolve().parent / "model_configs"


def _help(main, capsys, **kwargs) -> str:
    with pytest.raises(SystemExit) as done:
        main(["--help"], **kwargs)
    assert done.value.code == 0
    return capsys.readouterr().out


def test_osp_help_lists_every_subcommand(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("train", "evaluate", "scale", "judge-report", "plan"):
        assert f"\n  {name} " in out


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_each_subcommand_takes_exactly_its_modules_flags(name, capsys):
    """Would catch a subcommand wired to the wrong module or with flags of its own."""
    import importlib

    module = importlib.import_module(cli.COMMANDS[name][0])
    via_osp = _help(lambda argv: cli.main([name, *argv]), capsys)
    direct = _help(module.main, capsys)
    assert via_osp.startswith(f"usage: osp {name} ")
    def words(text: str) -> list[str]:  # argparse wraps lines by the program name's length
        return text.replace(f"osp {name}", "PROG").replace(f"python -m {cli.COMMANDS[name][0]}", "PROG").split()

    assert words(via_osp) == words(direct)


def test_unknown_subcommand_exits_2_with_the_list(capsys):
    assert cli.main(["trian"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'trian'" in err and "judge-report" in err


def _model_folder(tmp_path: Path, hub_id: str) -> Path:
    """A folder holding only the config.json of `hub_id` (the plan reads nothing else)."""
    folder = tmp_path / hub_id.replace("/", "--")
    folder.mkdir()
    (folder / "config.json").write_text((MODEL_CONFIGS / f"{hub_id.replace('/', '--')}.json").read_text())
    return folder


@pytest.mark.parametrize("recipe, cluster_file, hub_id", [
    ("qwen2.5-1.5b-self-judge.yaml", "1x8xH100.cluster.yaml", "Qwen/Qwen2.5-1.5B-Instruct"),
    ("llama3.1-8b-tp2-zero3.yaml", "2x8xH100.cluster.yaml", "meta-llama/Llama-3.1-8B-Instruct"),
])
def test_osp_plan_accepts_each_gpu_recipe_on_its_cluster(recipe, cluster_file, hub_id, tmp_path, capsys):
    """The recipes in deploy/recipes/ fit the clusters they are written for; a recipe edited past
    its cluster (more GPUs, a bigger model) fails here first."""
    code = cli.main(["plan", "--config", str(RECIPES / recipe), "--cluster", str(RECIPES / cluster_file),
                     "--json", str(tmp_path / "plan.json"), f"model.path={_model_folder(tmp_path, hub_id)}"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.rstrip().endswith("the run fits")
    import json

    plan = json.loads((tmp_path / "plan.json").read_text())
    gpus = sum(a["resources"].get("GPU", 0) for a in plan["actors"])
    nodes_gpus = sum(n["gpus"] for n in plan["nodes"])
    assert gpus == nodes_gpus  # each recipe uses every GPU of its cluster


def test_osp_plan_refuses_with_exit_2_and_the_shortfall(tmp_path, capsys):
    code = cli.main(["plan", "--config", str(RECIPES / "qwen2.5-1.5b-self-judge.yaml"),
                     "--cluster", str(RECIPES / "1x8xH100.cluster.yaml"), "learner.num_ranks=8", "learner.pairs_per_step=32",
                     f"model.path={_model_folder(tmp_path, 'Qwen/Qwen2.5-1.5B-Instruct')}"])
    captured = capsys.readouterr()
    assert code == 2
    assert "REFUSED: rollout-0 cannot be placed ({CPU: 8, GPU: 1}): GPU: the run asks 12, the cluster has 8 (4 short)" \
        in captured.out
    assert "does not fit" in captured.err


@pytest.mark.engine
@pytest.mark.timeout(300)
def test_osp_train_refuses_a_plan_that_does_not_fit_before_any_actor(tiny_model_dir, tmp_path):
    """`osp train` plans first: a KV cache too small for one sequence is refused (exit 2, one
    ERROR naming the actor and the shortfall) with no actor started. Would catch a driver that
    starts actors before planning, or a refusal that ends in a traceback."""
    import socket
    import tempfile

    from helpers import kill_processes_under

    temp = Path(tempfile.mkdtemp(prefix="osp-ray-", dir="/tmp"))  # its own Ray session, cleaned up after
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = str(temp)
    try:
        done = subprocess.run([str(Path(sys.executable).parent / "osp"), "train", f"model.path={tiny_model_dir}",
                               "rollout.kv_cache_gib=0.000001", f"checkpoint.dir={tmp_path / 'run'}", "eval.prompts=null",
                               f"ray.dashboard_port={port}"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=280)
    finally:
        kill_processes_under(temp)
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "the run does not fit the cluster" in errors[0]
    assert "rollout-0 on head-" in done.stderr and "kv_cache_gib=1e-06 holds less than one sequence" in done.stderr
    assert "actors up" not in done.stderr + done.stdout

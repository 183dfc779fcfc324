"""The deploy recipe for real: `ray start --head --dashboard-host=127.0.0.1`, then
`ray job submit` of the main job (tiny model), then the dashboard's HTTP API lists the job's
actors. Runs against its own head node (own ports), separate from the test session's Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import kill_processes_under

from core.net import free_port

pytestmark = [pytest.mark.engine, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _get(url: str, headers: dict[str, str] | None = None):
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _start_head(temp: Path, auth: dict[str, str]):
    """`ray start --head` on free ports under `temp`, dashboard on loopback; (url, env)."""
    from core.env import runtime_env_vars

    env = {**os.environ, **runtime_env_vars(), **auth, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    gcs, dashboard = free_port(), free_port()
    start = [
        str(BIN / "ray"), "start", "--head", f"--port={gcs}", "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}", "--num-cpus=6", f"--temp-dir={temp}", "--include-dashboard=true",
        f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
        f"--metrics-export-port={free_port()}", "--disable-usage-stats",
    ]
    subprocess.run(start, env=env, check=True, capture_output=True, text=True, timeout=180)
    url = f"http://127.0.0.1:{dashboard}"
    headers = {"Authorization": f"Bearer {auth['RAY_AUTH_TOKEN']}"} if "RAY_AUTH_TOKEN" in auth else {}
    for _ in range(60):  # the dashboard comes up a little after `ray start` returns
        try:
            _get(f"{url}/api/version", headers)
            break
        except OSError:
            time.sleep(1)
    return url, env


@pytest.fixture(scope="module")
def head_node(tmp_path_factory):
    temp = tmp_path_factory.mktemp("ray-head")
    try:
        yield _start_head(temp, {"RAY_AUTH_MODE": "disabled"})
    finally:
        _stop_head(temp)


def _stop_head(temp: Path) -> None:
    """Stop this head node only: every process of the head has its session folder, under
    `temp`, on its command line."""
    kill_processes_under(temp)


def test_ray_job_submit_runs_the_main_job_and_dashboard_lists_its_actors(head_node, tiny_model_dir, tmp_path):
    url, env = head_node
    run_dir = tmp_path / "job-run"
    args = [
        # The main job's default.yaml, with the self-judge on plain questions: a verifier would
        # find the tiny random model's answers all tied (no pair) and the run would starve.
        f"model.path={tiny_model_dir}", "judge.kind=self", "judge.drop_ties=false", "data.prompts=questions",
        "eval.prompts=", "data.num_prompts=16", "rollout.k=2", "rollout.max_tokens=8",
        "learner.max_steps=2", "learner.pairs_per_step=2", "learner.lora.enabled=false",
        "checkpoint.every=0", f"checkpoint.dir={run_dir}", "metrics.progress=false",
    ]
    # The shipped recipe itself: deploy/submit.sh (working_dir upload + deploy/runtime_env.yaml).
    submit_env = {**env, "RAY_ADDRESS": url, "RAY": str(BIN / "ray")}
    done = subprocess.run(["bash", str(REPO / "deploy" / "submit.sh"), "--", *args], env=submit_env,
                          capture_output=True, text=True, timeout=800)
    logs = done.stdout + done.stderr
    assert done.returncode == 0, logs[-4000:]
    assert "done: 2 steps" in logs, logs[-4000:]
    # A quiet console: the actors' own output (vLLM, DeepSpeed) stays in Ray's log files.
    assert "RolloutActor pid=" not in logs and "LearnerRank pid=" not in logs, logs[-4000:]
    assert "actors' logs:" in logs
    assert (run_dir / "ckpt-000002" / "hf" / "model.safetensors").exists()

    jobs = _get(f"{url}/api/jobs/")
    assert [j["status"] for j in jobs] == ["SUCCEEDED"]
    actors = _get(f"{url}/api/v0/actors?limit=1000&detail=true")["data"]["result"]["result"]
    classes = {a["class_name"] for a in actors}
    assert {"RolloutActor", "JudgeActor", "LearnerRank", "Control"} <= classes, classes


# A job that joins the cluster as the main job does (cluster.driver.ray_setup.init_ray under
# `ray job submit`) and round-trips through an actor.
TOKEN_JOB = """
from cluster.driver.ray_setup import init_ray
ray = init_ray(None, worker_logs=False)

@ray.remote(num_cpus=1)
def echo(x):
    return x

print("job ran:", ray.get(echo.remote("token ok")))
"""


def test_token_auth_cluster_runs_a_job_with_the_token_and_refuses_one_without(tmp_path_factory):
    """Ray's token auth (RAY_AUTH_MODE=token) on the head: core/env.py keeps `token` in the
    driver and its workers, so the submitted job runs; a submission without it is refused."""
    token = os.urandom(16).hex()
    temp = tmp_path_factory.mktemp("rtok")  # short: Ray's socket paths live under it
    try:
        url, env = _start_head(temp, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})
        submit = [str(BIN / "ray"), "job", "submit", "--address", url, "--working-dir", str(REPO),
                  "--runtime-env", str(REPO / "deploy" / "runtime_env.yaml"), "--", "python", "-c", TOKEN_JOB]
        done = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and "job ran: token ok" in done.stdout, (done.stdout + done.stderr)[-4000:]
        without = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"} | {"RAY_AUTH_MODE": "disabled"}
        for other in (without, env | {"RAY_AUTH_TOKEN": "0" * 32}):  # no token; a wrong one
            refused = subprocess.run(submit, env=other, capture_output=True, text=True, timeout=300)
            said = refused.stdout + refused.stderr
            assert refused.returncode != 0 and ("401" in said or "Unauthorized" in said or "token" in said.lower()), \
                said[-4000:]
    finally:
        _stop_head(temp)

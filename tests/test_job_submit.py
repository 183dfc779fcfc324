"""The deploy recipe for real: `ray start --head --dashboard-host=127.0.0.1`, then
`ray job submit` of the main job (tiny model), then the dashboard's HTTP API lists the job's
actors. Runs against its own head node (own ports), separate from the test session's Ray."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def head_node(tmp_path_factory):
    from core.env import runtime_env_vars

    temp = tmp_path_factory.mktemp("ray-head")
    env = {**os.environ, **runtime_env_vars(), "RAY_AUTH_MODE": "disabled",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    gcs, dashboard = _free_port(), _free_port()
    start = [
        str(BIN / "ray"), "start", "--head", f"--port={gcs}", "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}", "--num-cpus=6", f"--temp-dir={temp}", "--include-dashboard=true",
        f"--ray-client-server-port={_free_port()}", f"--dashboard-agent-listen-port={_free_port()}",
        f"--metrics-export-port={_free_port()}", "--disable-usage-stats",
    ]
    subprocess.run(start, env=env, check=True, capture_output=True, text=True, timeout=180)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        for _ in range(60):  # the dashboard comes up a little after `ray start` returns
            try:
                _get(f"{url}/api/version")
                break
            except OSError:
                time.sleep(1)
        yield url, env
    finally:
        _stop_head(temp)


def _stop_head(temp: Path) -> None:
    """Stop this head node only. (`ray stop` would stop every Ray on the machine, the test
    session's own cluster included, which ends the pytest process with it.) Every process of
    the head has its session folder, under `temp`, on its command line."""
    import psutil

    mine = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(temp) in part for part in proc.info["cmdline"] or []):
                mine.append(proc)
                mine += proc.children(recursive=True)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    for proc in mine:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(mine, timeout=30)


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
    assert "RolloutWorker pid=" not in logs and "LearnerRank pid=" not in logs, logs[-4000:]
    assert "actors' logs:" in logs
    assert (run_dir / "ckpt-000002" / "hf" / "model.safetensors").exists()

    jobs = _get(f"{url}/api/jobs/")
    assert [j["status"] for j in jobs] == ["SUCCEEDED"]
    actors = _get(f"{url}/api/v0/actors?limit=1000&detail=true")["data"]["result"]["result"]
    classes = {a["class_name"] for a in actors}
    assert {"RolloutWorker", "JudgeWorker", "LearnerRank", "Control"} <= classes, classes

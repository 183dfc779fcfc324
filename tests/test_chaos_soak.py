"""The chaos soak, short (bench/chaos_soak.py; the long one's figures are in docs/reliability.md):
the tiny model on the simulated multi-node cluster, 2 rollout actors and 2 learner ranks, the
driver a real `python -m cluster.train` subprocess, and three faults of three kinds while it
trains: kill -9 of a rollout actor (its vLLM engine) and of the judge, which Ray restarts, and of
a learner rank, which stops the run cleanly for the soak's `--resume`. The audit then reads the
run folder: every prompt handed out accounted for once, no pair trained twice, each step once
(in metrics.jsonl, journal.jsonl and the learner's own optimizer-step count), versions never
backwards, the final weights check within 1e-3. Would catch a fault that loses prompts or
pairs, a resume that retrains a pair or repeats a step, an engine restarted with stale weights,
or a driver that hangs or crashes on any of the three."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parent.parent


def test_three_faults_of_three_kinds_lose_nothing(tiny_model_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    done = subprocess.run([sys.executable, str(REPO / "bench/chaos_soak.py"), "--out", str(tmp_path), "--tiny", tiny_model_dir,
                           "--steps", "12", "--kinds", "rollout,judge,learner", "--step-delay", "3", "--hang-s", "240"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=560)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    result = json.loads((tmp_path / "soak" / "result.json").read_text())
    faults = result["faults"]
    assert sorted(f["kind"] for f in faults) == ["judge", "learner", "rollout"]
    assert all(f["injected_at"] is not None and f["survived"] for f in faults), faults
    assert not result["unexpected"], result["unexpected"]
    # The learner rank's death stopped the run (exit 3); the soak's --resume finished it.
    assert [a["returncode"] for a in result["attempts"]] == [3, 0]
    checks = result["audit"]
    assert checks["ok"], json.dumps(checks, indent=1)
    assert checks["prompts"]["lost"] == 0 and checks["prompts"]["double"] == 0
    assert checks["pairs"]["duplicated"] == 0 and checks["pairs"]["trained"] == 12 * 4
    assert checks["steps"]["optimizer_steps"] == checks["steps"]["optimizer_steps_expected"]

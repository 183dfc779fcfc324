"""The main job submitted with `ray job submit` (deploy/submit.sh) onto the simulated 3-node
cluster (tests/multinode_cluster.py, with its dashboard on loopback), as an operator does on a
real cluster (tests/test_multinode.py, heavy).

    python tests/multinode_submit_run.py TINY_MODEL_DIR OUT.json

Writes the job's status and logs and, from the dashboard's state API while the job's actors
were alive, the node of every actor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _get(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def main(model_dir: str, out: str) -> None:
    from multinode_cluster import stop, three_node_cluster

    from core.net import free_port

    # The job's entrypoint runs with the head's environment: its `python` must be this one.
    bin_dir = Path(sys.executable).parent
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    dashboard = free_port()
    cluster, rollout_node, learner_node = three_node_cluster(dashboard_port=dashboard)
    url = f"http://127.0.0.1:{dashboard}"
    nodes = {"head": cluster.head_node.node_id, "rollout": rollout_node.node_id, "learner": learner_node.node_id}
    run_dir = Path(tempfile.mkdtemp(prefix="multinode-submit-"))
    args = [
        f"model.path={model_dir}", "judge.kind=self", "judge.drop_ties=false", "data.prompts=questions",
        "eval.prompts=", "data.num_prompts=16", "rollout.k=2", "rollout.max_tokens=8", "learner.max_steps=3",
        "learner.pairs_per_step=2", "checkpoint.every=0", f"checkpoint.dir={run_dir}",
        "rollout.resources={rollout: 1}", "judge.resources={rollout: 1}", "learner.resources={learner: 1}",
    ]
    env = {**os.environ, "RAY_ADDRESS": url, "RAY": str(bin_dir / "ray")}
    job = subprocess.Popen(["bash", str(REPO / "deploy" / "submit.sh"), "--", *args], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    actors: list = []
    try:
        while job.poll() is None:  # the actors, from the state API, while the job runs
            try:
                listed = _get(f"{url}/api/v0/actors?limit=1000&detail=true")["data"]["result"]["result"]
                alive = [a for a in listed if a["state"] == "ALIVE" and a["class_name"] in
                         ("RolloutActor", "JudgeActor", "LearnerRank")]
                if len(alive) == 3:
                    actors = [{"class": a["class_name"], "name": a.get("name"), "node": a["node_id"]} for a in alive]
            except OSError:
                pass
            time.sleep(2)
        logs = job.stdout.read()
        jobs = [j for j in _get(f"{url}/api/jobs/") if j.get("submission_id")]  # not this script's own driver
    finally:
        if job.poll() is None:
            job.kill()
        stop(cluster)
    result = {
        "nodes": nodes, "returncode": job.returncode, "statuses": [j["status"] for j in jobs], "logs": logs[-6000:],
        "actors": actors, "checkpoint": (run_dir / "ckpt-000003" / "hf" / "merged" / "model.safetensors").exists(),
    }
    Path(out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

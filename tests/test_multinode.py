"""The loop on a 3-node Ray cluster on one machine (tests/multinode_run.py): actors land on the
nodes their resources name, the pushed weights cross object stores between nodes, and pairs
judged on one node train on the other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.timeout(900)]

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def multinode(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("multinode") / "result.json"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), str(HERE)])
    done = subprocess.run([sys.executable, str(HERE / "multinode_run.py"), tiny_model_dir, str(out)],
                          env=env, capture_output=True, text=True, timeout=800)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    return json.loads(out.read_text())


def test_actors_land_on_the_nodes_their_resources_name(multinode):
    nodes = multinode["nodes"]
    assert len(set(nodes.values())) == 3
    where = {}
    for actor in multinode["actors"]:
        where.setdefault(actor["class"], set()).add(actor["node"])
    assert where["RolloutWorker"] == {nodes["rollout"]}
    assert where["JudgeWorker"] == {nodes["rollout"]}
    assert where["LearnerRank"] == {nodes["learner"]}


def test_run_trains_and_weights_cross_to_the_rollout_node(multinode):
    assert multinode["steps"] == 3 and multinode["pairs_trained"] == 12
    assert multinode["engine_version"] == multinode["pushed_version"] == 3
    nodes = multinode["nodes"]
    # Put by the learner rank, fetched into the rollout node's own object store by the engine.
    assert {nodes["learner"], nodes["rollout"]} <= set(multinode["weights_locations"])
    assert multinode["max_logprob_diff"] < 1e-4  # and what arrived is the learner's policy


def test_pairs_judged_on_one_node_train_on_the_other(multinode):
    # A batch made by the judge on the rollout node, scored by the learner rank on its node.
    # A few pairs are far below Ray's 100 KiB inline limit: they travel inside the task's reply
    # and the next task's arguments, so no object store holds them (none is listed).
    assert multinode["pairs_locations"] == []
    assert 0 < multinode["eval_loss"] < 2

"""The loop on a 3-node Ray cluster on one machine (tests/multinode_run.py): actors land on the
nodes their resources name, the pushed weights cross object stores between nodes, and pairs
judged on one node train on the other. Heavy: `ray job submit` onto that cluster, scale-out
onto an added node, and the loss of a rollout node and of the learner node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.timeout(900)]

HERE = Path(__file__).resolve().parent


def _scenario(script: str, tiny_model_dir: str, tmp_path_factory, timeout: float) -> dict:
    """Run a multi-node scenario script in its own process (it starts its own Ray cluster;
    the test session's Ray is a different one) and read the JSON it writes."""
    out = tmp_path_factory.mktemp(Path(script).stem) / "result.json"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), str(HERE)])
    done = subprocess.run([sys.executable, str(HERE / script), tiny_model_dir, str(out)],
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def multinode(tiny_model_dir, tmp_path_factory):
    return _scenario("multinode_run.py", tiny_model_dir, tmp_path_factory, 800)


def test_actors_land_on_the_nodes_their_resources_name(multinode):
    nodes = multinode["nodes"]
    assert len(set(nodes.values())) == 3
    where = {}
    for actor in multinode["actors"]:
        where.setdefault(actor["class"], set()).add(actor["node"])
    assert where["RolloutActor"] == {nodes["rollout"]}
    assert where["JudgeActor"] == {nodes["rollout"]}
    assert where["LearnerRank"] == {nodes["learner"]}


def test_every_actor_runs_on_the_node_of_the_runs_plan(multinode):
    """The driver wrote its plan (plan.json) and Ray followed it: each actor, found by its name
    `<run>/<role>-<i>`, is alive on the planned node. Would catch a pool that ignores the plan."""
    on = {a["name"].rsplit("/", 1)[-1]: a["node"] for a in multinode["actors"] if "/" in a["name"]}
    planned = {a["actor"]: a["node_id"] for a in multinode["plan"]["actors"]}
    assert set(planned) == {"learner-0", "rollout-0", "judge-0"}
    assert {actor: on[actor] for actor in planned} == planned


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


# -- scale-out and node loss (heavy: ~5 min on 2 cores) --------------------------------------

@pytest.fixture(scope="module")
def node_faults(tiny_model_dir, tmp_path_factory):
    return _scenario("multinode_faults_run.py", tiny_model_dir, tmp_path_factory, 1500)


def _where(actors: list[dict], alive_only: bool = True) -> dict[str, str]:
    """Actor role (rollout-0, judge-0, learner-0) → its node, from the GCS's actor table."""
    return {a["name"].rsplit("/", 1)[-1]: a["node"] for a in actors if a["name"] and (a["state"] == "ALIVE" or not alive_only)}


@pytest.mark.heavy
def test_scale_out_puts_the_new_rollout_actor_on_the_added_node(node_faults):
    where = _where(node_faults["after_scale_out"])
    nodes = node_faults["nodes"]
    assert where["rollout-0"] == nodes["a"] and where["rollout-1"] == nodes["b"]
    assert where["osp-control"] == nodes["head"]  # the driver's node: a lost rollout node can't take it


@pytest.mark.heavy
def test_losing_a_rollout_node_moves_its_actors_and_loses_nothing(node_faults):
    nodes, run = node_faults["nodes"], node_faults["run1"]
    where = _where(node_faults["after_node_loss"])
    # Ray restarted rollout-0 and judge-0 on the node that still has the `rollout` resource.
    assert where["rollout-0"] == where["rollout-1"] == where["judge-0"] == nodes["b"]
    assert run["steps"] == 30 and run["pairs_trained"] == 120 and run["live_engines"] == 2
    events = dict(node_faults["events"])
    assert events["scaled out"] < events["node A removed"] <= events["restarted"] < 30  # all while it trained
    # Every prompt taken from the data order (no epoch wraps here) is done or listed to be
    # sampled again, each once: none skipped, none counted twice.
    assert run["prompts_done"] + len(run["requeued"]) == run["next_prompt"]
    assert len(set(run["requeued"])) == len(run["requeued"])


@pytest.mark.heavy
def test_losing_the_learner_node_stops_cleanly_and_resume_finishes(node_faults):
    assert node_faults["learner_failed"] and "--resume" in node_faults["learner_failed"]
    assert node_faults["resumed_from_step"] <= node_faults["learner_lost_at"]
    run = node_faults["run2"]
    assert run["steps"] == 36 and run["pairs_trained"] == 144
    assert run["prompts_done"] + len(run["requeued"]) == run["next_prompt"]


@pytest.fixture(scope="module")
def submitted(tiny_model_dir, tmp_path_factory):
    return _scenario("multinode_submit_run.py", tiny_model_dir, tmp_path_factory, 1200)


@pytest.mark.heavy
def test_ray_job_submit_onto_the_multinode_cluster_places_actors_by_resource(submitted):
    assert submitted["returncode"] == 0 and submitted["statuses"] == ["SUCCEEDED"], submitted["logs"]
    assert "done: 3 steps" in submitted["logs"] and submitted["checkpoint"]
    nodes = submitted["nodes"]
    where = {a["class"]: a["node"] for a in submitted["actors"]}
    assert where == {"RolloutActor": nodes["rollout"], "JudgeActor": nodes["rollout"],
                     "LearnerRank": nodes["learner"]}, submitted["actors"]

"""The run's plan: where every actor goes and what memory it needs there, or why it cannot run.

`make_plan` seats the actors (placement.py), estimates each one's memory (memory.py) and adds up
what lands on each node and each GPU. A plan with refusals must not start: `osp plan` prints them
and exits 2, and the driver raises them before it creates any actor. Each refusal names the
actor, the node and the shortfall.

The driver then makes Ray follow the plan (`Plan.node_id`): every learner rank's bundle is pinned
to its node, and each rollout and judge actor asks for its node softly (a restarted actor whose
node is gone goes elsewhere), so the plan printed is where the actors are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cluster.capacity.memory import GB, Estimate, ModelShape, judge_estimate, learner_estimate, rollout_estimate
from cluster.capacity.nodes import Node
from cluster.capacity.placement import PlacementError, Seat, asks_of, place
from core.config import Config, ConfigError

# Ray's object store reserves this share of a node's RAM by default (capped at 200 GB).
OBJECT_STORE_SHARE, OBJECT_STORE_CAP = 0.3, 200 * GB


# What lowers a role's memory, said with its refusal.
HINTS = {"learner": " (learner.lora.enabled=true, a higher learner.zero_stage or more learner.num_ranks lower it)",
         "rollout": " (a lower rollout.gpu_memory_utilization leaves room for what shares the GPU)",
         "judge": " (a smaller judge.batch_size, or a GPU of its own: judge.gpus_per_actor=1)"}


class PlanRefused(ConfigError):
    """The run does not fit; the message holds one line per shortfall."""


@dataclass
class Plan:
    nodes: list[Node]
    seats: list[Seat]
    estimates: dict[str, Estimate]  # by actor name
    refusals: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def seat(self, actor: str) -> Seat | None:
        return next((s for s in self.seats if s.ask.actor == actor), None)

    def node_id(self, actor: str) -> str | None:
        """The Ray node id `actor` is planned on (None: not planned, or a described cluster)."""
        seat = self.seat(actor)
        return seat.node.node_id if seat else None

    def check(self) -> "Plan":
        if self.refusals:
            raise PlanRefused("the run does not fit the cluster:\n  " + "\n  ".join(self.refusals))
        return self

    def to_json(self) -> dict:
        return {
            "nodes": [{"name": n.name, "node_id": n.node_id, "cpus": n.cpus, "gpus": n.gpus,
                       "gpu_memory_bytes": n.gpu_memory, "memory_bytes": n.memory} for n in self.nodes],
            "actors": [{"actor": s.ask.actor, "role": s.ask.role, "node": s.node.name, "node_id": s.node.node_id,
                        "resources": s.ask.resources, "gpu_slots": list(s.gpu_slots),
                        "device": self.estimates[s.ask.actor].device,
                        "memory_bytes": {k: round(v) for k, v in self.estimates[s.ask.actor].parts.items()},
                        "host_bytes": round(self.estimates[s.ask.actor].host)} for s in self.seats],
            "refusals": self.refusals, "notes": self.notes,
        }

    def table(self) -> str:
        """The plan as `osp plan` prints it: placement, memory per actor, each node's margin."""
        lines = ["placement", f"  {'actor':<12} {'node':<14} {'CPUs':>5} {'GPUs':>5}  other resources"]
        for s in self.seats:
            other = {k: v for k, v in s.ask.resources.items() if k not in ("CPU", "GPU")}
            gpus = s.ask.gpus
            lines.append(f"  {s.ask.actor:<12} {s.node.name:<14} {s.ask.resources.get('CPU', 0):>5g} "
                         f"{gpus:>5g}  {', '.join(f'{k}: {v:g}' for k, v in other.items())}")
        lines += ["memory (GB): on its device (per GPU for a GPU actor), and `host`, the RAM its process needs besides",
                  f"  {'actor':<12} {'on':<4} {'weights':>8} {'trainable':>10} {'activations':>12} {'engine/KV':>10} "
                  f"{'host':>8} {'total':>7}"]
        for s in self.seats:
            e = self.estimates[s.ask.actor]
            p = e.parts
            engine = p.get("kv cache", 0.0) + p.get("cuda", 0.0) + p.get("judge model", 0.0)
            total = e.on_device + (e.host if e.device == "RAM" else 0.0)
            cells = [p.get("weights", 0), p.get("trainable", 0), p.get("activations", 0), engine, e.host, total]
            widths = (8, 10, 12, 10, 8, 7)
            lines.append(f"  {s.ask.actor:<12} {e.device:<4} " + " ".join(f"{v / GB:>{w}.2f}" for v, w in zip(cells, widths)))
        lines.append("nodes")
        for n in self.nodes:
            lines.append("  " + _node_line(n, self))
        lines += [f"note: {m}" for m in self.notes]
        lines += [f"REFUSED: {m}" for m in self.refusals]
        return "\n".join(lines)


def object_store_bytes(node: Node) -> float:
    """The RAM Ray's object store reserves on `node` (its live figure when known)."""
    if node.object_store is not None:
        return node.object_store
    return min(OBJECT_STORE_SHARE * (node.memory or 0.0), OBJECT_STORE_CAP)


def _ram_used(node: Node, plan: Plan) -> float:
    return object_store_bytes(node) + sum(plan.estimates[s.ask.actor].ram for s in plan.seats if s.node is node)


def _gpu_used(node: Node, plan: Plan) -> list[float]:
    used = [0.0] * int(node.gpus)
    for s in plan.seats:
        if s.node is node:
            for slot in s.gpu_slots:
                used[slot] += plan.estimates[s.ask.actor].on_device
    return used


def _node_line(node: Node, plan: Plan) -> str:
    seated = [s for s in plan.seats if s.node is node]
    cpus = sum(s.ask.resources.get("CPU", 0.0) for s in seated)
    gpus = sum(s.ask.gpus for s in seated)
    parts = [f"{node.name}: CPUs {cpus:g}/{node.cpus:g}", f"GPUs {gpus:g}/{node.gpus:g}"]
    if node.memory:
        used = _ram_used(node, plan)
        parts.append(f"RAM {used / GB:.1f}/{node.memory / GB:.1f} GB (object store {object_store_bytes(node) / GB:.1f}), "
                     f"margin {(node.memory - used) / GB:.1f} GB")
    if node.gpus:
        used = _gpu_used(node, plan)
        if node.gpu_memory:
            worst = max(used, default=0.0)
            parts.append(f"fullest GPU {worst / GB:.1f}/{node.gpu_memory / GB:.1f} GB, "
                         f"margin {(node.gpu_memory - worst) / GB:.1f} GB")
        else:
            parts.append("GPU memory unknown")
    return ", ".join(parts)


def make_plan(cfg: Config, shape: ModelShape, nodes: list[Node], judge_shape: ModelShape | None = None) -> Plan:
    """The plan of `cfg` on `nodes` for a policy of `shape` (`judge_shape`: an lm:/reward: judge's
    model). Never raises for a run that does not fit: the reasons are in `refusals`."""
    try:
        seats = place(asks_of(cfg), nodes)
    except PlacementError as err:
        return Plan(nodes, [], {}, refusals=[str(err)])
    estimates: dict[str, Estimate] = {}
    for s in seats:
        if s.ask.role == "learner":
            estimates[s.ask.actor] = learner_estimate(cfg, shape)
        elif s.ask.role == "judge":
            estimates[s.ask.actor] = judge_estimate(cfg, shape, judge_shape)
        else:
            estimates[s.ask.actor] = rollout_estimate(cfg, shape, s.node.gpu_memory)
    plan = Plan(nodes, seats, estimates)
    for s in seats:
        e = estimates[s.ask.actor]
        for short in e.shortfalls:
            plan.refusals.append(f"{s.ask.actor} on {s.node.name}: {short}")
        plan.notes += [f"{s.ask.actor}: {m}" for m in e.notes if s.ask.actor.endswith("-0")]
    for node in nodes:
        if node.memory:
            used = _ram_used(node, plan)
            if used > node.memory:
                who = ", ".join(f"{s.ask.actor} {estimates[s.ask.actor].ram / GB:.1f}" for s in seats if s.node is node)
                plan.refusals.append(f"node {node.name}: its actors need {used / GB:.1f} GB of RAM ({who}; Ray's object store "
                                     f"{object_store_bytes(node) / GB:.1f}), the node has {node.memory / GB:.1f} GB: "
                                     f"{(used - node.memory) / GB:.1f} GB short")
        if node.gpus and node.gpu_memory:
            for slot, used in enumerate(_gpu_used(node, plan)):
                if used > node.gpu_memory:
                    on = [s for s in seats if s.node is node and slot in s.gpu_slots]
                    detail = "; ".join(f"{s.ask.actor} " + ", ".join(f"{k} {v / GB:.1f}" for k, v in
                                                                      estimates[s.ask.actor].parts.items()) for s in on)
                    plan.refusals.append(f"{on[0].ask.actor} on {node.name} (GPU {slot}): needs {used / GB:.1f} GB of GPU "
                                         f"memory ({detail}), the GPU has {node.gpu_memory / GB:.1f} GB: "
                                         f"{(used - node.gpu_memory) / GB:.1f} GB short{HINTS[on[0].ask.role]}")
        elif node.gpus and any(s.node is node and s.ask.gpus for s in seats):
            plan.notes.append(f"{node.name}: GPU memory unknown (no nvidia-smi there): GPU memory not checked; "
                              "`osp plan --cluster FILE` checks it against a description")
    return plan


def plan_run(cfg: Config, model_folder: str, nodes: list[Node]) -> Plan:
    """The plan of a resolved run (`cfg.judge.kind`'s model, if any, a local folder by now) for
    the policy in `model_folder` on `nodes`."""
    from cluster.capacity.memory import model_shape

    kind, _, judge_folder = cfg.judge.kind.partition(":")
    judge_shape = model_shape(judge_folder) if kind in ("lm", "reward") else None
    return make_plan(cfg, model_shape(model_folder), nodes, judge_shape)

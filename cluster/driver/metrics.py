"""Per-step metrics to stdout, a JSONL file, TensorBoard and Ray's metrics (dashboard)."""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray.util.metrics import Gauge

from cluster.driver.trackers import Trackers
from core.env import peak_rss_bytes

if TYPE_CHECKING:  # core.weights imports torch; this module is read by the console's setup too
    from cluster.driver.weight_sync import PushCheck

log = logging.getLogger("osp")


class RayGauges:
    """Every metric as a Ray gauge `osp_<name>` (shown by the Ray dashboard's metrics view)."""

    def __init__(self, run_name: str):
        self.gauges: dict[str, Any] = {}
        self.tags = {"run": run_name}

    def record(self, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            name = "osp_" + "".join(c if c.isalnum() else "_" for c in key)
            if name not in self.gauges:
                self.gauges[name] = Gauge(name, description=f"osp {key}", tag_keys=("run",))
            self.gauges[name].set(float(value), tags=self.tags)


def truncate_after(path: Path, step: int) -> int:
    """Drop the lines of steps after `step` (a resumed run redoes them); atomic. Returns how
    many lines were dropped."""
    if not path.exists():
        return 0
    lines = path.read_text().splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    if len(kept) != len(lines):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(path)
    return len(lines) - len(kept)


class MetricsLogger:
    """Each step's metrics to metrics.jsonl (always), the chosen trackers (cluster/driver/trackers.py)
    and Ray's gauges (the dashboard)."""

    def __init__(self, run_dir: Path, run_name: str, trackers: list[str], ray_metrics: bool = True,
                 resume_step: int | None = None, config: dict[str, Any] | None = None):
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / "metrics.jsonl"
        # Lines of steps after the run's checkpoint (or of an attempt that never reached one)
        # are redone now: keep exactly one line per step.
        if resume_step is not None:
            dropped = truncate_after(self.path, resume_step)
            if dropped:
                log.info("metrics.jsonl: dropped %d lines after step %d (redone after the resume)", dropped, resume_step)
        self.file = open(self.path, "a", buffering=1)
        self.trackers = Trackers(list(trackers), run_dir, run_name, config or {})
        self.ray = None
        if ray_metrics:
            try:
                self.ray = RayGauges(run_name)
            except Exception as err:
                log.warning("Ray metrics disabled: %s", err)
        self.start = time.time()

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        record = {"step": step, "time": round(time.time() - self.start, 3), **metrics}
        self.file.write(json.dumps(record) + "\n")
        self.trackers.log(step, metrics)
        if self.ray:
            self.ray.record({**metrics, "step": step})

    def close(self) -> None:
        self.file.close()
        self.trackers.close()


def format_line(step: int, max_steps: int, m: dict[str, Any]) -> str:
    def f(key, fmt="{:.4f}"):
        return fmt.format(m[key]) if key in m else "-"

    return (
        f"step {step}/{max_steps} loss {f('loss')} p {f('strength/mean', '{:.3f}')} "
        f"acc {f('rewards/accuracy', '{:.2f}')} margin {f('rewards/margin')} "
        f"pairs/s {f('pairs_per_s', '{:.2f}')} tok/s {f('rollout_tokens_per_s', '{:.0f}')} "
        f"push {f('push_s', '{:.3f}')}s stale {f('staleness/mean', '{:.2f}')} kl {f('kl/policy_sft', '{:.3f}')}"
        + (f" busy {f('learner/busy', '{:.0%}')}" if "learner/busy" in m else "")
        + (f" pass {f('samples/verifier_pass', '{:.2f}')} (last 5 steps {f('samples/verifier_pass_last5', '{:.2f}')})"
           if "samples/verifier_pass" in m else "")
        + (f" trunc {f('samples/truncated', '{:.2f}')}" if "samples/truncated" in m else "")
    )


# What a judge call reports (judge/judge_actor.py), summed over the window.
JUDGE_COUNTS = ("responses", "truncated", "repeated", "verifier_checked", "verifier_passed", "pairs_judged", "ties",
                "pairs_with_truncated", "position_gap_sum", "position_gap_count")


class StepWindow:
    """Counters of the interval since the last learner step, turned into per-step rates and
    shares when the step ends."""

    def __init__(self):
        # (passed, checked) of the last 5 steps' windows: one step sees only a few samples, too
        # few for the pass rate to show a trend by itself.
        self.recent_pass: deque[tuple[float, float]] = deque(maxlen=5)
        self.reset()

    def reset(self) -> None:
        self.start = time.perf_counter()
        self.counts = dict.fromkeys(("tokens", "pairs", "rollout_s", "sampling_s", "rollouts", "judge_s", "judged",
                                     *JUDGE_COUNTS), 0.0)

    def rollout(self, tokens: float, seconds: float, sampling_s: float) -> None:
        """A rollout call returned: `seconds` on the driver's clock (dispatch to result),
        `sampling_s` inside the engine's generate (the actor's clock)."""
        self.counts["tokens"] += tokens
        self.counts["rollout_s"] += seconds
        self.counts["sampling_s"] += sampling_s
        self.counts["rollouts"] += 1

    def judged(self, stats: dict[str, float]) -> None:
        self.counts["judge_s"] += stats["judge_s"]
        self.counts["judged"] += 1
        for key in JUDGE_COUNTS:
            self.counts[key] += stats.get(key, 0.0)

    def trained(self, pairs: int) -> None:
        self.counts["pairs"] += pairs

    def close(self) -> tuple[dict[str, float], int]:
        """The window's metrics and the tokens it generated; starts the next window."""
        w = self.counts
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        out = {"pairs_per_s": w["pairs"] / elapsed, "rollout_tokens_per_s": w["tokens"] / elapsed}
        # Where the time goes: mean latency of a rollout call and of a judge call.
        if w["rollouts"]:
            out["rollout/batch_s"] = w["rollout_s"] / w["rollouts"]
            # Tokens per second while a rollout actor samples (not per wall second): set beside
            # the same actor alone, it says how much the other actors slow it (bench/stage_bound.py).
            out["rollout/sampling_tokens_per_s"] = w["tokens"] / max(w["rollout_s"], 1e-9)
            # Why a rollout actor in the run makes fewer tokens per wall second than alone, as
            # three factors whose product is rollout_tokens_per_s (bench/stage_bound.py):
            # the engine's own speed (other processes contend for the cores), the share of a
            # call spent sampling (the rest: a weight load queued before it, Ray's dispatch),
            # and rollout calls in flight per wall second (below 1 per actor: the staleness
            # bound or the buffer held the actor back).
            out["rollout/engine_tokens_per_s"] = w["tokens"] / max(w["sampling_s"], 1e-9)
            out["rollout/sampling_share_of_call"] = w["sampling_s"] / max(w["rollout_s"], 1e-9)
            out["rollout/calls_in_flight"] = w["rollout_s"] / elapsed
        if w["judged"]:
            out["judge/batch_s"] = w["judge_s"] / w["judged"]
        # What the fresh samples judged since the last step are like.
        if w["responses"]:
            out["samples/truncated"] = w["truncated"] / w["responses"]
            # judge/repetition.py: how much of an answer repeats itself (a loop until the cap → 1)
            out["samples/repeated_share"] = w["repeated"] / w["responses"]
        if w["verifier_checked"]:
            out["samples/verifier_pass"] = w["verifier_passed"] / w["verifier_checked"]
            self.recent_pass.append((w["verifier_passed"], w["verifier_checked"]))
            out["samples/verifier_pass_last5"] = sum(p for p, _ in self.recent_pass) / sum(c for _, c in self.recent_pass)
        # Shares of the judged pairs (before judge.drop_ties / judge.truncated=drop filter them).
        if w["pairs_judged"]:
            out["judge/tie_share"] = w["ties"] / w["pairs_judged"]
            out["judge/truncated_pair_share"] = w["pairs_with_truncated"] / w["pairs_judged"]
        if w["position_gap_count"]:  # an LM judge: |p_ab − (1 − p_ba)|, its position inconsistency
            out["judge/position_gap"] = w["position_gap_sum"] / w["position_gap_count"]
        tokens = int(w["tokens"])
        self.reset()
        return out, tokens


def mean_metrics(results: list[dict[str, float]]) -> dict[str, float]:
    """The ranks' metrics averaged; a step's time is the slowest rank's."""
    keys = set().union(*results)
    out = {}
    for key in keys:
        values = [r[key] for r in results if key in r]
        out[key] = max(values) if key == "step_s" else sum(values) / len(values)
    return out


def step_metrics(results: list[dict[str, float]], versions: list[int], step: int, arrow_s: float,
                 wall: float | None) -> dict[str, float]:
    """A learner step's metrics: the ranks' own (mean_metrics), how stale its pairs were
    (in policy versions), and, given the wall time since the previous step ended (`wall`),
    the learner's duty cycle and the share of it spent on Arrow handling: the driver's
    take/split/put (`arrow_s`) plus a rank's fetch and conversion."""
    metrics = mean_metrics(results)
    ages = [step - 1 - v for v in versions]
    metrics["staleness/mean"] = sum(ages) / len(ages)
    metrics["staleness/max"] = float(max(ages))
    if wall is not None:  # the wait for pairs, the push and checkpoints are all in `wall`
        metrics["learner/busy"] = min(metrics["step_s"] / wall, 1.0)
        metrics["arrow/share"] = (arrow_s + metrics.get("arrow/rank_s", 0.0)) / wall
    metrics["arrow/driver_s"] = arrow_s
    return metrics


def run_metrics(state: Any, buffered: int, rollout_actors: int, epoch: float) -> dict[str, float]:
    """Where the run stands (`state`: the run state, cluster/driver/checkpoint.RunState)."""
    return {"buffer/pairs": float(buffered), "run/prompts_done": float(state.prompts_done),
            "run/pairs_trained": float(state.pairs_trained), "run/pairs_regenerated": float(state.pairs_regenerated),
            "run/rollout_actors": float(rollout_actors), "run/epoch": epoch}


def memory_figures(roles: list[tuple[str, Any]]) -> tuple[int, dict[str, int]]:
    """(the model's weight bytes, the peak RSS of this process (the driver) and of each (name,
    actor handle)). The bytes are those of the folder an actor loaded, as it reports them: on a
    hub model the driver holds only its config."""
    peaks, model_bytes = {"driver": peak_rss_bytes()}, 0
    for name, handle in roles:
        try:
            info = ray.get(handle.info.remote(), timeout=30)
        except Exception as err:  # a report, not a reason to fail the run
            log.warning("no memory figure from %s: %s", name, str(err).splitlines()[0])
            continue
        peaks[name] = info["peak_rss_bytes"]
        model_bytes = max(model_bytes, info.get("model_bytes", 0))
    return model_bytes, peaks


def write_memory_report(run_dir: Path, model_bytes: int, peaks: dict[str, int]) -> None:
    """Peak RSS of every process of the run, against the model's bytes: memory.json."""
    (run_dir / "memory.json").write_text(json.dumps({"model_bytes": model_bytes, "peak_rss_bytes": peaks}, indent=1))
    log.info("peak RSS (model %.2f GB): %s", model_bytes / 1e9,
             ", ".join(f"{name} {b / 1e9:.2f} GB" for name, b in peaks.items()))


def write_weights_check(run_dir: Path, step: int, check: PushCheck, pushed_again: bool) -> None:
    """weights_check.json: each rollout actor's largest per-token log-prob gap to the learner at
    the end of the run (cluster/driver/weight_sync.push_gaps), the tolerance, whether they all passed and
    whether it took a second push. A failure is reported by the caller (it refuses the run)."""
    record = {"step": step, "max_abs_logprob_gap": check.max_gap, "tolerance": check.tolerance,
              "weights_verified": check.verified, "pushed_again": pushed_again,
              "gaps": {name: gap if math.isfinite(gap) else None for name, gap in check.gaps.items()}}
    (run_dir / "weights_check.json").write_text(json.dumps(record) + "\n")
    if check.verified:
        log.info("weights check: the rollout actors' log-probs are within %.1e of the learner's%s", check.max_gap,
                 " after a second push" if pushed_again else "")

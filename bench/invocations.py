"""A throughput figure as the median of several invocations, each in a fresh process.

One invocation of an asynchronous loop on a shared 2-core machine moves by tens of percent
(docs/benchmarks.md, "What moves the figure"), so a figure is reported as the median of N
invocations with its range, and a ratio as the ratio of the medians. Each side of each
invocation runs in its own process, as a user's invocation does: its own local Ray cluster,
its own torch threads, nothing warmed by the previous side but the page cache.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from run_watch import drop_page_cache, load_average, resident_bytes


def spread(values: list[float]) -> dict:
    """Every value, their median and their range [min, max]."""
    return {"values": [round(v, 4) for v in values], "median": round(statistics.median(values), 4),
            "range": [round(min(values), 4), round(max(values), 4)]}


def run_child(argv: list[str], model_file: Path | None, cold_cache: bool) -> dict:
    """Run this script once more, in a fresh process, with `argv` (one side, one variant): its
    figures, with the load average before and after it, the model file's bytes in the page cache
    when it started, and whether the cache was dropped first (`cold_cache`)."""
    if cold_cache:
        drop_page_cache()
    before = {"loadavg_start": load_average(),
              "model_cached_bytes": resident_bytes(model_file) if model_file else None, "cold_cache": cold_cache}
    with tempfile.TemporaryDirectory(prefix="bench-invocation-") as tmp:
        out = Path(tmp) / "result.json"
        subprocess.run([sys.executable, str(Path(sys.argv[0]).resolve()), "--child", *argv, "--json", str(out)], check=True)
        results = json.loads(out.read_text())
    after = load_average()
    return {name: {**r, **before, "loadavg_end": after} for name, r in results.items()}


def summarise(runs: dict[str, list[dict]], peer: str = "trl") -> dict:
    """Per row: its invocations, and the median and range of the steady and whole-run pairs/s;
    per row beside `peer`: the ratio of the medians."""
    rows = {}
    for name, invocations in runs.items():
        rows[name] = {"invocations": invocations,
                      "steady_pairs_per_s": spread([r["steady_pairs_per_s"] for r in invocations]),
                      "total_pairs_per_s": spread([r["total_pairs_per_s"] for r in invocations])}
    if peer in rows:
        for name, row in rows.items():
            if name != peer:
                row[f"over_{peer}"] = {
                    key: round(row[key]["median"] / rows[peer][key]["median"], 3)
                    for key in ("steady_pairs_per_s", "total_pairs_per_s")}
    return rows


def table(rows: dict) -> str:
    """The summary as text: each row's invocations, median, range and ratio of medians."""
    lines = []
    for name, row in rows.items():
        for key, label in (("steady_pairs_per_s", "steady"), ("total_pairs_per_s", "whole run")):
            s = row[key]
            ratio = f" = {row['over_trl'][key]:.2f}x TRL (ratio of medians)" if "over_trl" in row else ""
            lines.append(f"{name} {label}: median {s['median']:.3f} pairs/s, range {s['range'][0]:.3f}-{s['range'][1]:.3f} "
                         f"({', '.join(f'{v:.3f}' for v in s['values'])}){ratio}")
        lines.append(f"{name} load average (1 min) at start/end: "
                     + ", ".join(f"{r['loadavg_start'][0]:.2f}/{r['loadavg_end'][0]:.2f}" for r in row["invocations"]))
    return "\n".join(lines)

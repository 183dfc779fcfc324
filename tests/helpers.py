"""Helpers the tests share (not product code)."""

from __future__ import annotations

from pathlib import Path


def kill_processes_under(temp: Path) -> None:
    """Kill every process whose command line names `temp` (a Ray session folder), with its
    children. `ray stop` would stop every Ray on the machine, the test session's own included."""
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

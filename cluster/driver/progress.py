"""What the user sees on the terminal: log lines, a progress bar when it is a terminal, and a
warning when nothing comes back for a long time.

Under `ray job submit` stdout is a log stream (no TTY): each step is one plain line there,
so `ray job logs` and the dashboard's job page read well.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter

from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

from cluster.driver.metrics import format_line

log = logging.getLogger("osp")


def setup_logging(level: int = logging.INFO) -> None:
    """Our loggers (osp, cluster.*, judge.*, ...) to stderr; rich formatting on a terminal."""
    if sys.stderr.isatty():
        handler: logging.Handler = RichHandler(show_path=False, markup=False)
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    for name in ("osp", "cluster", "actors", "judge", "learner"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False


class Progress:
    """A rich progress bar over learner steps (TTY only) plus one log line per step."""

    def __init__(self, max_steps: int, start_step: int = 0, enabled: bool = True):
        self.bar = None
        self.log = logging.getLogger("osp")
        if enabled and sys.stdout.isatty():
            self.bar = RichProgress(
                TextColumn("[bold]osp"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
            )
            self.task = self.bar.add_task("steps", total=max_steps, completed=start_step, info="starting actors…")
            self.bar.start()

    def update(self, step: int, max_steps: int, metrics: dict) -> None:
        line = format_line(step, max_steps, metrics)
        if self.bar is not None:
            self.bar.update(self.task, completed=step,
                            info=f"loss {metrics.get('loss', float('nan')):.4f} "
                                 f"p {metrics.get('strength/mean', float('nan')):.3f} "
                                 f"pairs/s {metrics.get('pairs_per_s', 0):.2f}")
            self.bar.console.log(line)
        else:
            self.log.info(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class CountBar:
    """A progress bar over a count of items (answers, comparisons) on a terminal; silent
    elsewhere (a log file, `ray job logs`)."""

    def __init__(self, what: str, total: int):
        self.bar = None
        if sys.stderr.isatty():
            self.bar = RichProgress(TextColumn(f"[bold]{what}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                    TimeRemainingColumn(), transient=True)
            self.task = self.bar.add_task(what, total=total)
            self.bar.start()

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class StallWatch:
    """Says so when nothing in flight has come back for `after_s` seconds (again every
    `after_s` while it lasts). The usual cause on a cluster is a lost node: Ray keeps its
    actors RESTARTING until a node with their resources is back, and the run waits for them."""

    def __init__(self, resources: dict[str, dict[str, float]], after_s: float = 120.0, clock=time.monotonic):
        self.resources, self.after_s, self.clock = resources, after_s, clock
        self.last_arrival = self.last_warning = clock()

    def tick(self, arrived: bool, waiting_on: list[str]) -> str | None:
        """Call once per wait, with what each flight in the air will deliver; returns the
        warning it logged, if any."""
        now = self.clock()
        if arrived:
            self.last_arrival = now
            return None
        if now - self.last_arrival < self.after_s or now - self.last_warning < self.after_s:
            return None
        self.last_warning = now
        waiting = Counter(waiting_on)
        asks = "; ".join(f"{role} {needs}" for role, needs in self.resources.items())
        message = (f"nothing has come back for {now - self.last_arrival:.0f}s; waiting on "
                   + ", ".join(f"{n} {kind}" for kind, n in sorted(waiting.items()))
                   + f". If a node was lost, Ray restarts its actors once a node with their resources is back "
                   f"({asks}); `ray status` shows what the cluster has.")
        log.warning("%s", message)
        return message

"""What the user sees on the terminal: log lines, and a progress bar when it is a terminal.

Under `ray job submit` stdout is a log stream (no TTY): each step is one plain line there,
so `ray job logs` and the dashboard's job page read well.
"""

from __future__ import annotations

import logging
import sys

from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

from cluster.metrics import format_line


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
                            info=f"loss {metrics.get('loss', float('nan')):.4f} p {metrics.get('strength/mean', float('nan')):.3f} "
                                 f"pairs/s {metrics.get('pairs_per_s', 0):.2f}")
            self.bar.console.log(line)
        else:
            self.log.info(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()

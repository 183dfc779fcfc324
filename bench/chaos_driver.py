"""`python -m cluster.train` holding each learner step `DELAY` seconds: the soak's driver for the
tiny model (bench/chaos_soak.py --tiny), which trains a step in milliseconds where a real model
takes seconds, so faults can land while the run trains (tests/multinode_faults_run.py holds its
steps the same way). The run itself is unchanged: the same command line, checkpoints and resume.

    python bench/chaos_driver.py DELAY [cluster.train's arguments]
"""

from __future__ import annotations

import sys
import time

from core.env import apply_runtime_env

apply_runtime_env()

from cluster.driver import progress  # noqa: E402
from cluster.train import main  # noqa: E402

DELAY = float(sys.argv[1])
_update = progress.Progress.update


def _held(self, step: int, max_steps: int, metrics: dict) -> None:
    _update(self, step, max_steps, metrics)
    time.sleep(DELAY)


progress.Progress.update = _held

if __name__ == "__main__":
    sys.exit(main(sys.argv[2:]))

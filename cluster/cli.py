"""`osp`: one command for the run's command lines.

    osp train         python -m cluster.train         the main job (plans first, refuses what will not fit)
    osp evaluate      python -m cluster.evaluate      a checkpoint's answers against the SFT model's
    osp scale         python -m cluster.scale         change a live run's rollout actors
    osp judge-report  python -m cluster.judge_report  how far a judge agrees with the verifier
    osp plan          python -m cluster.plan          will the run fit the cluster: placement and memory

Each subcommand takes exactly the flags of its module (`osp <command> --help`); the modules stay.
Installed as a console script by `pip install` (pyproject.toml); without it, `python -m cluster.cli`.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": ("cluster.train", "the main job: train a policy online (plans first, refuses what will not fit)"),
    "evaluate": ("cluster.evaluate", "a checkpoint's answers against the SFT model's, on held-out prompts"),
    "scale": ("cluster.scale", "change a live run's number of rollout actors"),
    "judge-report": ("cluster.judge_report", "how far a judge agrees with the IFEval verifier, and its calibration"),
    "plan": ("cluster.plan", "will the run fit the cluster: each actor's node and memory, or the shortfalls"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: osp <command> [flags]", "", "commands:"]
    lines += [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
    lines += ["", "`osp <command> --help` lists a command's flags (those of `python -m <its module>`)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"osp: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    # Imported only now: each module applies the stack's environment before Ray, vLLM and
    # transformers load, and `osp --help` stays instant.
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest, prog=f"osp {name}")


if __name__ == "__main__":
    sys.exit(main())

"""The import graph of the product's packages: every arrow points down, and there is no circle.

    cluster/ (the driver, the command lines, the methods)
      ▼
    actors/   judge/   learner/      (never cluster/; judge and learner never each other)
      ▼
    core/                            (none of the others)

Counted from the source (every `import` and `from … import`, lazy and type-only ones too),
so a circle hidden behind TYPE_CHECKING or inside a function still shows."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "actors", "judge", "learner", "cluster")
# What each package may import from the others.
ALLOWED = {"core": set(), "actors": {"core"}, "judge": {"core"}, "learner": {"core"},
           "cluster": {"core", "actors", "judge", "learner"}}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module → the product modules it imports (a package import counts as its __init__)."""
    modules = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            else:
                continue
            for target in found:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_import_points_down():
    """Would catch e.g. judge/ importing a method from cluster/methods (methods reach the actors
    as objects, never as imports) or core/ importing learner/."""
    wrong = sorted(f"{m} → {t}" for m, targets in import_graph().items() for t in targets
                   if t.split(".")[0] != m.split(".")[0] and t.split(".")[0] not in ALLOWED[m.split(".")[0]])
    assert wrong == []


def test_the_import_graph_has_no_circles():
    """Would catch two modules that import each other, directly or around a loop (the ledger
    and the scheduler once did, through a type-only import)."""
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]

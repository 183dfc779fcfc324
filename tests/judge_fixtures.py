"""Preference functions for the `python:<module>:<function>` judge kind in tests.

Importable as `judge_fixtures` from the test process and from Ray workers (tests/ is on
their path: see conftest.py)."""

from __future__ import annotations

import math

MARKER = "e"


def prefer_marker(prompt: str, a: str, b: str) -> float:
    """Prefer the response with more occurrences of MARKER: p = σ((n_a − n_b) / 0.5)."""
    return 1.0 / (1.0 + math.exp(-(a.count(MARKER) - b.count(MARKER)) / 0.5))


def out_of_range(prompt: str, a: str, b: str) -> float:
    return 1.5

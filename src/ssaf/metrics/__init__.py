"""Metrics shipped with ssaf as `evaluate` modules and loaded by local path (hub metric scripts need a network)."""

from __future__ import annotations

from pathlib import Path

import evaluate

METRICS_DIR = Path(__file__).resolve().parent
AVAILABLE = tuple(sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").exists()))


def load_metric(name: str) -> evaluate.EvaluationModule:
    """An `evaluate` module from this package, e.g. ``load_metric("classification")``."""
    if name not in AVAILABLE:
        raise ValueError(f"unknown metric {name!r}; ssaf ships: {', '.join(AVAILABLE)}")
    return evaluate.load(str(METRICS_DIR / name))

"""Per-stage timing statistics and plain-text tables (no third-party table library on devices)."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any, Callable, Sequence

import numpy as np


class StageTimes:
    """Collects milliseconds per named stage and summarises them."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = defaultdict(list)

    def add(self, stage: str, ms: float) -> None:
        self.samples[stage].append(ms)

    def update(self, timings: dict[str, float]) -> None:
        for stage, ms in timings.items():
            self.add(stage, ms)

    def summary(self) -> dict[str, dict[str, float]]:
        return {stage: summarize(values) for stage, values in self.samples.items()}


def summarize(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, np.float64)
    if arr.size == 0:
        return {"count": 0, "mean": 0.0, "median": 0.0, "p50": 0.0, "p90": 0.0, "p95": 0.0, "min": 0.0}
    p50, p90, p95 = (float(v) for v in np.percentile(arr, [50, 90, 95]))
    return {"count": int(arr.size), "mean": float(arr.mean()), "median": p50, "p50": p50, "p90": p90, "p95": p95,
            "min": float(arr.min())}


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned first column, right-aligned numbers; floats with 2 decimals."""
    def cell(v: Any) -> str:
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) if text else len(h) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths)))

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in text)])


def time_calls(fn: Callable[[], Any], warmup: int, iters: int) -> list[float]:
    """Milliseconds of ``iters`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples

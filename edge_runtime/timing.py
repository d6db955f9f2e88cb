"""Per-stage timing statistics and plain-text tables (no third-party table library on devices)."""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

#: samples kept per statistic for its percentiles: about 3 minutes at 60 FPS, 80 kB each
WINDOW = 10_000


class RollingStats:
    """Count, mean, min and max of every sample (exact, constant memory) and percentiles over the last
    ``window`` samples (a fixed ring), so a run of days holds as little as a run of seconds."""

    def __init__(self, window: int = WINDOW) -> None:
        self._ring = np.empty(window, np.float64)
        self.count = 0
        self._sum = 0.0
        self._min, self._max = float("inf"), float("-inf")

    def add(self, value: float) -> None:
        self._ring[self.count % len(self._ring)] = value
        self.count += 1
        self._sum += value
        self._min, self._max = min(self._min, value), max(self._max, value)

    def recent(self, n: int) -> np.ndarray:
        """The last ``n`` samples (at most the window), oldest first."""
        n = min(n, self.count, len(self._ring))
        end = self.count % len(self._ring)
        return np.concatenate([self._ring[end - n:end]] if end >= n else [self._ring[end - n:], self._ring[:end]])

    def summary(self) -> dict[str, float]:
        """As ``summarize``: count/mean/min/max over every sample, percentiles over the window
        (``window`` says how many samples they cover)."""
        if not self.count:
            return summarize([])
        stats = summarize(self.recent(len(self._ring)))
        stats.update(count=self.count, mean=self._sum / self.count, min=self._min, max=self._max,
                     window=min(self.count, len(self._ring)))
        return stats


class StageTimes:
    """Milliseconds per named stage, each a ``RollingStats`` (bounded memory over any run length)."""

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self.stages: dict[str, RollingStats] = {}

    def add(self, stage: str, ms: float) -> None:
        if (stats := self.stages.get(stage)) is None:
            # several threads add stages: setdefault keeps one instance if two race on a new stage
            stats = self.stages.setdefault(stage, RollingStats(self.window))
        stats.add(ms)

    def update(self, timings: dict[str, float]) -> None:
        for stage, ms in timings.items():
            self.add(stage, ms)

    def recent_median(self, n: int) -> dict[str, float]:
        """Median of each stage's last ``n`` samples (what a live view shows)."""
        return {stage: float(np.median(s.recent(n))) for stage, s in list(self.stages.items()) if s.count}

    def summary(self) -> dict[str, dict[str, float]]:
        return {stage: stats.summary() for stage, stats in list(self.stages.items())}


def summarize(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, np.float64)
    if arr.size == 0:
        return {"count": 0, "mean": 0.0, "median": 0.0, "p50": 0.0, "p90": 0.0, "p95": 0.0, "min": 0.0, "max": 0.0}
    p50, p90, p95 = (float(v) for v in np.percentile(arr, [50, 90, 95]))
    return {"count": int(arr.size), "mean": float(arr.mean()), "median": p50, "p50": p50, "p90": p90, "p95": p95,
            "min": float(arr.min()), "max": float(arr.max())}


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned first column, right-aligned numbers; floats with 2 decimals."""
    def cell(v: Any) -> str:
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) if text else len(h) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths)))

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in text)])


def speed_cell(speed: dict[str, Any] | None) -> str:
    """An artifact's recorded ``speed`` (convert's timing against its format's FP32) as '1.32x'; '-' when
    it was not timed."""
    return "-" if not speed or speed.get("vs_fp32") is None else f"{speed['vs_fp32']:.2f}x"


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


def interleaved_times(runners: list[Callable[[], Any]], rounds: int, inner: int) -> list[list[float]]:
    """Per round, each runner's mean ms per call over ``inner`` calls. The runners take turns within
    a round and the order rotates, so drift and the neighbours' load hit all of them alike."""
    for run in runners:  # warm-up: first calls allocate and pick kernels
        for _ in range(3):
            run()
    samples: list[list[float]] = [[] for _ in runners]
    for r in range(rounds):
        for k in range(len(runners)):
            i = (k + r) % len(runners)
            t0 = time.perf_counter()
            for _ in range(inner):
                runners[i]()
            samples[i].append((time.perf_counter() - t0) * 1e3 / inner)
    return samples

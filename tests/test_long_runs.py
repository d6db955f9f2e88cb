"""Runs that last (issue 15): bounded statistics, --json as JSON lines, an atomic summary."""

from __future__ import annotations

import json
import os
import tracemalloc

import numpy as np
import pytest

from edge_runtime.timing import RollingStats, StageTimes


def test_rolling_stats_are_exact_in_total_and_windowed_in_percentiles():
    values = np.random.default_rng(0).gamma(2.0, 5.0, 1000)
    stats = RollingStats(window=100)
    for v in values:
        stats.add(float(v))
    s = stats.summary()
    assert s["count"] == 1000 and s["window"] == 100
    assert s["mean"] == pytest.approx(values.mean(), rel=1e-12)
    assert (s["min"], s["max"]) == (values.min(), values.max())
    assert s["p50"] == s["median"] == pytest.approx(np.percentile(values[-100:], 50))
    assert s["p95"] == pytest.approx(np.percentile(values[-100:], 95))
    assert stats.recent(3).tolist() == values[-3:].tolist()
    assert stats.recent(5000).tolist() == values[-100:].tolist()
    empty = RollingStats().summary()
    assert empty["count"] == 0 and empty["p95"] == 0.0


def test_stage_times_memory_does_not_grow_with_the_run():
    times = StageTimes(window=1000)
    stages = ("read", "preprocess", "inference", "postprocess", "draw", "latency")

    def frames(n: int) -> None:
        for i in range(n):
            for stage in stages:
                times.add(stage, float(i % 97))

    frames(2000)  # every ring full
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    frames(50_000)  # what a list per stage would hold: 300,000 floats, about 10 MB
    grown = sum(d.size_diff for d in tracemalloc.take_snapshot().compare_to(before, "filename")
                if "timing.py" in d.traceback[0].filename)
    tracemalloc.stop()
    assert grown < 10_000, grown
    assert times.summary()["inference"]["count"] == 52_000


def test_summary_json_is_written_atomically(tmp_path):
    from edge_runtime.errors import EdgeRuntimeError
    from edge_runtime.pipeline import write_json_atomic

    path = tmp_path / "out" / "summary.json"
    write_json_atomic(path, {"frames": 3})
    assert json.loads(path.read_text()) == {"frames": 3}
    (tmp_path / "blocked").write_text("a file where a folder should be")
    with pytest.raises(EdgeRuntimeError, match="blocked/summary.json: cannot write"):
        write_json_atomic(tmp_path / "blocked" / "summary.json", {})
    assert os.listdir(tmp_path / "out") == ["summary.json"]


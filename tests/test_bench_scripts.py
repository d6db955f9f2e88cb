"""The bench scripts' own logic on real files (their timings are benchmarks, not tests)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from conftest import fixture_path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def bench_module(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("param, shape, outputs", [
    ("nanodet-plus-m/nanodet-plus-m_416.param", (1, 3, 416, 416), 8),
    ("yolo-fastestv2/yolo-fastestv2-opt.param", (1, 3, 352, 352), 2)])
def test_the_ncnn_reference_rows_run_every_output_of_the_official_files(param, shape, outputs):
    """The reference rows time the official ncnn files through the ncnn backend, which finds their input
    blob and every output blob in the .param and extracts them all."""
    pytest.importorskip("ncnn")
    path = fixture_path("weights", param)
    data = np.random.default_rng(0).random(shape).astype(np.float32)
    stats = bench_module("int8_vs_fp32").ncnn_latency(str(path), data, 1, 1, 2)
    assert stats["median"] > 0
    from edge_runtime.backends import open_backend

    backend = open_backend(path, "ncnn", 1)
    assert len(backend.outputs) == outputs and backend.inputs[0].name not in {o.name for o in backend.outputs}
    for name, out in backend.run({backend.inputs[0].name: data}).items():
        assert out.size > 0 and np.isfinite(out).all(), name

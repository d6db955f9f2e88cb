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
    ("nanodet-plus-m/nanodet-plus-m_416.param", (3, 416, 416), 8),
    ("yolo-fastestv2/yolo-fastestv2-opt.param", (3, 352, 352), 2)])
def test_ncnn_blobs_are_the_ones_ncnn_runs(param, shape, outputs):
    """The reference rows time the official ncnn files: the input and output blobs come from the
    .param file, and ncnn extracts every one of them."""
    ncnn = pytest.importorskip("ncnn")
    path = fixture_path("weights", param)
    input_blob, output_blobs = bench_module("int8_vs_fp32").ncnn_blobs(path)
    assert len(output_blobs) == outputs and input_blob not in output_blobs
    net = ncnn.Net()
    net.load_param(str(path))
    net.load_model(str(path.with_suffix(".bin")))
    data = np.random.default_rng(0).random(shape).astype(np.float32)
    mat = ncnn.Mat(data)  # a Mat borrows the array's buffer: both stay alive until the extractor is done
    ex = net.create_extractor()
    ex.input(input_blob, mat)
    for blob in output_blobs:
        ret, out = ex.extract(blob)
        assert ret == 0 and np.isfinite(np.array(out)).all() and np.array(out).size > 0, blob

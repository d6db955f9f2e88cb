"""convert times its lossy artifacts against their format's FP32 on the package's own CPU (a fresh
interpreter, ``edge_runtime.speed``) and records it as each artifact's ``speed``; not for another target's
CPU, not with ``--no-speed``; a failed timing costs only the record. Real conversions of the demo package,
real ONNX Runtime timings."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.manifest import load_manifest
from edge_runtime.speed import time_against_fp32, time_files_against_fp32, time_files_in_fresh_process

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    pytest.importorskip("torch", reason="the demo images come with the host tool chain")
    from converters.demo_data import write_split

    root = tmp_path_factory.mktemp("shapes")
    write_split(root, "train", 24, progress=False)
    return root / "train"


@pytest.fixture(scope="module")
def int8_package(demo_package, calib, tmp_path_factory) -> Path:
    """The demo package with ONNX INT8, converted through the API (speed timed: this host is its CPU)."""
    pytest.importorskip("nncf", reason="ONNX INT8 uses NNCF")
    from converters import Converter

    package = tmp_path_factory.mktemp("speed") / "pkg"
    shutil.copytree(demo_package, package)
    Converter(package).to("onnx", "int8", calib, calib_size=12, val_size=12)
    return package


def test_convert_records_int8_speed_against_onnx_fp32(int8_package):
    manifest = load_manifest(int8_package)
    int8 = manifest.artifact("onnx", "int8")
    speed = int8.extra["speed"]
    assert speed["ms"] > 0 and speed["fp32_ms"] > 0
    # the median over repeats of per-repeat ratios: near the ratio of the medians, not equal to it
    assert 0.5 < speed["vs_fp32"] / (speed["fp32_ms"] / speed["ms"]) < 2.0
    assert 0.05 < speed["vs_fp32"] < 20
    assert speed["threads"] >= 1 and speed["measured_on"]["arch"]
    assert "speed" not in manifest.artifact("onnx", "fp32").extra  # FP32 is the baseline, not timed against itself


def test_time_against_fp32_times_each_format_against_its_own_fp32(int8_package, tmp_path):
    manifest = load_manifest(int8_package)
    tensor = np.random.default_rng(0).random(manifest.input.shape).astype(np.float32)
    timed = time_against_fp32(str(int8_package), ["onnx-int8"], tensor, threads=1, repeats=2, seconds=0.05)
    assert list(timed) == ["onnx-int8"]
    row = timed["onnx-int8"]
    assert row["ms"] > 0 and row["fp32_ms"] > 0 and 0.05 < row["vs_fp32"] < 20
    # without its format's FP32 there is nothing to be timed against: one error naming both
    alone = tmp_path / "alone"
    shutil.copytree(int8_package, alone)
    data = json.loads((alone / "manifest.json").read_text())
    for art in data["artifacts"]:
        if art["precision"] == "int8":
            art["format"] = "openvino"  # an INT8 "OpenVINO" entry with no openvino-fp32 beside it
    (alone / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(EdgeRuntimeError, match="openvino-int8 has no openvino-fp32"):
        time_against_fp32(str(alone), ["openvino-int8"], tensor, threads=1, repeats=1, seconds=0.01)


def test_recipe_candidates_are_timed_as_files_in_a_fresh_process(int8_package, tmp_path):
    """The ONNX INT8 recipe's choice times its candidate graphs (files outside the package) by the same
    protocol as the record, in a fresh interpreter; the record says how."""
    recipe = load_manifest(int8_package).artifact("onnx", "int8").extra["quantization"]["recipe"]
    assert recipe["timing"]["threads"] >= 1 and "fresh process" in recipe["timing"]["how"], recipe
    assert all(0.05 < c["speed_vs_fp32"] < 20 for c in recipe["candidates"].values()), recipe
    manifest = load_manifest(int8_package)
    tensor = np.random.default_rng(0).random(manifest.input.shape).astype(np.float32)
    files = {"int8": int8_package / "model_int8.onnx", "same": int8_package / "model.onnx"}
    here = time_files_against_fp32(int8_package / "model.onnx", files, tensor, threads=1, repeats=2, seconds=0.05)
    fresh = time_files_in_fresh_process(int8_package / "model.onnx", files, tensor, threads=1)
    for timed in here, fresh:
        assert list(timed) == ["int8", "same"] and all(0.05 < row["vs_fp32"] < 20 for row in timed.values())
    with pytest.raises(EdgeRuntimeError, match="the key fp32 names the model timed against"):
        time_files_against_fp32(int8_package / "model.onnx", {"fp32": int8_package / "model.onnx"}, tensor, 1)
    with pytest.raises(EdgeRuntimeError, match="key 'a=b'"):
        time_files_in_fresh_process(int8_package / "model.onnx", {"a=b": int8_package / "model.onnx"}, tensor, 1)
    with pytest.raises(EdgeRuntimeError, match="tflite is not one of onnx, openvino"):
        time_files_in_fresh_process(int8_package / "model.onnx", {"a": int8_package / "model.onnx"}, tensor, 1,
                                    format="tflite")
    # a worker that fails is one line naming what was timed and the worker's own last line
    with pytest.raises(EdgeRuntimeError, match=r"recipes: timing failed: .*missing\.onnx"):
        time_files_in_fresh_process(int8_package / "model.onnx", {"int8": tmp_path / "missing.onnx"}, tensor, 1,
                                    what="recipes")


def test_a_failed_timing_costs_the_record_not_the_conversion(demo_package, calib, tmp_path, monkeypatch, caplog):
    pytest.importorskip("nncf", reason="ONNX INT8 uses NNCF")
    import converters.convert as convert

    def fails(*args, **kwargs):
        raise ValueError("a runtime's own error\nsecond line")  # not an EdgeRuntimeError

    monkeypatch.setattr(convert, "time_in_fresh_process", fails)
    package = tmp_path / "pkg"
    shutil.copytree(demo_package, package)
    manifest = convert.convert_package(package, ["onnx"], ["int8"], calib=calib, calib_size=12, val_size=12)
    assert manifest.artifact("onnx", "int8").verified and "speed" not in manifest.artifact("onnx", "int8").extra
    assert "speed against FP32 not recorded: a runtime's own error" in caplog.text
    assert "second line" not in caplog.text


def test_remaking_an_fp32_drops_the_records_timed_against_the_old_one(int8_package, tmp_path):
    from converters.convert import record_speed

    package = tmp_path / "pkg"
    shutil.copytree(int8_package, package)
    manifest = load_manifest(package)
    assert "speed" in manifest.artifact("onnx", "int8").extra
    tensor = np.zeros(manifest.input.shape, np.float32)
    after = record_speed(manifest, {"onnx-fp32"}, tensor, "a zero input", {}, measure=False)
    assert "speed" not in after.artifact("onnx", "int8").extra
    assert "speed" not in load_manifest(package).artifact("onnx", "int8").extra  # saved


def test_no_speed_for_another_targets_cpu_or_when_turned_off(demo_package, calib, tmp_path):
    pytest.importorskip("nncf", reason="ONNX INT8 uses NNCF")
    from converters.convert import convert_package

    for name, kwargs in {"other-target": {"options": {"target": "rpi4"}},
                         "off": {"measure_speed": False}}.items():
        package = tmp_path / name
        shutil.copytree(demo_package, package)
        manifest = convert_package(package, ["onnx"], ["int8"], calib=calib, calib_size=12, val_size=12, **kwargs)
        assert "speed" not in manifest.artifact("onnx", "int8").extra, name
        assert "speed" not in json.loads((package / "manifest.json").read_text())["artifacts"][-1], name


def test_convert_table_shows_the_speed(demo_package, calib, tmp_path):
    pytest.importorskip("nncf", reason="ONNX INT8 uses NNCF")
    package = tmp_path / "pkg"
    shutil.copytree(demo_package, package)
    cmd = [sys.executable, "-m", "edge_runtime.cli", "convert", str(package), "--to", "onnx", "--precisions",
           "int8", "--calib", str(calib), "--calib-size", "12", "--val-size", "12"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    recorded = load_manifest(package).artifact("onnx", "int8").extra["speed"]["vs_fp32"]
    row = next(line for line in proc.stdout.splitlines() if line.startswith("model_int8.onnx"))
    assert f"{recorded:.2f}x" in row.split(), row
    header = next(line for line in proc.stdout.splitlines() if line.startswith("artifact "))
    assert "vs its FP32" in header
    info = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "info", str(package)], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert info.returncode == 0 and f"{recorded:.2f}x" in next(
        line for line in info.stdout.splitlines() if line.startswith("model_int8.onnx")).split()


def test_converters_choose_the_fastest_eligible_candidate_and_say_why():
    """The rule the ONNX INT8 recipe and the OpenVINO INT8 preset share (converters.convert_job)."""
    from converters.convert_job import choose_candidate

    value, speed = {"slow": 0.995, "fast": 0.990}, {"slow": 1.0, "fast": 1.5}
    chosen, why = choose_candidate(value, speed, 0.99, "meets the budget", "cosine", "CPU X", "n/a")
    assert chosen == "fast" and why == "the fastest on CPU X whose cosine meets the budget"
    chosen, why = choose_candidate(value, speed, 0.993, "meets the budget", "cosine", "CPU X", "n/a")
    assert chosen == "slow" and "; fast is faster (1.50x) but its cosine 0.9900 is not" in why
    # a more accurate eligible one timing within SPEED_TIE of the fastest ties with it and ships
    tie = {"slow": 1.0, "fast": 1.015}
    chosen, why = choose_candidate(value, tie, 0.99, "meets the budget", "cosine", "CPU X", "n/a")
    assert chosen == "slow" and "within 2% of the fastest (fast, 1.015x it: a tie)" in why, why
    assert choose_candidate(value, {"slow": 1.0, "fast": 1.03}, 0.99, "meets it", "cosine", "CPU X", "n/a")[0] == "fast"
    # none eligible: the most accurate, whatever the speed
    assert choose_candidate(value, speed, 0.999, "meets it", "cosine", "CPU X", "n/a")[0] == "slow"
    chosen, why = choose_candidate(value, {}, 0.99, "meets it", "cosine", "CPU X", "another CPU")
    assert chosen == "slow" and why == "the most accurate: speed not measured (another CPU)"


def test_a_failed_timing_is_one_warning_line_whatever_the_error(caplog):
    from converters.convert_job import time_or_warn

    def fails(error: Exception):
        def timer():
            raise error
        return timer

    assert time_or_warn("onnx int8 recipes", fails(RuntimeError(""))) is None
    assert time_or_warn("openvino int8 presets", fails(IndexError("list index\nout of range"))) is None
    assert "onnx int8 recipes: not timed: RuntimeError" in caplog.text
    assert "openvino int8 presets: not timed: list index" in caplog.text and "out of range" not in caplog.text
    assert time_or_warn("ok", lambda: {"a": {"vs_fp32": 1.0}}) == {"a": {"vs_fp32": 1.0}}

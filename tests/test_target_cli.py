"""The targets command: every profile in a table and as JSON, and this host described."""

from __future__ import annotations

import json

from test_cli import assert_one_line_error, run_cli


def test_targets_table_and_json():
    table = run_cli("targets")
    assert table.returncode == 0, table.stderr
    for name in ("x86", "x86-vnni", "arm64", "rpi4", "rpi5", "edgetpu", "npu-vx", "openvino-npu", "ort-qnn",
                 "rknn-lite"):
        assert f"\n{name} " in "\n" + table.stdout, name
    profiles = {t["name"]: t for t in json.loads(run_cli("targets", "--json", "-").stdout)}
    assert profiles["edgetpu"]["delegate"] == "libedgetpu.so.1" and profiles["edgetpu"]["tflite_io"] == "uint8"
    assert profiles["rpi4"]["threads"] == 4 and profiles["rknn-lite"]["status"] == "future"


def test_detect_describes_this_host():
    text = run_cli("targets", "--detect")
    assert text.returncode == 0 and "Suggested target:" in text.stdout, text.stderr
    info = json.loads(run_cli("targets", "--detect", "--json", "-").stdout)
    assert info["suggested_target"] and info["arch"] and info["cores"] >= 1


def test_future_profile_is_refused_in_one_line(nanodet_plus_package, fixtures):
    proc = run_cli("run", str(nanodet_plus_package), "--target", "rknn-lite", "--source",
                   str(fixtures("images/samples/dog.jpg")))
    assert_one_line_error(proc, "rknn-lite", "future")


def test_convert_for_the_edgetpu_target_makes_a_full_integer_uint8_model(export, tmp_path):
    """``convert --target edgetpu``: exactly the profile's artifact (TFLite INT8, uint8 I/O), and the
    float-op report read from the file finds nothing for the Edge TPU to hand back to the CPU."""
    import shutil

    import pytest
    from conftest import fixture_path

    from edge_runtime.backends.tflite_ops import tflite_op_report
    from edge_runtime.manifest import load_manifest

    pytest.importorskip("onnx2tf")
    pkg = tmp_path / "yf"
    shutil.copytree(export("yolo-fastestv2"), pkg)
    proc = run_cli("convert", str(pkg), "--target", "edgetpu", "--calib", str(fixture_path("images/calib-coco-val2017")),
                   "--calib-size", "16")
    assert proc.returncode == 0, proc.stderr
    assert "target edgetpu: tflite x int8, TFLite I/O uint8" in proc.stderr
    manifest = load_manifest(pkg)
    assert sorted(a.key for a in manifest.artifacts) == sorted(["onnx-fp32", "tflite-int8"]), manifest.artifacts
    art = manifest.artifact("tflite", "int8")
    assert art.extra["quantization"]["io_dtype"] == "uint8"
    report = tflite_op_report(manifest.artifact_path(art))
    assert report.full_integer and report.integer_io, report.describe()


def test_export_records_macs_and_bench_prints_the_roofline(nanodet_plus_package, yolo_fastestv2_package):
    """MACs counted from the ONNX graph match the published figures (GFLOPs = 2 x GMACs): NanoDet-Plus-m
    416 1.52 GFLOPs, YOLO-FastestV2 352 0.212 BFLOPs, within 5 %."""
    from edge_runtime.manifest import load_manifest

    for pkg, published_gflops in ((nanodet_plus_package, 1.52), (yolo_fastestv2_package, 0.212)):
        macs = load_manifest(pkg).artifact("onnx", "fp32").extra["macs"]
        assert abs(2 * macs / 1e9 - published_gflops) / published_gflops < 0.05, (pkg.name, macs)
    proc = run_cli("bench", str(yolo_fastestv2_package), "--target", "rpi4", "--iters", "5", "--warmup", "1",
                   "--no-isolate")
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("roofline model.onnx"))
    assert "GMACs in" in line and "% of rpi4's 48 GFLOP/s fp32 peak" in line, line
    assert "ran on" in proc.stdout and "CPUExecutionProvider" in proc.stdout

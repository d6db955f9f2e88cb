"""`edge-runtime compress` end to end on the bundled demo model: each step's checkpoint exports and
runs, the numbers it prints are the model's, and argument mistakes are one-line errors."""

from __future__ import annotations

import json

import pytest
from test_cli import assert_one_line_error, run_cli

pytest.importorskip("torch", reason="compress needs torch")
pytest.importorskip("torch_pruning", reason="pruning needs torch-pruning")

from edge_runtime import Detector
from edge_runtime.manifest import load_manifest


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """48 generated, labelled shapes images (COCO json beside the folder)."""
    from converters.demo_data import write_split

    return write_split(tmp_path_factory.mktemp("shapes"), "train", 48, progress=False)


def _summary(path) -> dict:
    return json.loads(path.read_text())


def test_prune_distill_and_export(shapes, tmp_path):
    ckpt, pkg, out = tmp_path / "small.ckpt", tmp_path / "pkg", tmp_path / "summary.json"
    proc = run_cli("compress", "--model", "demo-shapes", "--prune", "0.3", "--method", "group", "--data", str(shapes),
                   "--images", "48", "--steps", "6", "--distill", "--out", str(ckpt), "--package", str(pkg),
                   "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    summary = _summary(out)
    assert [h["step"] for h in summary["history"]] == ["prune", "fine_tune"]
    assert summary["params_after"] < 0.8 * summary["params_before"]
    assert summary["macs_after"] < 0.85 * summary["macs_before"]
    assert "distillation" in summary["history"][1]["loss"] and summary["history"][1]["steps"] == 6
    assert f"params {summary['params_before'] / 1e6:.3f} M -> {summary['params_after'] / 1e6:.3f} M" in proc.stdout
    parity = load_manifest(pkg).artifacts[0].extra["parity_vs_torch"]
    assert parity["cosine"] > 0.9999 and parity["max_abs_diff"] < 1e-3, parity
    # the pruned graph converts like any other: OpenVINO and TFLite FP32 agree with its ONNX
    pytest.importorskip("openvino", reason="OpenVINO conversion needs openvino")
    pytest.importorskip("onnx2tf", reason="TFLite conversion needs onnx2tf")
    proc = run_cli("convert", str(pkg), "--to", "openvino,tflite", "--precisions", "fp32")
    assert proc.returncode == 0, proc.stderr
    for fmt in ("openvino", "tflite"):
        agreement = load_manifest(pkg).artifact(fmt, "fp32").extra["fp32_agreement"]
        assert agreement["cosine"] > 0.9999, (fmt, agreement)
    # the checkpoint is an ordinary --weights for export, and the package detects shapes
    proc = run_cli("export", "--model", "demo-shapes", "--weights", str(ckpt), "--out", str(tmp_path / "again"))
    assert proc.returncode == 0, proc.stderr
    from converters.demo_data import make_image

    image, labels = make_image(0, "val", 0)
    assert len(Detector(pkg, backend="onnx")(image)) > 0 and labels


def test_qat_writes_an_int8_package(shapes, tmp_path):
    ckpt, pkg, out = tmp_path / "q.ckpt", tmp_path / "qpkg", tmp_path / "summary.json"
    proc = run_cli("compress", "--model", "demo-shapes", "--qat", "--qat-steps", "4", "--data", str(shapes),
                   "--images", "48", "--calib", str(shapes.parent / "train"), "--calib-size", "16", "--out", str(ckpt),
                   "--package", str(pkg), "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert [h["step"] for h in _summary(out)["history"]] == ["qat"]
    manifest = load_manifest(pkg)
    art = manifest.artifact("onnx", "int8")
    assert art.extra["qat"]["steps"] == 4 and art.extra["fp32_agreement"]["cosine_mean"] > 0.99, art.extra


def test_low_rank_checkpoint_rebuilds_and_exports(shapes, tmp_path):
    ckpt, pkg, out = tmp_path / "lr.ckpt", tmp_path / "lrpkg", tmp_path / "summary.json"
    proc = run_cli("compress", "--model", "demo-shapes", "--low-rank", "0.5", "--calib", str(shapes.parent / "train"),
                   "--calib-size", "16", "--out", str(ckpt), "--package", str(pkg), "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    step = _summary(out)["history"][0]
    assert step["step"] == "lowrank" and step["candidates"] > 0 and step["factorised"] == len(step["layers"])
    # whatever was kept, the factorised model loads back from the checkpoint and exports with parity
    parity = load_manifest(pkg).artifacts[0].extra["parity_vs_torch"]
    assert parity["cosine"] > 0.9999, parity


@pytest.mark.parametrize("args, needle", [
    (["--model", "nanodet-plus-m", "--weights", "x.ckpt", "--data", "demo", "--steps", "5"], "add --distill"),
    (["--model", "demo-shapes", "--qat", "--data", "demo"], "--qat needs --calib"),
    (["--model", "demo-shapes", "--prune", "1.5"], "--prune must lie in (0, 1)"),
    (["--model", "demo-shapes", "--low-rank", "0.5"], "give --data or --calib"),
    (["--model", "demo-shapes", "--distill"], "need --data"),
])
def test_argument_mistakes_are_one_line_errors(args, needle, tmp_path):
    assert_one_line_error(run_cli("compress", *args, "--out", str(tmp_path / "x.ckpt")), needle, status=2)

"""INT8 accuracy on both COCO models with accuracy-aware INT8 (``--int8-min-cosine``).

Calibration on 32/64 COCO photos, the budget (mean per-image output cosine with FP32 >= 0.99 for
NanoDet-Plus-m, 0.995 for YOLO-FastestV2, see ``MIN_COSINE``) on 24 other photos of the same folder,
and the proof on the 11 sample photos, which neither step saw.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from agreement import unmatched
from conftest import fixture_path
from edge_runtime import Detector
from edge_runtime.manifest import load_manifest

CALIB = "images/calib-coco-val2017"
CALIB_SIZE = {"nanodet-plus-m": 32, "yolo-fastestv2": 64}
FORMATS = ("onnx", "openvino", "tflite")
# The budget per model and format. YOLO-FastestV2 at 0.99 met it but, on horses.jpg, where FP32 itself
# is torn between cow 0.49 and horse 0.43 for one animal, dropped the horse below 0.3 on some CPUs
# (TFLite on AMD EPYC, ONNX on Intel Xeon); at 0.995 (9-10 layers in float for ONNX/OpenVINO, 55 ops
# for TFLite, no slower) every artifact keeps both.
MIN_COSINE = {"nanodet-plus-m": {"onnx": 0.99, "openvino": 0.99, "tflite": 0.99},
              "yolo-fastestv2": {"onnx": 0.995, "openvino": 0.995, "tflite": 0.995}}


@pytest.fixture(scope="session", params=list(CALIB_SIZE))
def budget_package(request, export, tmp_path_factory) -> Path:
    for library in ("nncf", "openvino", "onnx2tf"):
        pytest.importorskip(library)
    from converters.convert import convert_package

    key = request.param
    pkg = tmp_path_factory.mktemp("int8-budget") / key
    shutil.copytree(export(key), pkg)
    budgets = MIN_COSINE[key]
    for budget in sorted(set(budgets.values())):
        convert_package(pkg, [f for f in FORMATS if budgets[f] == budget], ["int8"], calib=fixture_path(CALIB),
                        calib_size=CALIB_SIZE[key], int8_min_cosine=budget, val_size=24)
    return pkg


@pytest.fixture(scope="session")
def samples() -> list[tuple[str, np.ndarray]]:
    return [(p.name, cv2.imread(str(p))) for p in sorted(fixture_path("images/samples").glob("*.jpg"))]


def test_budget_is_met_and_recorded(budget_package):
    manifest = load_manifest(budget_package)
    for fmt in FORMATS:
        extra = manifest.artifact(fmt, "int8").extra
        control = extra["quantization"]["accuracy_control"]
        budget = MIN_COSINE[budget_package.name][fmt]
        assert control["metric"] == "cosine" and control["target"] == pytest.approx(budget)
        assert control["met"] and control["after"] >= budget, (fmt, control)
        assert control["validation_images"] == 24 and control["after"] >= control["before"] - 1e-6
        assert isinstance(control["float_layers"], list)
        # the check after conversion runs on the same held-out photos, never the calibration ones
        assert extra["fp32_agreement"]["checked_on"] == {"held_out_images": 24, "source": "calib-coco-val2017"}
        assert extra["fp32_agreement"]["cosine_mean"] >= budget - 1e-6, (fmt, extra["fp32_agreement"])


def test_raw_outputs_on_unseen_photos(budget_package, samples):
    """On photos the search never saw (the budget itself, >= 0.99 on the 24 held-out photos, is
    checked above): measured mean 0.990-0.996 and worst 0.983-0.992 per artifact; the floors leave
    room for another CPU's kernels."""
    from converters.convert import verify_artifact
    from edge_runtime.preprocess import ImagePreprocessor

    manifest = load_manifest(budget_package)
    prep = ImagePreprocessor(manifest.input)
    tensors = [prep(image)[0].copy() for _, image in samples]  # the preprocessor reuses its buffer
    for fmt in FORMATS:
        agreement = verify_artifact(manifest, manifest.artifact(fmt, "int8"), tensors)
        assert agreement["cosine_mean"] > 0.987 and agreement["cosine"] > 0.975, (fmt, agreement)


def test_detections_agree_with_fp32(budget_package, samples):
    """Issue 3's rule (same class, IoU > 0.8, for boxes scoring > 0.4) between FP32 and INT8, where
    a box one model keeps may be matched by a box the other model *predicted* (score > 0.3) even if
    its NMS then kept a neighbour instead. Measured: a few of the 11 photos (YOLO-FastestV2: 000181,
    giraffe; NanoDet-Plus-m: 000004, horses) hold pairs of overlapping boxes whose IoU or scores sit on the
    NMS threshold, so a third-decimal change flips which one survives; FP32 itself flips on two of
    them under JPEG re-encoding at quality 95 or sigma-1 noise. Those are ties, not INT8 errors; a
    box the other model never predicted is."""
    fp32 = Detector(budget_package, backend="onnx", precision="fp32")
    fp32_all = Detector(budget_package, backend="onnx", precision="fp32", nms_iou=1.0)  # before NMS
    for fmt in FORMATS:
        int8 = Detector(budget_package, backend=fmt, precision="int8")
        int8_all = Detector(budget_package, backend=fmt, precision="int8", nms_iou=1.0)
        for name, image in samples:
            want, have = fp32(image), int8(image)
            lost = unmatched(want, have) and unmatched(want, int8_all(image))
            extra = unmatched(have, want) and unmatched(have, fp32_all(image))
            assert not lost and not extra, f"{budget_package.name} {fmt} int8 {name}: lost {lost}, extra {extra}"

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
from agreement import int8_disagreements
from choice import shipped
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


# YOLO-FastestV2 takes the same three budget searches (3 of the suite's 15 minutes): `pytest -m slow`
@pytest.fixture(scope="session", params=["nanodet-plus-m", pytest.param("yolo-fastestv2", marks=pytest.mark.slow)])
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
    # ONNX's recipe under the budget: the fastest that meets it ships; the fused U8S8 one records its rewrite
    quantization = manifest.artifact("onnx", "int8").extra["quantization"]
    recipe = quantization["recipe"]
    met = [k for k, c in recipe["candidates"].items() if c["cosine"] >= MIN_COSINE[budget_package.name]["onnx"]]
    assert recipe["chosen"] == shipped(recipe["candidates"], met, "speed_vs_fp32"), recipe
    if recipe["chosen"] == "nncf-u8s8":
        assert quantization["activations"] == "U8S8" and quantization["fused"]["int32_biases"] > 0, quantization
        if budget_package.name == "nanodet-plus-m":  # LeakyRelu after Convs, depthwise Convs after them
            fused = quantization["fused"]
            assert fused["conv_output_quantisers"] > 0 and quantization["equalised_depthwise_inputs"] > 0
    # OpenVINO's NNCF preset, measured under the budget: the one shipped (and searched) meets it, or none did
    quantization = manifest.artifact("openvino", "int8").extra["quantization"]
    choice = quantization["preset_choice"]
    assert quantization["preset"] == choice["chosen"] and choice["metric"] == "cosine", choice
    met = [k for k, c in choice["candidates"].items() if c["cosine"] >= MIN_COSINE[budget_package.name]["openvino"]]
    assert choice["chosen"] in met or not met, choice


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
    """Issue 3's rule (same class, IoU > 0.8, for boxes scoring > 0.4) between FP32 and INT8, with the
    score spread INT8 shows on these photos and NMS near-ties allowed for (tests/agreement.py INT8,
    docs/tolerances.md): a box one side lacks must score within that spread of the threshold or lose
    NMS to a same-class neighbour near the IoU threshold or near its score. Measured: a few of the 11
    photos (YOLO-FastestV2: 000181, giraffe; NanoDet-Plus-m: 000004, horses) hold pairs of overlapping
    boxes whose IoU or scores sit on the NMS threshold, so a third-decimal change flips which one
    survives; FP32 itself flips on two of them under JPEG re-encoding at quality 95 or sigma-1 noise.
    Under the old rule (the other side's pre-NMS boxes, no score bound) TFLite INT8 failed on an Intel
    Xeon (an extra 'dog 0.42', dog.jpg) and here (a lost 'cow 0.44', horses.jpg): 0.07-0.09 above the
    0.35 threshold, well inside the measured INT8 score spread of 0.17."""
    fp32 = Detector(budget_package, backend="onnx", precision="fp32")
    for fmt in FORMATS:
        int8 = Detector(budget_package, backend=fmt, precision="int8")
        for name, image in samples:
            problems = int8_disagreements(fp32, int8, image)
            assert not problems, f"{budget_package.name} {fmt} int8 {name}: {problems}"

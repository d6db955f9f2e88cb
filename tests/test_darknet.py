"""Darknet import (YOLO-Fastest v1.1 / 1.1-XL): our cfg parser + .weights reader against OpenCV's darknet
reader, the exported ``yolov3`` package against OpenCV's decoded rows, and one-line errors on bad files.

Reference: ``reference/yolo-fastest-1.1_opencv4_dnn.npz`` (OpenCV 4.14 ``readNetFromDarknet``): per
variant and image the 1x3x320x320 input, the raw head outputs (NHWC, 10x10 = layer 121, 20x20 =
layer 130) and the decoded rows (cx, cy, w, h in 0..1, objectness, obj x sigmoid(class) with
values <= 0.2 zeroed). Measured when written: raw heads within 1.1e-4 (1.1: 7.2e-5, XL: 1.1e-4).

Not asserted (slow), measured once with ``validate_package`` on ``datasets/voc-indoor-85`` (FP32 ONNX,
15 COCO-mappable classes, score >= 0.001, NMS 0.45): yolo-fastest-1.1 mAP 0.084 / mAP50 0.199,
yolo-fastest-1.1-xl mAP 0.147 / mAP50 0.298 (published COCO mAP50: 24.4 % and 34.3 %).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import fixture_path

from edge_runtime import Detector
from edge_runtime.errors import CheckpointError
from edge_runtime.families import make_family
from edge_runtime.manifest import load_manifest

VARIANTS = ("yolo-fastest-1.1", "yolo-fastest-1.1-xl")
IMAGES = ("dog", "person")
LEVELS = ("121", "130")  # cfg order of the [yolo] layers: 10x10 (stride 32), then 20x20 (stride 16)
OPENCV_CLASS_THRESHOLD = 0.2  # OpenCV's region layer zeroes obj x class scores at or below this
NET = 320


def _weights(variant: str) -> Path:
    return fixture_path("weights", "yolo-fastest-1.1", f"{variant}.weights")


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(fixture_path("reference", "yolo-fastest-1.1_opencv4_dnn.npz")) as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """``package(variant)`` -> exported FP32 ONNX package folder, once per module."""
    pytest.importorskip("torch", reason="exporting a package needs torch (host-side converters)")
    pytest.importorskip("onnxslim", reason="exporting a package needs onnxslim")
    from converters.export_onnx import export_package

    done: dict[str, Path] = {}

    def make(variant: str) -> Path:
        if variant not in done:
            out = tmp_path_factory.mktemp(f"pkg-{variant}")
            export_package(variant, _weights(variant), out)
            done[variant] = out
        return done[variant]

    return make


def _opencv_rows(reference, variant: str, image: str) -> np.ndarray:
    """(N, 85) OpenCV decoded rows, levels in cfg order: the same N order as our graph."""
    return np.concatenate([reference[f"{variant}_{image}_decoded_yolo_{lv}"] for lv in LEVELS])


# ------------------------------------------------------------------ torch model vs OpenCV

@pytest.mark.parametrize("variant", VARIANTS)
def test_raw_heads_match_opencv(reference, variant):
    torch = pytest.importorskip("torch")
    from converters.darknet import load_darknet

    net, nc = load_darknet(_weights(variant))
    assert nc == 80 and [h.stride for h in net.heads] == [32, 16]
    assert [h.mask for h in net.heads] == [(3, 4, 5), (0, 1, 2)]
    for image in IMAGES:
        with torch.no_grad():
            outs = net(torch.from_numpy(reference[f"{variant}_{image}_input"]))
        for out, level in zip(outs, LEVELS):
            ref = reference[f"{variant}_{image}_raw_permute_{level}"]
            ours = out.permute(0, 2, 3, 1).numpy()
            assert ours.shape == ref.shape
            diff = float(np.abs(ours - ref).max())
            assert diff < 1e-3, f"{variant} {image} layer {level}: max abs diff {diff:.2e}"


# ------------------------------------------------------------------ exported package vs OpenCV

@pytest.mark.parametrize("variant", VARIANTS)
def test_manifest_declares_yolov3(package, variant):
    manifest = load_manifest(package(variant))
    assert manifest.family == "yolov3" and manifest.input.shape == (1, 3, NET, NET)
    assert manifest.input.color == "RGB" and manifest.input.resize == "resize"
    assert list(manifest.input.mean) == [0.0] * 3 and list(manifest.input.std) == [255.0] * 3
    assert manifest.decoder["anchors"] == [[12, 18], [37, 49], [52, 132], [115, 73], [119, 199], [242, 238]]
    assert manifest.decoder["masks"] == [[3, 4, 5], [0, 1, 2]] and manifest.decoder["strides"] == [32, 16]
    assert manifest.class_names[0] == "person" and len(manifest.class_names) == 80
    assert manifest.artifacts[0].extra["parity_vs_torch"]["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("image", IMAGES)
def test_candidates_match_opencv_decoded_rows(package, reference, read_image, variant, image):
    """Our ONNX graph + yolov3 decoder, row by row, against OpenCV's decoded rows (same N order)."""
    ort = pytest.importorskip("onnxruntime")
    pkg = package(variant)
    family = make_family(load_manifest(pkg))
    tensor, _ = family.preprocess(read_image(f"{image}.jpg"))
    # our preprocessing gives OpenCV's blob exactly (plain resize, RGB, /255)
    np.testing.assert_allclose(tensor, reference[f"{variant}_{image}_input"], atol=1e-6)
    session = ort.InferenceSession(str(pkg / "model.onnx"), providers=["CPUExecutionProvider"])
    boxes, scores = family.candidate_boxes(session.run(list(family.output_roles), {"input": tensor}))

    rows = _opencv_rows(reference, variant, image)
    assert boxes.shape == (family.num_candidates, 4) == (len(rows), 4)
    cxcywh = np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1) / NET
    np.testing.assert_allclose(cxcywh, rows[:, :4], rtol=1e-3, atol=1e-3)
    ref = rows[:, 5:]
    kept = ref > 0
    assert np.abs(scores[kept] - ref[kept]).max() < 1e-3
    assert scores[~kept].max() <= OPENCV_CLASS_THRESHOLD + 1e-3  # what OpenCV zeroed is small here too
    assert kept.sum() > 10, "the sample image should give OpenCV candidates"


def _reference_detections(rows: np.ndarray, threshold: float, iou: float, hw: tuple[int, int]):
    """OpenCV rows -> best-class detections, class-wise greedy NMS, boxes in original pixels."""
    h, w = hw
    cls = rows[:, 5:].argmax(1)
    score = rows[:, 5:].max(1)
    box = np.stack([rows[:, 0] - rows[:, 2] / 2, rows[:, 1] - rows[:, 3] / 2,
                    rows[:, 0] + rows[:, 2] / 2, rows[:, 1] + rows[:, 3] / 2], 1) * [w, h, w, h]
    out = []
    for c in np.unique(cls[score >= threshold]):
        idx = [i for i in np.argsort(-score) if cls[i] == c and score[i] >= threshold]
        while idx:
            best, idx = idx[0], idx[1:]
            out.append((box[best], float(score[best]), int(c)))
            idx = [i for i in idx if _iou(box[best], box[i]) <= iou]
    return sorted(out, key=lambda d: -d[1])


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("image", IMAGES)
def test_detector_matches_opencv_detections(package, reference, read_image, variant, image):
    """edge_runtime.Detector on the jpg == OpenCV's rows after the manifest's threshold + NMS."""
    pkg = package(variant)
    frame = read_image(f"{image}.jpg")
    det = Detector(pkg)(frame)
    pp = load_manifest(pkg).postprocess
    ref = _reference_detections(_opencv_rows(reference, variant, image), pp["score_threshold"], pp["nms_iou"],
                                frame.shape[:2])
    assert len(ref) >= 2, "the sample image should give OpenCV detections"
    assert sorted(d[2] for d in ref) == sorted(det.class_ids.tolist())
    for box, score, cls in ref:
        same = np.flatnonzero(det.class_ids == cls)
        err = np.abs(det.boxes[same] - box).max(1)
        j = same[err.argmin()]
        assert err.min() < 2.0, f"{variant} {image}: {det.class_names[cls]} box off by {err.min():.2f} px"
        assert abs(float(det.scores[j]) - score) < 1e-3


# ------------------------------------------------------------------ malformed inputs

def _copy_pair(tmp_path: Path, variant: str = "yolo-fastest-1.1") -> tuple[Path, Path]:
    src = _weights(variant)
    weights, cfg = tmp_path / src.name, tmp_path / f"{variant}.cfg"
    weights.write_bytes(src.read_bytes())
    cfg.write_text(src.with_suffix(".cfg").read_text())
    return weights, cfg


def test_truncated_weights_is_one_line_error(tmp_path):
    pytest.importorskip("torch")
    from converters.darknet import load_darknet

    weights, _ = _copy_pair(tmp_path)
    weights.write_bytes(weights.read_bytes()[:-4096])
    with pytest.raises(CheckpointError) as err:
        load_darknet(weights)
    msg = str(err.value)
    assert "\n" not in msg and str(weights) in msg and "truncated" in msg


def test_weights_for_another_cfg_is_one_line_error(tmp_path):
    pytest.importorskip("torch")
    from converters.darknet import load_darknet

    weights, cfg = _copy_pair(tmp_path)
    weights.write_bytes(_weights("yolo-fastest-1.1-xl").read_bytes())
    with pytest.raises(CheckpointError, match=r"its cfg needs \d+") as err:
        load_darknet(weights, cfg)
    assert "\n" not in str(err.value) and str(weights) in str(err.value)


def test_xl_weights_under_the_1_1_name_is_one_line_error(tmp_path):
    pytest.importorskip("torch")
    from test_cli import assert_one_line_error, run_cli

    weights = _weights("yolo-fastest-1.1-xl")  # its cfg beside it is the XL one
    proc = run_cli("export", "--model", "yolo-fastest-1.1", "--weights", str(weights), "--out", str(tmp_path / "x"))
    assert_one_line_error(proc, str(weights), "describes yolo-fastest-1.1-xl, not yolo-fastest-1.1",
                          "--model yolo-fastest-1.1-xl")


def test_unknown_layer_type_is_one_line_error(tmp_path):
    pytest.importorskip("torch")
    from converters.checkpoints import load_model
    from converters.models import get_spec

    weights, cfg = _copy_pair(tmp_path)
    cfg.write_text(cfg.read_text().replace("[upsample]", "[reorg3d]"))
    with pytest.raises(CheckpointError) as err:
        load_model(get_spec("yolo-fastest-1.1"), weights)  # the path `edge-runtime export` takes
    msg = str(err.value)
    assert "\n" not in msg and str(cfg) in msg and "[reorg3d]" in msg and "line" in msg


def test_missing_cfg_is_one_line_error(tmp_path):
    pytest.importorskip("torch")
    from converters.darknet import load_darknet

    weights, cfg = _copy_pair(tmp_path)
    cfg.unlink()
    with pytest.raises(CheckpointError, match="darknet cfg not found") as err:
        load_darknet(weights)
    assert str(cfg) in str(err.value)


def test_converts_to_every_format_and_int8(package, tmp_path):
    """The darknet model goes through convert like any other: OpenVINO/TFLite FP32 equal ONNX, INT8 close.
    Measured (32 COCO calibration photos, 24 held-out; per-image output cosine, mean / worst): ONNX
    0.992 / 0.977, OpenVINO 0.991 / 0.968, TFLite 0.948 / 0.773. With tw, th left raw in the graph the
    TFLite quantiser clipped the head logits to their narrow range (every score >= 0.023, cosine 0.23);
    the deploy wrapper now passes them through a sigmoid too."""
    for library in ("nncf", "openvino", "onnx2tf"):
        pytest.importorskip(library)
    import shutil

    from converters.convert import convert_package

    pkg = tmp_path / "yf11"
    shutil.copytree(package("yolo-fastest-1.1"), pkg)
    manifest = convert_package(pkg, ["onnx", "openvino", "tflite"], ["fp32", "int8"],
                               calib=fixture_path("images", "calib-coco-val2017"), calib_size=32,
                               int8_min_cosine=0)  # plain INT8: the floors below are for it
    floors = {("openvino", "fp32"): (0.9999, 0.9999), ("tflite", "fp32"): (0.9999, 0.9999),
              ("onnx", "int8"): (0.985, 0.96), ("openvino", "int8"): (0.985, 0.95), ("tflite", "int8"): (0.93, 0.7)}
    for (fmt, precision), (mean, worst) in floors.items():
        agreement = manifest.artifact(fmt, precision).extra["fp32_agreement"]
        assert agreement["cosine_mean"] > mean and agreement["cosine"] > worst, (fmt, precision, agreement)

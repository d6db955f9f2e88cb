"""On-device validation (issue 4) on real labelled photos: voc-indoor-85 (85 VOC photos, Cartucho
``<class> l t r b`` labels) with the COCO NanoDet-Plus-m-416 checkpoint, every INT8 artifact, the
label-free mode, the CLI (table, JSON, plot) and accuracy-aware INT8 against an mAP budget."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import PACKAGES, fixture_path
from test_cli import assert_one_line_error, run_cli

from edge_runtime.errors import UsageError
from edge_runtime.evaluation.labels import read_labels
from edge_runtime.evaluation.metrics import coco_evaluate
from edge_runtime.evaluation.validate import EvaluationSet, Protocol, validate_package
from edge_runtime.manifest import load_manifest

VOC = "datasets/voc-indoor-85"
CALIB = "images/calib-coco-val2017"
FORMATS = ("onnx", "openvino", "tflite")


@pytest.fixture(scope="session")
def voc() -> tuple[Path, Path]:
    return fixture_path(VOC, "ground-truth"), fixture_path(VOC, "images")


@pytest.fixture(scope="session")
def int8_package(export, tmp_path_factory) -> Path:
    """NanoDet-Plus-m-416 with plain (no budget) INT8 for every format, calibrated on 32 COCO photos."""
    for library in ("nncf", "openvino", "onnx2tf"):
        pytest.importorskip(library)
    from converters.convert import convert_package

    pkg = tmp_path_factory.mktemp("validate") / "nanodet-plus-m"
    shutil.copytree(export("nanodet-plus-m"), pkg)
    convert_package(pkg, list(FORMATS), ["int8"], calib=fixture_path(CALIB), calib_size=32,
                    int8_min_cosine=0)  # plain INT8 (the budget: test_int8_accuracy)
    return pkg


@pytest.fixture(scope="session")
def voc_set(int8_package, voc) -> EvaluationSet:
    return EvaluationSet.from_labels(read_labels(*voc), load_manifest(int8_package).class_names)


@pytest.fixture(scope="session")
def report(int8_package, voc_set) -> dict:
    return validate_package(int8_package, voc_set)


def rows_by_key(report: dict) -> dict[tuple[str, str], dict]:
    return {(r["format"], r["precision"]): r for r in report["artifacts"]}


def test_class_mapping_and_protocol_are_reported(report):
    assert report["mode"] == "labels" and report["protocol"]["images"] == 85
    assert report["protocol"]["score_threshold"] == 0.001 and report["protocol"]["max_detections"] == 100
    assert "score >= 0.001" in report["protocol"]["text"] and "85 images" in report["protocol"]["text"]
    # VOC names reach the COCO model by spelling and alias; classes it lacks are left out, not misses
    assert {"couch", "tv", "dining table", "potted plant", "chair", "person"} <= set(report["classes_evaluated"])
    assert report["left_out"]["cabinetry"] == 52 and report["left_out"]["pillow"] == 45
    assert "sofa->couch" in report["data"] and "tvmonitor->tv" in report["data"]


def test_fp32_map_is_sane_and_equals_the_torch_model(report, int8_package, voc_set):
    """The ONNX FP32 mAP is the torch checkpoint's mAP through the same decoder (max abs diff of the
    raw outputs ~1e-5, so the statistics agree to 1e-4). Measured: mAP 0.277, AP50 0.477 (indoor
    clutter, books and sinks: far below the 0.54 of a mixed VOC subset in the fixtures' README)."""
    torch = pytest.importorskip("torch")
    from reference_decode import load_torch_model

    from converters.models import get_spec
    from edge_runtime.families import make_family

    fp32 = rows_by_key(report)["onnx", "fp32"]
    assert 0.22 < fp32["map"] < 0.34 and 0.40 < fp32["map50"] < 0.56, fp32
    cfg = PACKAGES["nanodet-plus-m"]
    model = get_spec(cfg["model"]).deploy(load_torch_model(cfg["model"], str(fixture_path(cfg["weights"])))).eval()
    family = make_family(load_manifest(int8_package))
    family.postprocess.update(score_threshold=0.001, max_detections=100)
    dets = []
    with torch.no_grad():
        for image in voc_set.images():
            tensor, meta = family.preprocess(image)
            dets.append(family.decode([t.numpy() for t in model(torch.from_numpy(tensor))], meta))
    torch_stats = coco_evaluate(voc_set.ground_truth, voc_set.results(dets)).stats
    for stat in ("map", "map50", "map_small", "map_medium", "map_large"):
        assert torch_stats[stat] == pytest.approx(fp32[stat], abs=1e-4), stat


def test_int8_drops_are_reported(report):
    """Measured drops (points): ONNX 0.58, OpenVINO -0.30, TFLite 1.26 (plain INT8, 32 COCO photos)."""
    rows = rows_by_key(report)
    fp32 = rows["onnx", "fp32"]
    assert report["reference"] == fp32["artifact"] and fp32["map_drop_points"] == 0
    for fmt in FORMATS:
        row = rows[fmt, "int8"]
        assert row["map_drop_points"] == pytest.approx(100 * (fp32["map"] - row["map"]), abs=1e-3)
        assert -1.5 < row["map_drop_points"] < 3.0, (fmt, row["map_drop_points"])
        assert row["latency_ms"] > 0 and set(row["per_class_ap"]) == set(report["classes_evaluated"])


def test_engines_agree(report, int8_package, voc_set):
    pytest.importorskip("pycocotools")
    pytest.importorskip("faster_coco_eval")
    from edge_runtime import Detector

    det = Detector(int8_package, backend="onnx", precision="fp32", score_threshold=0.001)
    results = voc_set.results([det(image) for image in voc_set.images()])
    slow = coco_evaluate(voc_set.ground_truth, results, "pycocotools")
    fast = coco_evaluate(voc_set.ground_truth, results, "faster-coco-eval")
    for stat, value in slow.stats.items():
        assert fast.stats[stat] == pytest.approx(value, abs=1e-6), stat
    assert slow.stats["map"] == pytest.approx(rows_by_key(report)["onnx", "fp32"]["map"], abs=1e-4)


def _needs_coco_evaluator() -> None:
    if importlib.util.find_spec("faster_coco_eval") is None and importlib.util.find_spec("pycocotools") is None:
        pytest.skip("needs faster-coco-eval or pycocotools")


def _synthetic_set(count: int = 24) -> tuple[dict, list[dict], list[dict]]:
    """COCO ground truth of ``count`` images (one box each, every fourth a crowd region too), FP32-like results
    that find every box, and INT8-like ones that miss every third, all with distinct scores."""
    truth = {"images": [{"id": 10 + i, "width": 100, "height": 100} for i in range(count)],
             "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], "annotations": []}
    found, missed = [], []
    for i, image in enumerate(truth["images"]):
        box, cat = [10.0 + i, 10.0, 30.0, 30.0], 1 + i % 2
        truth["annotations"].append({"id": 100 + i, "image_id": image["id"], "category_id": cat, "bbox": box,
                                     "area": 900.0, "iscrowd": 0})
        if i % 4 == 0:
            truth["annotations"].append({"id": 500 + i, "image_id": image["id"], "category_id": cat,
                                         "bbox": [60.0, 60.0, 30.0, 30.0], "area": 900.0, "iscrowd": 1})
        hit = {"image_id": image["id"], "category_id": cat, "bbox": box, "score": 0.9 - 0.01 * i}
        stray = {"image_id": image["id"], "category_id": cat, "bbox": [0.0, 70.0, 20.0, 20.0], "score": 0.5 - 0.01 * i}
        found += [hit, stray]
        missed += [stray] if i % 3 == 0 else [hit, stray]
    return truth, found, missed


def test_bootstrap_samples_are_the_images_drawn():
    """A sample that draws each image once is the set itself (the same mAP); one that draws the first half twice
    holds twice its boxes, crowd regions and results, each under a new image id."""
    _needs_coco_evaluator()
    from edge_runtime.evaluation.metrics import (
        coco_map,
        resample_images,
        resample_results,
    )

    truth, results, _ = _synthetic_set()
    count = len(truth["images"])
    sample, new_ids = resample_images(truth, np.arange(count))
    assert coco_map(sample, resample_results(results, new_ids))["map"] == pytest.approx(coco_map(truth, results)["map"])
    half = np.repeat(np.arange(count // 2), 2)
    sample, new_ids = resample_images(truth, half)
    kept = {image["id"] for image in truth["images"][: count // 2]}
    assert sorted(image["id"] for image in sample["images"]) == list(range(1, count + 1))
    assert len(sample["annotations"]) == 2 * sum(ann["image_id"] in kept for ann in truth["annotations"])
    assert sum(ann["iscrowd"] for ann in sample["annotations"]) == 2 * sum(
        ann["iscrowd"] for ann in truth["annotations"] if ann["image_id"] in kept)
    assert len({ann["id"] for ann in sample["annotations"]}) == len(sample["annotations"])
    assert len(resample_results(results, new_ids)) == 2 * sum(r["image_id"] in kept for r in results)
    assert all(len(ids) == 2 for ids in new_ids.values()) and set(new_ids) == kept


def test_drop_intervals_are_paired():
    """An artifact that detects exactly what the reference does drops 0 on every sample; one that misses every
    third box drops on every sample, so its whole interval lies above 0 and contains its drop on the whole set."""
    _needs_coco_evaluator()
    from edge_runtime.evaluation.metrics import coco_map
    from edge_runtime.evaluation.validate import check_bootstrap, drop_intervals

    truth, found, missed = _synthetic_set()
    same, worse = drop_intervals(truth, found, [found, missed], 30)
    assert same == (0.0, 0.0)
    drop = 100 * (coco_map(truth, found)["map"] - coco_map(truth, missed)["map"])
    assert 0 < worse[0] <= drop <= worse[1], (worse, drop)
    assert drop_intervals(truth, found, [missed], 30) == [worse]  # the same seed, the same samples
    for bad in (-1, 2.5, True, "10"):
        with pytest.raises(UsageError, match="bootstrap: must be 0"):
            check_bootstrap(bad)


def test_label_free_agreement_with_fp32(int8_package):
    """No labels: FP32's detections scoring >= 0.3 are the ground truth, so FP32 scores 1.0 against
    itself by construction and each INT8 artifact's mAP measures how far its detections moved."""
    report = validate_package(int8_package, images=fixture_path("images/samples"))
    assert report["mode"] == "label-free" and "label-free" in report["data"]
    rows = rows_by_key(report)
    assert rows["onnx", "fp32"]["map"] == pytest.approx(1.0, abs=1e-6)
    for fmt in FORMATS:
        row = rows[fmt, "int8"]
        assert 0.5 < row["map"] < 1.0, (fmt, row["map"])
        assert set(row["cosine"]) == {"scores", "distances"}
        for role, cos in row["cosine"].items():
            assert 0.9 < cos["worst"] <= cos["mean"] < 1.0 and cos["images"] == 11, (fmt, role, cos)


def test_cli_table_json_and_plot(int8_package, voc, tmp_path):
    out, png = tmp_path / "val.json", tmp_path / "val.png"
    proc = run_cli("validate", str(int8_package), "--data", str(voc[0]), "--images", str(voc[1]), "--backend", "onnx",
                   "--per-class", "--bootstrap", "40", "--json", str(out), "--plot", str(png))
    assert proc.returncode == 0, proc.stderr
    for needle in ("protocol: score >= 0.001", "85 images", "drop vs FP32", "per-class AP", "left out", "cabinetry",
                   "over 40 paired bootstrap samples"):
        assert needle in proc.stdout, needle
    report = json.loads(out.read_text())
    assert [(r["format"], r["precision"]) for r in report["artifacts"]] == [("onnx", "fp32"), ("onnx", "int8")]
    # the INT8 drop's interval from resampling the 85 photos is wide: 1.4-1.9 points for the default INT8 of
    # NanoDet-Plus-m and YOLO-FastestV2 (200 samples); not asserted to contain the drop, which a 5th..95th
    # percentile interval of 40 samples need not
    fp32, int8 = report["artifacts"]
    low, high = int8["map_drop_interval"]
    assert "map_drop_interval" not in fp32 and report["bootstrap_samples"] == 40
    assert 0.2 < high - low < 6.0, (low, int8["map_drop_points"], high)
    assert f"{int8['map_drop_points']:+.2f} ({low:+.2f}..{high:+.2f})" in proc.stdout
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 400 and image.shape[1] > 800
    assert (image < 250).mean() > 0.02  # bars and curves, not a blank canvas


def test_cli_errors_are_one_line(int8_package, voc, tmp_path):
    bad = tmp_path / "labels"
    bad.mkdir()
    (bad / "2007_000027.txt").write_text("chair 10 20 x 40\n")
    assert_one_line_error(run_cli("validate", str(int8_package), "--data", str(bad), "--images", str(voc[1])),
                          "2007_000027.txt", "line 1")
    assert_one_line_error(run_cli("validate", str(int8_package)), "--images", status=2)
    assert_one_line_error(run_cli("validate", str(int8_package), "--data", str(voc[0]), "--images", str(voc[1]),
                                  "--bootstrap", "-5"), "--bootstrap -5", status=2)
    none_match = tmp_path / "other"
    none_match.mkdir()
    (none_match / "2007_000027.txt").write_text("cabinetry 10 20 30 40\n")
    assert_one_line_error(run_cli("validate", str(int8_package), "--data", str(none_match), "--images", str(voc[1])),
                          "--class-map")


def test_accuracy_aware_int8_lowers_the_map_drop(int8_package, voc, export, tmp_path_factory):
    """``--max-map-drop 0.5`` on TFLite, searched on half of the photos. On that half the budget holds
    and beats plain INT8 (measured plain 1.25 points -> 0.32, the first 12 of 78 levels in float).
    On the other half, which the search never saw, the outcome is reported, not asserted: over three
    conversions it went 0.94 -> -0.10 (alone, reproduced), 0.55 -> 1.75 and 1.09 -> 1.77 (in full
    test runs; the conversion itself was since found bit-identical after other conversions in one
    process); 42 photos make one mAP point a few boxes."""
    from converters.convert import convert_package

    root = tmp_path_factory.mktemp("map-budget")
    halves = {name: root / name for name in ("search", "check")}
    for folder in halves.values():
        folder.mkdir()
    for i, label in enumerate(sorted(voc[0].glob("*.txt"))):  # small label files only; the photos stay put
        shutil.copy(label, halves["search" if i % 2 == 0 else "check"])
    pkg = root / "pkg"
    shutil.copytree(export("nanodet-plus-m"), pkg)
    convert_package(pkg, ["tflite"], ["int8"], calib=fixture_path(CALIB), calib_size=32, max_map_drop=0.5,
                    val_data=halves["search"], val_images=voc[1])
    control = load_manifest(pkg).artifact("tflite", "int8").extra["quantization"]["accuracy_control"]
    assert control["metric"] == "map" and control["met"] and control["validation_images"] == 43, control
    assert control["drop"] <= 0.005 + 1e-9 and control["after"] >= control["before"], control

    def drop(package: Path, half: str) -> float:
        data = EvaluationSet.from_labels(read_labels(halves[half], voc[1]), load_manifest(package).class_names)
        return rows_by_key(validate_package(package, data, backend="tflite", protocol=Protocol()))[
            "tflite", "int8"]["map_drop_points"]

    budgeted = drop(pkg, "search")
    assert budgeted == pytest.approx(100 * control["drop"], abs=1e-3) and budgeted <= 0.5 + 1e-6
    if control["before"] < control["target"]:  # plain INT8 missed the budget: the search put layers back
        assert control["float_layers"] and budgeted < 100 * (control["fp32"] - control["before"])
    print(f"unseen half: plain {drop(int8_package, 'check'):+.2f}, budgeted {drop(pkg, 'check'):+.2f} points")

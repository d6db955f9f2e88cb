"""The offline path: generated shapes data, the bundled demo-shapes weights, their accuracy through
the runtime, a training smoke run and ``edge-runtime demo``. Nothing here reads ../shared."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the demo model is built and trained with torch (host side)")
pytest.importorskip("pycocotools", reason="mAP needs pycocotools")

from converters.demo_data import (
    CLASS_NAMES,
    clip_ground_truth,
    clip_labelled,
    coco_split,
    make_image,
    render_scene,
    sample_scene,
    scene_rng,
    write_clip,
)
from converters.models import get_spec

CLI = [sys.executable, "-m", "edge_runtime.cli"]
# measured on the bundled weights (3000 steps on 6000 images, 18.4 min on 2 shared cores): FP32 ONNX
# through the runtime, 200 held-out images, seed 0: mAP@.5:.95 0.634, AP50 0.931, AP75 0.748
MAP_FLOOR, AP50_FLOOR = 0.55, 0.85
# the same package on all 150 frames of the demo clip (seed 0): mAP@.5:.95 0.413, AP50 0.684. Lower than on
# held-out images because the clip's shapes drift through each other: 139 of its frames have a pair of
# boxes overlapping by 20% or more (mAP 0.414 there), the 11 frames without score 0.629, as held-out
# images do (training scenes keep shapes apart). Floors below the measurement for ONNX Runtime versions.
CLIP_MAP_FLOOR, CLIP_AP50_FLOOR = 0.35, 0.6


def test_generator_is_deterministic_per_seed():
    for index in range(3):
        a, labels_a = make_image(0, "val", index)
        b, labels_b = make_image(0, "val", index)
        assert a.dtype == np.uint8 and a.shape == (240, 320, 3)
        assert np.array_equal(a, b) and labels_a == labels_b
        c, labels_c = make_image(1, "val", index)
        assert not np.array_equal(a, c) and labels_a != labels_c
    assert not np.array_equal(make_image(0, "train", 0)[0], make_image(0, "val", 0)[0])


def test_labels_lie_in_the_image_and_cover_drawn_shapes():
    checked = 0
    for index in range(30):
        scene = sample_scene(scene_rng(0, "val", index))
        image, labels = render_scene(scene)
        empty, no_labels = render_scene(replace(scene, objects=()))
        assert no_labels == []
        drawn = np.abs(image.astype(int) - empty.astype(int)).max(2) > 20
        near_boxes = np.zeros_like(drawn)
        for class_id, (x, y, w, h) in labels:
            assert 0 <= class_id < len(CLASS_NAMES)
            assert 0 <= x and 0 <= y and w > 4 and h > 4 and x + w <= 320 and y + h <= 240
            box = drawn[int(y):int(y + h), int(x):int(x + w)]
            assert box.mean() > 0.2, f"image {index}: box {class_id} covers almost no drawn pixels"
            near_boxes[max(int(y) - 4, 0):int(y + h) + 4, max(int(x) - 4, 0):int(x + w) + 4] = True
        if len(labels) == len(scene.objects):  # every shape labelled: nothing drawn outside the boxes
            assert (drawn & ~near_boxes).sum() <= 0.01 * drawn.sum()
            checked += 1
    assert checked >= 20


def test_coco_map_is_one_for_the_ground_truth_itself():
    from edge_runtime.evaluation.metrics import coco_map

    _, truth = coco_split("val", 5, progress=False)
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in truth["annotations"]]
    stats = coco_map(truth, results)
    assert stats["map"] == pytest.approx(1.0) and stats["map50"] == pytest.approx(1.0)
    assert coco_map(truth, [])["map"] == 0.0


def test_bundled_weights_load_strictly_and_are_small():
    from converters.checkpoints import load_model

    spec = get_spec("demo-shapes")
    assert spec.weights.is_file() and spec.weights.stat().st_size < 3_000_000
    model, num_classes = load_model(spec, spec.weights)
    assert num_classes == len(CLASS_NAMES) and model.anchors == spec.build(num_classes).anchors


def test_export_without_weights_writes_a_normal_package(demo_package):
    from edge_runtime.manifest import load_manifest

    manifest = load_manifest(demo_package)
    assert manifest.class_names == CLASS_NAMES and manifest.family == "yolo-fastestv2"
    assert manifest.input.shape == (1, 3, 192, 192)
    assert manifest.decoder["anchors"] == [list(a) for a in get_spec("demo-shapes").build(5).anchors]
    assert manifest.produced_by["source_weights"] == "yolo-fastestv2-shapes.pth"


def test_package_detects_held_out_shapes(demo_package):
    from converters.demo_model import evaluate_package

    stats = evaluate_package(demo_package, count=200, progress=False)
    assert stats["map"] > MAP_FLOOR and stats["map50"] > AP50_FLOOR, stats


def test_package_finds_the_shapes_of_the_demo_clip(demo_package):
    from edge_runtime import Detector
    from edge_runtime.evaluation.metrics import category_ids_for, coco_map, detections_to_coco

    frames, labels = zip(*clip_labelled())
    truth = clip_ground_truth("shapes.avi", list(labels))
    detector = Detector(demo_package, backend="onnx", precision="fp32", score_threshold=0.01)
    categories = category_ids_for(truth, detector.class_names)
    results = [r for i, frame in enumerate(frames) for r in detections_to_coco(detector(frame), i + 1, categories)]
    stats = coco_map(truth, results)
    assert stats["map"] > CLIP_MAP_FLOOR and stats["map50"] > CLIP_AP50_FLOOR, stats


def test_clip_ground_truth_is_written_next_to_the_clip(tmp_path):
    clip = write_clip(tmp_path / "clip.avi", seconds=0.2, progress=False)
    truth = json.loads(clip.with_suffix(".json").read_text())
    first_labels = next(clip_labelled(seconds=0.2))[1]
    assert [e["file_name"] for e in truth["images"]] == ["clip.avi#0", "clip.avi#1", "clip.avi#2"]
    assert [(a["category_id"] - 1, a["bbox"]) for a in truth["annotations"] if a["image_id"] == 1] == first_labels


def test_training_smoke_run_lowers_the_loss(tmp_path):
    from converters.checkpoints import load_model
    from converters.demo_model import train

    # 30 steps: since the objectness target became the box's IoU (near 0 until boxes improve),
    # 20 steps lowered the loss by only about 13%; 30 lower it by about a third
    summary = train(tmp_path / "w.pth", images=8, steps=30, batch=8, workers=1, progress=False)
    assert summary["last_loss"] < 0.85 * summary["first_loss"], summary
    _, num_classes = load_model(get_spec("demo-shapes"), tmp_path / "w.pth")
    assert num_classes == len(CLASS_NAMES)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("demo")
    proc = subprocess.run([*CLI, "demo", "--out", str(out), "--to", "onnx", "--frames", "20"], check=False, capture_output=True,
                          text=True, timeout=400)
    return out, proc


def test_demo_command_prints_fps_per_artifact_and_writes_a_video(demo_run):
    out, proc = demo_run
    assert proc.returncode == 0, proc.stderr
    assert "FPS end to end" in proc.stdout
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith("onnx")]
    assert {(r[0], r[1]) for r in rows} == {("onnx", "fp32"), ("onnx", "int8")}
    assert all(int(r[2]) == 20 and float(r[4]) > 0 for r in rows)
    video = Path(next(line.split(": ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("video: ")))
    assert video.is_file() and video.stat().st_size > 10_000
    assert (out / "shapes.avi").is_file()


def test_demo_reuses_its_package_and_reports_a_missing_camera_in_one_line(demo_run):
    out, _ = demo_run
    proc = subprocess.run([*CLI, "demo", "--out", str(out), "--to", "onnx", "--source", "9"], check=False, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: camera 9")
    assert "Traceback" not in proc.stderr and "exporting" not in proc.stderr

"""The public Python API: Detector on arrays, files and lists; Detections to JSON, drawn, saved; a target
profile choosing the artifact; converters.Converter exporting and converting a real package."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

import edge_runtime
from edge_runtime import Detections, Detector, EdgeRuntimeError, load_manifest
from edge_runtime.deploy.targets import runtime_choice
from edge_runtime.errors import SourceError

# a profile that runs OpenVINO first, on one thread: what the demo package gains from Converter below
OPENVINO_FIRST = ('name = "ov-first"\narch = "x86_64"\nthreads = 1\nbackends = ["openvino", "onnx"]\n'
                  'precisions = ["fp16", "fp32"]\nopenvino_device = "CPU"\n')


def shapes_image(index: int) -> np.ndarray:
    """A generated validation image of the demo dataset (circles, squares, ...: what demo-shapes detects)."""
    from converters.demo_data import make_image

    return make_image(0, "val", index)[0]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("shapes")
    paths = [folder / f"shape{i}.png" for i in range(3)]  # PNG: the file reads back as the same pixels
    for i, path in enumerate(paths):
        assert cv2.imwrite(str(path), shapes_image(i))
    return paths


@pytest.fixture(scope="module")
def detector(demo_package) -> Detector:
    return Detector(demo_package, backend="onnx", precision="fp32", threads=1)


@pytest.fixture(scope="module")
def target_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("targets") / "ov-first.toml"
    path.write_text(OPENVINO_FIRST)
    return path


@pytest.fixture(scope="module")
def converted_package(demo_package, target_file, tmp_path_factory) -> Path:
    """A copy of the demo package given what the target runs, through the host API."""
    pytest.importorskip("openvino", reason="the OpenVINO conversion needs openvino")
    from converters import Converter

    package = tmp_path_factory.mktemp("converted") / "pkg"
    shutil.copytree(demo_package, package)
    Converter(package).to(target=str(target_file), precision="fp32")
    return package


def same(a: Detections, b: Detections) -> bool:
    return (np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)
            and np.array_equal(a.class_ids, b.class_ids))


def test_public_names():
    assert {"Detector", "Detections", "run_pipeline", "open_source", "load_manifest"} <= set(edge_runtime.__all__)
    assert edge_runtime.run_pipeline.__module__ == "edge_runtime.io.pipeline"


def test_path_and_list_inputs_give_the_array_inputs_detections(detector, images):
    arrays = [cv2.imread(str(p)) for p in images]
    expected = [detector(a) for a in arrays]
    assert all(len(d) > 0 for d in expected), [len(d) for d in expected]
    assert same(detector(str(images[0])), expected[0]) and same(detector(images[1]), expected[1])
    mixed = detector([arrays[0], str(images[1]), images[2]])
    assert isinstance(mixed, list) and len(mixed) == 3
    assert all(same(got, want) for got, want in zip(mixed, expected))
    assert detector([]) == []


def test_unreadable_path_is_a_one_line_error(detector, tmp_path):
    with pytest.raises(SourceError, match=r"missing\.png: no such file$"):
        detector(tmp_path / "missing.png")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(SourceError, match=r"notes\.jpg: not a readable image$"):
        detector([shapes_image(0), str(text)])


def test_to_json_round_trip_and_run_json_records(detector, images, tmp_path):
    dets = detector(images[0])
    data = json.loads(json.dumps(dets.to_json()))
    assert list(data) == ["detections"] and len(data["detections"]) == len(dets)
    back = Detections.from_json(data, detector.class_names)
    assert np.allclose(back.boxes, dets.boxes, atol=0.005) and np.allclose(back.scores, dets.scores, atol=5e-6)
    assert np.array_equal(back.class_ids, dets.class_ids) and back.labels == dets.labels
    assert back.to_json() == data
    # `run --json` writes the same records, plus the frame's index and name
    lines = tmp_path / "dets.jsonl"
    edge_runtime.run_pipeline(detector, edge_runtime.open_source(str(images[0])), json_path=lines)
    record = json.loads(lines.read_text().splitlines()[0])
    assert record == {"index": 0, "name": images[0].name, **data}
    assert len(Detections.from_json({"detections": []}, detector.class_names)) == 0
    wrong = {"detections": [{**data["detections"][0], "label": "hexagon"}]}
    with pytest.raises(ValueError, match="does not name label 'hexagon'"):
        Detections.from_json(wrong, detector.class_names)


def test_plot_draws_the_boxes_on_a_copy(detector, images):
    image = cv2.imread(str(images[0]))
    before = image.copy()
    dets = detector(image)
    plotted = dets.plot(image)
    assert plotted.shape == image.shape and plotted is not image and np.array_equal(image, before)
    changed = np.any(plotted != image, axis=2)
    for x1, y1, x2, y2 in dets.boxes.astype(int):
        inside = changed[max(y1, 0):y2 + 1, max(x1, 0):x2 + 1]
        assert inside.any(), (x1, y1, x2, y2)
        if 0 <= y2 < image.shape[0]:  # the outline: the box's bottom edge is drawn over most of its width
            assert changed[y2, max(x1, 0):x2].mean() > 0.8
    assert np.array_equal(dets.plot(str(images[0])), plotted)  # a path draws on the file's pixels


def test_save_writes_json_or_the_annotated_image_whole(detector, images, tmp_path):
    dets = detector(images[0])
    assert dets.save(tmp_path / "dets.json") == tmp_path / "dets.json"
    assert json.loads((tmp_path / "dets.json").read_text()) == dets.to_json()
    dets.save(tmp_path / "drawn.png", images[0])
    assert np.array_equal(cv2.imread(str(tmp_path / "drawn.png")), dets.plot(images[0]))
    with pytest.raises(EdgeRuntimeError, match=r"drawn2\.png: saving an annotated image needs the image"):
        dets.save(tmp_path / "drawn2.png")
    with pytest.raises(EdgeRuntimeError, match=r"drawn\.xyz: OpenCV cannot write images of type '\.xyz'"):
        dets.save(tmp_path / "drawn.xyz", images[0])
    with pytest.raises(EdgeRuntimeError, match="does not exist"):
        dets.save(tmp_path / "no" / "such" / "dets.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dets.json", "drawn.png"]  # no temporary files left


def test_runtime_choice_fills_in_from_the_target(demo_package, target_file):
    manifest = load_manifest(demo_package)  # onnx fp32 only: the profile's first backend it has
    choice = runtime_choice(manifest, str(target_file))
    assert (choice.backend, choice.precision, choice.threads, choice.options) == ("onnx", "fp32", 1, {})
    plain = runtime_choice(manifest, None, "onnx", None, 3, {"device": "CPU"})
    assert (plain.backend, plain.precision, plain.threads, plain.options) == ("onnx", None, 3, {"device": "CPU"})
    with pytest.raises(EdgeRuntimeError, match="documentation only"):
        runtime_choice(manifest, "rknn-lite")


def test_converter_adds_what_the_target_runs_and_detector_picks_it(converted_package, target_file, images,
                                                                 detector):
    manifest = load_manifest(converted_package)
    assert [(a.format, a.precision, a.verified) for a in manifest.artifacts] == [
        ("onnx", "fp32", True), ("openvino", "fp32", True)]
    on_target = Detector(converted_package, target=str(target_file))
    assert (on_target.artifact.format, on_target.artifact.precision, on_target.threads) == ("openvino", "fp32", 1)
    assert on_target.backend.options.get("device") == "CPU"
    got, want = on_target(images[0]), detector(images[0])
    assert np.array_equal(got.class_ids, want.class_ids) and np.allclose(got.boxes, want.boxes, atol=0.5)
    # what the caller names wins over the profile
    assert Detector(converted_package, target=str(target_file), backend="onnx").artifact.format == "onnx"


def test_converter_export_refuses_before_any_work(tmp_path):
    from converters import Converter

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(EdgeRuntimeError, match="busy: exists and is not empty"):
        Converter.export(model="demo-shapes", out=tmp_path / "busy")
    with pytest.raises(EdgeRuntimeError, match="opset 12: use 13 or newer"):
        Converter.export(model="demo-shapes", out=tmp_path / "new", opset=12)
    assert not (tmp_path / "new").exists()


def test_converter_export_writes_a_package_detector_runs(tmp_path, detector, images):
    pytest.importorskip("torch", reason="exporting needs torch")
    from converters import Converter

    converter = Converter.export(model="demo-shapes", out=tmp_path / "pkg")
    assert converter.package == tmp_path / "pkg"
    assert same(Detector(converter.package, backend="onnx", threads=1)(images[0]), detector(images[0]))

"""Exported packages: ONNX vs torch, manifest contents, and detections through edge_runtime.Detector
checked against real images and against an independent torch reference decoder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from agreement import REFERENCE_AT_EVAL_THRESHOLD, assert_same_as_reference
from conftest import PACKAGES, fixture_path

from edge_runtime import Detections, Detector
from edge_runtime.families import make_family
from edge_runtime.manifest import load_manifest

IMAGES = ("dog.jpg", "person.jpg", "horses.jpg", "000139.jpg")
KEYS = tuple(PACKAGES)
NANODET_MEAN = [103.53, 116.28, 123.675]
NANODET_STD = [57.375, 57.12, 58.395]
OFFICIAL_YOLO_FASTESTV2_ANCHORS = [[12.64, 19.39], [37.88, 51.48], [55.71, 138.31],
                                   [126.91, 78.23], [131.57, 214.55], [279.92, 258.87]]

# per package: input size, resize mode, outputs with their shapes (N = sum of grid cells [x anchors])
EXPECTED = {
    "nanodet-plus-m": {"size": 416, "resize": "warp_affine", "family": "nanodet", "num_classes": 80,
                       "outputs": {"scores": (1, 52 * 52 + 26 * 26 + 13 * 13 + 7 * 7, 80),
                                   "distances": (1, 3598, 4)},
                       "decoder": {"strides": [8, 16, 32, 64], "reg_max": 7, "center_offset": 0.0}},
    "yolo-fastestv2": {"size": 352, "resize": "resize", "family": "yolo-fastestv2", "num_classes": 80,
                       "outputs": {"scores": (1, (22 * 22 + 11 * 11) * 3, 80), "box_sigmoid": (1, 1815, 4)},
                       "decoder": {"strides": [16, 32], "anchor_num": 3,
                                   "anchors": OFFICIAL_YOLO_FASTESTV2_ANCHORS}},
    "nanodet-m-custom": {"size": 256, "resize": "warp_affine_keep_ratio", "family": "nanodet", "num_classes": 8,
                         "outputs": {"scores": (1, 32 * 32 + 16 * 16 + 8 * 8, 8), "distances": (1, 1344, 4)},
                         "decoder": {"strides": [8, 16, 32], "reg_max": 7, "center_offset": 0.0}},
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _iou(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def detector(export):
    """``detector(key, **kwargs)`` -> Detector on the session's package, cached per arguments."""
    cache: dict[tuple, Detector] = {}

    def get(key: str, **kwargs) -> Detector:
        k = (key, tuple(sorted(kwargs.items())))
        if k not in cache:
            cache[k] = Detector(export(key), **kwargs)
        return cache[k]

    return get


# ------------------------------------------------------------------ ONNX artifact vs torch

@pytest.mark.parametrize("key", KEYS)
def test_onnx_matches_torch_on_real_image(export, read_image, key):
    torch = pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    from reference_decode import load_torch_model

    from converters.models import get_spec

    pkg = export(key)
    cfg = PACKAGES[key]
    manifest = load_manifest(pkg)
    tensor = make_family(manifest).preprocess(read_image("dog.jpg"))[0].copy()
    deploy = get_spec(cfg["model"]).deploy(load_torch_model(cfg["model"], str(fixture_path(cfg["weights"])))).eval()
    with torch.no_grad():
        reference = [t.numpy() for t in deploy(torch.from_numpy(tensor))]
    session = ort.InferenceSession(str(pkg / "model.onnx"), providers=["CPUExecutionProvider"])
    names = list(manifest.artifact("onnx").outputs)
    got = session.run(names, {manifest.input.name: tensor})
    expected_shapes = EXPECTED[key]["outputs"]
    assert names == list(expected_shapes)
    for name, ref, out in zip(names, reference, got):
        assert ref.shape == out.shape == expected_shapes[name], name
        a, b = ref.astype(np.float64).ravel(), out.astype(np.float64).ravel()
        diff = float(np.abs(a - b).max())
        cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
        assert diff < 1e-4, f"{key} {name}: max abs diff {diff}"
        assert cosine > 0.9999, f"{key} {name}: cosine {cosine}"
    scores = got[0]
    assert scores.min() >= 0.0 and scores.max() <= 1.0
    if EXPECTED[key]["family"] == "nanodet":
        assert got[1].min() >= 0.0 and got[1].max() <= 7.0  # softmax-integral distances in 0..reg_max
    else:
        assert got[1].min() >= 0.0 and got[1].max() <= 1.0  # sigmoid of tx, ty, tw, th


@pytest.mark.parametrize("key", KEYS)
def test_manifest_records_everything_the_device_needs(export, key):
    onnx = pytest.importorskip("onnx")
    exp = EXPECTED[key]
    cfg = PACKAGES[key]
    pkg = export(key)
    data = json.loads((pkg / "manifest.json").read_text())
    size = exp["size"]

    assert data["format_version"] == 1
    model = data["model"]
    assert model["family"] == exp["family"] and model["name"] == cfg["model"]
    assert model["num_classes"] == exp["num_classes"] == len(model["class_names"])
    if cfg["classes"]:
        import yaml

        yml = yaml.safe_load(fixture_path(cfg["classes"]).read_text())
        assert model["class_names"] == yml["class_names"]
    else:
        assert model["class_names"][:3] == ["person", "bicycle", "car"]
        assert model["class_names"][16] == "dog" and model["class_names"][79] == "toothbrush"

    inp = data["input"]
    assert inp["name"] == "input" and inp["shape"] == [1, 3, size, size]
    assert inp["layout"] == "NCHW" and inp["dtype"] == "float32" and inp["color"] == "BGR"
    assert inp["resize"] == exp["resize"]
    if exp["family"] == "nanodet":
        assert inp["mean"] == NANODET_MEAN and inp["std"] == NANODET_STD
    else:  # the official YOLO-FastestV2 code feeds BGR / 255
        assert inp["mean"] == [0.0, 0.0, 0.0] and inp["std"] == [255.0, 255.0, 255.0]

    for field, value in exp["decoder"].items():
        assert data["decoder"][field] == value, field
    pp = data["postprocess"]
    assert 0 < pp["score_threshold"] < 1 and 0 < pp["nms_iou"] < 1 and pp["max_detections"] == 100

    [art] = data["artifacts"]
    onnx_path = pkg / art["file"]
    assert art["file"] == "model.onnx" and art["format"] == "onnx" and art["precision"] == "fp32"
    assert art["outputs"] == list(exp["outputs"])
    assert art["sha256"] == _sha256(onnx_path)
    assert art["opset"] >= 13
    parity = art["parity_vs_torch"]
    assert parity["max_abs_diff"] < 1e-4 and parity["cosine"] > 0.9999

    graph = onnx.load(str(onnx_path))
    onnx.checker.check_model(graph)
    opset = max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    assert opset == art["opset"]
    [graph_input] = graph.graph.input
    dims = [d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert graph_input.name == "input" and dims == [1, 3, size, size]
    assert [o.name for o in graph.graph.output] == list(exp["outputs"])

    import onnxruntime
    import torch

    import edge_runtime

    by = data["produced_by"]
    assert by["edge_runtime"] == edge_runtime.__version__
    assert by["torch"] == torch.__version__ and by["onnx"] == onnx.__version__
    assert by["onnxruntime"] == onnxruntime.__version__ and by["onnxslim"]
    weights = fixture_path(cfg["weights"])
    assert by["source_weights"] == weights.name and by["source_sha256"] == _sha256(weights)


@pytest.mark.parametrize("key", [key for key in KEYS if EXPECTED[key]["family"] == "nanodet"])
def test_nanodet_integral_is_one_matrix_product(export, key):
    """The softmax integral multiplies by a (bins, 1) matrix, not a 1-D vector: ONNX Runtime runs a MatMul by a
    vector as one tiny product per anchor (NanoDet-Plus-m 416's ONNX FP32 took 1.08x the time that way)."""
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(str(export(key) / "model.onnx")).graph
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    by_constant = [shapes[node.input[1]] for node in graph.node
                   if node.op_type == "MatMul" and node.input[1] in shapes]
    reg_max = EXPECTED[key]["decoder"]["reg_max"]
    assert by_constant == [(reg_max + 1, 1)]


def test_matmul_by_a_vector_is_rewritten_as_one_column():
    """ncnn's converter rewrites the vector form an imported NanoDet head has into one column plus a Reshape
    (ncnn: a Gemm), the same product."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    from converters.convert_ncnn import matmul_vectors_as_gemm

    project = np.arange(8, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["p"], axis=-1), helper.make_node("MatMul", ["p", "project"], ["y"])],
        "integral", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 30, 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 30, 4])],
        [numpy_helper.from_array(project, "project")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every supported onnxruntime reads
    x = np.random.default_rng(0).standard_normal((1, 30, 4, 8)).astype(np.float32)

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    want = run(model)
    assert matmul_vectors_as_gemm(model) == 1
    onnx.checker.check_model(model)
    matmul = next(node for node in model.graph.node if node.op_type == "MatMul")
    column = next(init for init in model.graph.initializer if init.name == matmul.input[1])
    assert tuple(column.dims) == (8, 1) and [n.op_type for n in model.graph.node] == ["Softmax", "MatMul", "Reshape"]
    np.testing.assert_allclose(run(model), want, atol=1e-6)


# ------------------------------------------------------------------ detections on real images

EXPECTED_DOG = {"bicycle": [128, 137, 569, 425], "dog": [130, 227, 314, 542], "car": [468, 77, 705, 172]}


def _by_label(dets: Detections, label: str):
    return [(box, score) for box, score, name in zip(dets.boxes, dets.scores, dets.labels) if name == label]


def test_nanodet_plus_finds_dog_bicycle_and_car(detector, read_image):
    dets = detector("nanodet-plus-m")(read_image("dog.jpg"))
    for label in ("dog", "bicycle"):
        found = _by_label(dets, label)
        assert found, f"no {label} in {dets.labels}"
        best = max(_iou(box, EXPECTED_DOG[label]) for box, _ in found)
        assert best > 0.9, f"{label}: best IoU {best:.3f}"
    vehicles = _by_label(dets, "car") + _by_label(dets, "truck")
    assert vehicles, f"no car or truck in {dets.labels}"
    best = max(_iou(box, EXPECTED_DOG["car"]) for box, _ in vehicles)
    assert best > 0.9, f"car/truck: best IoU {best:.3f}"
    assert dets.scores[0] > 0.6  # the top detections are confident, not threshold noise


def test_yolo_fastestv2_finds_dog_bicycle_and_car(detector, read_image):
    dets = detector("yolo-fastestv2")(read_image("dog.jpg"))
    for label in ("dog", "bicycle", "car"):
        found = _by_label(dets, label)
        assert found, f"no {label} in {dets.labels}"
        best = max(_iou(box, EXPECTED_DOG[label]) for box, _ in found)
        assert best > 0.5, f"{label}: best IoU {best:.3f}"  # a coarser model: loose localisation check
    assert dets.labels[0] == "dog" and dets.scores[0] > 0.8


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("image_name", IMAGES)
def test_detections_are_well_formed(detector, read_image, key, image_name):
    det = detector(key)
    image = read_image(image_name)
    dets = det(image)
    h, w = image.shape[:2]
    n = len(dets)
    assert dets.boxes.shape == (n, 4) and dets.boxes.dtype == np.float32
    assert dets.scores.shape == (n,) and dets.class_ids.shape == (n,)
    assert n <= det.family.postprocess["max_detections"]
    if n:
        assert np.all(dets.boxes[:, [0, 2]] >= 0) and np.all(dets.boxes[:, [0, 2]] <= w)
        assert np.all(dets.boxes[:, [1, 3]] >= 0) and np.all(dets.boxes[:, [1, 3]] <= h)
        assert np.all(dets.boxes[:, 2] >= dets.boxes[:, 0]) and np.all(dets.boxes[:, 3] >= dets.boxes[:, 1])
        assert np.all(np.diff(dets.scores) <= 0), "scores are not sorted best first"
        assert np.all(dets.scores > det.family.postprocess["score_threshold"]) and np.all(dets.scores <= 1)
        assert np.all((dets.class_ids >= 0) & (dets.class_ids < len(det.class_names)))
    assert dets.labels == [det.class_names[i] for i in dets.class_ids]
    rows = dets.to_list()
    assert [r["label"] for r in rows] == dets.labels and [r["class_id"] for r in rows] == dets.class_ids.tolist()
    assert set(det.last_timings) == {"preprocess", "inference", "postprocess"}
    if key == "nanodet-plus-m":
        assert n >= 4  # every one of these sample photos has several objects the COCO model sees


def test_detector_is_repeatable_across_images(detector, read_image):
    """Buffers are reused between calls: earlier frames must not leak into later results."""
    det = detector("nanodet-plus-m")
    first = det(read_image("dog.jpg"))
    det(read_image("horses.jpg"))
    det(read_image("000139.jpg"))
    again = det(read_image("dog.jpg"))
    assert np.array_equal(first.boxes, again.boxes) and np.array_equal(first.scores, again.scores)
    assert np.array_equal(first.class_ids, again.class_ids)


@pytest.mark.parametrize("bad", [
    np.zeros((32, 32), np.uint8),  # grayscale
    np.zeros((32, 32, 4), np.uint8),  # BGRA
    np.zeros((32, 32, 3), np.float32),  # not uint8
    [[0, 0, 0]],  # not an array
])
def test_detector_rejects_bad_images(detector, bad):
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        detector("nanodet-plus-m")(bad)


def test_detector_describe_and_selection(detector):
    det = detector("nanodet-plus-m", backend="onnx", precision="fp32")
    text = det.describe()
    assert "nanodet-plus-m" in text and "model.onnx" in text and "onnxruntime" in text
    assert det.input_name == "input" and det.output_names == ["scores", "distances"]
    assert len(det.class_names) == 80


# ------------------------------------------------- runtime vs the independent torch reference

@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("image_name", IMAGES)
def test_runtime_equals_torch_reference(export, detector, read_image, key, image_name):
    pytest.importorskip("torch")
    from reference_decode import torch_reference_detections

    cfg = PACKAGES[key]
    image = read_image(image_name)
    reference = torch_reference_detections(cfg["model"], export(key), fixture_path(cfg["weights"]), image)
    det = detector(key)
    assert_same_as_reference(reference, det(image), det.family.postprocess, f"{key} {image_name}")
    if key != "nanodet-m-custom":  # the road-damage model rightly sees little in these photos
        assert len(reference) >= 3


@pytest.mark.parametrize("image_name", ["dog.jpg", "000139.jpg"])
def test_nanodet_plus_equals_reference_at_eval_threshold(export, detector, read_image, image_name):
    """At the mAP-evaluation threshold (0.05) a thousand candidates go through NMS and top-100."""
    pytest.importorskip("torch")
    from reference_decode import torch_reference_detections

    cfg = PACKAGES["nanodet-plus-m"]
    image = read_image(image_name)
    reference = torch_reference_detections(cfg["model"], export("nanodet-plus-m"), fixture_path(cfg["weights"]),
                                           image, score_threshold=0.05)
    assert len(reference) == 100
    det = detector("nanodet-plus-m", score_threshold=0.05)
    assert_same_as_reference(reference, det(image), det.family.postprocess, f"nanodet-plus-m {image_name} @0.05",
                             REFERENCE_AT_EVAL_THRESHOLD)


# The official YOLO-FastestV2 rule keeps only each box's best class; at low thresholds a multi-label
# NMS would add second-class boxes (dog.jpg @0.05: 17 detections instead of 12).
def test_yolo_fastestv2_equals_official_single_label_rule_at_low_threshold(export, detector, read_image):
    pytest.importorskip("torch")
    from reference_decode import torch_reference_detections

    cfg = PACKAGES["yolo-fastestv2"]
    image = read_image("dog.jpg")
    reference = torch_reference_detections(cfg["model"], export("yolo-fastestv2"), fixture_path(cfg["weights"]),
                                           image, score_threshold=0.05)
    det = detector("yolo-fastestv2", score_threshold=0.05)
    dets = det(image)
    # both sides resize with cv2.resize: the same pixels, kernels alone differ (4e-6), so counts are exact
    assert len(dets) == len(reference), (dets.labels, [c for _, _, c in reference])
    assert_same_as_reference(reference, dets, det.family.postprocess, "yolo-fastestv2 dog.jpg @0.05",
                             REFERENCE_AT_EVAL_THRESHOLD)

"""`import_model`: foreign single-tensor detector layouts (YOLOv8, YOLOX, YOLOv5, official NanoDet-Plus
ONNX; YOLOv8 also as TFLite) as packages.

No foreign weights exist offline, so the foreign models are REAL NanoDet-Plus-m COCO detectors
re-wrapped in torch to emit the foreign layouts (boxes re-encoded exactly), exported with
torch.onnx.export; imported, they must find what the native NanoDet-Plus package finds.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES, fixture_path
from test_cli import read_jsonl, run_cli

torch = pytest.importorskip("torch", reason="building the foreign-layout models needs torch")
onnx = pytest.importorskip("onnx", reason="exporting the foreign-layout models needs onnx")
onnxslim = pytest.importorskip("onnxslim", reason="slimming the foreign-layout models needs onnxslim")

from edge_runtime import Detector
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.importer import import_model
from edge_runtime.manifest import load_manifest

WEIGHTS = "weights/nanodet-plus-m/nanodet-plus-m_coco.ckpt"
IMGSZ = 416
STRIDES = (8, 16, 32, 64)  # NanoDet-Plus' four levels, kept through the decoder's strides param
IMAGES = ("dog.jpg", "person.jpg")


def _centres_and_strides() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, 2) cell centres in pixels, (N, 2) grid x/y and (N, 1) strides, NanoDet's row order."""
    centres, cells, strides = [], [], []
    for s in STRIDES:
        n = math.ceil(IMGSZ / s)
        ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        grid = torch.stack([xs.flatten(), ys.flatten()], 1).float()
        cells.append(grid)
        centres.append(grid * s)
        strides.append(torch.full((n * n, 1), float(s)))
    return torch.cat(centres), torch.cat(cells), torch.cat(strides)


class YoloV8Layout(torch.nn.Module):
    """NanoDet-Plus -> (1, 4 + 80, N): cx, cy, w, h in input pixels (boxes clipped as NanoDet does), scores."""

    def __init__(self, deploy: torch.nn.Module) -> None:
        super().__init__()
        self.deploy = deploy
        centres, _, strides = _centres_and_strides()
        self.register_buffer("centres", centres)
        self.register_buffer("strides", strides)

    def forward(self, x):
        scores, dist = self.deploy(x)
        d = dist[0] * self.strides
        boxes = torch.cat([self.centres - d[:, :2], self.centres + d[:, 2:]], 1).clamp(0, IMGSZ)
        xywh = torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1)
        return torch.cat([xywh, scores[0]], 1).T.unsqueeze(0)


class YoloxLayout(torch.nn.Module):
    """NanoDet-Plus -> (1, N, 5 + 80) raw YOLOX terms: from x1 = (g - l) s, x2 = (g + r) s and the
    YOLOX decode cx = (tx + g) s, w = exp(tw) s follow tx = (r - l) / 2 and tw = log(l + r).
    Objectness 1 and sigmoid'ed class scores, as YOLOX's export mode (sigmoid in the graph)."""

    def __init__(self, deploy: torch.nn.Module) -> None:
        super().__init__()
        self.deploy = deploy

    def forward(self, x):
        scores, d = self.deploy(x)
        t_xy = (d[..., 2:] - d[..., :2]) / 2
        t_wh = torch.log((d[..., :2] + d[..., 2:]).clamp_min(1e-6))
        return torch.cat([t_xy, t_wh, torch.ones_like(scores[..., :1]), scores], -1)


class YoloV5Layout(YoloV8Layout):
    """NanoDet-Plus -> (1, 3 N, 5 + 80): decoded cx, cy, w, h, objectness 1, scores; each row three
    times, as YOLOv5 has three anchors per cell (duplicates fall to NMS)."""

    def forward(self, x):
        rows = super().forward(x)[0].T
        rows = torch.cat([rows[:, :4], torch.ones_like(rows[:, :1]), rows[:, 4:]], 1)
        return torch.cat([rows] * 3, 0).unsqueeze(0)


class NanoDetPlusLayout(torch.nn.Module):
    """NanoDet-Plus as its official ONNX export: (1, N, 80 + 32) sigmoid scores + raw GFL logits."""

    def __init__(self, deploy: torch.nn.Module) -> None:
        super().__init__()
        self.model = deploy.model

    def forward(self, x):
        flat = torch.cat([o.flatten(start_dim=2) for o in self.model(x)], dim=2).permute(0, 2, 1)
        cls, reg = flat.split([self.model.head.num_classes, flat.shape[-1] - self.model.head.num_classes], dim=-1)
        return torch.cat([cls.sigmoid(), reg], -1)


@pytest.fixture(scope="module")
def foreign_onnx(tmp_path_factory) -> dict[str, Path]:
    """{family: .onnx} exported from the real NanoDet-Plus-m COCO checkpoint."""
    from converters.checkpoints import load_model
    from converters.models import get_spec

    spec = get_spec("nanodet-plus-m")
    net, _ = load_model(spec, fixture_path(WEIGHTS))
    deploy = spec.deploy(net).eval()
    folder = tmp_path_factory.mktemp("foreign")
    dummy = torch.zeros(1, 3, IMGSZ, IMGSZ)
    paths = {}
    for name, wrapper, out_name in (("yolov8", YoloV8Layout, "output0"), ("yolox", YoloxLayout, "output"),
                                    ("yolov5", YoloV5Layout, "output0"), ("nanodet-plus", NanoDetPlusLayout, "output")):
        path = folder / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
            torch.onnx.export(wrapper(deploy).eval(), (dummy,), str(path), input_names=["images"],
                              output_names=[out_name], opset_version=17, dynamo=False)
        # slimmed as ultralytics' own export does (and onnx2tf needs the folded graph)
        onnx.save(onnxslim.slim(onnx.load(str(path))), str(path))
        paths[name] = path
    return paths


def _import(native: Path, model: Path, family: str, out: Path):
    """Import with the native package's preprocessing and postprocess, so detections compare 1:1."""
    ref = load_manifest(native)
    return import_model(model, family, out, classes="coco", color=ref.input.color, mean=ref.input.mean,
                        std=ref.input.std, resize=ref.input.resize, strides=list(STRIDES),
                        score_threshold=ref.postprocess["score_threshold"], nms_iou=ref.postprocess["nms_iou"],
                        multi_label=bool(ref.postprocess.get("multi_label", True)))


def _assert_same_detections(native: Path, imported: Path, read_image, backend: str = "auto", tol: float = 1.5):
    want_det, got_det = Detector(native, backend="onnx"), Detector(imported, backend=backend)
    for name in IMAGES:
        image = read_image(name)
        want, got = want_det(image), got_det(image)
        assert len(want) > 0 and len(got) == len(want), (name, len(got), len(want))
        for box, cls in zip(want.boxes, want.class_ids):
            close = [np.abs(got.boxes[i] - box).max() for i in np.flatnonzero(got.class_ids == cls)]
            assert close and min(close) < tol, (name, cls, box, close)


@pytest.mark.parametrize("family", ["yolov8", "yolox", "yolov5", "nanodet-plus"])
def test_imported_foreign_onnx_matches_native_nanodet(family, foreign_onnx, nanodet_plus_package, read_image,
                                                      tmp_path):
    manifest = _import(nanodet_plus_package, foreign_onnx[family], family, tmp_path / "pkg")
    assert manifest.family == family and len(manifest.class_names) == 80
    assert manifest.input.shape == (1, 3, IMGSZ, IMGSZ) and manifest.input.layout == "NCHW"
    assert manifest.produced_by["imported_from"]["file"] == foreign_onnx[family].name
    assert load_manifest(tmp_path / "pkg").artifacts[0].outputs == (manifest.artifacts[0].outputs[0],)
    _assert_same_detections(nanodet_plus_package, tmp_path / "pkg", read_image)


@pytest.fixture(scope="module")
def foreign_tflite(foreign_onnx, nanodet_plus_package, tmp_path_factory) -> Path:
    """The YOLOv8-layout detector as an FP32 .tflite (NHWC), converted from its ONNX by our converter."""
    pytest.importorskip("onnx2tf", reason="ONNX -> TFLite needs onnx2tf")
    pytest.importorskip("ai_edge_litert", reason="running TFLite needs ai-edge-litert")
    from converters.convert import convert_package

    onnx_pkg = tmp_path_factory.mktemp("onnx-pkg")
    _import(nanodet_plus_package, foreign_onnx["yolov8"], "yolov8", onnx_pkg)
    convert_package(onnx_pkg, ["tflite"], ["fp32"])
    return onnx_pkg / "model_fp32.tflite"


def _ssd_postprocess(num_classes: int, score_threshold: float, iou: float):
    """The TF Object Detection API's stand-in function that the TFLite converter replaces with the
    built-in TFLite_Detection_PostProcess op (as its export_tflite_graph_tf2 does)."""
    import tensorflow as tf

    # fast (class-agnostic) NMS, as the TF OD API's SSD exports default to
    attrs = {"max_detections": ("i", 100), "max_classes_per_detection": ("i", 1), "detections_per_class": ("i", 100),
             "use_regular_nms": ("b", "false"), "nms_score_threshold": ("f", score_threshold),
             "nms_iou_threshold": ("f", iou), "y_scale": ("f", 10.0), "x_scale": ("f", 10.0), "h_scale": ("f", 5.0),
             "w_scale": ("f", 5.0), "num_classes": ("i", num_classes)}
    signature = " ".join(['name: "TFLite_Detection_PostProcess"'] + [
        f'attr {{ key: "{k}" value {{ {t}: {v} }} }}' for k, (t, v) in attrs.items()])

    @tf.function(experimental_implements=signature)
    def postprocess(box_encodings, class_predictions, anchors):
        # four distinct placeholders: one tensor returned four times is not replaced by the op
        return tuple(tf.constant(0.0, dtype=tf.float32, name=n) for n in ("boxes", "classes", "scores", "count"))

    return postprocess


@pytest.fixture(scope="module")
def foreign_ssd_tflite(foreign_onnx, tmp_path_factory) -> Path:
    """A TF OD API-style SSD detect.tflite around the real NanoDet-Plus-m: its YOLOv8-layout ONNX in
    TensorFlow (onnx2tf), the boxes encoded against one anchor per cell as SSD box encodings
    (scales 10, 10, 5, 5), a background score column, and the TFLite_Detection_PostProcess op."""
    tf = pytest.importorskip("tensorflow", reason="building the SSD TFLite needs tensorflow")
    pytest.importorskip("onnx2tf", reason="ONNX -> TensorFlow needs onnx2tf")
    from converters.tflite.onnx2tf_run import onnx_to_keras

    samples = np.random.default_rng(0).standard_normal((2, IMGSZ, IMGSZ, 3)).astype(np.float32)
    graph = onnx.load(str(foreign_onnx["yolov8"]))
    for node in graph.graph.node:  # onnx2tf names variables after nodes; a SavedModel refuses a leading '/'
        node.name = node.name.lstrip("/")
    keras = onnx_to_keras(graph, "images", samples, foreign_onnx["yolov8"])
    centres, _, strides = (t.numpy() for t in _centres_and_strides())
    size = 4.0 * strides / IMGSZ  # anchor height and width, normalised
    anchors = np.concatenate([centres[:, 1:] / IMGSZ, centres[:, :1] / IMGSZ, size, size], 1).astype(np.float32)
    postprocess = _ssd_postprocess(80, 0.35, 0.6)

    class Ssd(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.keras = keras  # tracked, so the converter freezes its weights

        @tf.function(input_signature=[tf.TensorSpec([1, IMGSZ, IMGSZ, 3], tf.float32, name="normalized_input")])
        def __call__(self, x):
            p = self.keras(x, training=False)
            p = p if p.shape[-1] == 84 else tf.transpose(p, [0, 2, 1])  # (1, N, 4 + 80)
            cx, cy, w, h = (p[..., i] / IMGSZ for i in range(4))
            a = tf.constant(anchors)
            enc = tf.stack([(cy - a[:, 0]) / a[:, 2] * 10.0, (cx - a[:, 1]) / a[:, 3] * 10.0,
                            tf.math.log(tf.maximum(h, 1e-5) / a[:, 2]) * 5.0,
                            tf.math.log(tf.maximum(w, 1e-5) / a[:, 3]) * 5.0], -1)
            scores = tf.concat([tf.zeros_like(p[..., :1]), p[..., 4:]], -1)
            return postprocess(enc, scores, a)

    module = Ssd()
    function = module.__call__.get_concrete_function()
    # onnx2tf's layers hold variables Keras does not track: track them here, then go through a
    # SavedModel as the TF OD API does (from the concrete function alone, the untracked graph had
    # the placeholder function inlined instead of replaced by the op)
    module.weights = list(function.variables)
    folder = tmp_path_factory.mktemp("ssd")
    tf.saved_model.save(module, str(folder / "saved_model"), signatures=function)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(folder / "saved_model"))
    converter.allow_custom_ops = True
    path = folder / "detect.tflite"
    path.write_bytes(converter.convert())
    return path


def test_imported_ssd_tflite_matches_native_nanodet(foreign_ssd_tflite, nanodet_plus_package, read_image, tmp_path):
    pytest.importorskip("ai_edge_litert", reason="running TFLite needs ai-edge-litert")
    from edge_runtime.coco import COCO_CLASSES

    labelmap = tmp_path / "labelmap.txt"  # as the TF examples ship it: a background placeholder first
    labelmap.write_text("???\n" + "\n".join(COCO_CLASSES) + "\n")
    ref = load_manifest(nanodet_plus_package)
    manifest = import_model(foreign_ssd_tflite, "ssd", tmp_path / "pkg", classes=labelmap, color=ref.input.color,
                            mean=ref.input.mean, std=ref.input.std, resize=ref.input.resize,
                            score_threshold=ref.postprocess["score_threshold"], nms_iou=ref.postprocess["nms_iou"])
    assert manifest.class_names == tuple(COCO_CLASSES) and manifest.decoder["max_detections"] == 100
    assert manifest.input.layout == "NHWC" and len(manifest.artifacts[0].outputs) == 4
    boxes_name = manifest.artifacts[0].outputs[0]
    assert manifest.produced_by["imported_from"]["outputs"][boxes_name] == [1, 100, 4]
    want_det, got_det = Detector(nanodet_plus_package, backend="onnx"), Detector(tmp_path / "pkg", backend="tflite")
    for name in IMAGES:
        image = read_image(name)
        want, got = want_det(image), got_det(image)
        assert len(got) > 0, name
        kept = []
        for box, score, cls in zip(got.boxes, got.scores, got.class_ids):  # each one native NanoDet finds too
            same = [i for i in np.flatnonzero(want.class_ids == cls) if np.abs(want.boxes[i] - box).max() < 2.0]
            assert same and abs(want.scores[same[0]] - score) < 1e-3, (name, cls, box, score)
            kept.append(same[0])
        # the graph's fast NMS is class-agnostic: a native box it lacks lost to a better box of another class
        for i in set(range(len(want))) - set(kept):
            assert any(_iou(want.boxes[i], want.boxes[k]) > 0.6 and want.scores[k] > want.scores[i] for k in kept), \
                (name, want.class_ids[i], want.scores[i])
    proc = run_cli("run", str(tmp_path / "pkg"), "--source", str(fixture_path(SAMPLES, "dog.jpg")),
                   "--json", str(tmp_path / "dets.jsonl"), "--show", "no")
    assert proc.returncode == 0, proc.stderr
    assert "dog" in {d["label"] for d in read_jsonl(tmp_path / "dets.jsonl")[0]["detections"]}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    return float(inter / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter))


def test_ssd_import_of_a_single_output_model_says_what_it_expects(foreign_onnx, tmp_path):
    with pytest.raises(EdgeRuntimeError) as err:
        import_model(foreign_onnx["yolov8"], "ssd", tmp_path / "pkg")
    msg = str(err.value)
    assert "\n" not in msg and "family ssd expects boxes [1, N, 4]" in msg, msg


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_imported_package_runs_benches_and_validates(fmt, request, nanodet_plus_package, tmp_path):
    model = request.getfixturevalue("foreign_onnx")["yolov8"] if fmt == "onnx" else \
        request.getfixturevalue("foreign_tflite")
    pkg = tmp_path / "pkg"
    _import(nanodet_plus_package, model, "yolov8", pkg)
    dog = fixture_path(SAMPLES, "dog.jpg")
    proc = run_cli("run", str(pkg), "--source", str(dog), "--json", str(tmp_path / "dets.jsonl"), "--show", "no")
    assert proc.returncode == 0, proc.stderr
    names = {d["label"] for d in read_jsonl(tmp_path / "dets.jsonl")[0]["detections"]}
    assert "dog" in names, names
    proc = run_cli("bench", str(pkg), "--iters", "3", "--no-isolate")
    assert proc.returncode == 0 and load_manifest(pkg).artifacts[0].file in proc.stdout, proc.stderr
    # label-free: the package's only artifact is its own reference, so its mAP against itself is 1
    proc = run_cli("validate", str(pkg), "--images", str(fixture_path(SAMPLES)), "--json", str(tmp_path / "v.json"))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "v.json").read_text())
    row = report["artifacts"][0]
    assert report["protocol"]["images"] == 11 and row["map"] == pytest.approx(1.0, abs=1e-6), row
    assert row["cosine"]["predictions"]["worst"] == pytest.approx(1.0, abs=1e-6), row["cosine"]


def test_import_command_and_its_one_line_error(foreign_onnx, tmp_path):
    from test_cli import assert_one_line_error

    model = str(foreign_onnx["yolov8"])
    proc = run_cli("import", model, "--family", "yolov8", "-o", str(tmp_path / "pkg"),
                   "--strides", *(str(s) for s in STRIDES))
    assert proc.returncode == 0 and "yolov8, 80 classes, input [1, 3, 416, 416] NCHW" in proc.stdout, proc.stderr
    assert load_manifest(tmp_path / "pkg").family == "yolov8"
    assert_one_line_error(run_cli("import", model, "--family", "yolox", "-o", str(tmp_path / "bad"),
                                  "--strides", *(str(s) for s in STRIDES)), "family yolox expects")


def test_foreign_tflite_imports_as_nhwc_and_matches(foreign_tflite, nanodet_plus_package, read_image, tmp_path):
    manifest = _import(nanodet_plus_package, foreign_tflite, "yolov8", tmp_path / "tflite-pkg")
    assert manifest.input.layout == "NHWC" and manifest.artifacts[0].format == "tflite"
    _assert_same_detections(nanodet_plus_package, tmp_path / "tflite-pkg", read_image, backend="tflite", tol=2.0)


def test_wrong_family_is_one_line_error_saying_what_it_expects(foreign_onnx, tmp_path):
    with pytest.raises(EdgeRuntimeError) as err:
        import_model(foreign_onnx["yolov8"], "yolox", tmp_path / "pkg", strides=list(STRIDES))
    msg = str(err.value)
    assert "\n" not in msg and "yolov8.onnx: output 'output0' has shape [1, 84, 3598]" in msg, msg
    assert "family yolox expects [1, N, 5 + classes] with N = 3598 for 416x416 (strides 8, 16, 32, 64)" in msg, msg
    assert not (tmp_path / "pkg").exists()  # nothing half-written


def test_wrong_class_list_is_one_line_error(foreign_onnx, tmp_path):
    names = tmp_path / "classes.txt"
    names.write_text("cat\ndog\n")
    with pytest.raises(EdgeRuntimeError) as err:
        import_model(foreign_onnx["yolov8"], "yolov8", tmp_path / "pkg", classes=names, strides=list(STRIDES))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{names}: lists 2 class names") and "has 80 classes" in msg, msg


def test_default_strides_mismatch_names_n(foreign_onnx, tmp_path):
    # the official yolov8 strides (8, 16, 32) give 3549 rows at 416, not NanoDet's 3598
    with pytest.raises(EdgeRuntimeError, match=r"N = 3549 for 416x416 \(strides 8, 16, 32\)"):
        import_model(foreign_onnx["yolov8"], "yolov8", tmp_path / "pkg")

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
from test_cli import run_cli

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


def test_imported_package_runs_benches_and_validates(foreign_onnx, nanodet_plus_package, tmp_path):
    pkg = tmp_path / "pkg"
    _import(nanodet_plus_package, foreign_onnx["yolov8"], "yolov8", pkg)
    dog = fixture_path(SAMPLES, "dog.jpg")
    proc = run_cli("run", str(pkg), "--source", str(dog), "--json", str(tmp_path / "dets.json"), "--show", "no")
    assert proc.returncode == 0, proc.stderr
    names = {d["label"] for d in json.loads((tmp_path / "dets.json").read_text())["frames"][0]["detections"]}
    assert "dog" in names, names
    proc = run_cli("bench", str(pkg), "--iters", "3", "--no-isolate")
    assert proc.returncode == 0 and "model.onnx" in proc.stdout, proc.stderr
    from edge_runtime.validate import validate_package

    # label-free: the package's only artifact is its own reference, so its mAP against itself is 1
    report = validate_package(pkg, images=fixture_path(SAMPLES))
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


def test_foreign_tflite_imports_as_nhwc_and_matches(foreign_onnx, nanodet_plus_package, read_image, tmp_path):
    pytest.importorskip("onnx2tf", reason="ONNX -> TFLite needs onnx2tf")
    pytest.importorskip("ai_edge_litert", reason="running TFLite needs ai-edge-litert")
    from converters.convert import convert_package

    onnx_pkg = tmp_path / "onnx-pkg"
    _import(nanodet_plus_package, foreign_onnx["yolov8"], "yolov8", onnx_pkg)
    convert_package(onnx_pkg, ["tflite"], ["fp32"])
    tflite = onnx_pkg / "model_fp32.tflite"
    manifest = _import(nanodet_plus_package, tflite, "yolov8", tmp_path / "tflite-pkg")
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

"""Measure how much one FP32 model's numbers move across kernels of the same maths on this CPU.

Not a test: the numbers behind the cross-backend tolerances in tests/ (docs/tolerances.md). Run it
on a new CPU to add a row there::

    PYTHONPATH=$PWD python tests/measure_spread.py PACKAGES_DIR [--json out.json]

PACKAGES_DIR holds one exported package per key of conftest.PACKAGES (``<dir>/<key>``), each
converted to OpenVINO and TFLite FP32 (``edge-runtime convert PKG --formats openvino tflite
--precisions fp32``). On the 11 sample photos, every variant below runs the same preprocessed input
and the same decoder; only the kernels differ:

- ``ort``           ONNX Runtime, graph optimisations all, 1 thread (the baseline)
- ``ort-2t``        the same, 2 threads
- ``ort-off``       ONNX Runtime with graph optimisations disabled (no Conv fusions)
- ``openvino``      OpenVINO CPU, INFERENCE_PRECISION_HINT=f32, 1 and 2 threads
- ``tflite``        the TFLite FP32 file on XNNPACK, and with the builtin kernels only
- ``torch``         the unfused torch model (deploy wrapper), 1 and 2 threads

First, the resize: the same bilinear stretch by different kernels (NanoDet's warp: cv2.warpAffine,
cv2.warpPerspective, float64 rounded once; YOLO-FastestV2: cv2.resize INTER_LINEAR, INTER_LINEAR_EXACT,
float64), each uint8 image through the same ONNX Runtime detector. Then per variant against ``ort``:
max abs diff of each raw output, then over matched detections (same class, box within 4 px;
agreement.spread) the max score and box difference, and the change of the IoU between two same-class
boxes, at the manifest's threshold and at 0.05, and the scores left unpaired. Last, each runtime
variant end to end against the independent torch reference (tests/reference_decode.py, its own
warp), which is what test_runtime_equals_torch_reference and test_run_json_equals_torch_reference
compare, and the same for deliberately wrong preprocessing (mean in RGB order, std 1, letterbox
instead of stretch, cv2.resize instead of the warp or back) to show how far above the spread a real
error lands.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agreement import Tolerance, from_reference, spread  # noqa: E402
from conftest import FIXTURES, PACKAGES  # noqa: E402
from reference_decode import torch_reference_detections  # noqa: E402

from edge_runtime import Detections, Detector  # noqa: E402

EVAL_THRESHOLD = 0.05


class TorchDetector:
    """The ONNX detector's preprocessing and decoder around the unfused torch deploy model."""

    def __init__(self, package: Path, key: str, threads: int) -> None:
        import torch
        from reference_decode import load_torch_model

        from converters.models import get_spec

        self.torch, self.threads = torch, threads
        self.inner = Detector(package, backend="onnx", precision="fp32", threads=1)
        cfg = PACKAGES[key]
        self.model = get_spec(cfg["model"]).deploy(load_torch_model(cfg["model"], str(FIXTURES / cfg["weights"])))
        self.model.eval()
        self.family = self.inner.family

    def preprocess(self, image):
        return self.inner.preprocess(image)

    def infer(self, tensor):
        self.torch.set_num_threads(self.threads)
        with self.torch.no_grad():
            return [t.numpy() for t in self.model(self.torch.from_numpy(tensor.copy()))]

    def decode(self, outputs, meta):
        return self.inner.decode(outputs, meta)


def ort_without_optimisations(package: Path) -> Detector:
    import onnxruntime as ort

    det = Detector(package, backend="onnx", precision="fp32", threads=1)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    det.backend.session = ort.InferenceSession(str(det.backend.path), sess_options=so,
                                               providers=["CPUExecutionProvider"])
    return det


def tflite_builtin_kernels(package: Path) -> Detector:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    det = Detector(package, backend="tflite", precision="fp32", threads=1)
    interpreter = Interpreter(model_path=str(det.backend.path), num_threads=1,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    det.backend._interpreter = interpreter
    return det


def variants(package: Path, key: str) -> dict[str, object]:
    ov = {"inference_precision": "f32"}
    return {
        "ort": Detector(package, backend="onnx", precision="fp32", threads=1),
        "ort-2t": Detector(package, backend="onnx", precision="fp32", threads=2),
        "ort-off": ort_without_optimisations(package),
        "openvino": Detector(package, backend="openvino", precision="fp32", threads=1, options=ov),
        "openvino-2t": Detector(package, backend="openvino", precision="fp32", threads=2, options=ov),
        "tflite": Detector(package, backend="tflite", precision="fp32", threads=1),
        "tflite-builtin": tflite_builtin_kernels(package),
        "torch": TorchDetector(package, key, 1),
        "torch-2t": TorchDetector(package, key, 2),
    }


def run(det, image: np.ndarray, threshold: float) -> tuple[list[np.ndarray], Detections]:
    tensor, meta = det.preprocess(image)
    outputs = det.infer(tensor)
    det.family.postprocess["score_threshold"] = threshold
    return outputs, det.decode(outputs, meta)


PAIRING = Tolerance(score=1.0, box_px=4.0)  # the same box: closer than this; farther is an NMS flip


def merge(rows: list[dict]) -> dict:
    out = {key: max(r[key] for r in rows) for key in ("score", "box_px", "iou_change")}
    worst = max(rows, key=lambda r: r["score"])
    return {**out, "n": sum(r["n"] for r in rows), "worst_image": worst.get("image"),
            "only_first": sum((r["only_first"] for r in rows), []),
            "only_second": sum((r["only_second"] for r in rows), [])}


def broken_packages(package: Path, tmp: Path) -> dict[str, Path]:
    """Copies of the package whose manifest feeds the model wrongly: real errors to compare against."""
    out = {}
    manifest = json.loads((package / "manifest.json").read_text())
    inp = manifest["input"]
    changes = {"mean-rgb-order": {"mean": inp["mean"][::-1]}, "std-1": {"std": [1.0, 1.0, 1.0]} if inp["std"][0] != 1
               else {"std": [255.0, 255.0, 255.0]},
               "letterbox": {"resize": "warp_affine_keep_ratio" if inp["resize"] != "warp_affine_keep_ratio"
                             else "warp_affine"},
               # the same stretch, with the other pixel-centre convention (cv2.resize vs NanoDet's warp)
               "resize-vs-warp": {"resize": "resize" if inp["resize"] != "resize" else "warp_affine"}}
    for name, change in changes.items():
        dst = tmp / f"{package.name}-{name}"
        shutil.copytree(package, dst)
        broken = {**manifest, "input": {**inp, **change}}
        (dst / "manifest.json").write_text(json.dumps(broken))
        out[name] = dst
    return out


def measure(root: Path, images: list[tuple[str, np.ndarray]]) -> dict:
    report: dict = {}
    for key, cfg in PACKAGES.items():
        package = root / key
        manifest_threshold = json.loads((package / "manifest.json").read_text())["postprocess"]["score_threshold"]
        thresholds = (manifest_threshold, EVAL_THRESHOLD)
        dets = variants(package, key)
        raw: dict[str, list[float]] = {name: [] for name in dets}
        vs_ort: dict[tuple, list] = {}
        vs_torch: dict[tuple, list] = {}
        for name, image in images:
            base = {t: run(dets["ort"], image, t) for t in thresholds}
            refs = {t: torch_reference_detections(cfg["model"], package, FIXTURES / cfg["weights"], image, t)
                    for t in thresholds}
            for variant, det in dets.items():
                for t in thresholds:
                    outputs, found = run(det, image, t)
                    if t == thresholds[0]:
                        diffs = [float(np.abs(a - b).max()) for a, b in zip(base[t][0], outputs)]
                        raw[variant] = [max(x, y) for x, y in zip(raw[variant], diffs)] if raw[variant] else diffs
                    vs_ort.setdefault((variant, t), []).append({**spread(base[t][1], found, PAIRING), "image": name})
                    vs_torch.setdefault((variant, t), []).append(
                        {**spread(from_reference(refs[t], found.class_names), found, PAIRING), "image": name})
        with tempfile.TemporaryDirectory() as tmp:
            for broken, path in broken_packages(package, Path(tmp)).items():
                det = Detector(path, backend="onnx", precision="fp32", threads=1)
                for name, image in images:
                    ref = torch_reference_detections(cfg["model"], package, FIXTURES / cfg["weights"], image,
                                                     manifest_threshold)
                    found = run(det, image, manifest_threshold)[1]
                    vs_torch.setdefault((f"BROKEN {broken}", manifest_threshold), []).append(
                        {**spread(from_reference(ref, found.class_names), found, PAIRING), "image": name})
        report[key] = {"raw_max_abs_diff_vs_ort": raw,
                       "detections_vs_ort": {f"{v} @{t}": merge(r) for (v, t), r in vs_ort.items()},
                       "detections_vs_torch_reference": {f"{v} @{t}": merge(r) for (v, t), r in vs_torch.items()}}
    return report


def bilinear(image: np.ndarray, inverse: np.ndarray, size_wh: tuple[int, int], half_pixel: bool) -> np.ndarray:
    """Bilinear sampling in float64, rounded once: the interpolation OpenCV approximates in fixed point."""
    w, h = size_wh
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    off = 0.5 if half_pixel else 0.0
    sx = inverse[0, 0] * (xs + off) + inverse[0, 1] * (ys + off) + inverse[0, 2] - off
    sy = inverse[1, 0] * (xs + off) + inverse[1, 1] * (ys + off) + inverse[1, 2] - off
    if half_pixel:  # cv2.resize clamps at the border
        sx, sy = sx.clip(0, image.shape[1] - 1), sy.clip(0, image.shape[0] - 1)
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    padded = np.zeros((image.shape[0] + 2, image.shape[1] + 2, 3))
    padded[1:-1, 1:-1] = image  # black border, as warpAffine's BORDER_CONSTANT 0

    def at(y, x):
        return padded[(y + 1).clip(0, image.shape[0] + 1), (x + 1).clip(0, image.shape[1] + 1)]

    out = ((1 - fx) * (1 - fy) * at(y0, x0) + fx * (1 - fy) * at(y0, x0 + 1)
           + (1 - fx) * fy * at(y0 + 1, x0) + fx * fy * at(y0 + 1, x0 + 1))
    return np.round(out).clip(0, 255).astype(np.uint8)


def interpolations(image: np.ndarray, resize: str, size_wh: tuple[int, int]) -> dict[str, np.ndarray]:
    """The same bilinear resize by different kernels (each rounds to uint8 its own way)."""
    h, w = image.shape[:2]
    m = np.array([[size_wh[0] / w, 0, 0], [0, size_wh[1] / h, 0], [0, 0, 1]])
    if resize == "resize":
        return {"cv2.resize": cv2.resize(image, size_wh, interpolation=cv2.INTER_LINEAR),
                "cv2.resize-exact": cv2.resize(image, size_wh, interpolation=cv2.INTER_LINEAR_EXACT),
                "float64": bilinear(image, np.linalg.inv(m), size_wh, half_pixel=True)}
    assert resize == "warp_affine", resize
    return {"warpAffine": cv2.warpAffine(image, m[:2], size_wh, flags=cv2.INTER_LINEAR),
            "warpPerspective": cv2.warpPerspective(image, m, size_wh),
            "float64": bilinear(image, np.linalg.inv(m), size_wh, half_pixel=False)}


def interpolation_spread(root: Path, images: list[tuple[str, np.ndarray]]) -> dict:
    """Each resize kernel's uint8 image through the same ONNX Runtime detector: score / box spread."""
    report = {}
    for key in ("nanodet-plus-m", "yolo-fastestv2"):
        package = root / key
        manifest = json.loads((package / "manifest.json").read_text())
        _, _, in_h, in_w = manifest["input"]["shape"]
        det = Detector(package, backend="onnx", precision="fp32", threads=1)
        rows: dict[str, dict] = {}
        for t in (manifest["postprocess"]["score_threshold"], EVAL_THRESHOLD):
            det.family.postprocess["score_threshold"] = t
            per: dict[str, list] = {}
            for name, image in images:
                h, w = image.shape[:2]
                scale = np.array([w / in_w, h / in_h, w / in_w, h / in_h], np.float32)
                resized = interpolations(image, manifest["input"]["resize"], (in_w, in_h))
                base = next(iter(resized))
                found = {}
                for kernel, pixels in resized.items():
                    dets = det(pixels)  # already input-sized: the runtime's own resize is a plain copy
                    found[kernel] = Detections(dets.boxes * scale, dets.scores, dets.class_ids, dets.class_names)
                for kernel, dets in found.items():
                    levels = np.abs(resized[kernel].astype(int) - resized[base])
                    per.setdefault(kernel, []).append({**spread(found[base], dets, PAIRING), "image": name,
                                                       "levels": int(levels.max()),
                                                       "share": float((levels > 0).mean())})
            for kernel, r in per.items():
                rows[f"{kernel} vs {base} @{t}"] = {**merge(r), "levels": max(x["levels"] for x in r),
                                                    "share": max(x["share"] for x in r)}
        report[key] = rows
    return report


def cpu() -> str:
    text = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    have = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8")
            if f in flags]
    return f"{model} ({' '.join(have)})"


def line(row: dict) -> str:
    return (f"score {row['score']:.2e} ({row['worst_image']})  box {row['box_px']:.3f} px  "
            f"IoU change {row['iou_change']:.3f}  n {row['n']:4d}  "
            f"unpaired {row['only_first'][:5]} / {row['only_second'][:5]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("packages", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    images = [(p.name, cv2.imread(str(p))) for p in sorted((FIXTURES / "images/samples").glob("*.jpg"))]
    report = {"cpu": cpu(), "images": len(images), "opencv": cv2.__version__,
              "interpolation": interpolation_spread(args.packages, images), "models": measure(args.packages, images)}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    print(report["cpu"], "OpenCV", report["opencv"])
    for key, rows in report["interpolation"].items():
        print(f"\n{key}: the same resize by different kernels, through ONNX Runtime")
        for name, row in rows.items():
            print(f"    {name:40s} levels <= {row['levels']} on {row['share']:.1%}  {line(row)}")
    for key, data in report["models"].items():
        print(f"\n{key}: raw outputs max abs diff vs ort: "
              + ", ".join(f"{v} {['%.1e' % d for d in diffs]}" for v, diffs in data["raw_max_abs_diff_vs_ort"].items()))
        for what in ("detections_vs_ort", "detections_vs_torch_reference"):
            print(f"  {what}:")
            for name, row in data[what].items():
                print(f"    {name:32s} {line(row)}")


if __name__ == "__main__":
    main()

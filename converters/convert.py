"""Add artifacts (formats x precisions) to an existing package, each checked against FP32 ONNX.

A converter is a function ``ConvertJob -> ConvertResult`` registered in ``CONVERTERS`` under
(format, precision). The orchestrator runs it, then loads the new file with the *runtime's* own
backend and compares its outputs with the FP32 ONNX artifact before the manifest lists it.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

import edge_runtime
from edge_runtime.backends import open_backend
from edge_runtime.compare import compare
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.manifest import Artifact, Manifest, load_manifest, sha256_file

from .calibration import CalibrationSet

log = logging.getLogger(__name__)
FORMATS = ("onnx", "openvino", "tflite")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class ConvertJob:
    manifest: Manifest
    fp32_onnx: Path
    precision: str
    calibration: CalibrationSet | None
    options: dict[str, Any] = field(default_factory=dict)
    progress: Callable[[str], None] = lambda msg: None

    @property
    def out_dir(self) -> Path:
        return self.manifest.root


@dataclass
class ConvertResult:
    file: str  # relative to the package folder
    outputs: list[str]  # graph output names, in the family's role order
    extra: dict[str, Any] = field(default_factory=dict)  # format-specific manifest fields


# (format, precision) -> "module:function"; modules import their heavy libraries on use
CONVERTERS: dict[tuple[str, str], str] = {
    ("onnx", "int8"): "converters.quantize_onnx:quantize_onnx_int8",
    ("openvino", "fp32"): "converters.convert_openvino:convert_openvino",
    ("openvino", "fp16"): "converters.convert_openvino:convert_openvino",
    ("openvino", "int8"): "converters.convert_openvino:convert_openvino",
    ("tflite", "fp32"): "converters.convert_tflite:convert_tflite",
    ("tflite", "fp16"): "converters.convert_tflite:convert_tflite",
    ("tflite", "int8"): "converters.convert_tflite:convert_tflite",
}
UNSUPPORTED = {
    ("onnx", "fp16"): "ONNX Runtime's CPU provider has no FP16 kernels for most ops and inserts casts "
                      "(slower than FP32); use openvino or tflite for FP16",
}


def _to_layout(tensor: np.ndarray, layout: str) -> np.ndarray:
    return np.ascontiguousarray(tensor.transpose(0, 2, 3, 1)) if layout == "NHWC" else tensor


def verify_artifact(manifest: Manifest, art: Artifact, samples: list[np.ndarray], threads: int = 2
                    ) -> dict[str, float]:
    """Worst cosine and max abs diff of ``art`` against the FP32 ONNX artifact, output by output."""
    ref_art = manifest.artifact("onnx", "fp32")
    ref = open_backend(manifest.artifact_path(ref_art), "onnx", threads)
    got = open_backend(manifest.artifact_path(art), art.format, threads, art.extra.get("backend_options"))
    spec = manifest.input_for(art)
    worst = {"max_abs_diff": 0.0, "cosine": 1.0}
    for tensor in samples:
        want = ref.run({manifest.input.name: tensor})
        have = got.run({spec.name: _to_layout(tensor, spec.layout)})
        result = compare([want[n] for n in ref_art.outputs], [have[n] for n in art.outputs])
        worst = {"max_abs_diff": max(worst["max_abs_diff"], result["max_abs_diff"]),
                 "cosine": min(worst["cosine"], result["cosine"])}
    return worst


def convert_package(package: str | Path, formats: list[str], precisions: list[str],
                    calib: str | Path | None = None, calib_size: int = 100, options: dict[str, Any] | None = None,
                    progress: Callable[[str], None] = lambda msg: None) -> Manifest:
    """Convert the package's FP32 ONNX into every requested (format, precision) and update the manifest.

    INT8 needs ``calib`` (a folder of images, a video or a COCO json). Returns the updated manifest.
    """
    manifest = load_manifest(package)
    fp32 = manifest.artifact_path(manifest.artifact("onnx", "fp32"))
    for value, known in ((formats, FORMATS), (precisions, PRECISIONS)):
        bad = [v for v in value if v not in known]
        if bad:
            raise EdgeRuntimeError(f"unknown {'format' if known is FORMATS else 'precision'} {bad}; "
                                   f"choose from {', '.join(known)}")
    if "int8" in precisions and calib is None:
        raise EdgeRuntimeError("INT8 needs calibration images: pass --calib FOLDER|VIDEO|COCO_JSON")
    calibration = CalibrationSet(calib, manifest.input, calib_size) if calib is not None else None
    samples = calibration.tensors[:: max(1, len(calibration) // 8)][:8] if calibration else [
        np.random.default_rng(0).standard_normal((1, 3, *manifest.input.size_hw)).astype(np.float32)]
    for fmt in formats:
        for precision in precisions:
            if (fmt, precision) == ("onnx", "fp32"):
                continue
            if (fmt, precision) in UNSUPPORTED:
                log.warning("skipping %s %s: %s", fmt, precision, UNSUPPORTED[fmt, precision])
                continue
            module, func = CONVERTERS[fmt, precision].split(":")
            try:
                convert = getattr(importlib.import_module(module), func)
            except ImportError as exc:
                raise EdgeRuntimeError(f"converting to {fmt} needs {exc.name}, not installed: "
                                       f"pip install 'edge-runtime[convert]'") from None
            progress(f"{fmt} {precision}: converting")
            result = convert(ConvertJob(manifest, fp32, precision, calibration, dict(options or {}), progress))
            path = manifest.root / result.file
            art = Artifact(file=result.file, format=fmt, precision=precision, sha256=sha256_file(path),
                           outputs=tuple(result.outputs), extra=result.extra)
            progress(f"{fmt} {precision}: checking against FP32 ONNX on {len(samples)} inputs")
            agreement = verify_artifact(manifest.with_artifact(art), art, samples)
            art = Artifact(**{**art.__dict__, "extra": {**art.extra, "fp32_agreement": agreement}})
            if calibration is not None and precision == "int8":
                art.extra.setdefault("calibration", calibration.describe())
            manifest = manifest.with_artifact(art)
            manifest.produced_by.setdefault("converters", {})[f"{fmt}-{precision}"] = edge_runtime.__version__
            manifest.save()
            progress(f"{fmt} {precision}: {result.file} cosine {agreement['cosine']:.5f} "
                     f"max|diff| {agreement['max_abs_diff']:.3g}")
    return manifest

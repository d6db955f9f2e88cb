"""What the INT8 probe scripts (onnx_int8_recipes.py, openvino_int8.py, onnx_u8s8_bypass.py, qat_u8s8.py)
share: their arguments, the calibration and held-out image sets, FP32 ONNX's outputs on the held-out
images and the cosines against them, ONNX Runtime's U8S8 QDQ graph, and the heading of their tables."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from converters.calibration import CalibrationSet
from edge_runtime.backends import open_backend
from edge_runtime.compare import compare
from edge_runtime.deploy.hostinfo import cpu_summary
from edge_runtime.manifest import Manifest
from edge_runtime.versions import package_version

if TYPE_CHECKING:
    import onnx


def probe_arguments(doc: str, rounds: int, per_round: int) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("package")
    ap.add_argument("--calib", required=True, help="calibration images; the rest of the folder is held out")
    ap.add_argument("--calib-size", type=int, default=32)
    ap.add_argument("--held-out", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--per-round", type=int, default=per_round)
    ap.add_argument("--json", default=None)
    return ap


def image_sets(manifest: Manifest, args: argparse.Namespace) -> tuple[CalibrationSet, CalibrationSet]:
    """The calibration images and the held-out ones (the same folder, calibration images left out)."""
    calibration = CalibrationSet(args.calib, manifest.input, args.calib_size, progress=False)
    held_out = CalibrationSet(args.calib, manifest.input, args.held_out, exclude=calibration.used, progress=False,
                              desc="held-out images")
    return calibration, held_out


def fp32_cosines(manifest: Manifest, held_out: CalibrationSet, threads: int
                 ) -> Callable[[Callable[[np.ndarray], dict[str, np.ndarray]]], list[float]]:
    """FP32 ONNX run once on the held-out images; the returned function gives, per image, the lowest
    cosine over the outputs of a model (``run(tensor) -> {output: array}``) against it, as ``convert``'s
    ``fp32_agreement``."""
    art = manifest.artifact("onnx", "fp32")
    outputs, name = list(art.outputs), manifest.input.name
    reference_backend = open_backend(manifest.artifact_path(art), "onnx", threads)
    reference = [[reference_backend.run({name: t})[o] for o in outputs] for t in held_out.tensors]

    def cosines(run: Callable[[np.ndarray], dict[str, np.ndarray]]) -> list[float]:
        return [compare(ref, [got[o] for o in outputs])["cosine"]
                for ref, got in zip(reference, (run(t) for t in held_out.tensors))]
    return cosines


def heading(manifest: Manifest, args: argparse.Namespace, library: str, held_out: int) -> str:
    host = cpu_summary()
    return (f"{manifest.name} {list(manifest.input.shape)}, {host['cpu']} ({' '.join(host['flags'])}), "
            f"{library} {package_version(library)}, nncf {package_version('nncf')}, {args.threads} threads, "
            f"{args.rounds} interleaved rounds x {args.per_round}, medians; cosine vs FP32 ONNX on {held_out} "
            f"held-out images ({args.calib_size} calibration)")


def quantize_u8s8(fp32_path: str | Path, input_name: str, tensors: list[np.ndarray],
                  overrides: dict[str, Any] | None = None) -> onnx.ModelProto:
    """``quantize_static``'s U8S8 QDQ graph of ``fp32_path``: uint8 activations (minmax on ``tensors``, or
    the ``TensorQuantOverrides`` given), per-channel symmetric int8 weights, decode tail in float."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from converters.quantize_onnx import _TensorReader, decode_tail_nodes

    with tempfile.TemporaryDirectory() as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "u8s8.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
        model = onnx.load(str(prepared))
        quantize_static(str(prepared), str(quantized), _TensorReader(input_name, tensors),
                        quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=False,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=decode_tail_nodes(model),
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                                       "TensorQuantOverrides": overrides or {}})
        return onnx.load(str(quantized))


SHRINK_LOW = (1, .75, .5, .35, .25, .15, .1, .05, .02)  # of the observed minimum (<= 0)
SHRINK_HIGH = (1, .9, .8, .7, .6, .5)  # of the observed maximum (>= 0)


def mse_range(values: np.ndarray, after: Callable[[np.ndarray], np.ndarray] = lambda v: v,
              shrink_high: tuple[float, ...] = SHRINK_HIGH) -> tuple[float, float]:
    """The uint8 range, among shrunken min/max ranges (zero included), whose rounding errs least in mean
    square of ``after`` (e.g. the LeakyRelu the values go through next)."""
    low, high = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    reference = after(values)

    def error(lo: float, hi: float) -> float:
        scale = max((hi - lo) / 255, 1e-8)
        zero = np.round(-lo / scale)
        rounded = (np.clip(np.round(values / scale) + zero, 0, 255) - zero) * scale
        return float(np.mean((after(rounded) - reference) ** 2))
    return min(((low * a, high * b) for a in SHRINK_LOW for b in shrink_high), key=lambda r: error(*r))

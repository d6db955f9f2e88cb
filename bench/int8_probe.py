"""What the INT8 probe scripts (onnx_int8_recipes.py, openvino_int8.py) share: their arguments, the
calibration and held-out image sets, FP32 ONNX's outputs on the held-out images and the cosines
against them, and the heading of their tables."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np

from converters.calibration import CalibrationSet
from edge_runtime.backends import open_backend
from edge_runtime.compare import compare
from edge_runtime.deploy.hostinfo import cpu_summary
from edge_runtime.manifest import Manifest
from edge_runtime.versions import package_version


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

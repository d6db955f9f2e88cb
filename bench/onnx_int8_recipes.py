"""ONNX INT8 recipes against FP32 ONNX: speed timed interleaved in one process, cosine on held-out images.

    python bench/onnx_int8_recipes.py PKG --calib ../shared/fixtures/images/calib-coco-val2017 --calib-size 32

Each recipe is a set of ``converters.quantize_onnx`` options (the same code ``edge-runtime convert``
runs). Every round runs each model ``--per-round`` times in turn, on the same preprocessed image and
thread count, so a machine shared with other work slows all of them alike: only the ratios mean
something there, not the milliseconds. Cosine: per held-out image (calibration images left out), the
lowest cosine over the outputs against FP32, as ``convert``'s ``fp32_agreement``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from functools import partial
from pathlib import Path

import numpy as np

from converters.calibration import CalibrationSet
from converters.convert_job import ConvertJob
from converters.quantize_onnx import quantize_onnx_int8
from edge_runtime.backends import open_backend
from edge_runtime.compare import compare
from edge_runtime.deploy.hostinfo import cpu_summary
from edge_runtime.manifest import load_manifest
from edge_runtime.timing import time_calls
from edge_runtime.versions import package_version

# name -> (activation x weight types ONNX Runtime runs, converter options)
RECIPES: dict[str, tuple[str, dict]] = {
    "nncf": ("S8S8", {}),
    "ort-minmax": ("U8S8", {"onnx_quantizer": "ort", "calib_method": "minmax", "onnx_reduce_range": False}),
    "ort-minmax-reduce-range": ("U8S8, 7-bit weights", {"onnx_quantizer": "ort", "calib_method": "minmax"}),
    "ort-percentile-99.99": ("U8S8", {"onnx_quantizer": "ort", "calib_method": "percentile",
                                      "calib_percentile": 99.99, "onnx_reduce_range": False}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("package")
    ap.add_argument("--calib", required=True, help="calibration images; the rest of the folder is held out")
    ap.add_argument("--calib-size", type=int, default=32)
    ap.add_argument("--held-out", type=int, default=24)
    ap.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--per-round", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    manifest = load_manifest(args.package)
    fp32_art = manifest.artifact("onnx", "fp32")
    calibration = CalibrationSet(args.calib, manifest.input, args.calib_size, progress=False)
    held_out = CalibrationSet(args.calib, manifest.input, args.held_out, exclude=calibration.used, progress=False,
                              desc="held-out images")
    name, outputs = manifest.input.name, list(fp32_art.outputs)
    with tempfile.TemporaryDirectory() as tmp:
        models = {"fp32": manifest.artifact_path(fp32_art)}
        for recipe in args.recipes:
            stage = Path(tmp) / recipe
            stage.mkdir()
            print(f"  quantising: {recipe}")
            job = ConvertJob(manifest, models["fp32"], "int8", calibration, options=dict(RECIPES[recipe][1]),
                             stage=stage)
            models[recipe] = stage / quantize_onnx_int8(job).file
        sessions = {key: open_backend(path, "onnx", args.threads) for key, path in models.items()}

        def run(key: str, tensor: np.ndarray) -> list[np.ndarray]:
            result = sessions[key].run({name: tensor})
            return [result[o] for o in outputs]

        reference = [run("fp32", t) for t in held_out.tensors]
        cosines = {key: [compare(ref, run(key, t))["cosine"] for ref, t in zip(reference, held_out.tensors)]
                   for key in args.recipes}
        tensor = held_out.tensors[0]
        samples: dict[str, list[float]] = {key: [] for key in sessions}
        for key in sessions:  # warm-up
            time_calls(partial(run, key, tensor), 5, 0)
        for _ in range(args.rounds):
            for key in sessions:
                samples[key] += time_calls(partial(run, key, tensor), 0, args.per_round)
    medians = {key: float(np.median(values)) for key, values in samples.items()}
    host = cpu_summary()
    print(f"\n{manifest.name} {list(manifest.input.shape)}, {host['cpu']} ({' '.join(host['flags'])}), "
          f"onnxruntime {package_version('onnxruntime')}, nncf {package_version('nncf')}, {args.threads} threads, "
          f"{args.rounds} interleaved rounds x {args.per_round}, medians; cosine on {len(held_out)} held-out images "
          f"({args.calib_size} calibration)\n")
    print("| recipe | activations x weights | median ms | speed vs FP32 | cosine mean | cosine worst |")
    print("|---|---|---:|---:|---:|---:|")
    rows = []
    for key, ms in medians.items():
        kind = RECIPES[key][0] if key in RECIPES else "float"
        row = {"recipe": key, "types": kind, "median_ms": ms, "speed_vs_fp32": medians["fp32"] / ms,
               "cosine_mean": float(np.mean(cosines[key])) if key in cosines else 1.0,
               "cosine_worst": float(np.min(cosines[key])) if key in cosines else 1.0}
        rows.append(row)
        print(f"| {key} | {kind} | {ms:.2f} | {row['speed_vs_fp32']:.2f}x | {row['cosine_mean']:.4f} "
              f"| {row['cosine_worst']:.4f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"host": host, "threads": args.threads, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

"""ONNX INT8 recipes against FP32 ONNX: speed timed interleaved in one process, cosine on held-out images.

    python bench/onnx_int8_recipes.py PKG --calib ../shared/fixtures/images/calib-coco-val2017 --calib-size 32

Each recipe is a set of ``converters.quantize_onnx`` options (the same code ``edge-runtime convert``
runs). Every round runs each model ``--per-round`` times in turn (``interleaved_times``, the order
rotating), on the same preprocessed image and thread count, so a machine shared with other work slows
all of them alike: only the ratios mean
something there, not the milliseconds. Cosine: per held-out image (calibration images left out), the
lowest cosine over the outputs against FP32, as ``convert``'s ``fp32_agreement``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from int8_probe import fp32_cosines, heading, image_sets, probe_arguments  # bench/, beside this script

from converters.convert_job import ConvertJob
from converters.quantize_onnx import quantize_onnx_int8
from edge_runtime.backends import open_backend
from edge_runtime.deploy.hostinfo import cpu_summary
from edge_runtime.manifest import load_manifest
from edge_runtime.timing import interleaved_times

# name -> (activation x weight types ONNX Runtime runs, converter options)
RECIPES: dict[str, tuple[str, dict]] = {
    "nncf": ("S8S8", {}),
    "ort-minmax": ("U8S8", {"onnx_quantizer": "ort", "calib_method": "minmax", "onnx_reduce_range": False}),
    "ort-minmax-reduce-range": ("U8S8, 7-bit weights", {"onnx_quantizer": "ort", "calib_method": "minmax"}),
    "ort-percentile-99.99": ("U8S8", {"onnx_quantizer": "ort", "calib_method": "percentile",
                                      "calib_percentile": 99.99, "onnx_reduce_range": False}),
}


def main() -> None:
    ap = probe_arguments(__doc__, rounds=30, per_round=5)
    ap.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    args = ap.parse_args()

    manifest = load_manifest(args.package)
    calibration, held_out = image_sets(manifest, args)
    cosines_of = fp32_cosines(manifest, held_out, args.threads)
    name = manifest.input.name
    feed = {name: held_out.tensors[0]}
    with tempfile.TemporaryDirectory() as tmp:
        models = {"fp32": manifest.artifact_path(manifest.artifact("onnx", "fp32"))}
        for recipe in args.recipes:
            stage = Path(tmp) / recipe
            stage.mkdir()
            print(f"  quantising: {recipe}")
            job = ConvertJob(manifest, models["fp32"], "int8", calibration, options=dict(RECIPES[recipe][1]),
                             stage=stage)
            models[recipe] = stage / quantize_onnx_int8(job).file
        backends = {key: open_backend(path, "onnx", args.threads) for key, path in models.items()}
        cosines = {key: cosines_of(lambda t, b=backends[key]: b.run({name: t})) for key in args.recipes}
        samples = interleaved_times([b.timing_runner(feed) for b in backends.values()], args.rounds, args.per_round)
    medians = {key: float(np.median(s)) for key, s in zip(backends, samples)}
    print(f"\n{heading(manifest, args, 'onnxruntime', len(held_out))}\n")
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
        Path(args.json).write_text(json.dumps({"host": cpu_summary(), "threads": args.threads, "rows": rows},
                                              indent=2))


if __name__ == "__main__":
    main()

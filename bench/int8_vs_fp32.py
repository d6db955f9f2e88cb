"""Every backend's FP32 and INT8 in one run: speed against its own FP32, mAP drop, and ncnn as reference.

    python bench/int8_vs_fp32.py PKG --labels path/to/voc-indoor-85 --held-out path/to/samples \\
        --ncnn path/to/nanodet-plus-m_416.param,path/to/nanodet-plus-m_416_int8.param --json out.json

PKG is a package converted to every format (``edge-runtime convert``). Speed: every artifact and each
ncnn model in its own process, on the same preprocessed image and thread count (``edge-runtime bench``'s
machinery). Accuracy, when asked: ``--labels`` (a folder with ``ground-truth/`` and ``images/``, or
anything ``validate --data`` reads) gives each artifact's mAP and its drop against ONNX FP32 in mAP
points; ``--held-out`` (photos calibration never saw) gives each artifact's label-free mAP against
FP32's own detections (100 = the same detections). ``--ncnn`` takes one or two ncnn ``.param`` files
(FP32[,INT8], the ``.bin`` beside each; ncnn's Python package installed) as the reference rows, run by
the same ncnn backend as the package's own ncnn artifacts (``convert --to ncnn``), which are rows too.
Prints the CPU, its flags and the library versions, then a markdown table (docs/benchmarks.md's).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_runtime.backends import open_backend
from edge_runtime.bench import bench_package, recorded_accuracy, synthetic_image
from edge_runtime.deploy.hostinfo import detect_host, physical_cores
from edge_runtime.evaluation.labels import read_labels
from edge_runtime.evaluation.validate import EvaluationSet, drop_text, validate_package
from edge_runtime.manifest import load_manifest
from edge_runtime.preprocess import ImagePreprocessor
from edge_runtime.timing import summarize, time_calls
from edge_runtime.versions import package_version

LIBRARIES = ("onnxruntime", "openvino", "ai-edge-litert", "nncf", "onnx2tf", "ncnn")


def ncnn_latency(param: str, tensor: np.ndarray, threads: int, warmup: int, iters: int) -> dict:
    """The official ncnn files through the runtime's own ncnn backend (as the package's ncnn artifacts are
    timed): every output the .param produces is extracted."""
    backend = open_backend(Path(param), "ncnn", threads)
    feed = {backend.inputs[0].name: tensor}
    return summarize(time_calls(lambda: backend.run(feed), warmup, iters))


def accuracy(package: str, labels: str | None, held_out: str | None, threads: int, bootstrap: int = 0
             ) -> dict[tuple[str, str], dict]:
    """Per (format, precision): mAP and drop vs ONNX FP32 on ``labels`` (with a 90% interval from ``bootstrap``
    paired bootstrap samples of the photos), label-free mAP vs FP32 on ``held_out``."""
    found: dict[tuple[str, str], dict] = {}
    if labels:
        names = load_manifest(package).class_names
        data = EvaluationSet.from_labels(read_labels(Path(labels) / "ground-truth", Path(labels) / "images")
                                         if (Path(labels) / "ground-truth").is_dir() else read_labels(labels), names)
        report = validate_package(package, data, threads=threads, progress=True, bootstrap=bootstrap)
        for row in report["artifacts"]:
            found.setdefault((row["format"], row["precision"]), {}).update(
                map=row["map"], map_drop_points=row["map_drop_points"], map_drop_interval=row.get("map_drop_interval"))
    if held_out:
        report = validate_package(package, images=held_out, threads=threads, progress=True)
        for row in report["artifacts"]:
            found.setdefault((row["format"], row["precision"]), {})["held_out_map_vs_fp32"] = 100 * row["map"]
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("package")
    ap.add_argument("--labels", default=None, help="labelled photos: mAP and its drop vs ONNX FP32 per artifact")
    ap.add_argument("--held-out", default=None, help="photos calibration never saw: mAP vs FP32's detections")
    ap.add_argument("--ncnn", default=None, help="FP32[,INT8] ncnn .param files, the .bin beside each")
    ap.add_argument("--image", default=None, help="image to time on [the package's synthetic image]")
    ap.add_argument("--threads", type=int, default=physical_cores())
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--bootstrap", type=int, default=200,
                    help="paired bootstrap samples of the labelled photos for each mAP drop's 90%% interval "
                         "[200; 0: off]")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    report = bench_package(args.package, threads=args.threads, warmup=args.warmup, iters=args.iters, image=args.image,
                           progress=lambda m: print(f"  {m}"))
    manifest = load_manifest(args.package)
    image = cv2.imread(args.image) if args.image else synthetic_image(manifest.input.size_hw)
    tensor = ImagePreprocessor(manifest.input)(image)[0].copy()
    ncnn: dict[str, dict] = {}
    if args.ncnn:
        ctx = multiprocessing.get_context("spawn")
        for precision, param in zip(("fp32", "int8"), args.ncnn.split(",")):
            print(f"  benchmarking ncnn {precision} ({param})")
            with ctx.Pool(1) as pool:
                ncnn[precision] = pool.apply(ncnn_latency, (param, tensor, args.threads, args.warmup, args.iters))
    found = accuracy(args.package, args.labels, args.held_out, args.threads, args.bootstrap)

    rows: list[dict[str, Any]] = []
    by_key = {(r["format"], r["precision"]): r for r in report["results"]}
    for (fmt, precision), r in by_key.items():
        fp32, ms = by_key.get((fmt, "fp32")), r["latency_ms"]["median"]
        rows.append({"backend": fmt, "precision": precision, "median_ms": ms,
                     "vs_own_fp32": fp32["latency_ms"]["median"] / ms if fp32 else None,
                     "vs_ncnn_fp32": ncnn["fp32"]["median"] / ms if "fp32" in ncnn else None,
                     "cosine_vs_onnx_fp32": r["cosine_vs_baseline"],
                     "recorded": recorded_accuracy(manifest.artifact(fmt, precision).extra),
                     **found.get((fmt, precision), {})})
    for precision, stats in ncnn.items():
        rows.append({"backend": "ncnn (reference)", "precision": precision, "median_ms": stats["median"],
                     "vs_own_fp32": ncnn["fp32"]["median"] / stats["median"],
                     "vs_ncnn_fp32": ncnn["fp32"]["median"] / stats["median"]})
    host = detect_host()
    versions = {lib: package_version(lib) for lib in LIBRARIES if package_version(lib)}
    print(f"\n{manifest.name} {list(manifest.input.shape)}, {host.cpu} ({host.arch}; {' '.join(host.flags)}; "
          f"target {host.suggested_target}), "
          f"{args.threads} threads, median of {args.iters} runs, one process per model")
    print(", ".join(f"{k} {v}" for k, v in versions.items()) + "\n")
    headers = ["backend", "precision", "median ms", "speed vs its FP32", "speed vs ncnn FP32", "cosine vs ONNX FP32"]
    drop_header = "mAP drop (pts)" + (" (90% bootstrap interval)" if args.bootstrap else "")
    headers += ["mAP", drop_header] if args.labels else []
    headers += ["held-out mAP vs FP32"] if args.held_out else []
    print("| " + " | ".join(headers) + " |")
    print("|---|---|" + "---:|" * (len(headers) - 2))

    def cell(value: Any, form: str, unit: str = "") -> str:
        return "-" if value is None else format(value, form) + unit

    for row in rows:
        cells = [row["backend"], row["precision"], f"{row['median_ms']:.2f}", cell(row["vs_own_fp32"], ".2f", "x"),
                 cell(row["vs_ncnn_fp32"], ".2f", "x"),
                 cell(row.get("cosine_vs_onnx_fp32"), ".4f")]
        cells += [cell(row.get("map"), ".4f"), drop_text(row.get("map_drop_points"), row.get("map_drop_interval"))
                  ] if args.labels else []
        cells += [cell(row.get("held_out_map_vs_fp32"), ".1f")] if args.held_out else []
        print("| " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"host": host.to_dict(), "versions": versions, "threads": args.threads,
                                               "rows": rows, "bench": report}, indent=2))


if __name__ == "__main__":
    main()

"""INT8 vs FP32 per backend, and each against ncnn's Python package on the same model.

    python bench/int8_vs_fp32.py PKG --ncnn-dir ../shared/fixtures/weights/nanodet-plus-m --json out.json

PKG is a NanoDet-Plus-m 416 package converted to every format (``edge-runtime convert``); the
ncnn folder holds the official ``nanodet-plus-m_416{,_int8}.{param,bin}``. Every artifact and each
ncnn model runs in its own process, on the same preprocessed image, with the same thread count.
Prints a markdown table (the README's) and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
from pathlib import Path

import cv2
import numpy as np

from edge_runtime.bench import bench_package, synthetic_image
from edge_runtime.deploy.hostinfo import cpu_summary, physical_cores
from edge_runtime.manifest import load_manifest
from edge_runtime.preprocess import ImagePreprocessor
from edge_runtime.timing import summarize, time_calls

NCNN_OUTPUTS = [f"{kind}{s}" for s in (8, 16, 32, 64) for kind in ("cls", "dis")]


def ncnn_latency(param: str, weights: str, tensor: np.ndarray, threads: int, warmup: int, iters: int) -> dict:
    import ncnn

    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    net.load_param(param)
    net.load_model(weights)
    data = np.ascontiguousarray(tensor[0])
    mat = ncnn.Mat(data)  # keep the numpy buffer and the Mat alive for the whole run

    def run() -> None:
        ex = net.create_extractor()
        ex.input("data", mat)
        for name in NCNN_OUTPUTS:
            ex.extract(name)

    return summarize(time_calls(run, warmup, iters))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("package")
    ap.add_argument("--ncnn-dir", required=True, help="folder with nanodet-plus-m_416{,_int8}.{param,bin}")
    ap.add_argument("--image", default=None, help="image to run on [the package's synthetic image]")
    ap.add_argument("--threads", type=int, default=physical_cores())
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    report = bench_package(args.package, threads=args.threads, warmup=args.warmup, iters=args.iters, image=args.image,
                           progress=lambda m: print(f"  {m}"))
    manifest = load_manifest(args.package)
    image = cv2.imread(args.image) if args.image else synthetic_image(manifest.input.size_hw)
    tensor = ImagePreprocessor(manifest.input)(image)[0].copy()
    ncnn_dir = Path(args.ncnn_dir)
    ctx = multiprocessing.get_context("spawn")
    ncnn = {}
    for precision, stem in (("fp32", "nanodet-plus-m_416"), ("int8", "nanodet-plus-m_416_int8")):
        print(f"  benchmarking ncnn {precision}")
        with ctx.Pool(1) as pool:
            ncnn[precision] = pool.apply(ncnn_latency, (str(ncnn_dir / f"{stem}.param"), str(ncnn_dir / f"{stem}.bin"),
                                                        tensor, args.threads, args.warmup, args.iters))
    rows = []
    by_key = {(r["format"], r["precision"]): r for r in report["results"]}
    for (fmt, precision), r in by_key.items():
        fp32 = by_key.get((fmt, "fp32"))
        ref = ncnn.get(precision if precision != "fp16" else "fp32")
        rows.append({"backend": fmt, "precision": precision, "median_ms": r["latency_ms"]["median"],
                     "vs_same_backend_fp32": fp32["latency_ms"]["median"] / r["latency_ms"]["median"] if fp32 else None,
                     "vs_ncnn": ref["median"] / r["latency_ms"]["median"], "cosine_vs_onnx_fp32": r["cosine_vs_baseline"]})
    for precision, stats in ncnn.items():
        rows.append({"backend": "ncnn (reference)", "precision": precision, "median_ms": stats["median"],
                     "vs_same_backend_fp32": ncnn["fp32"]["median"] / stats["median"], "vs_ncnn": 1.0,
                     "cosine_vs_onnx_fp32": None})
    host = cpu_summary()
    print(f"\n{manifest.name} {list(manifest.input.shape)}, {host['cpu']} ({' '.join(host['flags'])}), "
          f"{args.threads} threads, median of {args.iters} runs, one process per model\n")
    print("| backend | precision | median ms | speed vs same backend FP32 | speed vs ncnn (same precision) | cosine vs ONNX FP32 |")
    print("|---|---|---:|---:|---:|---:|")
    for row in rows:
        ratio = f"{row['vs_same_backend_fp32']:.2f}x" if row["vs_same_backend_fp32"] else "-"
        cosine = f"{row['cosine_vs_onnx_fp32']:.4f}" if row["cosine_vs_onnx_fp32"] is not None else "-"
        print(f"| {row['backend']} | {row['precision']} | {row['median_ms']:.2f} | {ratio} | {row['vs_ncnn']:.2f}x | {cosine} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"host": host, "threads": args.threads, "rows": rows,
                                               "bench": report}, indent=2))


if __name__ == "__main__":
    main()

"""``profile``: params, MACs and memory per layer (host), per-layer latency of a package."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from ..backends import ALL_PRECISIONS, BACKENDS
from ..errors import EdgeRuntimeError, UsageError
from .common import add_command, add_json_option, add_threads_option, write_json

log = logging.getLogger("edge_runtime")


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "profile", cmd_profile,
        help="params, MACs/FLOPs, activation memory per layer; per-layer latency of a package",
        description="Static profile, counted on the exported ONNX graph (host: needs torch for --model, onnx for a "
                    "package): params, MACs and FLOPs (2 x MACs, convolutions and matrix products, as published "
                    "figures count), activation bytes written and peak live, estimated memory traffic, per layer "
                    "and per top-level module. Given a package, also each layer's mean time from the backend's "
                    "own profiler (ONNX Runtime, OpenVINO), against the end-to-end time of the same runs.",
        examples=["edge-runtime profile --model nanodet-plus-m --weights nanodet-plus-m_coco.ckpt --imgsz 416",
                  "edge-runtime profile --model yolo-fastestv2 --imgsz 352 --json prof.json   # random init",
                  "edge-runtime profile pkg/ --backend openvino --runs 50 --top 15"])
    p.add_argument("package", nargs="?", default=None, help="package folder: static table of its model.onnx plus "
                                                           "per-layer latency (omit with --model)")
    p.add_argument("--model", default=None, help="model to build and profile instead of a package: {MODELS}")
    p.add_argument("--weights", default=None, help="checkpoint for --model [bundled weights, else random init: "
                                                  "the counts depend on shapes only]")
    p.add_argument("--imgsz", type=int, default=None, help="square input size for --model [model default]")
    p.add_argument("--backend", default="onnx", choices=list(BACKENDS),
                   help="whose profiler times the package's layers (TFLite has none in Python) [onnx]")
    p.add_argument("--precision", default=None, choices=ALL_PRECISIONS,
                   help="artifact precision to time [the first of --backend]")
    p.add_argument("--runs", type=int, default=20, help="timed runs for per-layer latency [20]")
    add_threads_option(p)
    p.add_argument("--top", type=int, default=20, help="rows per table, largest first; 0 = all [20]")
    add_json_option(p, "the profile(s)")


def cmd_profile(args: argparse.Namespace) -> int:
    if (args.package is None) == (args.model is None):
        raise UsageError("profile takes a package folder or --model NAME (one of them)")
    result: dict[str, Any] = {}
    macs_by_node = None
    try:
        from converters.profile import format_profile_table, profile_model, profile_onnx
    except ImportError as exc:  # a device install: no onnx / torch
        if args.model:
            raise EdgeRuntimeError(f"profile --model needs the host tool chain ({exc.name} is missing): "
                                   f"pip install 'edge-runtime[convert]'") from None
        log.warning("static profile skipped: it reads the ONNX graph with onnx (%s is missing)", exc.name)
    else:
        if args.model:
            static = profile_model(args.model, args.weights, args.imgsz)
        else:
            from ..manifest import load_manifest

            manifest = load_manifest(args.package)
            static = profile_onnx(manifest.artifact_path(manifest.artifact("onnx", "fp32")))
        print(format_profile_table(static, args.top or None))
        result["static"] = static.to_dict()
        macs_by_node = {layer.name: layer.macs for layer in static.layers}
    if args.package:
        from ..backends.layer_latency import format_latency_table, profile_latency

        latency = profile_latency(args.package, args.backend, args.precision, runs=args.runs, threads=args.threads)
        print()
        print(format_latency_table(latency, args.top or None, macs_by_node))
        result["latency"] = latency.to_dict(macs_by_node)
    if args.json:
        write_json(args.json, result)
    return 0

"""``edge-runtime``: export a checkpoint to a package, run it on images/video/camera, benchmark it.

Host-only commands (export) import ``converters`` lazily, so a device without torch runs
``run``, ``bench`` and ``info`` with the device-side install alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .errors import EdgeRuntimeError
from .manifest import RESIZE_MODES
from .urls import redact_url

log = logging.getLogger("edge_runtime")

EXAMPLES = """examples:
  edge-runtime export --model nanodet-plus-m --weights nanodet-plus-m_coco.ckpt --imgsz 416 --out pkg/
  edge-runtime run pkg/ --source street.jpg --save out/ --json out/dets.jsonl
  edge-runtime run pkg/ --source video.avi --save out/      # annotated video + FPS summary
  edge-runtime run pkg/ --source 0                           # webcam window with FPS overlay
  edge-runtime run pkg/ --source 0 --serve 8080              # headless: live view at http://127.0.0.1:8080/
  edge-runtime export --model nanodet-plus-m --weights official --out pkg/   # download the official checkpoint
  edge-runtime bench pkg/ --json bench.json
  edge-runtime validate pkg/ --data coco.json --images val/  # mAP of every artifact on this device
  edge-runtime profile --model nanodet-plus-m --imgsz 320    # params, MACs, memory per layer
  edge-runtime compress --model demo-shapes --prune 0.3 --data demo --steps 200 --out small.ckpt
  edge-runtime import detect.tflite --family ssd --classes labelmap.txt -o ssdpkg/
"""


def _add_runtime_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("package", help="package folder (holds manifest.json and the model artifacts)")
    p.add_argument("--backend", default="auto",
                   help="artifact format to run: onnx, openvino, tflite, or auto (the fastest this host can run, "
                        "measured once and cached in the package) [auto]")
    p.add_argument("--precision", default=None, help="artifact precision to run: fp32, fp16, int8 [any]")
    p.add_argument("--threads", type=int, default=None, help="inference threads [physical cores]")
    p.add_argument("--device", default=None,
                   help="OpenVINO device (CPU, GPU, NPU, AUTO) or ONNX Runtime execution provider; falls back to "
                        "CPU with a warning when unavailable [CPU]")
    p.add_argument("--delegate", default=None, metavar="LIB",
                   help="TFLite external delegate library (e.g. libedgetpu.so.1); CPU fallback with a warning")
    p.add_argument("--target", default=None,
                   help="target profile (name from 'edge-runtime targets', or a .toml path): sets threads and "
                        "the backend/precision order unless given explicitly")


def _runnable_target(name: str) -> Any:
    """The target profile ``name`` (a name or a .toml path); one marked future is a one-line error."""
    from .deploy.targets import load_target

    target = load_target(name)
    target.require_runnable()
    return target


def _runtime_choice(args: argparse.Namespace) -> tuple[str, str | None, int | None, dict[str, Any]]:
    """(backend, precision, threads, backend options) from the flags, filled in from --target where
    not given; --device / --delegate override the profile's delegate, execution provider or device."""
    flags = {k: v for k, v in (("device", args.device), ("delegate", args.delegate)) if v}
    if not args.target:
        return args.backend, args.precision, args.threads, flags
    from .manifest import load_manifest

    target, artifacts = _runnable_target(args.target), load_manifest(args.package).artifacts
    backend = args.backend if args.backend != "auto" else next(
        (b for b in target.backends if any(a.format == b for a in artifacts)), "auto")
    precision = args.precision or next(
        (p for p in target.precisions if any(a.precision == p and backend in ("auto", a.format) for a in artifacts)),
        None)
    options = target.backend_options(backend) if backend != "auto" else {}
    return backend, precision, args.threads or target.threads, {**options, **flags}


def _report_float_ops(detector: Any) -> None:
    """A delegate that runs only integer ops (Edge TPU, NXP VX) hands every float op back to the CPU."""
    if detector.artifact.format != "tflite" or not detector.backend.options.get("delegate"):
        return
    from .backends.tflite_ops import tflite_op_report

    report = tflite_op_report(detector.manifest.artifact_path(detector.artifact))
    if not (report.full_integer and report.integer_io):
        log.warning("%s (a full-integer delegate runs the rest on the CPU)", report.describe())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-runtime", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="Convert lightweight detectors (NanoDet-Plus, YOLO-FastestV2) into deployment packages "
                    "and run them in real time on edge devices.")
    parser.add_argument("--version", action="version", version=f"edge-runtime {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more (and show tracebacks)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("export", help="checkpoint -> package folder with FP32 ONNX + manifest.json (host: needs torch)",
                       description="Load an official checkpoint strictly (weights only, no pickled code), export "
                                   "a simplified FP32 ONNX graph, check it against torch and write manifest.json.")
    p.add_argument("--model", required=True, help="nanodet-plus-m, nanodet-plus-m-1.5x, nanodet-m, yolo-fastestv2, demo-shapes, yolo-fastest-1.1, yolo-fastest-1.1-xl (darknet .weights with the same-stem .cfg beside it)")
    p.add_argument("--weights", default=None,
                   help="[the bundled file for demo-shapes] .ckpt (NanoDet) or .pth (state_dict) checkpoint; 'official' downloads the model's official "
                        "COCO checkpoint for --imgsz (cached, sha256-checked), 'official:NAME' a named one "
                        "(see 'edge-runtime fetch --list')")
    p.add_argument("--imgsz", type=int, default=None, help="square input size [model default: 416/320/352]")
    p.add_argument("--out", required=True, help="package folder to write (new or empty, else --force)")
    p.add_argument("--force", action="store_true", help="write into a --out folder that already holds files")
    p.add_argument("--classes", default=None,
                   help="class names: .txt (one per line) or NanoDet .yml [COCO names for 80-class models]")
    p.add_argument("--resize", default=None, choices=RESIZE_MODES,
                   help="preprocessing resize mode [as the model's official config]")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 13) [17]")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxslim")

    p = sub.add_parser("import", help="wrap a detector exported elsewhere (.onnx / .tflite) in a package",
                       description="Write a package around an existing ONNX or TFLite detector after checking its "
                                   "input and output shapes against the family's layout, so run, bench and validate "
                                   "work on it. Families: yolox (raw grid outputs), yolov5 (decoded, objectness), "
                                   "yolov8 (decoded, no objectness, (1, 4+C, N)), nanodet-plus (the official "
                                   "single-output export), ssd (TF Object Detection API with its post-processing in "
                                   "the graph, e.g. detect.tflite: boxes, classes, scores, count). Runs on the device "
                                   "install: no torch, no onnx.")
    p.add_argument("model", help=".onnx or .tflite file")
    p.add_argument("--family", required=True, choices=["yolox", "yolov5", "yolov8", "nanodet-plus", "ssd"],
                   help="output layout of the model")
    p.add_argument("--classes", default="coco",
                   help="'coco' (the 80 COCO names; for ssd the 90 COCO category-id slots) or a .txt with one name "
                        "per line, a leading '???' / background line dropped [coco]")
    p.add_argument("-o", "--out", required=True, help="package folder to write (new or empty)")
    p.add_argument("--imgsz", type=int, default=None, help="input size when the model's input is dynamic")
    p.add_argument("--color", default=None, choices=["BGR", "RGB"], help="input colour order [the family's]")
    p.add_argument("--mean", type=float, nargs=3, default=None, help="per-channel mean [the family's]")
    p.add_argument("--std", type=float, nargs=3, default=None, help="per-channel std [the family's]")
    p.add_argument("--resize", default=None, choices=RESIZE_MODES,
                   help="resize mode [the family's: 'letterbox' (centred, grey 114) for yolov5/yolov8, "
                        "'letterbox_top_left' for yolox, 'warp_affine' for nanodet-plus]")
    p.add_argument("--strides", type=int, nargs="+", default=None, help="output strides [the family's]")
    p.add_argument("--conf", type=float, default=None, help="score threshold to store [the family's]")
    p.add_argument("--iou", type=float, default=None, help="NMS IoU threshold to store [the family's]")

    p = sub.add_parser("convert", help="add ONNX INT8, OpenVINO and TFLite artifacts to a package (host)",
                       description="Convert the package's FP32 ONNX into more formats and precisions. Every new "
                                   "artifact is run by the device-side backend and compared with FP32 ONNX; only one "
                                   "that passes its check (FP32/FP16: worst-image cosine >= 0.999; INT8: its budget "
                                   "when given, else mean cosine >= 0.90 and worst >= 0.50) is written into the "
                                   "package and manifest.json. A refused artifact is one error line and exit status "
                                   "1; the others are still written.")
    p.add_argument("package", help="package folder made by 'edge-runtime export'")
    p.add_argument("--to", default=None, help="formats, comma-separated [onnx,openvino,tflite; --target: its backends]")
    p.add_argument("--precision", default=None,
                   help="precisions, comma-separated [fp32,fp16,int8; --target: its precisions]")
    p.add_argument("--target", default=None,
                   help="target profile: convert exactly what it runs (its backends x precisions, its TFLite I/O "
                        "type for full-integer delegates)")
    p.add_argument("--calib", default=None,
                   help="INT8 calibration data: a folder of images, a video (every k-th frame) or a COCO json")
    p.add_argument("--calib-size", type=int, default=100, help="calibration images [100]")
    p.add_argument("--int8-min-cosine", type=float, default=None, metavar="C",
                   help="accuracy-aware INT8 (ONNX, OpenVINO, TFLite): keep the most sensitive layers in float until the "
                        "mean per-image output cosine with FP32 on held-out images reaches C (e.g. 0.99)")
    p.add_argument("--val-images", default=None, metavar="DIR",
                   help="held-out images to check every artifact on [images of --calib not used to calibrate]")
    p.add_argument("--val-size", type=int, default=24, help="held-out images to use [24]")
    p.add_argument("--max-map-drop", type=float, default=None, metavar="POINTS",
                   help="accuracy-aware INT8 against labels: keep the most sensitive layers in float until the COCO "
                        "mAP on --val-data/--val-images is at most POINTS below FP32's (e.g. 0.5)")
    p.add_argument("--val-data", default=None, metavar="LABELS",
                   help="labels for --max-map-drop: COCO json or a folder of YOLO/VOC/txt labels (as validate --data)")
    p.add_argument("--val-format", default="auto", choices=["auto", "coco", "yolo", "voc", "txt"],
                   help="format of --val-data [auto]")
    p.add_argument("--class-map", default=None, metavar="JSON", help="label class -> model class names (as validate)")
    p.add_argument("--calib-method", default="minmax", choices=["minmax", "entropy", "percentile"],
                   help="calibration method of the 'ort' ONNX quantiser [minmax]")
    p.add_argument("--onnx-quantizer", default="nncf", choices=["nncf", "ort"],
                   help="ONNX INT8 by NNCF (bias correction, more accurate) or ONNX Runtime's quantize_static [nncf]")
    p.add_argument("--ov-preset", default="mixed", choices=["mixed", "performance"],
                   help="NNCF preset for OpenVINO INT8 [mixed]")
    p.add_argument("--tflite-io", default=None, choices=["float32", "int8", "uint8"],
                   help="TFLite INT8 input/output tensor type (int8/uint8 for NPU delegates) [float32; --target: "
                        "its tflite_io]")
    p.add_argument("--keep-failed", action="store_true",
                   help="keep an artifact that fails its check on disk for debugging, listed as failed in the "
                        "manifest (auto, demo, bench and package never choose it)")

    p = sub.add_parser("run", help="detect on an image, folder, video, camera index or RTSP/HTTP URL",
                       description="Run a package on a source; print a per-stage timing table at the end.")
    _add_runtime_options(p)
    p.add_argument("--source", required=True, help="image, folder, video file, camera index (0) or rtsp/http URL")
    p.add_argument("--save", default=None, metavar="DIR",
                   help="write annotated images (or an annotated video for video/camera sources) here")
    p.add_argument("--json", default=None, metavar="FILE",
                   help="write detections as JSON lines: one object per frame, written as each frame is done")
    p.add_argument("--show", choices=["auto", "yes", "no"], default="auto",
                   help="display window: auto = for video/camera when a display exists [auto]")
    p.add_argument("--conf", type=float, default=None, help="score threshold [manifest's]")
    p.add_argument("--iou", type=float, default=None, help="NMS IoU threshold [manifest's]")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--summary-json", default=None, metavar="FILE",
                   help="write the timing summary as JSON at the end (also after Ctrl-C / SIGTERM)")
    p.add_argument("--reconnect-tries", type=int, default=None, metavar="N",
                   help="camera/stream: reopen a lost source at most N times in a row, then exit with an error "
                        "(status 2) [no limit]")
    p.add_argument("--reconnect-backoff", default=None, metavar="FIRST[:MAX]",
                   help="seconds before the first reopen, doubled each time up to MAX [0.5:30]")
    p.add_argument("--max-fps", type=float, default=None, metavar="N",
                   help="read at most N frames a second (live sources drop the frames in between) [no limit]")
    p.add_argument("--pipeline", choices=["threaded", "sequential"], default="threaded",
                   help="threaded: read/preprocess, inference and drawing overlap; sequential: one after the "
                        "other [threaded]")
    p.add_argument("--serve", default=None, metavar="[HOST:]PORT",
                   help="live web view of the annotated stream and statistics; PORT alone binds 127.0.0.1, "
                        "other interfaces must be named (0.0.0.0:8080)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="with --serve: also accept requests for this host name (IP addresses and localhost always "
                        "work; other names are refused against DNS rebinding); repeatable")
    p.add_argument("--token", default=os.environ.get("EDGE_RUNTIME_SERVE_TOKEN"),
                   help="with --serve: require ?token=TOKEN or 'Authorization: Bearer TOKEN' on every request "
                        "[$EDGE_RUNTIME_SERVE_TOKEN]")

    p = sub.add_parser("fetch", help="download official pretrained weights into the cache (host)",
                       description="Download official checkpoints (sha256-verified, cached in $EDGE_RUNTIME_CACHE or "
                                   "~/.cache/edge-runtime) and print their paths.")
    p.add_argument("names", nargs="*", help="names from --list")
    p.add_argument("--list", action="store_true", help="list the registered official weights")

    p = sub.add_parser("bench", help="latency table of every artifact in a package",
                       description="Measure each artifact (warm-up, then timed runs): median/p90 latency, FPS, "
                                   "end-to-end time with pre/post-processing, and speed relative to FP32. An "
                                   "artifact whose worker process crashes gets one error line, the others are "
                                   "still measured (exit status 2).")
    p.add_argument("package", help="package folder")
    p.add_argument("--threads", type=int, default=None, help="inference threads [physical cores]")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs first [5]")
    p.add_argument("--iters", type=int, default=50, help="timed runs [50]")
    p.add_argument("--image", default=None, help="image for the timings and the cosine column [a synthetic one]")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    p.add_argument("--no-isolate", action="store_true",
                   help="measure every artifact in this process (faster start, less fair between runtimes)")
    p.add_argument("--target", default=None,
                   help="target profile: its delegate / execution provider / device, and a roofline line per "
                        "artifact (GFLOP/s reached vs the profile's peak)")

    p = sub.add_parser(
        "validate", help="accuracy on this device: mAP of every artifact against labels, or agreement with FP32",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run every artifact of the package (or --backend/--precision) on labelled images and report COCO "
                    "mAP@[.5:.95], AP50, AP small/medium/large, the drop against the FP32 artifact and latency.\n"
                    "Label classes are matched to the model's by name (built-in COCO<->VOC aliases such as "
                    "tvmonitor/tv, --class-map for others); classes the model does not have are reported and left "
                    "out. Without --data, the FP32 artifact's detections (score >= --pseudo-threshold) are the "
                    "ground truth and each output's cosine against FP32 is added.",
        epilog="examples:\n"
               "  edge-runtime validate pkg/ --data coco.json --images val/\n"
               "  edge-runtime validate pkg/ --data labels/ --images val/ --format yolo --names classes.txt\n"
               "  edge-runtime validate pkg/ --images val/ --reference fp32          # no labels\n"
               "  edge-runtime validate pkg/ --data gt/ --images val/ --per-class --json val.json --plot val.png")
    p.add_argument("package", help="package folder")
    p.add_argument("--data", default=None,
                   help="labels: COCO json, or a folder of YOLO txt / Pascal VOC xml / '<class> l t r b' txt files")
    p.add_argument("--images", default=None, help="image folder [COCO: the json's folder; VOC: ../JPEGImages]")
    p.add_argument("--format", default="auto", choices=["auto", "coco", "yolo", "voc", "txt"],
                   help="label format [auto: from the files]")
    p.add_argument("--names", default=None, help="YOLO class names file (one per line) [classes.txt / *.names / data.yaml]")
    p.add_argument("--class-map", default=None, metavar="JSON",
                   help='{"label class": "model class" or null} for names the built-in aliases do not cover')
    p.add_argument("--backend", default="all", help="artifact format to validate: onnx, openvino, tflite or all [all]")
    p.add_argument("--precision", default=None, help="artifact precision to validate: fp32, fp16, int8 [all]")
    p.add_argument("--threads", type=int, default=None, help="inference threads [physical cores]")
    p.add_argument("--reference", default="fp32",
                   help="the artifact drops are measured against (label-free: the ground truth): fp32 (FP32 ONNX, "
                        "else the first FP32 artifact) or FORMAT:PRECISION [fp32]")
    p.add_argument("--pseudo-threshold", type=float, default=0.3,
                   help="label-free: reference detections scoring at least this are the ground truth [0.3]")
    p.add_argument("--conf", type=float, default=0.001, help="score threshold for evaluation [0.001]")
    p.add_argument("--iou", type=float, default=None, help="NMS IoU threshold [manifest's]")
    p.add_argument("--max-dets", type=int, default=100, help="detections kept per image [100]")
    p.add_argument("--engine", default=None, choices=["faster-coco-eval", "pycocotools"],
                   help="COCO evaluator [faster-coco-eval when installed, else pycocotools]")
    p.add_argument("--per-class", action="store_true", help="add a per-class AP table")
    p.add_argument("--json", default=None, metavar="FILE", help="write the whole report as JSON")
    p.add_argument("--plot", default=None, metavar="PNG", help="write a chart: mAP per artifact and PR curves at IoU 0.5")

    p = sub.add_parser("targets", help="list the target profiles (targets/*.toml), or describe this host",
                       description="Target profiles are TOML files (targets/, ~/.config/edge-runtime/targets/): "
                                   "threads, backend and precision order, delegate / execution provider / OpenVINO "
                                   "device, peak GFLOP/s. --detect reads this host's CPU features, board and "
                                   "accelerator libraries and suggests a profile.")
    p.add_argument("--detect", action="store_true", help="describe this host and suggest a target profile")
    p.add_argument("--json", action="store_true", help="print as JSON")

    p = sub.add_parser("package", help="self-contained bundle for a target: its artifacts, the edge-runtime wheel, "
                                       "pinned device requirements, install.sh/run.sh, SHA256SUMS",
                       description="Write a .tar.gz holding what the target runs: the package with only the "
                                   "artifacts the target's profile uses, the edge-runtime wheel, "
                                   "requirements-<target>.txt (device side only, pinned), install.sh and run.sh "
                                   "(both verify SHA256SUMS first). For full-integer targets (a TFLite delegate) "
                                   "any float op in the .tflite is reported.")
    p.add_argument("package", help="package folder")
    p.add_argument("--target", required=True, help="target profile name or .toml path")
    p.add_argument("-o", "--out", required=True, help="bundle to write (.tar.gz)")
    p.add_argument("--wheel-dir", default=None, help="take the edge-runtime wheel from here [build it]")

    p = sub.add_parser("deploy", help="copy a bundle to a device over ssh, install it in a venv there, smoke-run it",
                       description="scp the bundle, untar, run install.sh (venv + pinned device requirements) and "
                                   "run.sh (checksums, then a short bench) on the device; prints FPS per artifact.")
    p.add_argument("bundle", help="bundle made by 'edge-runtime package'")
    p.add_argument("--host", required=True, help="user@host")
    p.add_argument("--port", type=int, default=22, help="ssh port [22]")
    p.add_argument("--identity", default=None, help="ssh private key [ssh's default]")
    p.add_argument("--remote-dir", default="edge-runtime", help="folder on the device [~/edge-runtime]")
    p.add_argument("-o", dest="ssh_options", action="append", default=[], metavar="KEY=VALUE",
                   help="extra ssh option, repeatable (e.g. -o StrictHostKeyChecking=accept-new)")
    p.add_argument("--smoke-iters", type=int, default=10, help="timed runs per artifact in the smoke bench [10]")
    p.add_argument("--remote-python", default="python3", help="Python on the device [python3]")
    p.add_argument("--pip-index-url", default=None, help="package index for the device's pip (a local mirror)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the result as JSON")

    p = sub.add_parser("demo", help="offline demo: the bundled shapes detector on a generated clip, FPS per backend",
                       description="Build the bundled demo-shapes package (FP32 + INT8 ONNX; OpenVINO and TFLite when "
                                   "installed), generate a 10 s clip, run it through every artifact, print the FPS "
                                   "table and write an annotated video with the fastest. No download, no fixtures.")
    p.add_argument("--out", default="demo_out", help="folder for the package, clip and annotated video; a package "
                                                    "already there is reused [demo_out]")
    p.add_argument("--source", default=None,
                   help="camera index (0), video or stream instead of the generated clip (a window shows the result "
                        "when a display exists)")
    p.add_argument("--to", default="onnx,openvino,tflite",
                   help="formats to build and time, where their tools are installed [onnx,openvino,tflite]")
    p.add_argument("--precision", default="fp32,int8", help="precisions, comma-separated [fp32,int8]")
    p.add_argument("--frames", type=int, default=None,
                   help="frames per timed run [the whole clip or video; 150 for a camera or stream]")
    p.add_argument("--threads", type=int, default=None, help="inference threads [physical cores]")
    p.add_argument("--show", choices=["auto", "yes", "no"], default="auto",
                   help="window for the annotated run: auto = for a camera or stream when a display exists [auto]")

    p = sub.add_parser(
        "profile", help="params, MACs/FLOPs, activation memory per layer; per-layer latency of a package",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Static profile, counted on the exported ONNX graph (host: needs torch for --model, onnx for a "
                    "package): params, MACs and FLOPs (2 x MACs, convolutions and matrix products, as published "
                    "figures count), activation bytes written and peak live, estimated memory traffic, per layer "
                    "and per top-level module. Given a package, also each layer's mean time from the backend's "
                    "own profiler (ONNX Runtime, OpenVINO), against the end-to-end time of the same runs.",
        epilog="examples:\n"
               "  edge-runtime profile --model nanodet-plus-m --weights nanodet-plus-m_coco.ckpt --imgsz 416\n"
               "  edge-runtime profile --model yolo-fastestv2 --imgsz 352 --json prof.json   # random init\n"
               "  edge-runtime profile pkg/ --backend openvino --runs 50 --top 15")
    p.add_argument("package", nargs="?", default=None, help="package folder: static table of its model.onnx plus "
                                                           "per-layer latency (omit with --model)")
    p.add_argument("--model", default=None, help="model name to build and profile instead of a package")
    p.add_argument("--weights", default=None, help="checkpoint for --model [bundled weights, else random init: "
                                                  "the counts depend on shapes only]")
    p.add_argument("--imgsz", type=int, default=None, help="square input size for --model [model default]")
    p.add_argument("--backend", default="onnx", choices=["onnx", "openvino", "tflite"],
                   help="whose profiler times the package's layers (TFLite has none in Python) [onnx]")
    p.add_argument("--precision", default=None, help="artifact precision to time [the first of --backend]")
    p.add_argument("--runs", type=int, default=20, help="timed runs for per-layer latency [20]")
    p.add_argument("--threads", type=int, default=None, help="inference threads [physical cores]")
    p.add_argument("--top", type=int, default=20, help="rows per table, largest first; 0 = all [20]")
    p.add_argument("--json", default=None, metavar="FILE", help="write the profile(s) as JSON")

    p = sub.add_parser(
        "compress", help="prune, factorise, distil, QAT-fine-tune a torch model -> compressed checkpoint (host)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compression before export, in this order: structured channel pruning (torch-pruning's "
                    "dependency graph: l1, group or taylor importance), low-rank factorisation (SVD of 1x1 convs, "
                    "Tucker-2 of dense 3x3; a layer is factorised only where it measured faster on the backends "
                    "given), fine-tuning (the family's task loss where the project has one, YOLO-FastestV2; plus "
                    "or, for NanoDet, only distillation from the uncompressed model or --teacher), quantization-"
                    "aware fine-tuning, unstructured magnitude sparsity (smaller compressed files only: dense "
                    "backends run zeros as fast as any weight). The output is a checkpoint that 'export' loads "
                    "like any other (its pruned shapes and factorisations are rebuilt from it).",
        epilog="examples:\n"
               "  edge-runtime compress --model demo-shapes --prune 0.3 --method group --data demo --steps 600 "
               "--distill --out small.ckpt\n"
               "  edge-runtime compress --model nanodet-plus-m --weights ckpt --prune 0.3 --distill --data train/ "
               "--epochs 5 --out small.ckpt\n"
               "  edge-runtime compress --model demo-shapes --low-rank 0.5 --low-rank-backends onnx,openvino "
               "--out lr.ckpt\n"
               "  edge-runtime compress --model demo-shapes --qat --calib calib/ --data demo --out q.ckpt "
               "--package qpkg/   # + INT8 ONNX\n"
               "  edge-runtime export --model nanodet-plus-m --weights small.ckpt --out pkg/")
    p.add_argument("--model", required=True, help="model name (as for export)")
    p.add_argument("--weights", default=None, help="checkpoint, a compressed one included [the bundled weights]")
    p.add_argument("--out", required=True, help="compressed checkpoint to write (.ckpt)")
    p.add_argument("--prune", type=float, default=None, metavar="RATIO",
                   help="fraction of the channels of each prunable group to remove (head outputs and "
                        "ShuffleNetV2 block boundaries stay)")
    p.add_argument("--method", default="l1", choices=["l1", "taylor", "group"], help="channel importance [l1]")
    p.add_argument("--low-rank", type=float, default=None, metavar="RATIO",
                   help="factorise layers down to this fraction of their MACs, where measured faster")
    p.add_argument("--low-rank-backends", default="onnx",
                   help="backends a factorisation must be faster on, comma-separated [onnx]")
    p.add_argument("--data", default=None,
                   help="training images: a labelled folder or labels file (COCO json, YOLO txt, VOC xml), or "
                        "'demo' for generated shapes")
    p.add_argument("--images", type=int, default=2000, help="training images to read [2000]")
    p.add_argument("--steps", type=int, default=None, help="fine-tuning steps [from --epochs; 0 = none]")
    p.add_argument("--epochs", type=float, default=None, help="fine-tuning epochs over the training images")
    p.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate [2e-3]")
    p.add_argument("--batch", type=int, default=16, help="batch size [16]")
    p.add_argument("--distill", action="store_true",
                   help="distil from the uncompressed model (or --teacher) while fine-tuning")
    p.add_argument("--teacher", default=None, help="teacher checkpoint [the uncompressed model]")
    p.add_argument("--teacher-model", default=None, help="the teacher's model name [--model]")
    p.add_argument("--temperature", type=float, default=1.0, help="distillation temperature [1]")
    p.add_argument("--qat", action="store_true", help="quantization-aware fine-tuning (ONNX Runtime's INT8 grid)")
    p.add_argument("--qat-steps", type=int, default=None, help="QAT steps [--steps, else 300]")
    p.add_argument("--calib", default=None, help="calibration images for --qat (folder, video or COCO json)")
    p.add_argument("--calib-size", type=int, default=64, help="calibration images [64]")
    p.add_argument("--sparsity", type=float, default=None,
                   help="unstructured magnitude sparsity (size report only; no backend gets faster)")
    p.add_argument("--imgsz", type=int, default=None, help="input size for training and tracing [model default]")
    p.add_argument("--threads", type=int, default=1, help="torch threads [1]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--package", default=None, metavar="DIR",
                   help="also export a package of the result (with --qat: plus its INT8 ONNX)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the summary as JSON")

    p = sub.add_parser("info", help="show what a package holds (model, input, artifacts, versions)")
    p.add_argument("package", help="package folder")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    return parser


def _progress(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr)


@contextmanager
def _host_tools(command: str) -> Iterator[None]:
    """Imports of the host tool chain (converters: torch, onnx, ...) become one line on a device install."""
    try:
        yield
    except ImportError as exc:
        raise EdgeRuntimeError(f"{command} needs the host tool chain ({exc.name} is missing): "
                               f"pip install 'edge-runtime[convert]'") from None


def cmd_export(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise EdgeRuntimeError(f"{out}: --out exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not args.force:  # before any work
        raise EdgeRuntimeError(f"{out}: --out exists and is not empty (pick a new folder, or --force to write into it)")
    with _host_tools("export"):
        from converters.export_onnx import export_package
    if args.opset < 13:
        raise EdgeRuntimeError(f"--opset {args.opset}: use 13 or newer")
    try:
        weights = _official_weights(args) if (args.weights or "").split(":")[0] == "official" else args.weights
        manifest = export_package(args.model, weights, args.out, imgsz=args.imgsz, classes=args.classes,
                                  resize=args.resize, opset=args.opset, simplify=not args.no_simplify,
                                  progress=_progress)
    except ValueError as exc:  # unknown model name and similar argument errors
        raise EdgeRuntimeError(str(exc)) from None
    art = manifest.artifacts[0]
    parity = art.extra["parity_vs_torch"]
    print(f"package {manifest.root}: {manifest.name} ({len(manifest.class_names)} classes), input "
          f"{list(manifest.input.shape)}, {art.file} max|diff| vs torch {parity['max_abs_diff']:.2e}, "
          f"cosine {parity['cosine']:.6f}")
    return 0


def _official_weights(args: argparse.Namespace) -> Path:
    """``--weights official[:NAME]`` -> the cached (downloaded when missing) checkpoint."""
    from converters.official import fetch, resolve

    entry = resolve(args.weights, args.model, args.imgsz)
    _progress(f"official weights {entry.name}: {entry.description}")
    return fetch(entry, progress=sys.stderr.isatty())[0]


def cmd_profile(args: argparse.Namespace) -> int:
    if (args.package is None) == (args.model is None):
        raise EdgeRuntimeError("profile takes a package folder or --model NAME (one of them)")
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
            from .manifest import load_manifest

            manifest = load_manifest(args.package)
            static = profile_onnx(manifest.artifact_path(manifest.artifact("onnx", "fp32")))
        print(format_profile_table(static, args.top or None))
        result["static"] = static.to_dict()
        macs_by_node = {layer.name: layer.macs for layer in static.layers}
    if args.package:
        from .backends.layer_latency import format_latency_table, profile_latency

        latency = profile_latency(args.package, args.backend, args.precision, runs=args.runs, threads=args.threads)
        print()
        print(format_latency_table(latency, args.top or None, macs_by_node))
        result["latency"] = latency.to_dict(macs_by_node)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    with _host_tools("compress"):
        from converters.compress.pipeline import CompressOptions, compress_model
        from converters.profile import profile_model
    options = CompressOptions(
        prune=args.prune, method=args.method, low_rank=args.low_rank,
        low_rank_backends=tuple(b for b in args.low_rank_backends.split(",") if b), distill=args.distill,
        teacher=args.teacher, teacher_model=args.teacher_model, data=args.data, images=args.images,
        steps=args.steps, epochs=args.epochs, lr=args.lr, batch=args.batch, temperature=args.temperature,
        qat=args.qat, qat_steps=args.qat_steps, calib=args.calib, calib_size=args.calib_size,
        sparsity=args.sparsity, imgsz=args.imgsz, seed=args.seed, threads=args.threads)
    try:
        summary = compress_model(args.model, args.weights, args.out, options, progress=_progress)
        before = profile_model(args.model, args.weights, args.imgsz)
        manifest = _export_compressed(args) if args.package else None
        # the package's export counted the compressed graph already; without one, profile exports it
        macs_after = manifest.artifact("onnx", "fp32").extra["macs"] if manifest else \
            profile_model(args.model, args.out, args.imgsz).macs
    except ValueError as exc:  # unknown model, bad ratio
        raise EdgeRuntimeError(str(exc)) from None
    summary["macs_before"], summary["macs_after"] = before.macs, macs_after
    print(f"{summary['checkpoint']}: {args.model}, params {summary['params_before'] / 1e6:.3f} M -> "
          f"{summary['params_after'] / 1e6:.3f} M, MACs {before.macs / 1e9:.3f} G -> {macs_after / 1e9:.3f} G "
          f"({macs_after / max(1, before.macs):.2f}x) at {list(before.input_shape)[2:]}")
    for step in summary["history"]:
        shown = {k: v for k, v in step.items() if k != "step" and isinstance(v, (int, float, str))}
        print(f"  {step['step']}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                for k, v in list(shown.items())[:8]))
    if manifest is not None:
        summary["package"] = str(manifest.root)
        print(f"package {manifest.root}: {', '.join(a.file for a in manifest.artifacts)}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str))
    return 0


def _export_compressed(args: argparse.Namespace) -> Any:
    """compress --package: the compressed checkpoint's package (with --qat also its INT8 ONNX)."""
    if args.qat:
        from converters.compress.qat import export_qat_int8

        return export_qat_int8(args.out, args.model, args.package, args.calib, args.calib_size, progress=_progress)
    from converters.export_onnx import export_package

    return export_package(args.model, args.out, args.package, imgsz=args.imgsz, progress=_progress)


def cmd_fetch(args: argparse.Namespace) -> int:
    with _host_tools("fetch"):
        from converters.official import OFFICIAL, cached_path, fetch
    from .timing import format_table

    if args.list or not args.names:
        rows = [[w.name, w.model or "(fetch only)", w.imgsz or "", "published" if all(f.sha256 for f in w.files)
                 else "first use", "yes" if all(cached_path(w, f).exists() for f in w.files) else "no"]
                for w in OFFICIAL.values()]
        print(format_table(["name", "--model", "imgsz", "sha256", "cached"], rows))
        return 0
    unknown = [n for n in args.names if n not in OFFICIAL]
    if unknown:
        raise EdgeRuntimeError(f"{unknown[0]}: unknown official weights (known: {', '.join(OFFICIAL)})")
    for name in args.names:
        for path in fetch(OFFICIAL[name], progress=sys.stderr.isatty()):
            print(path)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .importer import import_model

    manifest = import_model(args.model, args.family, args.out, classes=args.classes, input_size=args.imgsz,
                            color=args.color, mean=tuple(args.mean) if args.mean else None,
                            std=tuple(args.std) if args.std else None, resize=args.resize,
                            score_threshold=args.conf, nms_iou=args.iou, strides=args.strides)
    art = manifest.artifacts[0]
    print(f"package {manifest.root}: {args.family}, {len(manifest.class_names)} classes, input "
          f"{list(manifest.input_for(art).shape)} {manifest.input_for(art).layout}, artifact {art.file} ({art.format})")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    with _host_tools("convert"):
        from converters.convert import ArtifactRefused, convert_package
    formats, precisions, tflite_io = _split_list(args.to or ""), _split_list(args.precision or ""), args.tflite_io
    if args.target:
        target = _runnable_target(args.target)
        formats, precisions = formats or list(target.backends), precisions or list(target.precisions)
        tflite_io = tflite_io or target.tflite_io
        _progress(f"target {target.name}: {','.join(formats)} x {','.join(precisions)}"
                  + (f", TFLite I/O {tflite_io}" if tflite_io else ""))
    formats = formats or ["onnx", "openvino", "tflite"]
    precisions = precisions or ["fp32", "fp16", "int8"]
    options = {"calib_method": args.calib_method, "onnx_quantizer": args.onnx_quantizer,
               "ov_preset": args.ov_preset, "tflite_io": tflite_io or "float32"}
    refused: list[str] = []
    try:
        manifest = convert_package(args.package, formats, precisions, calib=args.calib, calib_size=args.calib_size,
                                   options=options, progress=_progress, int8_min_cosine=args.int8_min_cosine,
                                   val_images=args.val_images, val_size=args.val_size,
                                   max_map_drop=args.max_map_drop, val_data=args.val_data,
                                   val_format=args.val_format, class_map=args.class_map,
                                   keep_failed=args.keep_failed)
    except ArtifactRefused as exc:
        manifest, refused = exc.manifest, exc.refused
    except ValueError as exc:
        raise EdgeRuntimeError(str(exc)) from None
    from .timing import format_table

    rows = []
    for a in manifest.artifacts:
        agreement = a.extra.get("fp32_agreement", {})
        control = a.extra.get("quantization", {}).get("accuracy_control")
        rows.append([a.file, a.format, a.precision, manifest.artifact_mb(a),
                     f"{agreement.get('cosine_mean', agreement.get('cosine', 1.0)):.4f}",
                     f"{agreement.get('cosine', 1.0):.4f}", f"{agreement.get('max_abs_diff', 0.0):.3g}",
                     "" if control is None else _budget_cell(control), "yes" if a.verified else "FAILED"])
    print(format_table(["artifact", "format", "precision", "MB", "cosine mean", "cosine worst", "max|diff|",
                        "accuracy budget", "verified"], rows))
    checked = next((a.extra["fp32_agreement"].get("checked_on") for a in manifest.artifacts
                    if "checked_on" in a.extra.get("fp32_agreement", {})), None)
    if checked:
        print("cosine vs FP32 ONNX per image (lowest over outputs) on " +
              ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in checked.items()))
    for line in refused:
        print(f"error: {line}", file=sys.stderr)
    return 1 if refused else 0


def _budget_cell(control: dict) -> str:
    """'met, mAP drop 0.31 pts, 4 layers in float' (the drop in the metric's own units)."""
    drop = (f"mAP drop {100 * control['drop']:.2f} pts" if control["metric"] == "map"
            else f"{control['metric']} {control['after']:.4f}")
    return f"{'met' if control['met'] else 'NOT met'}, {drop}, {len(control['float_layers'])} layers in float"


def _reconnect_backoff(spec: str | None) -> tuple[float, float]:
    """``--reconnect-backoff FIRST[:MAX]`` -> (first, max) seconds."""
    from .io.sources import RECONNECT_BACKOFF

    if spec is None:
        return RECONNECT_BACKOFF
    first, _, most = spec.partition(":")
    try:
        values = (float(first), float(most) if most else max(float(first), RECONNECT_BACKOFF[1]))
    except ValueError:
        values = (-1.0, -1.0)
    if not 0 < values[0] <= values[1] <= 86400:  # at most a day: Event.wait overflows on inf
        raise EdgeRuntimeError(f"--reconnect-backoff {spec}: expected FIRST[:MAX] seconds, 0 < FIRST <= MAX "
                               "<= 86400 (e.g. 0.5:30)")
    return values


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[list[str]]:
    """Ctrl-C (SIGINT) and a service manager's stop (SIGTERM) end a run normally: ``stop`` is set, the
    pipeline finishes the frames in flight and the results are written; a second signal interrupts at
    once. Yields the names of the signals received. The handler only sets a flag: printing there could
    re-enter a stderr write the main thread was in the middle of."""
    import signal

    received: list[str] = []

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        received.append(signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield received
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _report_run(summary: Any, summary_json: str | None) -> None:
    print(summary.table())
    for kind, path in summary.outputs.items():
        print(f"{kind}: {path}")
    if summary_json:
        from .io.pipeline import write_json_atomic

        write_json_atomic(summary_json, summary.to_dict())


def cmd_run(args: argparse.Namespace) -> int:
    from contextlib import ExitStack

    from .detector import Detector
    from .errors import SourceLostError
    from .io.pipeline import display_available, run_pipeline
    from .io.sources import open_source

    if args.max_fps is not None and args.max_fps <= 0:
        raise EdgeRuntimeError(f"--max-fps {args.max_fps:g}: must be above 0")
    if args.reconnect_tries is not None and args.reconnect_tries < 0:
        raise EdgeRuntimeError(f"--reconnect-tries {args.reconnect_tries}: must be 0 or more")
    backoff = _reconnect_backoff(args.reconnect_backoff)
    stop = threading.Event()
    with ExitStack() as cleanup:
        signals = cleanup.enter_context(_stop_on_signals(stop))
        server = None
        if args.serve:  # bind first: a busy port fails before the model and camera are opened
            from .io.serve import FrameServer, parse_address

            server = cleanup.enter_context(FrameServer(parse_address(args.serve), tuple(args.allow_host), args.token))
            print(f"live view: {server.url}", file=sys.stderr, flush=True)  # the token is not printed
        backend, precision, threads, options = _runtime_choice(args)
        detector = Detector(args.package, backend=backend, precision=precision, threads=threads,
                            options=options, score_threshold=args.conf, nms_iou=args.iou)
        _report_float_ops(detector)
        source = open_source(args.source, reconnect_tries=args.reconnect_tries, reconnect_backoff=backoff)
        show = args.show == "yes" or (args.show == "auto" and source.stream and display_available())
        if args.show == "yes" and not display_available():
            log.warning("no display available (headless OpenCV or no $DISPLAY): running without a window")
            show = False
        print(f"{detector.describe()}\nsource: {redact_url(args.source)}{' (window)' if show else ''}", file=sys.stderr)
        try:
            summary = run_pipeline(detector, source, save_dir=args.save, json_path=args.json, show=show,
                                   max_frames=args.max_frames, mode=args.pipeline, max_fps=args.max_fps,
                                   on_result=server.publish if server else None, stop=stop)
        except SourceLostError as exc:  # the run so far is reported and written, then the one-line error
            if exc.summary is not None:
                _report_run(exc.summary, args.summary_json)
            raise
    if signals:
        summary.stopped = f"{signals[0]} received"
        print(f"{signals[0]}: stopped reading, finished the frames in flight", file=sys.stderr)
    _report_run(summary, args.summary_json)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import bench_package, bench_table

    target = None
    if args.target:
        target = _runnable_target(args.target)
    report = bench_package(args.package, threads=args.threads or (target.threads if target else None),
                           warmup=args.warmup, iters=args.iters, image=args.image, isolate=not args.no_isolate,
                           progress=_progress, target=target)
    print(bench_table(report))
    if target is not None:
        from .bench import roofline

        print("\n".join(roofline(report, target)))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"json: {args.json}")
    for failure in report["failed"]:  # the table has the others; the exit status says not all ran
        print(f"error: {failure['error']}", file=sys.stderr)
    return 2 if report["failed"] else 0


def cmd_info(args: argparse.Namespace) -> int:
    from .manifest import load_manifest
    from .timing import format_table

    m = load_manifest(args.package)
    if args.json:
        print(json.dumps(m.to_dict(), indent=2))
        return 0
    inp = m.input
    print(f"{m.name} ({m.family}), {len(m.class_names)} classes: {', '.join(m.class_names[:8])}"
          f"{' ...' if len(m.class_names) > 8 else ''}")
    print(f"input {inp.name} {list(inp.shape)} {inp.layout} {inp.dtype} {inp.color}, resize {inp.resize}, "
          f"mean {list(inp.mean)} std {list(inp.std)}")
    rows = [[a.file, a.format, a.precision, m.artifact_mb(a) if (m.root / a.file).exists() else "missing",
             a.sha256[:12], "yes" if a.verified else "FAILED", a.verdict.describe()] for a in m.artifacts]
    print(format_table(["artifact", "format", "precision", "MB", "sha256", "verified", "check"], rows))
    print("produced by: " + ", ".join(f"{k} {v}" for k, v in m.produced_by.items() if v))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    with _host_tools("demo"):  # building the demo package is host work (edge_runtime imports no converters)
        from converters.demo import run_demo
    from .io.pipeline import display_available

    live = args.source is not None and (args.source.isdigit() or "://" in args.source or args.source == "picam")
    show = args.show == "yes" or (args.show == "auto" and live)
    if show and not display_available():
        if args.show == "yes":
            log.warning("no display available (headless OpenCV or no $DISPLAY): running without a window")
        show = False
    refused: list[str] = []
    table, outputs = run_demo(args.out, args.source, _split_list(args.to), _split_list(args.precision), args.frames,
                              args.threads, show, progress=_progress, refused=refused)
    print(table)
    for kind, path in outputs.items():
        print(f"{kind}: {path}")
    for line in refused:
        print(f"error: {line}", file=sys.stderr)
    return 1 if refused else 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .evaluation.labels import load_class_map, read_labels
    from .evaluation.validate import EvaluationSet, Protocol, report_table, validate_package
    from .manifest import load_manifest

    data = None
    if args.data:
        labelled = read_labels(args.data, args.images, args.format, args.names)
        class_map = load_class_map(args.class_map) if args.class_map else None
        data = EvaluationSet.from_labels(labelled, load_manifest(args.package).class_names, class_map)
    elif not args.images:
        raise EdgeRuntimeError("validate needs --data LABELS (with --images) or --images DIR alone (label-free)")
    report = validate_package(args.package, data, args.images, None if args.backend == "all" else args.backend,
                              args.precision, args.threads, Protocol(args.conf, args.iou, args.max_dets),
                              args.reference, args.pseudo_threshold, args.engine, progress=sys.stderr.isatty())
    print(report_table(report, args.per_class))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
        print(f"json: {args.json}")
    if args.plot:
        from .evaluation.plot import validation_chart

        print(f"plot: {validation_chart(report, args.plot)}")
    return 0


def _split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def cmd_targets(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .deploy.targets import all_targets, targets_table

    if args.detect:
        from .deploy.hostinfo import detect_host

        host = detect_host()
        print(json.dumps(host.to_dict(), indent=2) if args.json else "\n".join(host.describe()))
        return 0
    targets = all_targets()
    print(json.dumps([asdict(t) for t in targets], indent=2) if args.json else targets_table(targets))
    return 0


def cmd_package(args: argparse.Namespace) -> int:
    from .deploy.bundle import make_bundle
    from .manifest import load_manifest
    target = _runnable_target(args.target)
    if target.delegate:  # full-integer accelerators: say before deployment what would fall back to the CPU
        from .backends.tflite_ops import tflite_op_report

        manifest = load_manifest(args.package)
        for art in manifest.artifacts:
            if art.format == "tflite" and art.precision in target.precisions:
                print(tflite_op_report(manifest.artifact_path(art)).describe())
    out = make_bundle(Path(args.package), args.target, Path(args.out),
                      Path(args.wheel_dir) if args.wheel_dir else None, progress=_progress)
    print(f"bundle: {out}")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from .deploy.remote import deploy

    result = deploy(Path(args.bundle), args.host, args.port, Path(args.identity) if args.identity else None,
                    args.remote_dir, args.ssh_options, args.smoke_iters, args.remote_python,
                    {"PIP_INDEX_URL": args.pip_index_url} if args.pip_index_url else None, progress=_progress)
    for artifact, fps in result["fps"].items():
        print(f"{artifact}: {fps:.1f} FPS on {args.host}")
    print(f"install {result['install_s']:.0f} s, smoke run {result['run_s']:.0f} s, in {result['bundle_dir']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


COMMANDS = {"export": cmd_export, "import": cmd_import, "fetch": cmd_fetch, "convert": cmd_convert, "run": cmd_run, "bench": cmd_bench, "validate": cmd_validate, "targets": cmd_targets,
            "package": cmd_package, "deploy": cmd_deploy, "profile": cmd_profile, "compress": cmd_compress, "info": cmd_info,
            "demo": cmd_demo}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s: %(message)s", stream=sys.stderr)
    if not args.verbose:  # OpenCV's own multi-line warnings (e.g. a missing camera) would bury our one line
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        return COMMANDS[args.command](args)
    except EdgeRuntimeError as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``convert``: more formats and precisions into a package (host), each one checked against FP32 ONNX."""

from __future__ import annotations

import argparse
import sys

from ..backends import all_precisions, default_precisions, formats, target_keys
from ..evaluation.labels import FORMATS as LABEL_FORMATS
from .common import add_command, add_package_argument, add_precisions_option, host_tools, progress, split_list


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "convert", cmd_convert, help="add ONNX INT8, OpenVINO and TFLite artifacts to a package (host)",
        description="Convert the package's FP32 ONNX into more formats and precisions. Every new artifact is run by "
                    "the device-side backend and compared with FP32 ONNX; only one that passes its check (FP32/FP16: "
                    "worst-image cosine >= 0.999; INT8: its budget, by default mean cosine >= 0.99 on held-out "
                    "images) is written into the package and manifest.json. A refused artifact is one error line and "
                    "exit status 1; the others are still written.",
        examples=["edge-runtime convert pkg/ --to onnx,openvino --precisions fp32,int8 --calib calib/",
                  "edge-runtime convert pkg/ --target edgetpu --calib calib/   # exactly what the target runs"])
    add_package_argument(p, "package folder made by 'edge-runtime export'")
    p.add_argument("--to", default=None, metavar="LIST",
                   help=f"formats, comma-separated [{','.join(formats())}; --target: its backends]")
    add_precisions_option(p, None, f"precisions, comma-separated, of {','.join(all_precisions())} "
                                    f"[{','.join(default_precisions())}; --target: its precisions]; bf16 "
                                    f"(OpenVINO) only when named, on a CPU with AVX512-BF16 or AMX-BF16")
    p.add_argument("--target", default=None,
                   help="target profile: convert exactly what it runs (its backends x precisions, its TFLite I/O "
                        "type for full-integer delegates)")
    p.add_argument("--calib", default=None,
                   help="INT8 calibration data: a folder of images, a video (every k-th frame) or a COCO json")
    p.add_argument("--calib-size", type=int, default=100, help="calibration images [100]")
    p.add_argument("--int8-min-cosine", type=float, default=None, metavar="C",
                   help="accuracy-aware INT8 (ONNX, OpenVINO, TFLite): keep the most sensitive layers in float until "
                        "the mean per-image output cosine with FP32 on held-out images reaches C; 0: no budget "
                        "[0.99 when --calib (or --val-images) leaves at least 8 held-out images, else none; the "
                        "budget is recorded in the manifest as --backend auto's default --max-drop]")
    p.add_argument("--val-images", default=None, metavar="DIR",
                   help="held-out images to check every artifact on [images of --calib not used to calibrate]")
    p.add_argument("--val-size", type=int, default=24, help="held-out images to use [24]")
    p.add_argument("--max-map-drop", type=float, default=None, metavar="POINTS",
                   help="accuracy-aware INT8 against labels: keep the most sensitive layers in float until the COCO "
                        "mAP on --val-data/--val-images is at most POINTS below FP32's (e.g. 0.5)")
    p.add_argument("--val-data", default=None, metavar="LABELS",
                   help="labels for --max-map-drop: COCO json or a folder of YOLO/VOC/txt labels (as validate --data)")
    p.add_argument("--val-format", default="auto", choices=["auto", *LABEL_FORMATS],
                   help="format of --val-data [auto]")
    p.add_argument("--class-map", default=None, metavar="JSON", help="label class -> model class names (as validate)")
    p.add_argument("--calib-method", default="minmax", choices=["minmax", "entropy", "percentile"],
                   help="calibration method of the 'ort' ONNX quantiser [minmax]")
    p.add_argument("--onnx-quantizer", default="auto", choices=["auto", "nncf", "nncf-u8s8", "ort"],
                   help="ONNX INT8 recipe: nncf (int8 activations, bias correction: accurate, often slower than "
                        "FP32), nncf-u8s8 (NNCF's calibration rewritten into the uint8 graph ONNX Runtime fuses "
                        "into integer kernels: fast), ort (ONNX Runtime's quantize_static, plain min/max ranges), "
                        "or auto: nncf and nncf-u8s8, and the fastest on this host whose cosine with FP32 is as "
                        "good (or meets the budget); the manifest records both and why [auto]")
    p.add_argument("--ov-preset", default="auto", choices=["auto", "mixed", "performance"],
                   help="NNCF preset for OpenVINO INT8: mixed (asymmetric activations), performance (symmetric), "
                        "or auto: both, and the fastest on this host whose cosine with FP32 is as good (or meets "
                        "the budget); the manifest records both and why [auto]")
    p.add_argument("--openvino-inference-precision", default=None,
                   choices=target_keys()["openvino_inference_precision"][1].choices,
                   help="INFERENCE_PRECISION_HINT an OpenVINO INT8 IR is checked and run with (its float parts); auto: "
                        "on a CPU with AVX512-BF16 or AMX-BF16 the faster of bf16 and f32, timed here when "
                        "this host is the package's CPU, else bf16; f32 without BF16 [auto; --target: its "
                        "openvino_inference_precision]")
    p.add_argument("--tflite-io", default=None, choices=target_keys()["tflite_io"][1].choices,
                   help="TFLite INT8 input/output tensor type (int8/uint8 for NPU delegates) [float32; --target: "
                        "its tflite_io]")
    p.add_argument("--keep-failed", action="store_true",
                   help="keep an artifact that fails its check on disk for debugging, listed as failed in the "
                        "manifest (auto, demo, bench and bundle never choose it)")
    p.add_argument("--no-speed", action="store_true",
                   help="do not time the FP16/INT8/bf16 artifacts against their format's FP32 after converting "
                        "(by default when this host is the package's CPU: a few seconds in a fresh process; "
                        "recorded as each artifact's speed and shown as 'vs its FP32')")


def cmd_convert(args: argparse.Namespace) -> int:
    with host_tools("convert"):
        from converters import Converter
        from converters.convert import ArtifactRefused
    refused: list[str] = []
    try:
        manifest = Converter(args.package).to(
            split_list(args.to), split_list(args.precisions), args.calib, target=args.target,
            tflite_io=args.tflite_io, calib_method=args.calib_method, onnx_quantizer=args.onnx_quantizer,
            ov_preset=args.ov_preset, openvino_inference_precision=args.openvino_inference_precision,
            progress=progress, calib_size=args.calib_size,
            int8_min_cosine=args.int8_min_cosine, val_images=args.val_images, val_size=args.val_size,
            max_map_drop=args.max_map_drop, val_data=args.val_data, val_format=args.val_format,
            class_map=args.class_map, keep_failed=args.keep_failed,
            measure_speed=not args.no_speed)
    except ArtifactRefused as exc:
        manifest, refused = exc.manifest, exc.refused
    from ..timing import format_table, speed_cell

    rows = []
    for a in manifest.artifacts:
        agreement = a.extra.get("fp32_agreement", {})
        control = a.extra.get("quantization", {}).get("accuracy_control")
        rows.append([a.file, a.format, a.precision, manifest.artifact_mb(a),
                     f"{agreement.get('cosine_mean', agreement.get('cosine', 1.0)):.4f}",
                     f"{agreement.get('cosine', 1.0):.4f}", f"{agreement.get('max_abs_diff', 0.0):.3g}",
                     "" if control is None else _budget_cell(control), speed_cell(a.extra.get("speed")),
                     "yes" if a.verified else "FAILED"])
    print(format_table(["artifact", "format", "precision", "MB", "cosine mean", "cosine worst", "max|diff|",
                        "accuracy budget", "vs its FP32", "verified"], rows))
    checked = next((a.extra["fp32_agreement"].get("checked_on") for a in manifest.artifacts
                    if "checked_on" in a.extra.get("fp32_agreement", {})), None)
    if checked:
        print("cosine vs FP32 ONNX per image (lowest over outputs) on " +
              ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in checked.items()))
    timed = next((a.extra["speed"] for a in manifest.artifacts if a.extra.get("speed")), None)
    if timed:
        print(f"vs its FP32: model-only speed against the same format's FP32, timed after converting on "
              f"{timed['measured_on']['cpu']}, {timed['threads']} threads (bench times every artifact)")
    if manifest.int8_budget is not None and "int8" in split_list(args.precisions or "int8") and \
            manifest.int8_budget.get("note"):
        print(f"int8 budget: {manifest.int8_budget['note']}")
    for line in refused:
        print(f"error: {line}", file=sys.stderr)
    return 1 if refused else 0


def _budget_cell(control: dict) -> str:
    """'met, mAP drop 0.31 pts, 4 layers in float' (the drop in the metric's own units)."""
    drop = (f"mAP drop {100 * control['drop']:.2f} pts" if control["metric"] == "map"
            else f"{control['metric']} {control['after']:.4f}")
    return f"{'met' if control['met'] else 'NOT met'}, {drop}, {len(control['float_layers'])} layers in float"

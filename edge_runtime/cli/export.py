"""``export`` (a checkpoint -> a package, host) and ``import`` (a foreign .onnx / .tflite -> a package)."""

from __future__ import annotations

import argparse

from ..families import importable_families
from ..manifest import RESIZE_MODES
from .common import add_command, add_out_option, host_tools, progress


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "export", cmd_export,
        help="checkpoint -> package folder with FP32 ONNX + manifest.json (host: needs torch)",
        description="Load a checkpoint strictly (weights only, no pickled code), export a simplified FP32 ONNX "
                    "graph, check it against torch and write manifest.json.",
        examples=["edge-runtime export --model nanodet-plus-m --weights nanodet-plus-m_coco.ckpt --imgsz 416 -o pkg/",
                  "edge-runtime export --model nanodet-plus-m --weights official -o pkg/   # downloads the checkpoint"])
    p.add_argument("--model", required=True, help="model to build: {MODELS} (darknet models read .weights with the "
                                                  "same-stem .cfg beside it)")
    p.add_argument("--weights", default=None,
                   help=".ckpt (NanoDet) or .pth (state_dict) checkpoint; 'official' downloads the model's official "
                        "COCO checkpoint for --imgsz (cached, sha256-checked), 'official:NAME' a named one (see "
                        "'edge-runtime fetch --list') [the bundled file for demo-shapes]")
    p.add_argument("--imgsz", type=int, default=None, help="square input size [model default: 416/320/352]")
    add_out_option(p, "package folder to write (new or empty, else --force)", folder=True, required=True)
    p.add_argument("--force", action="store_true", help="write into an --out folder that already holds files")
    p.add_argument("--classes", default=None,
                   help="class names: .txt (one per line) or NanoDet .yml [COCO names for 80-class models]")
    p.add_argument("--resize", default=None, choices=RESIZE_MODES,
                   help="preprocessing resize mode [as the model's official config]")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 13) [17]")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxslim")

    p = add_command(
        sub, "import", cmd_import, help="wrap a detector exported elsewhere (.onnx / .tflite) in a package",
        description="Write a package around an existing ONNX or TFLite detector after checking its input and output "
                    "shapes against the family's layout, so run, bench and validate work on it. Families: yolox (raw "
                    "grid outputs), yolov5 (decoded, objectness), yolov8 (decoded, no objectness, (1, 4+C, N)), "
                    "nanodet-plus (the official single-output export), ssd (TF Object Detection API with its "
                    "post-processing in the graph, e.g. detect.tflite: boxes, classes, scores, count). Runs on the "
                    "device install: no torch, no onnx.",
        examples=["edge-runtime import detect.tflite --family ssd --classes labelmap.txt -o ssdpkg/",
                  "edge-runtime import yolov8n.onnx --family yolov8 -o y8pkg/"])
    p.add_argument("model", help=".onnx or .tflite file")
    p.add_argument("--family", required=True, choices=importable_families(), help="output layout of the model")
    p.add_argument("--classes", default="coco",
                   help="'coco' (the 80 COCO names; for ssd the 90 COCO category-id slots) or a .txt with one name "
                        "per line, a leading '???' / background line dropped [coco]")
    add_out_option(p, "package folder to write (new or empty)", folder=True, required=True)
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


def cmd_export(args: argparse.Namespace) -> int:
    with host_tools("export"):
        from converters import Converter
    manifest = Converter.export(args.model, args.out, args.weights, imgsz=args.imgsz, classes=args.classes,
                                resize=args.resize, opset=args.opset, simplify=not args.no_simplify, force=args.force,
                                progress=progress).manifest
    art = manifest.artifacts[0]
    parity = art.extra["parity_vs_torch"]
    print(f"package {manifest.root}: {manifest.name} ({len(manifest.class_names)} classes), input "
          f"{list(manifest.input.shape)}, {art.file} max|diff| vs torch {parity['max_abs_diff']:.2e}, "
          f"cosine {parity['cosine']:.6f}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from ..importer import import_model

    manifest = import_model(args.model, args.family, args.out, classes=args.classes, input_size=args.imgsz,
                            color=args.color, mean=tuple(args.mean) if args.mean else None,
                            std=tuple(args.std) if args.std else None, resize=args.resize,
                            score_threshold=args.conf, nms_iou=args.iou, strides=args.strides)
    art = manifest.artifacts[0]
    print(f"package {manifest.root}: {args.family}, {len(manifest.class_names)} classes, input "
          f"{list(manifest.input_for(art).shape)} {manifest.input_for(art).layout}, artifact {art.file} ({art.format})")
    return 0

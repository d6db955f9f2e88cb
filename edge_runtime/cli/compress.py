"""``compress``: prune, factorise, distil, QAT-fine-tune a torch model -> a compressed checkpoint (host)."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import UsageError
from .common import add_command, add_json_option, add_out_option, add_output_folder, host_tools, progress, write_json


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "compress", cmd_compress,
        help="prune, factorise, distil, QAT-fine-tune a torch model -> compressed checkpoint (host)",
        description="Compression before export, in this order: structured channel pruning (torch-pruning's "
                    "dependency graph: l1, group or taylor importance), low-rank factorisation (SVD of 1x1 convs, "
                    "Tucker-2 of dense 3x3; a layer is factorised only where it measured faster on the backends "
                    "given), fine-tuning (the family's task loss where the project has one, YOLO-FastestV2; plus "
                    "or, for NanoDet, only distillation from the uncompressed model or --teacher), quantization-"
                    "aware fine-tuning, unstructured magnitude sparsity (smaller compressed files only: dense "
                    "backends run zeros as fast as any weight). The output is a checkpoint that 'export' loads "
                    "like any other (its pruned shapes and factorisations are rebuilt from it).",
        examples=["edge-runtime compress --model demo-shapes --prune 0.3 --method group --data demo --steps 600 "
                  "--distill -o small.ckpt",
                  "edge-runtime compress --model nanodet-plus-m --weights ckpt --prune 0.3 --distill --data train/ "
                  "--epochs 5 -o small.ckpt",
                  "edge-runtime compress --model demo-shapes --low-rank 0.5 --low-rank-backends onnx,openvino "
                  "-o lr.ckpt",
                  "edge-runtime compress --model demo-shapes --qat --calib calib/ --data demo -o q.ckpt "
                  "--package qpkg/   # + INT8 ONNX",
                  "edge-runtime export --model nanodet-plus-m --weights small.ckpt -o pkg/"])
    p.add_argument("--model", required=True, help="model to compress: {MODELS}")
    p.add_argument("--weights", default=None, help="checkpoint, a compressed one included [the bundled weights]")
    add_out_option(p, "compressed checkpoint to write (.ckpt)", required=True)
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
    add_output_folder(p, "--package", help="also export a package of the result (with --qat: plus its INT8 ONNX)")
    add_json_option(p, "the summary")


def cmd_compress(args: argparse.Namespace) -> int:
    with host_tools("compress"):
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
        summary = compress_model(args.model, args.weights, args.out, options, progress=progress)
        before = profile_model(args.model, args.weights, args.imgsz)
        manifest = _export_compressed(args) if args.package else None
        # the package's export counted the compressed graph already; without one, profile exports it
        macs_after = manifest.artifact("onnx", "fp32").extra["macs"] if manifest else \
            profile_model(args.model, args.out, args.imgsz).macs
    except ValueError as exc:  # unknown model, bad ratio
        raise UsageError(str(exc)) from None
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
        write_json(args.json, summary, default=str)
    return 0


def _export_compressed(args: argparse.Namespace) -> Any:
    """compress --package: the compressed checkpoint's package (with --qat also its INT8 ONNX)."""
    if args.qat:
        from converters.compress.qat import export_qat_int8

        return export_qat_int8(args.out, args.model, args.package, args.calib, args.calib_size, progress=progress)
    from converters.export_onnx import export_package

    return export_package(args.model, args.out, args.package, imgsz=args.imgsz, progress=progress)

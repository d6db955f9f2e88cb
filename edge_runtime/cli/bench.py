"""``bench`` (latency of every artifact) and ``validate`` (accuracy of every artifact) on this device."""

from __future__ import annotations

import argparse
import sys

from ..backends import ALL_PRECISIONS, BACKENDS
from ..errors import UsageError
from ..evaluation.labels import FORMATS as LABEL_FORMATS
from ..evaluation.metrics import ENGINES
from .common import (
    add_command,
    add_json_option,
    add_max_drop_option,
    add_output_file,
    add_package_argument,
    add_threads_option,
    max_drop_budget,
    progress,
    write_json,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "bench", cmd_bench, help="latency table of every artifact in a package",
        description="Measure each artifact (warm-up, then timed runs): median/p90 latency, FPS, end-to-end time "
                    "with pre/post-processing, speed relative to FP32 ONNX and to its own backend's FP32, the "
                    "accuracy drop convert recorded, and which artifact --backend auto picks within --max-drop. An "
                    "artifact whose worker process crashes gets one error line, the others are still measured (exit "
                    "status 1).",
        examples=["edge-runtime bench pkg/ --json bench.json",
                  "edge-runtime bench pkg/ --target rpi4 --iters 100   # + roofline vs the profile's peak"])
    add_package_argument(p)
    add_threads_option(p)
    p.add_argument("--warmup", type=int, default=5, help="untimed runs first [5]")
    p.add_argument("--iters", type=int, default=50, help="timed runs [50]")
    p.add_argument("--image", default=None, help="image for the timings and the cosine column [a synthetic one]")
    add_json_option(p, "the results")
    p.add_argument("--no-isolate", action="store_true",
                   help="measure every artifact in this process (faster start, less fair between runtimes)")
    p.add_argument("--target", default=None,
                   help="target profile: its delegate / execution provider / device, and a roofline line per "
                        "artifact (GFLOP/s reached vs the profile's peak)")
    add_max_drop_option(p)

    p = add_command(
        sub, "validate", cmd_validate,
        help="accuracy on this device: mAP of every artifact against labels, or agreement with FP32",
        description="Run every artifact of the package (or --backend/--precision) on labelled images and report COCO "
                    "mAP@[.5:.95], AP50, AP small/medium/large, the drop against the FP32 artifact and latency.\n"
                    "Label classes are matched to the model's by name (built-in COCO<->VOC aliases such as "
                    "tvmonitor/tv, --class-map for others); classes the model does not have are reported and left "
                    "out. Without --data, the FP32 artifact's detections (score >= --pseudo-threshold) are the "
                    "ground truth and each output's cosine against FP32 is added.",
        examples=["edge-runtime validate pkg/ --data coco.json --images val/",
                  "edge-runtime validate pkg/ --data labels/ --images val/ --format yolo --names classes.txt",
                  "edge-runtime validate pkg/ --images val/ --reference fp32          # no labels",
                  "edge-runtime validate pkg/ --data gt/ --images val/ --per-class --json val.json --plot val.png"])
    add_package_argument(p)
    p.add_argument("--data", default=None,
                   help="labels: COCO json, or a folder of YOLO txt / Pascal VOC xml / '<class> l t r b' txt files")
    p.add_argument("--images", default=None, help="image folder [COCO: the json's folder; VOC: ../JPEGImages]")
    p.add_argument("--format", default="auto", choices=["auto", *LABEL_FORMATS],
                   help="label format [auto: from the files]")
    p.add_argument("--names", default=None,
                   help="YOLO class names file (one per line) [classes.txt / *.names / data.yaml]")
    p.add_argument("--class-map", default=None, metavar="JSON",
                   help='{"label class": "model class" or null} for names the built-in aliases do not cover')
    p.add_argument("--backend", default="all", choices=["all", *BACKENDS], help="artifact format to validate [all]")
    p.add_argument("--precision", default=None, choices=ALL_PRECISIONS, help="artifact precision to validate [all]")
    add_threads_option(p)
    p.add_argument("--reference", default="fp32",
                   help="the artifact drops are measured against (label-free: the ground truth): fp32 (FP32 ONNX, "
                        "else the first FP32 artifact) or FORMAT:PRECISION [fp32]")
    p.add_argument("--pseudo-threshold", type=float, default=0.3,
                   help="label-free: reference detections scoring at least this are the ground truth [0.3]")
    p.add_argument("--conf", type=float, default=0.001, help="score threshold for evaluation [0.001]")
    p.add_argument("--iou", type=float, default=None, help="NMS IoU threshold [manifest's]")
    p.add_argument("--max-dets", type=int, default=100, help="detections kept per image [100]")
    p.add_argument("--engine", default=None, choices=ENGINES,
                   help="COCO evaluator [faster-coco-eval when installed, else pycocotools]")
    p.add_argument("--bootstrap", type=int, default=0, metavar="N",
                   help="give each mAP drop a 90%% interval from N paired bootstrap samples of the images (how far "
                        "the set's own sampling moves it; about 0.07 s per sample and artifact on 85 images) [0: off]")
    p.add_argument("--per-class", action="store_true", help="add a per-class AP table")
    add_json_option(p, "the whole report")
    add_output_file(p, "--plot", metavar="PNG", suffixes=(".png", ".jpg", ".jpeg"),
                    help="write a chart: mAP per artifact and PR curves at IoU 0.5")


def cmd_bench(args: argparse.Namespace) -> int:
    from ..bench import bench_package, bench_table
    from ..deploy.targets import runnable_target

    budget = max_drop_budget(args)
    target = runnable_target(args.target) if args.target else None
    report = bench_package(args.package, threads=args.threads or (target.threads if target else None),
                           warmup=args.warmup, iters=args.iters, image=args.image, isolate=not args.no_isolate,
                           progress=progress, target=target, max_drop=budget)
    print(bench_table(report))
    if target is not None:
        from ..bench import roofline

        print("\n".join(roofline(report, target)))
    if args.json:
        write_json(args.json, report)
    for failure in report["failed"]:  # the table has the others; the exit status says not all ran
        print(f"error: {failure['error']}", file=sys.stderr)
    return 1 if report["failed"] else 0


def cmd_validate(args: argparse.Namespace) -> int:
    from ..evaluation.labels import load_class_map, read_labels
    from ..evaluation.validate import EvaluationSet, Protocol, report_table, validate_package
    from ..manifest import load_manifest

    if args.bootstrap < 0:
        raise UsageError(f"--bootstrap {args.bootstrap}: must be 0 (off) or a number of samples")
    data = None
    if args.data:
        labelled = read_labels(args.data, args.images, args.format, args.names)
        class_map = load_class_map(args.class_map) if args.class_map else None
        data = EvaluationSet.from_labels(labelled, load_manifest(args.package).class_names, class_map)
    elif not args.images:
        raise UsageError("validate needs --data LABELS (with --images) or --images DIR alone (label-free)")
    report = validate_package(args.package, data, args.images, None if args.backend == "all" else args.backend,
                              args.precision, args.threads, Protocol(args.conf, args.iou, args.max_dets),
                              args.reference, args.pseudo_threshold, args.engine, progress=sys.stderr.isatty(),
                              bootstrap=args.bootstrap)
    print(report_table(report, args.per_class))
    if args.json:
        write_json(args.json, report, indent=1)
    if args.plot:
        from ..evaluation.plot import validation_chart

        print(f"plot: {validation_chart(report, args.plot)}")
    return 0

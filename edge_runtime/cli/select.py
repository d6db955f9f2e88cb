"""``select``: the most accurate detector meeting a frame rate on a device, measured on the user's labelled photos."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UsageError
from ..evaluation.labels import FORMATS as LABEL_FORMATS
from .common import (
    add_command,
    add_device_options,
    add_json_option,
    add_out_option,
    add_output_file,
    host_tools,
    progress,
    split_list,
    write_json,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "select", cmd_select,
        help="pick the most accurate model x size x backend x precision that meets --fps on a device (host)",
        description="Build candidates (built-in models with weights here x input sizes x the target's backends and "
                    "precisions), measure each one's COCO mAP on your labelled photos (the validate protocol, through "
                    "the runtime the device runs) and its end-to-end latency on the device: here when this machine "
                    "is the target's architecture, over ssh with --host (bundle + deploy, bench only), else estimated "
                    "from the profile's peak and the graph's MACs (marked estimated everywhere). Prints the table and "
                    "the Pareto front, and writes the package of the most accurate candidate meeting --fps end to "
                    "end; when none does, names the closest and exits 1. Results are cached (--cache): a second run "
                    "measures only what is new.",
        examples=["edge-runtime select --data val/labels.json --images val/ --calib calib/ --target rpi4 "
                  "--host pi@raspberrypi.local --fps 30 -o best/",
                  "edge-runtime select --data val/ --format voc --target x86 --fps 60 --models nanodet-plus-m,"
                  "yolo-fastestv2 --plot pareto.png"])
    p.add_argument("--data", required=True,
                   help="labels: COCO json, or a folder of YOLO txt / Pascal VOC xml / '<class> l t r b' txt files")
    p.add_argument("--images", default=None, help="image folder [COCO: the json's folder; VOC: ../JPEGImages]")
    p.add_argument("--format", default="auto", choices=["auto", *LABEL_FORMATS], help="label format [auto]")
    p.add_argument("--names", default=None, help="YOLO class names file (as validate)")
    p.add_argument("--class-map", default=None, metavar="JSON", help="label class -> model class names (as validate)")
    p.add_argument("--target", default=None,
                   help="target profile name or .toml path [the one 'targets --detect' suggests for this machine]")
    p.add_argument("--fps", type=float, required=True, help="frames per second needed, end to end")
    p.add_argument("--models", default=None, metavar="LIST",
                   help="models to try, comma-separated [every model with official weights in the cache]")
    p.add_argument("--sizes", default=None, metavar="LIST",
                   help="input sizes, comma-separated, for every model [each model's official sizes]")
    p.add_argument("--model-weights", action="append", default=[], metavar="MODEL=PATH",
                   help="checkpoint for a model (as export --weights takes), repeatable [the cached official one]")
    p.add_argument("--calib", default=None,
                   help="INT8 calibration images (folder, video or COCO json), photos like the deployment's; "
                        "without it the target's INT8 is left out (calibrating on the evaluation photos would "
                        "flatter INT8's mAP)")
    p.add_argument("--calib-size", type=int, default=32, help="INT8 calibration images to use [32]")
    p.add_argument("--iters", type=int, default=30, help="timed runs per artifact [30]")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="start no new model x size after this long (the one running finishes); the rest are "
                        "listed as not measured [no limit]")
    p.add_argument("--cache", default=None, help="packages and results cache [~/.cache/edge-runtime/select]")
    add_device_options(p, "measure latency on this device over ssh: user@host", "edge-runtime-select",
                       required=False)
    p.add_argument("--wheel-dir", default=None, help="with --host: the edge-runtime wheel for the device [build it]")
    add_out_option(p, "folder to write the chosen package into (new or empty)", folder=True)
    add_json_option(p, "the whole report")
    add_output_file(p, "--plot", metavar="PNG", suffixes=(".png", ".jpg", ".jpeg"),
                    help="write mAP against end-to-end latency, the Pareto front joined")


def _weights(specs: list[str]) -> dict[str, Path]:
    found = {}
    for spec in specs:
        model, sep, path = spec.partition("=")
        if not sep or not model or not path:
            raise UsageError(f"--model-weights {spec!r}: expected MODEL=PATH")
        if not Path(path).is_file():
            raise UsageError(f"--model-weights {spec!r}: {path} is not a file")
        found[model] = Path(path)
    return found


def _sizes(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        sizes = [int(s) for s in split_list(text)]
    except ValueError:
        raise UsageError(f"--sizes {text!r}: expected integers, e.g. 320,416") from None
    if any(s < 32 or s % 32 for s in sizes):
        raise UsageError(f"--sizes {text!r}: each size must be a multiple of 32")
    return sizes


def cmd_select(args: argparse.Namespace) -> int:
    with host_tools("select"):
        from converters.select import (
            RemoteBench,
            available_models,
            pareto_plot,
            select_detector,
            select_table,
            write_choice,
        )

    from ..deploy.hostinfo import detect_host
    from ..evaluation.labels import load_class_map, read_labels
    from ..evaluation.validate import EvaluationSet

    weights = _weights(args.model_weights)
    sizes = _sizes(args.sizes)
    target = args.target or detect_host().suggested_target
    if target is None:
        raise UsageError("no target profile fits this machine: pass --target")
    models = split_list(args.models) if args.models else available_models(weights)
    if not models:
        raise UsageError("no model has weights here: 'edge-runtime fetch NAME' caches the official ones, or pass "
                         "--models with --model-weights MODEL=PATH")
    labelled = read_labels(args.data, args.images, args.format, args.names)
    class_map = load_class_map(args.class_map) if args.class_map else None
    remote = None
    if args.host:
        remote = RemoteBench(args.host, target, args.port, Path(args.identity) if args.identity else None,
                             args.ssh_options, args.remote_dir, Path(args.wheel_dir) if args.wheel_dir else None,
                             args.remote_python, {"PIP_INDEX_URL": args.pip_index_url} if args.pip_index_url else None,
                             args.iters, progress)
    report = select_detector(lambda names: EvaluationSet.from_labels(labelled, names, class_map), target, args.fps,
                             models, sizes, weights, Path(args.calib) if args.calib else None, args.calib_size,
                             Path(args.cache) if args.cache else None, remote, args.iters, args.max_minutes,
                             progress=progress)
    print(select_table(report))
    for line in report["skipped"]:
        print(f"skipped: {line}")
    print(f"cache: {report['cache']} ({report['cache_hits']} results reused)")
    if args.plot and report["rows"]:
        print(f"plot: {pareto_plot(report, args.plot)}")
    if args.json:
        write_json(args.json, report, indent=1)
    chosen, closest = report["chosen"], report["closest"]
    if chosen is None:
        if closest is None:
            why = report["skipped"][0] if report["skipped"] else "no candidate"
            print(f"error: nothing was measured ({len(report['skipped'])} skipped; first: {why})", file=sys.stderr)
            return 1
        print(f"error: no candidate reaches {args.fps:g} FPS on {report['device']}; closest: {closest['model']}@"
              f"{closest['imgsz']} {closest['format']} {closest['precision']} at {closest['fps']:.1f} FPS end to "
              f"end, mAP {closest['map']:.4f}", file=sys.stderr)
        return 1
    what = (f"{chosen['model']}@{chosen['imgsz']} {chosen['format']} {chosen['precision']}: mAP {chosen['map']:.4f}, "
            f"{chosen['fps']:.1f} FPS end to end ({chosen['latency']})")
    if args.out:
        print(f"chosen: {what} -> {write_choice(chosen, Path(args.out), report)}")
    else:
        print(f"chosen: {what} (-o DIR writes its package)")
    return 0

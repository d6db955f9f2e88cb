"""``select``: the most accurate detector meeting a frame rate on a device, measured on the user's labelled photos."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..errors import EdgeRuntimeError, UsageError
from ..evaluation.labels import FORMATS as LABEL_FORMATS
from .common import (
    add_command,
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
        examples=["edge-runtime select --data val/labels.json --images val/ --target rpi4 --host pi@raspberrypi.local "
                  "--fps 30 -o best/",
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
    p.add_argument("--weights", action="append", default=[], metavar="MODEL=PATH",
                   help="checkpoint for a model, repeatable [the cached official one]")
    p.add_argument("--calib", default=None,
                   help="INT8 calibration images (folder, video or COCO json) [--images]")
    p.add_argument("--calib-size", type=int, default=32, help="INT8 calibration images to use [32]")
    p.add_argument("--iters", type=int, default=30, help="timed runs per artifact [30]")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop starting new candidates after this long; the rest are listed as not measured [none]")
    p.add_argument("--cache", default=None, help="packages and results cache [~/.cache/edge-runtime/select]")
    p.add_argument("--host", default=None, help="measure latency on this device over ssh: user@host")
    p.add_argument("--port", type=int, default=22, help="ssh port [22]")
    p.add_argument("--identity", default=None, help="ssh private key [ssh's default]")
    p.add_argument("--remote-dir", default="edge-runtime-select", help="folder on the device [~/edge-runtime-select]")
    p.add_argument("--ssh-option", dest="ssh_options", action="append", default=[], metavar="KEY=VALUE",
                   help="extra ssh option (ssh -o), repeatable")
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
            raise UsageError(f"--weights {spec!r}: expected MODEL=PATH")
        if not Path(path).is_file():
            raise UsageError(f"--weights {spec!r}: {path} is not a file")
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


def _remote_measurer(args: argparse.Namespace, target_spec: str):
    """``(package, target) -> {artifact: (model ms, end-to-end ms)}`` measured on ``--host``: the first package is
    bundled and deployed (install.sh, then run.sh's bench) as ``edge-runtime deploy`` does; the others are
    copied beside it and benchmarked with the same venv."""
    from ..deploy.bundle import artifacts_for_target, copy_package, make_bundle
    from ..deploy.remote import bench_remote, deploy
    from ..manifest import load_manifest

    identity = Path(args.identity) if args.identity else None
    installed: dict[str, Any] = {}

    def measure(package: Path, target: Any) -> dict[str, tuple[float, float]]:
        if installed:  # only what the target runs: the device's venv has those backends alone
            manifest = load_manifest(package)
            with tempfile.TemporaryDirectory(prefix="select-package-") as tmp:
                trimmed = Path(tmp) / package.name
                copy_package(manifest, artifacts_for_target(manifest, target), trimmed)
                bench = bench_remote(installed, trimmed, args.port, identity, args.ssh_options, args.iters,
                                     progress)
        else:
            with tempfile.TemporaryDirectory(prefix="select-bundle-") as tmp:
                bundle = make_bundle(package, target_spec, Path(tmp) / f"select-{target.name}.tar.gz",
                                     Path(args.wheel_dir) if args.wheel_dir else None, progress=progress)
                installed.update(deploy(bundle, args.host, args.port, identity, args.remote_dir, args.ssh_options,
                                        args.iters, progress=progress))
            bench = installed["bench"]
            if not bench:
                raise EdgeRuntimeError(f"{args.host}: the device's bench report could not be read")
        return {r["artifact"]: (r["latency_ms"]["median"], r["end_to_end_ms"]["median"]) for r in bench["results"]}

    return measure


def cmd_select(args: argparse.Namespace) -> int:
    with host_tools("select"):
        from converters.official import OFFICIAL, cache_dir, cached_path
        from converters.select import (
            pareto_plot,
            select_detector,
            select_table,
            write_choice,
        )

    from ..deploy.hostinfo import detect_host
    from ..deploy.targets import runnable_target
    from ..evaluation.labels import load_class_map, read_labels
    from ..evaluation.validate import EvaluationSet

    weights = _weights(args.weights)
    sizes = _sizes(args.sizes)
    if args.fps <= 0:
        raise UsageError(f"--fps {args.fps}: must be positive")
    target_name = args.target or detect_host().suggested_target
    if target_name is None:
        raise UsageError("no target profile fits this machine: pass --target")
    target = runnable_target(target_name)
    if args.models:
        models = split_list(args.models)
    else:  # every model whose official checkpoint is cached, plus those given --weights
        models = list(dict.fromkeys([*(w.model for w in OFFICIAL.values() if w.model and
                                       cached_path(w, w.files[0]).is_file()), *weights]))
        if not models:
            raise UsageError(f"no model has weights here: 'edge-runtime fetch NAME' caches the official ones in "
                             f"{cache_dir()}, or pass --models with --weights MODEL=PATH")
    labelled = read_labels(args.data, args.images, args.format, args.names)
    class_map = load_class_map(args.class_map) if args.class_map else None
    calib = Path(args.calib) if args.calib else (Path(args.images) if args.images else labelled.images[0].path.parent)
    report = select_detector(lambda names: EvaluationSet.from_labels(labelled, names, class_map), target, args.fps,
                             models, sizes, weights, calib, args.calib_size,
                             Path(args.cache) if args.cache else None, args.host,
                             _remote_measurer(args, target_name) if args.host else None, args.iters, args.max_minutes,
                             progress=progress)
    print(select_table(report))
    for line in report["skipped"]:
        print(f"skipped: {line}")
    print(f"cache: {report['cache']} ({report['cache_hits']} results reused)")
    if args.plot:
        print(f"plot: {pareto_plot(report, args.plot)}")
    if args.json:
        write_json(args.json, report, indent=1)
    chosen, closest = report["chosen"], report["closest"]
    if chosen is None:
        near = (f"closest: {closest['model']}@{closest['imgsz']} {closest['format']} {closest['precision']} at "
                f"{closest['fps']:.1f} FPS end to end, mAP {closest['map']:.4f}" if closest else "nothing was measured")
        print(f"error: no candidate reaches {args.fps:g} FPS on {report['device']}; {near}", file=sys.stderr)
        return 1
    what = (f"{chosen['model']}@{chosen['imgsz']} {chosen['format']} {chosen['precision']}: mAP {chosen['map']:.4f}, "
            f"{chosen['fps']:.1f} FPS end to end ({chosen['latency']})")
    if args.out:
        out = write_choice(chosen, Path(args.out), report)
        print(f"chosen: {what} -> {out}")
    else:
        print(f"chosen: {what} (-o DIR writes its package)")
    return 0

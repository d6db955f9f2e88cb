"""``edge-runtime``: export a checkpoint to a package, run it on images/video/camera, benchmark it.

This module is the dispatcher: each command lives in its own module with a ``register(sub)`` that adds
its arguments next to the function that runs it. Host-only commands (export, convert, compress,
profile, fetch, demo) import ``converters`` lazily, so a device without torch runs ``run``, ``bench``,
``validate`` and ``info`` with the device-side install alone.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .. import __version__
from ..backends import ALL_PRECISIONS
from ..errors import EdgeRuntimeError
from . import bench, compress, convert, demo, deploy, export, fetch, info, profile, run, select
from .common import HelpFormatter, guard_outputs, json_on_stdout

# the order of the commands in --help
COMMAND_MODULES = (export, convert, run, bench, select, demo, fetch, info, profile, compress, deploy)

EPILOG = f"""examples:
  edge-runtime export --model nanodet-plus-m --weights nanodet-plus-m_coco.ckpt --imgsz 416 -o pkg/
  edge-runtime run pkg/ --source street.jpg --save out/ --json out/dets.jsonl
  edge-runtime run pkg/ --source video.avi --save out/      # annotated video + FPS summary
  edge-runtime run pkg/ --source 0                           # webcam window with FPS overlay
  edge-runtime run pkg/ --source 0 --serve 8080              # headless: live view at http://127.0.0.1:8080/
  edge-runtime export --model nanodet-plus-m --weights official -o pkg/   # download the official checkpoint
  edge-runtime bench pkg/ --json bench.json
  edge-runtime validate pkg/ --data coco.json --images val/  # mAP of every artifact on this device
  edge-runtime profile --model nanodet-plus-m --imgsz 320    # params, MACs, memory per layer
  edge-runtime compress --model demo-shapes --prune 0.3 --data demo --steps 200 -o small.ckpt
  edge-runtime import detect.tflite --family ssd --classes labelmap.txt -o ssdpkg/
  edge-runtime bundle pkg/ --target rpi4 -o rpi4.tar.gz
  edge-runtime select --data val/ --format voc --target x86 --fps 60 -o best/   # best model for 60 FPS here

flags mean the same in every command:
  --json FILE     write the command's JSON there; '-' = stdout (the other output then goes to stderr)
  -o, --out       what the command writes (a file or a folder); every output's folder is checked
                  before any work
  --precision P   one precision ({', '.join(ALL_PRECISIONS)}); --precisions takes a comma-separated list

exit status: 0 done; 1 a runtime failure (one 'error:' line: an unreadable package, model or input, a
  refused artifact, a failed benchmark); 2 a usage error (bad flags or flag combinations, an output
  whose folder does not exist) and a live source given up on after --reconnect-tries (so a service's
  Restart=on-failure starts afresh, docs/service.md); 130 interrupted by a second Ctrl-C / SIGTERM.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-runtime", formatter_class=HelpFormatter, epilog=EPILOG,
        description="Convert lightweight detectors (NanoDet-Plus, YOLO-FastestV2) into deployment packages "
                    "and run them in real time on edge devices.")
    parser.add_argument("--version", action="version", version=f"edge-runtime {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more (and show tracebacks)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s: %(message)s", stream=sys.stderr)
    if not args.verbose:  # OpenCV's own multi-line warnings (e.g. a missing camera) would bury our one line
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        guard_outputs(args)
        with json_on_stdout(args):
            return args.func(args)
    except EdgeRuntimeError as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

"""``demo``: the bundled shapes detector on a generated clip, FPS per backend (host: builds the package)."""

from __future__ import annotations

import argparse
import logging
import sys

from ..backends import formats
from .common import (
    add_command,
    add_out_option,
    add_precisions_option,
    add_threads_option,
    host_tools,
    progress,
    split_list,
)

log = logging.getLogger("edge_runtime")


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "demo", cmd_demo, help="offline demo: the bundled shapes detector on a generated clip, FPS per backend",
        description="Build the bundled demo-shapes package (FP32 + INT8 ONNX; OpenVINO and TFLite when installed), "
                    "generate a 10 s clip, run it through every artifact, print the FPS table and write an annotated "
                    "video with the fastest. No download, no fixtures.",
        examples=["edge-runtime demo", "edge-runtime demo -o demo_out/ --to onnx --precisions fp32 --source 0"])
    add_out_option(p, "folder for the package, clip and annotated video; a package already there is reused "
                      "[demo_out]", folder=True, default="demo_out")
    p.add_argument("--source", default=None,
                   help="camera index (0), video or stream instead of the generated clip (a window shows the result "
                        "when a display exists)")
    p.add_argument("--to", default=",".join(formats()), metavar="LIST",
                   help=f"formats to build and time, where their tools are installed [{','.join(formats())}]")
    add_precisions_option(p, "fp32,int8", "precisions, comma-separated [fp32,int8]")
    p.add_argument("--frames", type=int, default=None,
                   help="frames per timed run [the whole clip or video; 150 for a camera or stream]")
    add_threads_option(p)
    p.add_argument("--show", choices=["auto", "yes", "no"], default="auto",
                   help="window for the annotated run: auto = for a camera or stream when a display exists [auto]")


def cmd_demo(args: argparse.Namespace) -> int:
    with host_tools("demo"):  # building the demo package is host work (edge_runtime imports no converters)
        from converters.demo import run_demo
    from ..io.pipeline import display_available

    live = args.source is not None and (args.source.isdigit() or "://" in args.source or args.source == "picam")
    show = args.show == "yes" or (args.show == "auto" and live)
    if show and not display_available():
        if args.show == "yes":
            log.warning("no display available (headless OpenCV or no $DISPLAY): running without a window")
        show = False
    refused: list[str] = []
    table, outputs = run_demo(args.out, args.source, split_list(args.to), split_list(args.precisions), args.frames,
                              args.threads, show, progress=progress, refused=refused)
    print(table)
    for kind, path in outputs.items():
        print(f"{kind}: {path}")
    for line in refused:
        print(f"error: {line}", file=sys.stderr)
    return 1 if refused else 0

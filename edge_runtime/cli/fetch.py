"""``fetch``: official pretrained weights into the cache (host)."""

from __future__ import annotations

import argparse
import sys

from ..errors import UsageError
from .common import add_command, host_tools


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "fetch", cmd_fetch, help="download official pretrained weights into the cache (host)",
                    description="Download official checkpoints (sha256-verified, cached in $EDGE_RUNTIME_CACHE or "
                                "~/.cache/edge-runtime) and print their paths.",
                    examples=["edge-runtime fetch --list", "edge-runtime fetch nanodet-plus-m-416"])
    p.add_argument("names", nargs="*", help="names from --list")
    p.add_argument("--list", action="store_true", help="list the registered official weights")


def cmd_fetch(args: argparse.Namespace) -> int:
    with host_tools("fetch"):
        from converters.official import OFFICIAL, cached_path, fetch
    from ..timing import format_table

    if args.list or not args.names:
        rows = [[w.name, w.model or "(fetch only)", w.imgsz or "", "published" if all(f.sha256 for f in w.files)
                 else "first use", "yes" if all(cached_path(w, f).exists() for f in w.files) else "no"]
                for w in OFFICIAL.values()]
        print(format_table(["name", "--model", "imgsz", "sha256", "cached"], rows))
        return 0
    unknown = [n for n in args.names if n not in OFFICIAL]
    if unknown:
        raise UsageError(f"{unknown[0]}: unknown official weights (known: {', '.join(OFFICIAL)})")
    for name in args.names:
        for path in fetch(OFFICIAL[name], progress=sys.stderr.isatty()):
            print(path)
    return 0

"""``bundle`` (a self-contained .tar.gz for a target) and ``deploy`` (ssh install + smoke run)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import (
    add_command,
    add_device_options,
    add_json_option,
    add_out_option,
    add_package_argument,
    progress,
    write_json,
)

BUNDLE_EXAMPLES = ["edge-runtime bundle pkg/ --target rpi4 -o rpi4.tar.gz",
                   "edge-runtime deploy rpi4.tar.gz --host pi@raspberrypi.local"]


def register(sub: argparse._SubParsersAction) -> None:
    bundle_help = ("self-contained bundle for a target: its artifacts, the edge-runtime wheel, pinned device "
                   "requirements, install.sh/run.sh, SHA256SUMS")
    # 'package' was this command's name; a package is the model folder everywhere else
    for name, func, help in (("bundle", cmd_bundle, bundle_help), ("package", cmd_package_renamed, None)):
        p = add_command(
            sub, name, func, help=help,
            description="Write a .tar.gz holding what the target runs: the package with only the artifacts the "
                        "target's profile uses, the edge-runtime wheel, requirements-<target>.txt (device side only, "
                        "pinned), install.sh and run.sh (both verify SHA256SUMS first). For full-integer targets (a "
                        "TFLite delegate) any float op in the .tflite is reported.",
            examples=BUNDLE_EXAMPLES)
        add_package_argument(p)
        p.add_argument("--target", required=True, help="target profile name or .toml path")
        add_out_option(p, "bundle to write (.tar.gz)", required=True)
        p.add_argument("--wheel-dir", default=None, help="take the edge-runtime wheel from here [build it]")

    p = add_command(
        sub, "deploy", cmd_deploy, help="copy a bundle to a device over ssh, install it in a venv there, smoke-run it",
        description="scp the bundle, untar, run install.sh (venv + pinned device requirements) and run.sh "
                    "(checksums, then a short bench) on the device; prints FPS per artifact.",
        examples=[*BUNDLE_EXAMPLES[1:], "edge-runtime deploy b.tar.gz --host pi@10.0.0.7 --ssh-option "
                                        "StrictHostKeyChecking=accept-new --json deploy.json"])
    p.add_argument("bundle", help="bundle made by 'edge-runtime bundle'")
    add_device_options(p, "user@host", "edge-runtime", required=True)
    p.add_argument("--smoke-iters", type=int, default=10, help="timed runs per artifact in the smoke bench [10]")
    add_json_option(p, "the result")


def cmd_bundle(args: argparse.Namespace) -> int:
    from ..deploy.bundle import make_bundle
    from ..deploy.targets import full_integer_check, runnable_target
    from ..manifest import load_manifest

    target = runnable_target(args.target)
    if target.delegate:  # full-integer accelerators: say before deployment what would fall back to the CPU
        manifest = load_manifest(args.package)
        for art in manifest.artifacts:
            check = full_integer_check(manifest, art) if art.precision in target.precisions else None
            if check is not None:
                print(check[1])
    out = make_bundle(Path(args.package), args.target, Path(args.out),
                      Path(args.wheel_dir) if args.wheel_dir else None, progress=progress)
    print(f"bundle: {out}")
    return 0


def cmd_package_renamed(args: argparse.Namespace) -> int:
    print("note: 'edge-runtime package' is now 'edge-runtime bundle'; the old name will go", file=sys.stderr)
    return cmd_bundle(args)


def cmd_deploy(args: argparse.Namespace) -> int:
    from ..deploy.remote import deploy

    result = deploy(Path(args.bundle), args.host, args.port, Path(args.identity) if args.identity else None,
                    args.remote_dir, args.ssh_options, args.smoke_iters, args.remote_python,
                    {"PIP_INDEX_URL": args.pip_index_url} if args.pip_index_url else None, progress=progress)
    for artifact, fps in result["fps"].items():
        print(f"{artifact}: {fps:.1f} FPS on {args.host}")
    print(f"install {result['install_s']:.0f} s, smoke run {result['run_s']:.0f} s, in {result['bundle_dir']}")
    if args.json:
        write_json(args.json, result)
    return 0

"""``info`` (what a package holds) and ``targets`` (the target profiles, or this host)."""

from __future__ import annotations

import argparse

from .common import add_command, add_json_option, add_package_argument, write_json


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "info", cmd_info, help="show what a package holds (model, input, artifacts, versions)",
                    description="The package's model, classes, input and preprocessing, every artifact (size, "
                                "sha256, verification) and the tool versions that made it.",
                    examples=["edge-runtime info pkg/", "edge-runtime info pkg/ --json - | jq .artifacts"])
    add_package_argument(p)
    add_json_option(p, "the manifest")

    p = add_command(
        sub, "targets", cmd_targets, help="list the target profiles (targets/*.toml), or describe this host",
        description="Target profiles are TOML files (targets/, ~/.config/edge-runtime/targets/): threads, backend "
                    "and precision order, delegate / execution provider / OpenVINO device, peak GFLOP/s. --detect "
                    "reads this host's CPU features, board and accelerator libraries and suggests a profile.",
        examples=["edge-runtime targets", "edge-runtime targets --detect --json host.json"])
    p.add_argument("--detect", action="store_true", help="describe this host and suggest a target profile")
    add_json_option(p, "the profiles (with --detect: this host)")


def cmd_info(args: argparse.Namespace) -> int:
    from ..hostfit import describe_cpu, host_mismatch, recorded_cpu
    from ..manifest import load_manifest
    from ..timing import format_table, speed_cell

    m = load_manifest(args.package)
    if args.json:
        write_json(args.json, m.to_dict())
        return 0
    inp = m.input
    print(f"{m.name} ({m.family}), {len(m.class_names)} classes: {', '.join(m.class_names[:8])}"
          f"{' ...' if len(m.class_names) > 8 else ''}")
    print(f"input {inp.name} {list(inp.shape)} {inp.layout} {inp.dtype} {inp.color}, resize {inp.resize}, "
          f"mean {list(inp.mean)} std {list(inp.std)}")
    rows = [[a.file, a.format, a.precision, m.artifact_mb(a) if (m.root / a.file).exists() else "missing",
             a.sha256[:12], speed_cell(a.extra.get("speed")), "yes" if a.verified else "FAILED", a.verdict.describe()]
            for a in m.artifacts]
    print(format_table(["artifact", "format", "precision", "MB", "sha256", "vs its FP32", "verified", "check"], rows))
    cpus = {describe_cpu(where) for a in m.artifacts if (where := recorded_cpu(a)) is not None}
    if cpus:
        print(f"checked against FP32 on: {', '.join(sorted(cpus))}")
    for art in m.artifacts:
        if why := host_mismatch(art):
            print(f"not for this CPU: {art.file}: {why} (--backend auto leaves it out)")
    print("produced by: " + ", ".join(f"{k} {v}" for k, v in m.produced_by.items() if v))
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ..deploy.targets import all_targets, targets_table

    if args.detect:
        from ..deploy.hostinfo import detect_host

        host = detect_host()
        if args.json:
            write_json(args.json, host.to_dict())
        else:
            print("\n".join(host.describe()))
        return 0
    targets = all_targets()
    if args.json:
        write_json(args.json, [asdict(t) for t in targets])
    else:
        print(targets_table(targets))
    return 0

"""How fast INT8 can get on this CPU: each backend's INT8 with every layer quantised and no accuracy budget,
beside the INT8 the package ships, each against its own FP32, in one run.

    python bench/int8_ceiling.py PKG --calib path/to/calib-coco-val2017 --calib-size 76 \\
        --labels path/to/voc-indoor-85 --image path/to/samples/000004.jpg

PKG is a package converted to FP32 and INT8 (``edge-runtime convert``). A copy of it is converted to INT8
again with nothing kept in float (``CEILING_OPTIONS``: the first convolutions, the stem, the decode tail;
no accuracy budget, so no layer goes back to float either) and kept even where it misses the usual check
against FP32. Its speed is the most that keeping fewer layers in float can buy: where even it is not much
faster than FP32, what limits the speed-up is the runtime's integer kernels and the model's shapes, not
the float layers an accuracy budget keeps. The other choices are the converters' defaults on this host
(ONNX: ``--onnx-quantizer``; OpenVINO: its preset, float-part precision and overflow fix, which the
quantised stem may change), not the options PKG was converted with (``--target``, ``--tflite-io``).

Speed: per format, the FP32, the shipped INT8 and the ceiling INT8 each in a fresh process, on the same
image and thread count, in rounds taking turns; each ratio is the median over the rounds of FP32's time
over the INT8's (the ms columns are medians too, so they need not divide to it). Accuracy: the mean
cosine with FP32 on the held-out photos convert recorded, and with ``--labels`` the mAP drop against ONNX
FP32 in points.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.bench import bench_artifact, run_isolated, synthetic_image
from edge_runtime.budget import recorded_accuracy
from edge_runtime.deploy.hostinfo import detect_host, physical_cores
from edge_runtime.errors import EdgeRuntimeError, UsageError
from edge_runtime.io.sources import read_image
from edge_runtime.manifest import load_manifest
from edge_runtime.versions import package_version


def _sibling(name: str):
    """A script of this folder as a module (the bench folder is not a package; sys.path stays as it is)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).resolve().parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# every place a converter keeps float layers by default, turned off (their meaning: converters/quantize_onnx.py,
# convert_openvino.py, tflite/int8.py); the stem gets OpenVINO's pixel-grid quantiser rather than NNCF's
CEILING_OPTIONS: dict[str, Any] = {
    "onnx_float_first_convs": 0, "onnx_keep_tail_float": False,
    "ov_float_first_convs": 0, "ov_ignore_tail": False, "ov_quantize_stem": True,
    "tflite_float_stem": False, "tflite_float_tail": False,
}


def ceiling_package(package: str | Path, out: str | Path, calib: str | Path, calib_size: int, formats: list[str],
                    onnx_quantizer: str = "nncf-u8s8", progress=lambda msg: None) -> tuple[Path, list[str], list[str]]:
    """A copy of ``package`` at ``out`` (a new folder) with the INT8 of each of ``formats`` converted again with
    ``CEILING_OPTIONS`` and no budget, in place of any INT8 the package has. Returns the copy, the formats
    whose ceiling INT8 it holds, and one line per artifact that missed convert's check (kept all the same,
    marked failed). Raises ``UsageError`` before any work on an unknown format, a missing ``calib`` or an
    ``out`` that exists or lies inside the package."""
    from converters.convert import ArtifactRefused, convert_package
    from converters.formats import check_formats

    src, out = Path(package), Path(out)
    check_formats(formats)
    if not Path(calib).exists():
        raise UsageError(f"{calib}: no such calibration folder, video or COCO json")
    if out.exists() or out.resolve().is_relative_to(src.resolve()):
        raise UsageError(f"{out}: {'exists' if out.exists() else 'is inside the package'}; name a new folder")
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("autoselect.json"))
    # the shipped INT8s of these formats leave the copy: whatever INT8 of them it lists after is a ceiling one
    copy = load_manifest(out)
    for art in [a for a in copy.artifacts if a.precision == "int8" and a.format in formats]:
        for file in copy.artifact_files(art):
            file.unlink()
    replace(copy, artifacts=tuple(a for a in copy.artifacts
                                  if not (a.precision == "int8" and a.format in formats))).save()
    refused: list[str] = []
    try:
        convert_package(out, formats, ["int8"], calib=calib, calib_size=calib_size, int8_min_cosine=0,
                        keep_failed=True, measure_speed=False, progress=progress,
                        options={**CEILING_OPTIONS, "onnx_quantizer": onnx_quantizer})
    except ArtifactRefused as exc:
        refused = list(exc.refused)
    made = {a.format for a in load_manifest(out).artifacts if a.precision == "int8"}
    return out, [f for f in formats if f in made], refused


def _held_out_cosine(extra: dict[str, Any]) -> float | None:
    """The mean per-image cosine with FP32 that convert recorded (``recorded_accuracy``), when measured on
    held-out photos."""
    checked_on = (extra.get("fp32_agreement") or {}).get("checked_on") or {}
    return recorded_accuracy(extra).get("cosine_mean") if "held_out_images" in checked_on else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("package")
    ap.add_argument("--calib", required=True, help="calibration images (as convert --calib)")
    ap.add_argument("--calib-size", type=int, default=100, help="calibration images [100, as convert]")
    ap.add_argument("--to", default=None, help="formats, comma-separated [each PKG has an FP32 and an INT8 of]")
    ap.add_argument("--onnx-quantizer", default="nncf-u8s8", choices=("nncf", "nncf-u8s8", "ort"),
                    help="ONNX INT8 recipe of the ceiling [nncf-u8s8: ONNX Runtime's integer kernels on x86; "
                         "nncf for int8 activations, as on arm64]")
    ap.add_argument("--labels", default=None, help="labelled photos: mAP drop vs ONNX FP32 of both INT8s")
    ap.add_argument("--image", default=None, help="image to time on [the package's synthetic image]")
    ap.add_argument("--threads", type=int, default=physical_cores())
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5, help="rounds of FP32, shipped and ceiling INT8 taking turns [5]")
    ap.add_argument("--out", default=None, help="keep the ceiling package in this new folder [a temporary one]")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    try:
        report = run(args)
    except EdgeRuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_status)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Convert, time and print (``main``'s arguments); returns the JSON report."""
    if args.rounds < 1 or args.iters < 1:
        raise UsageError("--rounds and --iters must be at least 1")
    sibling = _sibling("int8_vs_fp32")  # its accuracy columns and library list
    shipped = load_manifest(args.package)
    pairs = sorted({a.format for a in shipped.artifacts if a.precision == "int8"}
                   & {a.format for a in shipped.artifacts if a.precision == "fp32"})
    wanted = args.to.split(",") if args.to else pairs
    lacking = [f for f in wanted if f not in pairs]
    if lacking or not wanted:
        raise UsageError(f"{args.package}: no FP32 and INT8 of {', '.join(lacking) or 'any format'} to compare "
                         f"with (convert it with --precisions fp32,int8)")
    frame = read_image(Path(args.image)) if args.image else synthetic_image(shipped.input.size_hw)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "ceiling"
        ceiling, formats, refused = ceiling_package(args.package, out, args.calib, args.calib_size, wanted,
                                                    args.onnx_quantizer, progress=lambda m: print(f"  {m}"))
        packages = {"shipped": Path(args.package), "ceiling": ceiling}
        manifests = {"shipped": shipped, "ceiling": load_manifest(ceiling)}
        # rounds taking turns, each model in a fresh process: a drift of the machine moves all three alike
        times: dict[tuple[str, str], list[float]] = {}
        for round_ in range(args.rounds):
            for fmt in formats:
                for name, precision in (("shipped", "fp32"), ("shipped", "int8"), ("ceiling", "int8")):
                    print(f"  round {round_ + 1}/{args.rounds}: {fmt} {precision} ({name})")
                    result = run_isolated(bench_artifact, str(packages[name]), fmt, precision, args.threads,
                                          args.warmup, args.iters, frame, None)
                    times.setdefault((fmt, f"{name}-{precision}"), []).append(result["latency_ms"]["median"])
        found = {name: sibling.accuracy(str(pkg), args.labels, None, args.threads) if args.labels else {}
                 for name, pkg in packages.items()}

    rows: list[dict[str, Any]] = []
    for fmt in formats:
        fp32 = times[(fmt, "shipped-fp32")]
        row: dict[str, Any] = {"backend": fmt, "fp32_ms": float(np.median(fp32))}
        for name in packages:
            int8 = times[(fmt, f"{name}-int8")]
            art = next((a for a in manifests[name].artifacts if a.key == f"{fmt}-int8"), None)
            row[name] = {"int8_ms": float(np.median(int8)),
                         "vs_fp32": float(np.median([f / i for f, i in zip(fp32, int8)])),
                         "held_out_cosine": _held_out_cosine(art.extra) if art else None,
                         "map_drop_points": found[name].get((fmt, "int8"), {}).get("map_drop_points")}
        rows.append(row)

    host = detect_host()
    versions = {lib: package_version(lib) for lib in sibling.LIBRARIES if package_version(lib)}
    manifest = manifests["shipped"]
    print(f"\n{manifest.name} {list(manifest.input.shape)}, {host.cpu} ({host.arch}; {' '.join(host.flags)}; "
          f"target {host.suggested_target}), {args.threads} threads, median of {args.iters} runs, "
          f"{args.rounds} rounds taking turns (each ratio: the median of the rounds'), one process per model, "
          f"{args.calib_size} calibration images requested")
    print(", ".join(f"{k} {v}" for k, v in versions.items()) + "\n")
    for line in refused:
        print(f"  missed convert's check (timed all the same{'' if args.out else '; --out keeps the copy'}): {line}")

    def cell(value: Any, form: str, unit: str = "") -> str:
        return "-" if value is None else format(value, form) + unit

    headers = ["backend", "FP32 ms", "shipped INT8 ms", "shipped vs FP32", "ceiling INT8 ms", "ceiling vs FP32",
               "cosine shipped / ceiling"]
    headers += ["mAP drop shipped / ceiling (pts)"] if args.labels else []
    print("| " + " | ".join(headers) + " |")
    print("|---|" + "---:|" * (len(headers) - 1))
    for row in rows:
        s, c = row["shipped"], row["ceiling"]
        cells = [row["backend"], cell(row["fp32_ms"], ".2f"), cell(s["int8_ms"], ".2f"), cell(s["vs_fp32"], ".2f", "x"),
                 cell(c["int8_ms"], ".2f"), cell(c["vs_fp32"], ".2f", "x"),
                 f"{cell(s['held_out_cosine'], '.4f')} / {cell(c['held_out_cosine'], '.4f')}"]
        cells += [f"{cell(s['map_drop_points'], '+.2f')} / {cell(c['map_drop_points'], '+.2f')}"] if args.labels else []
        print("| " + " | ".join(cells) + " |")
    return {"host": host.to_dict(), "versions": versions, "threads": args.threads, "iters": args.iters,
            "rounds": args.rounds, "options": {**CEILING_OPTIONS, "onnx_quantizer": args.onnx_quantizer},
            "refused": refused, "rows": rows, "times_ms": {f"{fmt} {which}": t for (fmt, which), t in times.items()}}


if __name__ == "__main__":
    main()

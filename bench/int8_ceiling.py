"""How fast INT8 can get on this CPU: each backend's INT8 with every layer quantised and no accuracy budget,
beside the INT8 the package ships, each against its own FP32, in one run.

    python bench/int8_ceiling.py PKG --calib path/to/calib-coco-val2017 --calib-size 76 \\
        --labels path/to/voc-indoor-85 --image path/to/samples/000004.jpg

PKG is a package converted to FP32 and INT8 (``edge-runtime convert``). A copy of it is converted to INT8
again with nothing kept in float (``CEILING_OPTIONS``: the first convolutions, the stem, the decode tail;
no accuracy budget, so no layer goes back to float either) and kept even where it misses the usual check
against FP32. Its speed is the most that keeping fewer layers in float can buy (the other choices, the
ONNX format and OpenVINO's preset, are the converters' own): where even it is not much faster than FP32,
what limits the speed-up is the runtime's integer kernels and the model's shapes, not the float layers
an accuracy budget keeps. Speed: per format, the FP32, the shipped INT8 and the ceiling INT8
each in a fresh process, on the same image and thread count, in rounds taking turns; each ratio is the
median over the rounds of FP32's time over the INT8's. Accuracy:
the cosine with FP32 on the held-out photos that convert recorded, and with ``--labels`` the mAP drop
against ONNX FP32 in points.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.bench import bench_artifact, run_isolated, synthetic_image
from edge_runtime.deploy.hostinfo import detect_host, physical_cores
from edge_runtime.io.sources import read_image
from edge_runtime.manifest import load_manifest
from edge_runtime.versions import package_version

sys.path.insert(0, str(Path(__file__).resolve().parent))
from int8_vs_fp32 import LIBRARIES, accuracy  # noqa: E402  (the bench folder is not a package)

# every place a converter keeps float layers by default, turned off (their meaning: converters/quantize_onnx.py,
# convert_openvino.py, tflite/int8.py)
CEILING_OPTIONS: dict[str, Any] = {
    "onnx_float_first_convs": 0, "onnx_keep_tail_float": False,
    "ov_float_first_convs": 0, "ov_ignore_tail": False, "ov_quantize_stem": True,
    "tflite_float_stem": False, "tflite_float_tail": False,
}


def ceiling_package(package: str | Path, out: str | Path, calib: str | Path, calib_size: int,
                    formats: list[str] | None = None, onnx_quantizer: str = "nncf-u8s8",
                    progress=lambda msg: None) -> tuple[Path, list[str]]:
    """A copy of ``package`` at ``out`` whose INT8 artifacts (of ``formats``; default: the formats ``package``
    has an INT8 of) are converted again with ``CEILING_OPTIONS`` and no budget. Returns the copy and the lines
    of the artifacts that missed convert's check (kept all the same, marked failed)."""
    from converters.convert import ArtifactRefused, convert_package

    src, out = Path(package), Path(out)
    manifest = load_manifest(src)
    formats = formats or [a.format for a in manifest.artifacts if a.precision == "int8"]
    if not formats:
        raise SystemExit(f"{src}: no INT8 artifact to compare with (convert it with --precisions fp32,int8)")
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("autoselect.json"))
    try:
        convert_package(out, formats, ["int8"], calib=calib, calib_size=calib_size, int8_min_cosine=0,
                        keep_failed=True, measure_speed=False, progress=progress,
                        options={**CEILING_OPTIONS, "onnx_quantizer": onnx_quantizer})
    except ArtifactRefused as exc:
        return out, [str(line) for line in exc.refused]
    return out, []


def _held_out_cosine(extra: dict[str, Any]) -> float | None:
    agreement = extra.get("fp32_agreement") or {}
    return agreement.get("cosine_mean")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("package")
    ap.add_argument("--calib", required=True, help="calibration images (as convert --calib)")
    ap.add_argument("--calib-size", type=int, default=100, help="calibration images [100, as convert]")
    ap.add_argument("--to", default=None, help="formats, comma-separated [those PKG has an INT8 of]")
    ap.add_argument("--onnx-quantizer", default="nncf-u8s8", choices=("nncf", "nncf-u8s8", "ort"),
                    help="ONNX INT8 recipe of the ceiling [nncf-u8s8: ONNX Runtime's integer kernels on x86; "
                         "nncf for int8 activations, as on arm64]")
    ap.add_argument("--labels", default=None, help="labelled photos: mAP drop vs ONNX FP32 of both INT8s")
    ap.add_argument("--image", default=None, help="image to time on [the package's synthetic image]")
    ap.add_argument("--threads", type=int, default=physical_cores())
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of FP32, shipped and ceiling INT8 taking turns [3]")
    ap.add_argument("--out", default=None, help="keep the ceiling package here [a temporary folder]")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "ceiling"
        ceiling, refused = ceiling_package(args.package, out, args.calib, args.calib_size,
                                           args.to.split(",") if args.to else None, args.onnx_quantizer,
                                           progress=lambda m: print(f"  {m}"))
        packages = {"shipped": Path(args.package), "ceiling": ceiling}
        manifests = {name: load_manifest(pkg) for name, pkg in packages.items()}
        formats = [a.format for a in manifests["ceiling"].artifacts if a.precision == "int8"]
        frame = read_image(Path(args.image)) if args.image else synthetic_image(manifests["shipped"].input.size_hw)
        # rounds taking turns, each model in a fresh process: a drift of the machine moves all three alike
        times: dict[tuple[str, str], list[float]] = {}
        for round_ in range(args.rounds):
            for fmt in formats:
                for name, precision in (("shipped", "fp32"), ("shipped", "int8"), ("ceiling", "int8")):
                    print(f"  round {round_ + 1}/{args.rounds}: {fmt} {precision} ({name})")
                    result = run_isolated(bench_artifact, str(packages[name]), fmt, precision, args.threads,
                                          args.warmup, args.iters, frame, None)
                    times.setdefault((fmt, f"{name}-{precision}"), []).append(result["latency_ms"]["median"])
        found = {name: accuracy(str(pkg), args.labels, None, args.threads) if args.labels else {}
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
    versions = {lib: package_version(lib) for lib in LIBRARIES if package_version(lib)}
    manifest = manifests["shipped"]
    print(f"\n{manifest.name} {list(manifest.input.shape)}, {host.cpu} ({host.arch}; {' '.join(host.flags)}; "
          f"target {host.suggested_target}), {args.threads} threads, median of {args.iters} runs, "
          f"{args.rounds} rounds taking turns (each ratio: the median of the rounds'), one process per model, "
          f"{args.calib_size} calibration images requested")
    print(", ".join(f"{k} {v}" for k, v in versions.items()) + "\n")
    for line in refused:
        print(f"  missed convert's check (timed all the same): {line}")

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
    if args.json:
        Path(args.json).write_text(json.dumps({"host": host.to_dict(), "versions": versions, "threads": args.threads,
                                               "options": CEILING_OPTIONS, "refused": refused, "rows": rows},
                                              indent=2))


if __name__ == "__main__":
    main()

"""OpenVINO INT8 variants against OpenVINO FP32: speed timed interleaved, where the time goes, cosine.

    python bench/openvino_int8.py PKG --calib ../shared/fixtures/images/calib-coco-val2017 --calib-size 32

Each variant is an IR made by ``converters.convert_openvino`` (the code ``edge-runtime convert`` runs)
with a set of converter options (``int8`` is the default recipe with NNCF's mixed preset, ``int8-sym`` with its
performance one, both with the Concat pass; ``int8-stem`` adds
the opt-in stem pass; ``int8-plain`` and its variants are without either), compiled with an
``INFERENCE_PRECISION_HINT`` given per variant (f32, or bf16 for the float parts, which the runtime uses
for an INT8 IR on a CPU with BF16). All models run in one process, 2 threads, on the same preprocessed
image; the rounds take turns and rotate (``interleaved_times``), so a machine shared with other work slows
them alike: only the ratios mean something there, not the milliseconds.

Per variant it also reads the compiled graph's profiling counters (``PERF_COUNT``): per executed node
its kernel (``exec_type``, which ends in the precision it computed in: ``_I8``, ``_FP32``, ``_BF16``)
and its time, summed into the share of time in int8, f32 and bf16 kernels and in Reorders (layout or
precision conversions the plugin inserts between them). ``--layers N`` lists the N slowest float nodes.
Cosine: per held-out image (calibration images left out), the lowest cosine over the outputs against
FP32 ONNX, as ``convert``'s ``fp32_agreement``.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from int8_probe import fp32_cosines, heading, image_sets, probe_arguments  # bench/, beside this script

from converters.convert_job import ConvertJob
from converters.convert_openvino import convert_openvino
from edge_runtime.backends import open_backend
from edge_runtime.deploy.hostinfo import cpu_summary
from edge_runtime.manifest import load_manifest
from edge_runtime.timing import interleaved_times

# IR name -> (precision, converter options); "int8" is what `convert --precisions int8` makes with NNCF's mixed
# preset and "int8-sym" with its performance one (convert measures both, `ov_preset` auto), "int8-stem"
# that with the stem quantised on the pixel grid (`quantize_image_convs`, opt-in), "int8-plain" the default
# without the Concat pass (`quantize_concat_inputs`), and the variants of that
PLAIN = {"ov_quantize_concat_inputs": False, "ov_preset": "mixed"}
IRS: dict[str, tuple[str, dict[str, Any]]] = {
    "fp32": ("fp32", {}),
    "int8-stem": ("int8", {"ov_quantize_stem": True, "ov_preset": "mixed"}),
    "int8-stem-depth1": ("int8", {"ov_quantize_stem": True, "ov_float_first_convs": 1, "ov_preset": "mixed"}),
    "int8-plain": ("int8", PLAIN),
    "int8-performance": ("int8", {**PLAIN, "ov_preset": "performance"}),
    "int8-first-int8": ("int8", {**PLAIN, "ov_float_first_convs": 0}),
    "int8-tail-int8": ("int8", {**PLAIN, "ov_ignore_tail": False}),
    "int8-all-int8": ("int8", {**PLAIN, "ov_float_first_convs": 0, "ov_ignore_tail": False}),
    "int8": ("int8", {"ov_preset": "mixed"}),
    "int8-sym": ("int8", {"ov_preset": "performance"}),
    "int8-first-int8-concat": ("int8", {"ov_float_first_convs": 0, "ov_preset": "mixed"}),
}
# variant name -> (IR name, INFERENCE_PRECISION_HINT): every IR in f32, these also with the float parts in bf16
BF16_IRS = ("fp32", "int8-plain", "int8-all-int8", "int8", "int8-sym", "int8-stem", "int8-stem-depth1")
VARIANTS: dict[str, tuple[str, str]] = {}
for _ir in IRS:
    VARIANTS[_ir] = (_ir, "f32")
    if _ir in BF16_IRS:
        VARIANTS[f"{_ir}/bf16"] = (_ir, "bf16")


def kernel_precision(exec_type: str, node_type: str) -> str:
    """int8 / f32 / bf16 / reorder / other, from the kernel name the CPU plugin reports."""
    if node_type == "Reorder":
        return "reorder"
    match = re.search(r"_(I8|U8|FP32|F32|BF16|FP16|F16|I32)$", exec_type, re.IGNORECASE)
    kind = match.group(1).upper() if match else ""
    kinds = {"I8": "int8", "U8": "int8", "FP32": "f32", "F32": "f32", "BF16": "bf16", "FP16": "f16", "F16": "f16"}
    return kinds.get(kind, "other")


def layer_profile(backend: Any, feed: dict[str, np.ndarray], runs: int) -> list[dict[str, Any]]:
    """Per executed node of a compiled model with PERF_COUNT: type, kernel, precision, mean ms."""
    request = backend.compiled.create_infer_request()
    for _ in range(3):
        request.infer(feed)
    total: dict[str, float] = defaultdict(float)
    kind: dict[str, tuple[str, str]] = {}
    for _ in range(runs):
        request.infer(feed)
        for info in request.get_profiling_info():
            if str(info.status).endswith("EXECUTED"):
                total[info.node_name] += info.real_time.total_seconds() * 1e3
                kind.setdefault(info.node_name, (info.node_type, info.exec_type))
    return [{"node": name, "type": kind[name][0], "kernel": kind[name][1],
             "precision": kernel_precision(kind[name][1], kind[name][0]), "ms": ms / runs}
            for name, ms in total.items()]




def main() -> None:
    ap = probe_arguments(__doc__, rounds=20, per_round=10)
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--profile-runs", type=int, default=20)
    ap.add_argument("--layers", type=int, default=0, help="list the N slowest float nodes per INT8 variant")
    ap.add_argument("--keep", default=None, help="folder to keep the IRs in (default: a temporary one)")
    args = ap.parse_args()
    variants = ["fp32"] + [v for v in args.variants if v != "fp32"]  # the reference of the ratios

    import openvino.properties as props

    manifest = load_manifest(args.package)
    fp32_onnx = manifest.artifact_path(manifest.artifact("onnx", "fp32"))
    calibration, held_out = image_sets(manifest, args)
    cosines_of = fp32_cosines(manifest, held_out, args.threads)
    name = manifest.input.name
    feed = {name: held_out.tensors[0]}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        irs: dict[str, Path] = {}
        for ir in dict.fromkeys(VARIANTS[v][0] for v in variants):
            precision, options = IRS[ir]
            stage = root / ir
            stage.mkdir(parents=True, exist_ok=True)
            print(f"  converting: {ir} {options}", flush=True)
            job = ConvertJob(manifest, fp32_onnx, precision, calibration if precision == "int8" else None,
                             options=dict(options), stage=stage)
            result = convert_openvino(job)
            irs[ir] = stage / result.file
            if precision == "int8":
                print(f"    {result.extra['quantization']['concat_inputs_quantized']} Concat inputs quantised",
                      flush=True)
        backends, profiles, cosines = {}, {}, {}
        for v in variants:
            ir, hint = VARIANTS[v]
            backends[v] = open_backend(irs[ir], "openvino", args.threads, {"inference_precision": hint})
            profiled = open_backend(irs[ir], "openvino", args.threads,
                                    {"inference_precision": hint, "config": {props.enable_profiling(): True}})
            profiles[v] = layer_profile(profiled, feed, args.profile_runs)
            del profiled
            cosines[v] = cosines_of(lambda t, b=backends[v]: b.run({name: t}))
        runners = [backends[v].timing_runner(feed) for v in variants]
        samples = interleaved_times(runners, args.rounds, args.per_round)
    medians = {v: float(np.median(s)) for v, s in zip(variants, samples)}
    print(f"\n{heading(manifest, args, 'openvino', len(held_out))}\n")
    print("| variant | hint | median ms | speed vs FP32 | int8 time | f32 time | bf16 time | reorder time "
          "| float convs | cosine mean | cosine worst |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for v in variants:
        layers = profiles[v]
        total = sum(layer["ms"] for layer in layers) or 1.0
        share = defaultdict(float)
        for layer in layers:
            share[layer["precision"]] += layer["ms"] / total
        float_convs = sum(1 for layer in layers if "Convolution" in layer["type"] and layer["precision"] != "int8")
        convs = sum(1 for layer in layers if "Convolution" in layer["type"])
        row = {"variant": v, "ir": VARIANTS[v][0], "options": IRS[VARIANTS[v][0]][1], "hint": VARIANTS[v][1],
               "median_ms": medians[v], "speed_vs_fp32": medians["fp32"] / medians[v],
               "share": dict(share), "float_convs": float_convs, "convs": convs,
               "cosine_mean": float(np.mean(cosines[v])), "cosine_worst": float(np.min(cosines[v])),
               "layers": layers}
        rows.append(row)
        print(f"| {v} | {row['hint']} | {medians[v]:.2f} | {row['speed_vs_fp32']:.2f}x | {share['int8']:.0%} "
              f"| {share['f32']:.0%} | {share['bf16']:.0%} | {share['reorder']:.0%} | {float_convs}/{convs} "
              f"| {row['cosine_mean']:.4f} | {row['cosine_worst']:.4f} |")
    if args.layers:
        for row in rows:
            if row["ir"] == "fp32":
                continue
            slow = sorted((la for la in row["layers"] if la["precision"] != "int8"), key=lambda la: -la["ms"])
            print(f"\n{row['variant']}: the {args.layers} slowest non-int8 nodes (profiled ms, PERF_COUNT)")
            for la in slow[:args.layers]:
                print(f"  {la['ms']:.3f} ms  {la['type']:<18} {la['kernel']:<28} {la['node']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"host": cpu_summary(), "threads": args.threads, "rows": rows},
                                              indent=2))


if __name__ == "__main__":
    main()

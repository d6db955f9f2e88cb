"""OpenVINO INT8 variants against OpenVINO FP32: speed timed interleaved, where the time goes, cosine.

    python bench/openvino_int8.py PKG --calib ../shared/fixtures/images/calib-coco-val2017 --calib-size 32

Each variant is an IR made by ``converters.convert_openvino`` (the code ``edge-runtime convert`` runs)
with a set of converter options, compiled with an ``INFERENCE_PRECISION_HINT`` (f32, as the runtime
backend pins on CPU, or bf16 for the float parts). All models run in one process, 2 threads, on the
same preprocessed image; the rounds take turns and rotate (``interleaved_times``), so a machine shared
with other work slows them alike: only the ratios mean something there, not the milliseconds.

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

from converters.compress.lowrank import interleaved_times
from converters.convert_job import ConvertJob
from converters.convert_openvino import convert_openvino, decode_tail
from edge_runtime.backends import open_backend
from edge_runtime.deploy.hostinfo import cpu_summary
from edge_runtime.manifest import load_manifest

# IR name -> (precision, converter options, post-pass on the converted IR or None);
# "int8" is what `convert --precisions int8` makes today
IRS: dict[str, tuple[str, dict[str, Any], str | None]] = {
    "fp32": ("fp32", {}, None),
    "int8": ("int8", {}, None),
    "int8-performance": ("int8", {"ov_preset": "performance"}, None),
    "int8-first-int8": ("int8", {"ov_float_first_convs": 0}, None),
    "int8-tail-int8": ("int8", {"ov_ignore_tail": False}, None),
    "int8-all-int8": ("int8", {"ov_float_first_convs": 0, "ov_ignore_tail": False}, None),
    "int8-concat": ("int8", {}, "concat"),
    "int8-concat-first-int8": ("int8", {"ov_float_first_convs": 0}, "concat"),
}
# variant name -> (IR name, INFERENCE_PRECISION_HINT)
VARIANTS: dict[str, tuple[str, str]] = {
    "fp32": ("fp32", "f32"),
    "fp32/bf16": ("fp32", "bf16"),
    "int8": ("int8", "f32"),
    "int8/bf16": ("int8", "bf16"),
    "int8-performance": ("int8-performance", "f32"),
    "int8-first-int8": ("int8-first-int8", "f32"),
    "int8-tail-int8": ("int8-tail-int8", "f32"),
    "int8-all-int8": ("int8-all-int8", "f32"),
    "int8-all-int8/bf16": ("int8-all-int8", "bf16"),
    "int8-concat": ("int8-concat", "f32"),
    "int8-concat/bf16": ("int8-concat", "bf16"),
    "int8-concat-first-int8": ("int8-concat-first-int8", "f32"),
}


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


def quantize_concat_inputs(model: Any, tensors: list[np.ndarray], input_name: str) -> int:
    """Put a FakeQuantize (256 levels, the input's min..max over ``tensors``) on every float input of
    the Concats outside the decode tail that NNCF left partly or wholly float; returns how many.

    NNCF quantises the inputs of convolutions and moves the quantizers up through data-movement ops
    only while every consumer wants them: in a ShuffleNetV2 unit the channel split feeds a conv (the
    branch) and the next Concat (the pass-through half), so its quantizer stops below the split and
    the Concat -> ShuffleChannels (or Gather) -> Split chain runs in f32 on full-size tensors. With
    both Concat inputs quantized, the CPU plugin's low-precision pass runs that chain in u8."""
    import openvino as ov
    import openvino.opset13 as ops

    tail = set(decode_tail(model))
    sources = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Concat" or op.get_friendly_name() in tail:
            continue
        for port in op.inputs():
            src = port.get_source_output()
            if src.get_node().get_type_name() not in ("FakeQuantize", "Constant"):
                sources.append((port, src))
    if not sources:
        return 0
    # ranges: run the model with the sources as extra outputs (a copy: add_outputs changes the model)
    probe = model.clone()
    by_name = {op.get_friendly_name(): op for op in probe.get_ordered_ops()}
    extra = [by_name[src.get_node().get_friendly_name()].output(src.get_index()) for _, src in sources]
    probe.add_outputs(extra)
    compiled = ov.compile_model(probe, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    first = len(compiled.outputs) - len(extra)
    lows = np.full(len(extra), np.inf)
    highs = np.full(len(extra), -np.inf)
    for tensor in tensors:
        request.infer({input_name: tensor})
        for i in range(len(extra)):
            value = request.get_output_tensor(first + i).data
            lows[i] = min(lows[i], float(value.min()))
            highs[i] = max(highs[i], float(value.max()))
    for (port, src), low, high in zip(sources, lows, highs):
        low = min(low, 0.0)  # zero must be exact (padding, the LeakyRelu's kink)
        lo, hi = ops.constant(np.float32(low)), ops.constant(np.float32(high))
        fq = ops.fake_quantize(src, lo, hi, lo, hi, 256)
        fq.set_friendly_name(f"{src.get_node().get_friendly_name()}/concat_fq")
        port.replace_source_output(fq.output(0))
    model.validate_nodes_and_infer_types()
    return len(sources)


POST_PASSES = {"concat": quantize_concat_inputs}


def main() -> None:
    ap = probe_arguments(__doc__, rounds=20, per_round=10)
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--profile-runs", type=int, default=20)
    ap.add_argument("--layers", type=int, default=0, help="list the N slowest float nodes per INT8 variant")
    ap.add_argument("--keep", default=None, help="folder to keep the IRs in (default: a temporary one)")
    args = ap.parse_args()
    variants = ["fp32"] + [v for v in args.variants if v != "fp32"]  # the reference of the ratios

    import openvino as ov
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
            precision, options, post = IRS[ir]
            stage = root / ir
            stage.mkdir(parents=True, exist_ok=True)
            print(f"  converting: {ir} {options} {post or ''}", flush=True)
            job = ConvertJob(manifest, fp32_onnx, precision, calibration if precision == "int8" else None,
                             options=dict(options), stage=stage)
            irs[ir] = stage / convert_openvino(job).file
            if post:
                model = ov.Core().read_model(str(irs[ir]))
                added = POST_PASSES[post](model, calibration.tensors, name)
                print(f"    {post}: {added} FakeQuantize added", flush=True)
                irs[ir] = stage / f"{irs[ir].stem}_{post}.xml"
                ov.save_model(model, str(irs[ir]), compress_to_fp16=False)
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
        row = {"variant": v, "ir": VARIANTS[v][0], "options": IRS[VARIANTS[v][0]][1],
               "post_pass": IRS[VARIANTS[v][0]][2], "hint": VARIANTS[v][1],
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

"""Which activation quantizers of the U8S8 ONNX graph cost the accuracy, and what keeping them in float costs.

    python bench/onnx_u8s8_bypass.py PKG --calib ../shared/fixtures/images/calib-coco-val2017 --calib-size 32 \\
        --leakyrelu-ranges

Quantises with ``quantize_static`` (U8S8 QDQ, per-channel weights, decode tail in float; with
``--leakyrelu-ranges`` each pre-activation Conv output that feeds a LeakyRelu gets the uint8 range that
minimises the squared error after the LeakyRelu). Then, for each activation QuantizeLinear/DequantizeLinear
pair, the pair alone is bypassed (its consumers read the float tensor, so ONNX Runtime can no longer fuse
the Conv around it) and the gain in mean cosine on the even held-out images is recorded; the pairs are then
bypassed greedily, best first, until that cosine reaches ``--target`` or ``--max-bypassed`` pairs. The
odd held-out images report each step (cosine mean and worst, as ``convert``'s ``fp32_agreement``), and
every step is timed against FP32 and the fully quantised graph, interleaved in one process.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from int8_probe import heading, image_sets, mse_range, probe_arguments, quantize_u8s8  # bench/, beside this script
from onnxruntime.quantization.shape_inference import quant_pre_process

from edge_runtime.compare import compare
from edge_runtime.manifest import load_manifest
from edge_runtime.timing import interleaved_times

REPORT_STEPS = (1, 2, 3, 5, 8, 12, 16, 20, 25, 30, 40)


def leakyrelu_ranges(prepared: onnx.ModelProto, session, input_name: str, tensors: list[np.ndarray]) -> dict:
    """``TensorQuantOverrides``: per Conv output read only by a LeakyRelu, the (rmin, rmax) of a grid of
    shrunken calibration ranges whose uint8 rounding errs least after the LeakyRelu."""
    readers: dict[str, list] = {}
    for node in prepared.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    slopes = {}
    for node in prepared.graph.node:
        after = readers.get(node.output[0], [])
        if node.op_type == "Conv" and len(after) == 1 and after[0].op_type == "LeakyRelu":
            slopes[node.output[0]] = next((a.f for a in after[0].attribute if a.name == "alpha"), 0.01)
    rng = np.random.default_rng(0)
    values: dict[str, list[np.ndarray]] = {t: [] for t in slopes}
    for tensor in tensors:
        for name, value in zip(slopes, session(list(slopes), tensor)):
            values[name].append(value.ravel()[rng.integers(0, value.size, 20000)])
    overrides = {}
    for name, alpha in slopes.items():
        best = mse_range(np.concatenate(values[name]), lambda x, a=alpha: np.where(x >= 0, x, a * x),
                         shrink_high=(1, .9, .8, .7))
        overrides[name] = [{"rmin": np.float32(best[0]), "rmax": np.float32(best[1])}]
    return overrides


def bypass(model: onnx.ModelProto, pairs: set[str]) -> onnx.ModelProto:
    """The model with the named activation QuantizeLinear nodes and their DequantizeLinear readers removed."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    drop, rename = set(pairs), {}
    for node in out.graph.node:
        if node.op_type == "QuantizeLinear" and node.name in pairs:
            for reader in out.graph.node:
                if reader.op_type == "DequantizeLinear" and reader.input[0] == node.output[0]:
                    drop.add(reader.name)
                    rename[reader.output[0]] = node.input[0]
    kept = [n for n in out.graph.node if n.name not in drop]
    for node in kept:
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(name, name)
    del out.graph.node[:]
    out.graph.node.extend(kept)
    return out


def main() -> None:
    ap = probe_arguments(__doc__, rounds=15, per_round=5)
    ap.add_argument("--leakyrelu-ranges", action="store_true")
    ap.add_argument("--target", type=float, default=0.99)
    ap.add_argument("--max-bypassed", type=int, default=40)
    args = ap.parse_args()
    manifest = load_manifest(args.package)
    name = manifest.input.name
    calibration, held_out = image_sets(manifest, args)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.log_severity_level = 3

    def session(model):
        s = onnxruntime.InferenceSession(model if isinstance(model, str) else model.SerializeToString(), options,
                                         providers=["CPUExecutionProvider"])
        return lambda outs, tensor: s.run(outs, {name: tensor})

    fp32_path = str(manifest.artifact_path(manifest.artifact("onnx", "fp32")))
    fp32 = session(fp32_path)
    outputs = list(manifest.artifact("onnx", "fp32").outputs)
    images = held_out.tensors
    reference = [fp32(outputs, t) for t in images]
    search, report = range(0, len(images), 2), range(1, len(images), 2)

    def cosines(run, which) -> list[float]:
        return [compare(reference[i], run(outputs, images[i]))["cosine"] for i in which]

    overrides = {}
    if args.leakyrelu_ranges:
        with tempfile.TemporaryDirectory() as tmp:
            prepared = Path(tmp) / "prepared.onnx"
            quant_pre_process(fp32_path, str(prepared), skip_symbolic_shape=False)
            model = onnx.load(str(prepared))
            probe = onnx.load(str(prepared))
        for node in probe.graph.node:
            if node.op_type == "Conv":
                probe.graph.output.append(onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT,
                                                                             None))
        overrides = leakyrelu_ranges(model, session(probe), name, calibration.tensors)
    quantized = quantize_u8s8(fp32_path, name, calibration.tensors, overrides)
    weights = {i.name for i in quantized.graph.initializer}
    producer = {out: node for node in quantized.graph.node for out in node.output}
    pairs = [n.name for n in quantized.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in weights]
    base = float(np.mean(cosines(session(quantized), search)))
    print(heading(manifest, args, "onnxruntime", len(images)))
    print(f"U8S8{' with LeakyRelu-aware ranges' if overrides else ''}: {len(pairs)} activation quantizers; "
          f"cosine mean {base:.4f} on the {len(search)} search images")
    gain = {p: float(np.mean(cosines(session(bypass(quantized, {p})), search))) - base for p in pairs}
    order = sorted(pairs, key=gain.get, reverse=True)
    by_name = {n.name: n for n in quantized.graph.node}
    print("the pairs whose bypass alone gains most:")
    for p in order[:8]:
        made_by = producer.get(by_name[p].input[0])
        print(f"  {gain[p]:+.4f}  after {made_by.op_type + ' ' + made_by.name if made_by else 'the input'}")
    steps: dict[int, tuple[onnx.ModelProto, float, list[float]]] = {}
    for k in range(1, min(args.max_bypassed, len(order)) + 1):
        candidate = bypass(quantized, set(order[:k]))
        run = session(candidate)
        searched = float(np.mean(cosines(run, search)))
        if k in REPORT_STEPS or searched >= args.target or k == args.max_bypassed:
            steps[k] = candidate, searched, cosines(run, report)
        if searched >= args.target:
            break
    runs = {"fp32": fp32, "u8s8": session(quantized), **{f"{k} bypassed": session(m) for k, (m, _, _) in steps.items()}}
    feed = images[0]
    samples = interleaved_times([lambda r=r: r(outputs, feed) for r in runs.values()], args.rounds, args.per_round)
    median = {key: float(np.median(s)) for key, s in zip(runs, samples)}
    print("\n| graph | ms | speed vs FP32 | cosine search | cosine report mean | report worst |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| fp32 | {median['fp32']:.2f} | 1.00x | | | |")
    print(f"| u8s8 | {median['u8s8']:.2f} | {median['fp32'] / median['u8s8']:.2f}x | {base:.4f} | | |")
    for k, (_, searched, reported) in steps.items():
        ms = median[f"{k} bypassed"]
        print(f"| {k} bypassed | {ms:.2f} | {median['fp32'] / ms:.2f}x | {searched:.4f} | {np.mean(reported):.4f} | "
              f"{np.min(reported):.4f} |")


if __name__ == "__main__":
    main()

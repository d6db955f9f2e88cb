"""TFLite full-integer INT8: our own calibration, range refinement, optional bias correction.

int8 per-channel symmetric weights, int8 per-tensor activations, calibrated on ``job.calibration``
(the runtime's own preprocessing):

1. our own calibration run writes per-tensor min/max into the float model;
2. each range is narrowed where that lowers the quantisation MSE *as seen through the LeakyReLU that
   consumes it* (negatives are scaled by 0.1, so their resolution matters 100x less); tensors of the
   decode tail and the head outputs keep their full range, so peak scores are never clipped;
3. TFLite's MLIR quantiser. With float I/O the stem convolution (the most quantisation-sensitive
   layer) and the decode tail (sigmoid, softmax-integral, reshapes: no speed to gain) stay float;
4. optional empirical bias correction (``tflite_bias_correction``), which TFLite's quantiser lacks;
5. with an accuracy budget, the fewest leading levels of the network go back to float.

The measurements behind each step: docs/tflite.md.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import EdgeRuntimeError

from ..accuracy import Runner, float_prefix_search
from ..convert_job import ConvertJob
from .naming import rename_to_onnx_names
from .onnx2tf_run import TfGraph

CALIBRATION_RANGES = ("mse", "minmax")
_MSE_SAMPLES = 32768  # values per tensor kept for the range search


@contextlib.contextmanager
def _native_stdout_silenced():
    """TensorFlow's C++ quantiser prints a settings line to fd 1 on every call (hundreds in a search)."""
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _opnames() -> dict[int, str]:
    from tensorflow.lite.python import schema_py_generated as schema

    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def _decode_tail(model: Any) -> tuple[set[int], set[int]]:
    """(tensors produced by the decode tail, tensors it reads): the tail is every op reachable
    backwards from the outputs without crossing a convolution."""
    names = _opnames()
    sg = model.subgraphs[0]
    producer = {int(t): op for op in sg.operators for t in op.outputs}
    tail: set[int] = set()
    reads: set[int] = set()
    stack = [int(t) for t in sg.outputs]
    while stack:
        t = stack.pop()
        op = producer.get(t)
        if op is None or t in tail:
            continue
        code = model.operatorCodes[op.opcodeIndex]
        if names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "") in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        tail.update(int(o) for o in op.outputs)
        inputs = [int(i) for i in op.inputs if i >= 0]
        reads.update(inputs)
        stack.extend(inputs)
    return tail, reads - tail


def _stem(model: Any) -> set[int]:
    """Tensor indices produced by the stem: the ops from the graph input up to the first
    convolution and the activation right after it (PAD -> CONV_2D -> LEAKY_RELU, say)."""
    names = _opnames()
    sg = model.subgraphs[0]
    kind = lambda op: names.get(max(model.operatorCodes[op.opcodeIndex].builtinCode,
                                    model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode), "")
    consumers: dict[int, list[Any]] = {}
    for op in sg.operators:
        for i in op.inputs:
            consumers.setdefault(int(i), []).append(op)
    stem: set[int] = set()
    frontier = [int(t) for t in sg.inputs]
    for _ in range(4):  # a pad or two, then the convolution
        users = [op for t in frontier for op in consumers.get(t, [])]
        if len(users) != 1:
            return set()
        op = users[0]
        stem.update(int(o) for o in op.outputs)
        frontier = [int(o) for o in op.outputs]
        if kind(op) in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            after = consumers.get(frontier[0], [])
            if len(after) == 1 and kind(after[0]) in ("LEAKY_RELU", "RELU", "RELU6", "PRELU", "HARD_SWISH", "LOGISTIC"):
                stem.update(int(o) for o in after[0].outputs)
            return stem
        if kind(op) not in ("PAD", "PADV2", "MIRROR_PAD"):
            return set()
    return set()


def _calibrate(fp32: bytes, data: list[np.ndarray], refine: bool, keep: set[str]) -> tuple[bytes, dict[str, Any]]:
    """A float model carrying per-tensor min/max (what TFLite's calibrator writes), from our own run
    over ``data``; with ``refine`` each range is then narrowed to minimise the quantisation MSE seen
    through the LeakyReLU that consumes it. Tensors named in ``keep`` keep their full range."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        from tensorflow.lite.python.interpreter import Interpreter, OpResolverType
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.python.optimize import calibrator
    from tensorflow.lite.tools import flatbuffer_utils

    content = bytes(calibrator.add_intermediate_tensors(fp32))
    model = flatbuffer_utils.convert_bytearray_to_object(content)
    sg = model.subgraphs[0]
    names = _opnames()
    produced = {int(t) for op in sg.operators for t in op.outputs}
    targets = sorted(i for i in produced | {int(t) for t in sg.inputs}
                     if sg.tensors[i].type == schema.TensorType.FLOAT32)
    leaky: dict[int, float | None] = {}
    for op in sg.operators:
        code = model.operatorCodes[op.opcodeIndex]
        kind = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "")
        alpha = float(op.builtinOptions.alpha) if kind == "LEAKY_RELU" else None
        for i in op.inputs:
            i = int(i)
            if i in leaky and leaky[i] != alpha:
                leaky[i] = None
            elif i not in leaky:
                leaky[i] = alpha
    interpreter = Interpreter(model_content=content, experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    rng = np.random.default_rng(0)
    per_image = max(1, _MSE_SAMPLES // len(data))
    lo = {i: np.inf for i in targets}
    hi = {i: -np.inf for i in targets}
    samples: dict[int, list[np.ndarray]] = {i: [] for i in targets}
    for x in data:
        interpreter.set_tensor(input_index, x)
        interpreter.invoke()
        for i in targets:
            v = interpreter.get_tensor(i).ravel()
            if not v.size:
                continue
            lo[i] = min(lo[i], float(v.min()))
            hi[i] = max(hi[i], float(v.max()))
            if refine:
                samples[i].append(v if v.size <= per_image else v[rng.integers(0, v.size, per_image)])
    protected = {i for i in targets if sg.tensors[i].name.decode() in keep} | {int(t) for t in sg.inputs}
    narrowed = 0
    for i in targets:
        a, b = lo[i], hi[i]
        if not np.isfinite(a) or not np.isfinite(b):
            continue
        if refine and i not in protected and b > a:
            a2, b2 = _mse_range(np.concatenate(samples[i]), a, b, leaky.get(i))
            narrowed += (a2, b2) != (a, b)
            a, b = a2, b2
        q = sg.tensors[i].quantization or schema.QuantizationParametersT()
        q.min, q.max = np.array([a], np.float32), np.array([b], np.float32)
        sg.tensors[i].quantization = q
    stats = {"ranges": "mse" if refine else "minmax", "tensors": len(targets), "narrowed": narrowed}
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), stats


def _channel_means(content: bytes, data: list[np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """Per-channel mean (over images and positions) of the named tensors, dequantised to float."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        from tensorflow.lite.python.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=content, experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    details = {d["name"]: d for d in interpreter.get_tensor_details()}
    wanted = [details[n] for n in names if n in details]
    input_index = interpreter.get_input_details()[0]["index"]
    sums: dict[str, np.ndarray] = {}
    for x in data:
        interpreter.set_tensor(input_index, x)
        interpreter.invoke()
        for d in wanted:
            v = interpreter.get_tensor(d["index"])
            scale, zero = d["quantization"]
            v = (v.astype(np.float32) - zero) * scale if scale else v.astype(np.float32)
            m = v.reshape(-1, v.shape[-1]).mean(0)
            sums[d["name"]] = sums.get(d["name"], 0.0) + m
    return {n: v / len(data) for n, v in sums.items()}


def _depths(model: Any) -> list[tuple[Any, int, bool]]:
    """(operator, convolutions on the longest path from the input up to and including it, is it a
    convolution) in execution order (the flatbuffer's operator order)."""
    names = _opnames()
    depth: dict[int, int] = {}
    found = []
    for op in model.subgraphs[0].operators:
        code = model.operatorCodes[op.opcodeIndex]
        is_conv = names.get(max(code.builtinCode, code.deprecatedBuiltinCode)) in ("CONV_2D", "DEPTHWISE_CONV_2D")
        here = max((depth.get(int(i), 0) for i in op.inputs if i >= 0), default=0) + is_conv
        for o in op.outputs:
            depth[int(o)] = here
        found.append((op, here, is_conv))
    return found


def _levels(model: Any) -> list[list[str]]:
    """Output tensor names of every operator, grouped by convolution depth from the input."""
    sg = model.subgraphs[0]
    levels: dict[int, list[str]] = {}
    for op, depth, _ in _depths(model):
        levels.setdefault(depth, []).extend(sg.tensors[int(o)].name.decode() for o in op.outputs)
    return [levels[d] for d in sorted(levels)]


def _integer_convs(model: Any) -> list[list[tuple[str, Any]]]:
    """(output name, bias tensor) of each integer convolution, grouped by depth: no convolution
    depends on another of its own group."""
    from tensorflow.lite.python import schema_py_generated as schema

    sg = model.subgraphs[0]
    levels: dict[int, list[tuple[str, Any]]] = {}
    for op, depth, is_conv in _depths(model):
        if is_conv and len(op.inputs) > 2 and op.inputs[2] >= 0:
            out, bias = sg.tensors[int(op.outputs[0])], sg.tensors[int(op.inputs[2])]
            if out.type == schema.TensorType.INT8 and bias.type == schema.TensorType.INT32:
                levels.setdefault(depth, []).append((out.name.decode(), bias))
    return [levels[d] for d in sorted(levels)]


def _correct_biases(quantized: bytes, fp32: bytes, data: list[np.ndarray]) -> tuple[bytes, int]:
    """Empirical bias correction, which TFLite's quantiser lacks (NNCF's equivalent is what lifts
    depthwise models most): each integer convolution's int32 bias absorbs the per-channel mean
    difference between the float model's output and the quantised one's on the calibration images.
    Level by level from the input, re-measured after each: corrected upstream layers change what
    reaches the next ones (correcting all at once over-corrects the deep layers)."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(quantized)
    levels = _integer_convs(model)
    want = _channel_means(fp32, data, [name for level in levels for name, _ in level])
    corrected = 0
    for level in levels:
        have = _channel_means(quantized, data, [name for name, _ in level])
        for name, bias in level:
            if name not in want or name not in have:
                continue
            buffer = model.buffers[bias.buffer]
            values = np.frombuffer(np.asarray(buffer.data, np.uint8).tobytes(), np.int32).copy()
            values += np.round((want[name] - have[name]) / np.asarray(bias.quantization.scale, np.float64)
                               ).astype(np.int32)
            buffer.data = values.view(np.uint8)
            corrected += 1
        quantized = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    return quantized, corrected


def _mse_range(v: np.ndarray, lo: float, hi: float, alpha: float | None) -> tuple[float, float]:
    """The (lo, hi) among min/max and a few percentiles that minimises the uint8-grid error of ``v``
    (measured after LeakyReLU(alpha) when the tensor feeds one)."""
    v = v.astype(np.float32)
    act = (lambda z: np.where(z >= 0, z, alpha * z)) if alpha is not None else (lambda z: z)
    ref = act(v)
    lows = [lo] + list(np.percentile(v, [0.001, 0.01, 0.1, 0.5] + ([1, 2, 5, 10, 20] if alpha is not None else [])))
    highs = [hi] + list(np.percentile(v, [99.999, 99.99, 99.9, 99.5]))
    best = (np.inf, lo, hi)
    for a in lows:
        for b in highs:
            a0, b0 = min(float(a), 0.0), max(float(b), 0.0)
            if b0 <= a0:
                continue
            scale = (b0 - a0) / 255.0
            q = np.clip(np.round((v - a0) / scale), 0, 255) * scale + a0
            err = float(np.mean((act(q) - ref) ** 2))
            if err < best[0]:
                best = (err, a0, b0)
    return best[1], best[2]


def _runner(content: bytes, graph: TfGraph, role_order: list[str], path: Path) -> Runner:
    """Run a candidate model the way the device will: with the ONNX names, through the LiteRT backend."""
    from edge_runtime.backends import open_backend
    from edge_runtime.preprocess import to_layout

    finished, outputs = rename_to_onnx_names(content, graph, role_order)
    path.write_bytes(finished)
    backend = open_backend(path, "tflite", 2)
    return lambda tensor: [backend.run({graph.input_name: to_layout(tensor, "NHWC")})[n] for n in outputs]


def _bias_correction(job: ConvertJob, quantized: bytes, fp32: bytes, data: list[np.ndarray], graph: TfGraph,
                     role_order: list[str]) -> tuple[bytes, dict[str, Any]]:
    """``tflite_bias_correction``: False (default), "auto" (keep the corrected model only when it
    agrees better with FP32 on the held-out images) or True. Off by default: it helped one model and
    hurt the other, and takes minutes on a NanoDet-sized graph (docs/tflite.md)."""
    mode = job.options.get("tflite_bias_correction", False)
    if mode is False or (mode == "auto" and job.agreement is None):
        return quantized, {"applied": False, "why": "off" if mode is False else "no held-out images to judge it"}
    job.progress("tflite int8: bias correction, level by level")
    corrected, layers = _correct_biases(quantized, fp32, data)
    if mode is True:
        return corrected, {"applied": True, "layers": layers}
    with tempfile.TemporaryDirectory() as tmp:
        plain = job.agreement(_runner(quantized, graph, role_order, Path(tmp) / "plain.tflite"))
        fixed = job.agreement(_runner(corrected, graph, role_order, Path(tmp) / "corrected.tflite"))
    info = {"applied": fixed > plain, "layers": layers, "held_out_cosine": {"without": round(plain, 5),
                                                                           "with": round(fixed, 5)}}
    return (corrected if fixed > plain else quantized), info


def quantize_int8(graph: TfGraph, job: ConvertJob, fp32: bytes, io_type: str) -> tuple[bytes, dict[str, Any]]:
    """The full-integer model of ``fp32`` (the float flatbuffer of ``graph``) with ``io_type`` inputs and
    outputs, and its manifest ``quantization`` details; the steps are the module docstring's."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as tfl_convert
    from tensorflow.lite.tools import flatbuffer_utils

    if job.calibration is None or not len(job.calibration):
        raise EdgeRuntimeError("TFLite INT8 needs calibration images (--calib)")
    ranges = job.options.get("tflite_calibration", "mse")
    if ranges not in CALIBRATION_RANGES:
        raise EdgeRuntimeError(f"tflite_calibration must be one of {', '.join(CALIBRATION_RANGES)}, got {ranges!r}")
    data = [np.ascontiguousarray(np.transpose(t, (0, 2, 3, 1)), dtype=np.float32) for t in job.calibration.tensors]
    model = flatbuffer_utils.convert_bytearray_to_object(fp32)
    sg = model.subgraphs[0]
    tail_ids, boundary = _decode_tail(model)
    tail = {sg.tensors[i].name.decode() for i in tail_ids}
    keep = tail | {sg.tensors[i].name.decode() for i in boundary}
    job.progress(f"tflite int8: calibrating on {len(data)} images ({ranges} ranges)")
    calibrated, stats = _calibrate(fp32, data, ranges == "mse", keep=keep)
    # with float I/O the graph may keep a few float ops: the decode tail (no speed to gain there) and
    # the stem convolution (by far the most quantisation-sensitive layer of NanoDet-Plus-m)
    float_tail = io_type == "float32" and bool(job.options.get("tflite_float_tail", True))
    float_stem = io_type == "float32" and bool(job.options.get("tflite_float_stem", True))
    stem = {sg.tensors[i].name.decode() for i in _stem(model)} if float_stem else set()
    deny = (tail if float_tail else set()) | stem

    def quantize(extra_float: list[str]) -> bytes:  # float I/O; bias correction and the search run on this
        with _native_stdout_silenced():
            return tfl_convert.mlir_quantize(calibrated, disable_per_channel=False, fully_quantize=False,
                                             input_data_type=tf.float32, output_data_type=tf.float32,
                                             denylisted_nodes=sorted(deny | set(extra_float)) or None)

    role_order = list(job.manifest.artifact("onnx", "fp32").outputs)
    if job.accuracy is not None and io_type != "float32":
        raise EdgeRuntimeError(f"accuracy-aware INT8 keeps layers in float, which a full-integer model with "
                               f"{io_type} I/O (for NPU delegates) cannot have: drop --tflite-io or the budget")
    quantized, correction = _bias_correction(job, quantize([]), fp32, data, graph, role_order)
    control = None
    float_layers: list[str] = []
    if job.accuracy is not None:
        budget = job.accuracy
        with tempfile.TemporaryDirectory() as tmp:
            before = budget.metric(_runner(quantized, graph, role_order, Path(tmp) / "base.tflite"))
            if before < budget.target:
                levels = [[name for name in level if name not in deny] for level in _levels(model)]
                job.progress(f"tflite int8: {budget.metric.name} {before:.4f} < {budget.target:.4f} on "
                             f"{len(budget.metric.images)} held-out images: searching float levels")
                float_layers, _ = float_prefix_search(
                    lambda layers: _runner(quantize(layers), graph, role_order, Path(tmp) / "candidate.tflite"),
                    levels, budget, progress=job.progress)
                quantized, correction = _bias_correction(job, quantize(float_layers), fp32, data, graph, role_order)
            after = budget.metric(_runner(quantized, graph, role_order, Path(tmp) / "final.tflite"))
        control = budget.describe(before, after, float_layers)
    if io_type != "float32":  # drop the float QUANTIZE/DEQUANTIZE at the edges: integer I/O
        from tensorflow.lite.python.util import modify_model_io_type

        dtype = {"int8": tf.int8, "uint8": tf.uint8}[io_type]
        quantized = modify_model_io_type(quantized, dtype, dtype)
    float_ops = [what for what, on in (("stem convolution", bool(stem)), ("decode tail", float_tail and bool(tail)),
                                       (f"{len(float_layers)} ops nearest the input", bool(float_layers))) if on]
    info = {"io_dtype": io_type, "weights": "int8 per-channel symmetric", "activations": "int8 per-tensor",
            "calibration_ranges": stats["ranges"], "ranges_narrowed": stats["narrowed"],
            "float_ops": float_ops or "none (full integer)"}
    info["bias_correction"] = correction
    if control is not None:
        info["accuracy_control"] = control
    return quantized, info

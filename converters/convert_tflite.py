"""FP32 ONNX -> TFLite (``model_fp32.tflite``, ``model_fp16.tflite``, ``model_int8.tflite``) via onnx2tf.

Why onnx2tf (measured against litert-torch on NanoDet-Plus-m 416 and YOLO-FastestV2 352; table in
the README): it works from the package alone (no torch, no checkpoint), converted both models, its
FP32 graph matches ONNX to 1e-4 and runs as fast as litert-torch's on XNNPACK. litert-torch needs
the checkpoint, took minutes per model, its PT2E INT8 failed on YOLO-FastestV2 (a ``tfl.pad``
same-scale constraint) and was less accurate on NanoDet-Plus-m (worst-image score cosine 0.87 vs
0.98 here). onnx2tf is run in memory (``disable_model_save``: its Keras model, no SavedModel, seconds
instead of a minute), in a temporary working directory that holds our own preprocessed images under
the file name it would otherwise download.

One exact ONNX rewrite first (checked with ONNX Runtime, max |diff| must be 0): a MaxPool with pads
becomes edge padding (Slice + Concat) and an unpadded MaxPool. onnx2tf pads with -FLT_MAX instead,
which makes the INT8 range of that tensor absurd (XNNPACK then refuses the model).

INT8 is post-training full-integer quantisation (int8 per-channel symmetric weights, int8 per-tensor
activations) calibrated on ``job.calibration`` (the runtime's own preprocessing), in three steps:
our own calibration run writes per-tensor min/max; each range is then narrowed where that lowers
the quantisation MSE *as seen through the LeakyReLU that consumes it* (negatives are scaled by 0.1,
so their resolution matters 100x less; tensors of the decode tail and the head outputs keep their
full range, so peak scores are never clipped); then TFLite's MLIR quantiser. With float I/O the
stem convolution (by far the most sensitive layer of NanoDet-Plus-m) and the decode tail (sigmoid,
softmax-integral, reshapes: no speed to gain) stay float. Worst-image score cosine on the 11 sample
photos went from 0.89 (plain min/max) to 0.98 for NanoDet-Plus-m and from 0.95 to 0.987 for
YOLO-FastestV2. ``job.options``: ``tflite_io`` = "float32" (default), "int8" or "uint8" for the INT8
model's input/output type (quantised I/O is what NPU delegates such as the Edge TPU need; the whole
graph is then integer); ``tflite_calibration`` = "mse" (default) or "minmax"; ``tflite_float_stem`` /
``tflite_float_tail`` (default True, float I/O only).

The outputs keep the ONNX shapes and are renamed to the ONNX output names (found through the
model's signature, by shape otherwise); the input is renamed to the ONNX input name, NHWC.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.deploy.hostinfo import package_version
from edge_runtime.errors import EdgeRuntimeError

from .accuracy import Runner, float_prefix_search
from .convert import ConvertJob, ConvertResult

log = logging.getLogger(__name__)
IO_TYPES = ("float32", "int8", "uint8")
CALIBRATION_RANGES = ("mse", "minmax")
# the file onnx2tf loads from its working directory (and downloads when absent)
ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"
_MSE_SAMPLES = 32768  # values per tensor kept for the range search


# ------------------------------------------------------------------------------------------------
# exact ONNX rewrite that keeps onnx2tf's graph quantisable


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _rewrite_maxpool_pads(model: Any) -> int:
    """MaxPool(pads) -> edge padding (Slice + Concat per side) + MaxPool without pads: identical
    result (an edge copy never exceeds the window maximum it joins), no -inf constant."""
    from onnx import helper, numpy_helper

    g = model.graph
    inserted: list[tuple[Any, Any]] = []
    count = 0
    for node in list(g.node):
        if node.op_type != "MaxPool":
            continue
        attrs = _attrs(node)
        pads = list(attrs.get("pads", []))
        kernel = list(attrs.get("kernel_shape", []))
        if not any(pads) or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or attrs.get("ceil_mode", 0) \
                or any(p >= k for p, k in zip(pads, kernel + kernel)) \
                or list(attrs.get("dilations", [1] * len(kernel))) != [1] * len(kernel):
            continue
        dims = len(pads) // 2
        current = node.input[0]
        for axis in range(dims):
            before, after = pads[axis], pads[axis + dims]
            if not (before or after):
                continue
            base = f"{node.name or 'maxpool'}_edgepad{count}_{axis}"
            parts = []
            for side, (start, stop), times in (("first", (0, 1), before), ("last", (-1, 2 ** 62), after)):
                if not times:
                    continue
                inits = [numpy_helper.from_array(np.array([v], np.int64), f"{base}_{side}_{k}")
                         for k, v in (("starts", start), ("ends", stop), ("axes", axis + 2))]
                g.initializer.extend(inits)
                inserted.append((node, helper.make_node("Slice", [current] + [i.name for i in inits],
                                                        [f"{base}_{side}"], name=f"{base}_{side}")))
                parts.append((side, f"{base}_{side}", times))
            order = [n for s, n, t in parts if s == "first" for _ in range(t)] + [current] + \
                    [n for s, n, t in parts if s == "last" for _ in range(t)]
            inserted.append((node, helper.make_node("Concat", order, [f"{base}_out"], name=base, axis=axis + 2)))
            current = f"{base}_out"
        node.input[0] = current
        for attr in node.attribute:
            if attr.name == "pads":
                attr.ints[:] = [0] * len(pads)
        count += 1
    if count:
        _insert_nodes(g, inserted)
    return count


def _insert_nodes(graph: Any, inserted: list[tuple[Any, Any]]) -> None:
    """Place each new node right before its anchor (keeps the graph topologically sorted)."""
    nodes = []
    for node in graph.node:
        nodes.extend(new for anchor, new in inserted if anchor is node)
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.value_info[:]


def prepare_onnx(path: Path, input_name: str) -> tuple[Any, dict[str, Any]]:
    """The package's ONNX with the exact rewrite applied (or unchanged when the check fails)."""
    import onnx
    import onnxruntime as ort

    original = onnx.load(str(path))
    model = onnx.ModelProto()
    model.CopyFrom(original)
    info: dict[str, Any] = {"maxpool_edge_pads": 0}
    try:
        info["maxpool_edge_pads"] = _rewrite_maxpool_pads(model)
        if not any(info.values()):
            return original, info
        onnx.checker.check_model(model)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        before = ort.InferenceSession(original.SerializeToString(), so, providers=["CPUExecutionProvider"])
        after = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        shape = [d if isinstance(d, int) else 1 for d in before.get_inputs()[0].shape]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        diff = max(float(np.abs(a - b).max()) for a, b in zip(before.run(None, {input_name: x}),
                                                              after.run(None, {input_name: x})))
        if diff > 1e-5:
            raise ValueError(f"rewritten graph differs from the original by {diff:.3g}")
        info["max_abs_diff"] = diff
        return model, info
    except Exception as exc:  # never let an optimisation break a conversion
        log.warning("%s: ONNX rewrites for TFLite skipped (%s); converting the graph as is", path, exc)
        return original, {"skipped": str(exc)[:200]}


# ------------------------------------------------------------------------------------------------
# onnx2tf -> in-memory Keras model (cached per ONNX file for the three precisions)


@dataclass
class _TfGraph:
    keras: Any
    function: Any  # concrete function: NHWC float input -> {onnx output name: tensor}
    input_name: str
    input_shape: list[int]  # NHWC
    output_shapes: dict[str, tuple[int, ...]]
    rewrites: dict[str, Any]
    seconds: float
    transposed: dict[str, list[int]] = field(default_factory=dict)
    fp32: bytes | None = None  # the FP32 flatbuffer, once made


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_GRAPHS: dict[str, _TfGraph] = {}  # ONNX sha256 + onnx2tf version -> graph, for the three precisions


# onnx2tf's warnings when it could not run the ONNX graph on our input: it then guesses the layout of
# every tensor whose channels = height = width, and the .tflite it makes runs but is wrong
_ONNX2TF_SKIPPED = ("shape estimation is skipped", "accuracy error measurement process was skipped")


def onnx_to_keras(model: Any, input_name: str, samples: np.ndarray, source: Path) -> Any:
    """onnx2tf's in-memory Keras model of ``model`` (an onnx.ModelProto whose input is
    ``input_name``), with ``samples`` (NHWC float32) as the data onnx2tf checks its graph on,
    never its internet download. Errors are one line naming ``source``, also when onnx2tf
    skipped its own ONNX reference run (it would convert by guessing, see _ONNX2TF_SKIPPED)."""
    import onnx
    import onnx2tf

    with tempfile.TemporaryDirectory(prefix="edge-runtime-onnx2tf-") as work:
        work_dir = Path(work)
        onnx_path = work_dir / "model.onnx"
        onnx.save(model, str(onnx_path))
        # onnx2tf always loads this file from its working directory (downloading it when absent):
        # give it our own preprocessed images instead
        np.save(work_dir / ONNX2TF_SAMPLE, samples)
        # its custom input must be ONE sample: onnx2tf >= 1.29.20 transposes it to NCHW for its
        # reference run only when the whole shape, batch included, matches the graph's input
        np.save(work_dir / "input.npy", samples[:1])
        previous = os.getcwd()
        out = io.StringIO()
        try:
            os.chdir(work_dir)
            with contextlib.redirect_stdout(out):
                keras = onnx2tf.convert(
                    input_onnx_file_path=str(onnx_path), output_folder_path=str(work_dir / "out"),
                    custom_input_op_name_np_data_path=[[input_name, str(work_dir / "input.npy")]],
                    disable_model_save=True, not_use_onnxsim=True, non_verbose=False, verbosity="warn")
        except SystemExit:  # onnx2tf reports errors with sys.exit
            tail = " ".join(out.getvalue().split())[-300:]
            raise EdgeRuntimeError(f"{source}: onnx2tf could not convert the graph: {tail}") from None
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise EdgeRuntimeError(f"{source}: onnx2tf failed: {type(exc).__name__}: {first}") from exc
        finally:
            os.chdir(previous)
    skipped = skipped_reference_run(out.getvalue())
    if skipped:
        raise EdgeRuntimeError(f"{source}: onnx2tf could not run the ONNX graph on the sample input and would guess "
                               f"tensor layouts ({skipped})")
    return keras


def skipped_reference_run(log_text: str) -> str | None:
    """onnx2tf's warning (and the error line after it) when it skipped its ONNX reference run, from
    its log at verbosity 'warn'; None when it ran."""
    lines = _ANSI.sub("", log_text).splitlines()
    for i, line in enumerate(lines):
        if any(text in line for text in _ONNX2TF_SKIPPED):
            cause = lines[i + 1].strip() if i + 1 < len(lines) else ""
            return f"{line.strip()[:120]}{'; ' + cause[:160] if cause else ''}"
    return None


def _tf_graph(job: ConvertJob) -> _TfGraph:
    art = job.manifest.artifact("onnx", "fp32")
    key = f"{art.sha256}:{package_version('onnx2tf')}"
    if key in _GRAPHS:
        return _GRAPHS[key]
    import tensorflow as tf

    start = time.perf_counter()
    spec = job.manifest.input
    h, w = spec.size_hw
    job.progress("tflite: rewriting ONNX for TFLite and converting it with onnx2tf")
    model, rewrites = prepare_onnx(job.fp32_onnx, spec.name)
    tensors = job.calibration.tensors if job.calibration is not None else [
        np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)]
    samples = np.concatenate([np.transpose(t, (0, 2, 3, 1)) for t in tensors[:20]]).astype(np.float32)
    keras = onnx_to_keras(model, spec.name, samples, job.fp32_onnx)

    onnx_shapes = {o.name: tuple(d.dim_value for d in o.type.tensor_type.shape.dim) for o in model.graph.output}
    keras_outputs = list(keras.outputs)
    names = list(getattr(keras, "output_names", []) or [])
    if sorted(names) != sorted(onnx_shapes):
        names = list(onnx_shapes)  # onnx2tf keeps the ONNX output order
    transposed: dict[str, list[int]] = {}
    for name, tensor in zip(names, keras_outputs):
        have, want = tuple(tensor.shape), onnx_shapes[name]
        if have != want:
            perm = _permutation(have, want)
            if perm is None:
                raise EdgeRuntimeError(f"{job.fp32_onnx}: onnx2tf output {name} has shape {list(have)}, "
                                       f"ONNX has {list(want)}")
            transposed[name] = perm
    input_shape = [int(d) for d in keras.inputs[0].shape]
    if input_shape != [1, h, w, 3]:
        raise EdgeRuntimeError(f"{job.fp32_onnx}: onnx2tf made input shape {input_shape}, expected [1, {h}, {w}, 3]")

    @tf.function(input_signature=[tf.TensorSpec(input_shape, tf.float32, name=spec.name)])
    def serve(x):
        outs = keras(x, training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        return {n: (tf.transpose(o, transposed[n]) if n in transposed else o) for n, o in zip(names, outs)}

    graph = _TfGraph(keras=keras, function=serve.get_concrete_function(), input_name=spec.name,
                     input_shape=input_shape, output_shapes=onnx_shapes, rewrites=rewrites,
                     seconds=time.perf_counter() - start, transposed=transposed)
    while len(_GRAPHS) >= 2:  # a convert run handles one package; keep memory bounded
        _GRAPHS.pop(next(iter(_GRAPHS)))
    _GRAPHS[key] = graph
    return graph


def _permutation(have: tuple[int, ...], want: tuple[int, ...]) -> list[int] | None:
    from itertools import permutations

    for perm in permutations(range(len(have))):
        if tuple(have[p] for p in perm) == tuple(want):
            return list(perm)
    return None


# ------------------------------------------------------------------------------------------------
# TFLite conversion per precision


def _converter(graph: _TfGraph) -> Any:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([graph.function], graph.keras)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter


def _quiet_convert(converter: Any) -> bytes:
    with contextlib.redirect_stdout(io.StringIO()):
        return converter.convert()


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


def _runner(content: bytes, graph: _TfGraph, role_order: list[str], path: Path) -> Runner:
    """Run a candidate model the way the device will: finished (ONNX names), through the LiteRT backend."""
    from edge_runtime.backends import open_backend

    finished, outputs = _finish(content, graph, role_order)
    path.write_bytes(finished)
    backend = open_backend(path, "tflite", 2)
    return lambda tensor: [backend.run({graph.input_name: np.ascontiguousarray(tensor.transpose(0, 2, 3, 1))})[n]
                           for n in outputs]


def _bias_correction(job: ConvertJob, quantized: bytes, fp32: bytes, data: list[np.ndarray], graph: _TfGraph,
                     role_order: list[str]) -> tuple[bytes, dict[str, Any]]:
    """``tflite_bias_correction``: False (default), "auto" (keep the corrected model only when it
    agrees better with FP32 on the held-out images) or True. Off by default: on the sample photos it
    lifted YOLO-FastestV2 (worst-image cosine 0.987 -> 0.990) but lowered NanoDet-Plus-m (mean
    0.986 -> 0.977), and its level-by-level passes take minutes on a NanoDet-sized graph."""
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


def _int8(graph: _TfGraph, job: ConvertJob, fp32: bytes, io_type: str) -> tuple[bytes, dict[str, Any]]:
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


def _finish(content: bytes, graph: _TfGraph, role_order: list[str]) -> tuple[bytes, list[str]]:
    """Rename the model's input/output tensors to the ONNX names (found through the signature) and
    check the output shapes; returns the new flatbuffer and the output names in role order."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(content)
    sg = model.subgraphs[0]
    renames: dict[int, str] = {}
    if model.signatureDefs:
        sig = model.signatureDefs[0]
        for item in sig.outputs:
            renames[int(item.tensorIndex)] = item.name.decode() if isinstance(item.name, bytes) else item.name
        for item in sig.inputs:
            renames[int(item.tensorIndex)] = graph.input_name
    if sorted(renames.get(int(t), "") for t in sg.outputs) != sorted(graph.output_shapes):
        # no usable signature: match by shape (unique shapes) in ONNX output order
        by_shape: dict[tuple[int, ...], list[str]] = {}
        for name, shape in graph.output_shapes.items():
            by_shape.setdefault(tuple(shape), []).append(name)
        for t in sg.outputs:
            options = by_shape.get(tuple(int(d) for d in sg.tensors[t].shape), [])
            if not options:
                raise EdgeRuntimeError(f"TFLite output {sg.tensors[t].name!r} {list(sg.tensors[t].shape)} matches "
                                       f"no ONNX output {graph.output_shapes}")
            renames[int(t)] = options.pop(0)
        renames[int(sg.inputs[0])] = graph.input_name
    taken = set(renames.values())
    for i, tensor in enumerate(sg.tensors):
        if i not in renames and tensor.name.decode() in taken:
            tensor.name = tensor.name + b"_inner"
    for index, name in renames.items():
        sg.tensors[index].name = name.encode()
        if index in {int(t) for t in sg.outputs}:
            want = tuple(graph.output_shapes[name])
            have = tuple(int(d) for d in sg.tensors[index].shape)
            if have != want:
                raise EdgeRuntimeError(f"TFLite output {name} has shape {list(have)}, ONNX has {list(want)}")
    missing = [n for n in role_order if n not in renames.values()]
    if missing:
        raise EdgeRuntimeError(f"TFLite model lacks outputs {missing}")
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), list(role_order)


def convert_tflite(job: ConvertJob) -> ConvertResult:
    """Write ``model_<precision>.tflite`` into the package; see the module docstring."""
    io_type = str(job.options.get("tflite_io", "float32"))
    if io_type not in IO_TYPES:
        raise EdgeRuntimeError(f"tflite_io must be one of {', '.join(IO_TYPES)}, got {io_type!r}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO/WARNING lines
    try:
        import onnx2tf  # noqa: F401  (checked here so a missing one is a clear error)
        import tensorflow as tf
    except ImportError as exc:
        raise EdgeRuntimeError(f"TFLite conversion needs {exc.name}: pip install 'edge-runtime[convert]', then "
                               f"pip install --no-deps onnx2tf==1.29.24 tf-keras==2.21.0 (a second step: their "
                               f"declared pins fight numpy 2)") from None

    graph = _tf_graph(job)
    start = time.perf_counter()
    role_order = list(job.manifest.artifact("onnx", "fp32").outputs)
    if graph.fp32 is None and job.precision in ("fp32", "int8"):
        graph.fp32 = _quiet_convert(_converter(graph))
    extra: dict[str, Any] = {}
    if job.precision == "fp32":
        content = graph.fp32
    elif job.precision == "fp16":
        converter = _converter(graph)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
        content = _quiet_convert(converter)
        extra["weights"] = "float16 (dequantised to float32 at load on CPUs without FP16 arithmetic)"
    elif job.precision == "int8":
        content, extra["quantization"] = _int8(graph, job, graph.fp32, io_type)
    else:
        raise EdgeRuntimeError(f"no TFLite conversion for precision {job.precision!r}")
    content, outputs = _finish(content, graph, role_order)
    name = f"model_{job.precision}.tflite"
    (job.out_dir / name).write_bytes(content)  # convert's fresh staging folder: moved in by os.replace
    h, w = job.manifest.input.size_hw
    extra = {
        "input": {"name": graph.input_name, "shape": [1, h, w, 3], "layout": "NHWC"},
        "converter": {"name": "onnx2tf", "onnx2tf": package_version("onnx2tf"), "tensorflow": tf.__version__,
                      "onnx_rewrites": graph.rewrites,
                      **({"outputs_transposed": graph.transposed} if graph.transposed else {})},
        **extra,
        "convert_seconds": round(graph.seconds + time.perf_counter() - start, 1),
    }
    graph.seconds = 0.0  # the onnx2tf step is counted once, with the first precision
    return ConvertResult(file=name, outputs=outputs, extra=extra)

"""NNCF's QDQ graph rewritten into the form ONNX Runtime runs on integer kernels (U8S8, ``QLinearConv``).

NNCF calibrates better than ``quantize_static`` (fast bias correction, per-image range statistics), but its
graph leaves ONNX Runtime little to fuse: int8 activations, no quantiser between a Conv and its LeakyRelu,
shuffle ops (Reshape, Transpose, Slice, Gather) in float between a DequantizeLinear and the next Conv. ONNX
Runtime's x86 fast path needs ``DQ -> Conv -> Q`` with per-tensor uint8 activations and int32 biases.

Before NNCF quantises (with per-tensor activations), ``equalise_depthwise_inputs`` brings the channels of each
depthwise Conv's input to one range, which is exact in float. ``fuse_for_ort`` then rewrites its graph:

1. every activation quantiser's int8 zero point moves to uint8 (+128): the same grid, lossless;
2. a tensor that is on a quantiser's grid without being a DequantizeLinear's output (after a Reshape,
   Transpose, Slice, Split, Gather, MaxPool, or a Concat of inputs on one grid) gets an explicit Q/DQ pair
   with that grid: lossless, and it lets ONNX Runtime run those ops on uint8 and fuse the Conv after them;
3. a Conv whose only consumer is a LeakyRelu gets a quantiser on its output (ONNX Runtime's
   ``QLinearConv -> QLinearLeakyRelu``), from its calibration range with the low end clipped where that keeps
   the activation's output closest: the one step that loses accuracy;
4. float biases of fused Convs become int32 with scale ``input scale x weight scale``, within half a step.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

# ops that move values without changing them: their output is on their input's grid
GRID_PRESERVING_OPS = frozenset({"Reshape", "Transpose", "Slice", "Split", "Gather", "MaxPool", "Squeeze",
                                 "Unsqueeze", "Flatten"})
# the output range search: a histogram of each tensor's values over the calibration images, and the
# fractions of its observed low end tried as the clipped low (the high end is never clipped: on NanoDet-Plus-m
# clipping it too lowered the output error and cost 0.41 mAP points on voc-indoor-85 instead of 0.25)
HISTOGRAM_BINS = 4096
LOW_FACTORS = np.linspace(0.2, 1.0, 17)
# equalisation divides a channel by s = its range / the widest channel's: s is at least this, so a
# narrow channel is raised at most 100x
MIN_CHANNEL_SCALE = 0.01


def _array(inits: dict[str, TensorProto], name: str) -> np.ndarray:
    return numpy_helper.to_array(inits[name])


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name -> the nodes that read it."""
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    return consumers


def _unsigned_activations(graph: onnx.GraphProto, inits: dict[str, TensorProto], weights: set[str]) -> int:
    """Int8 per-tensor activation zero points -> uint8; returns how many. Raises on a per-channel one."""
    moved = set()
    weight_zeros = {node.input[2] for node in graph.node
                    if node.op_type == "DequantizeLinear" and len(node.input) > 2 and node.input[0] in weights}
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3 \
                or node.input[0] in weights:
            continue
        if node.input[2] in weight_zeros:
            raise ValueError(f"{node.name}: its zero point {node.input[2]} is a weight's too")
        if _array(inits, node.input[1]).ndim != 0:
            raise ValueError(f"{node.name}: a per-channel activation quantiser has no U8S8 kernel")
        zero = inits[node.input[2]]
        if zero.data_type == TensorProto.INT8 and zero.name not in moved:
            shifted = (_array(inits, zero.name).astype(np.int32) + 128).astype(np.uint8)
            zero.CopyFrom(numpy_helper.from_array(shifted, zero.name))
            moved.add(zero.name)
    return len(moved)


def _grids(graph: onnx.GraphProto, inits: dict[str, TensorProto], weights: set[str]) -> dict[str, tuple[str, str]]:
    """Tensor -> (scale, zero point) initializer names of the grid it lies on (nodes in topological order)."""
    grid: dict[str, tuple[str, str]] = {}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] not in weights and len(node.input) > 2:
            grid[node.output[0]] = (node.input[1], node.input[2])
        elif node.op_type in GRID_PRESERVING_OPS and node.input[0] in grid:
            # MaxPool's optional second output holds indices, not values
            grid.update({out: grid[node.input[0]] for out in node.output[:1 if node.op_type == "MaxPool" else None]})
        elif node.op_type == "Concat" and all(i in grid for i in node.input):
            values = {(float(_array(inits, grid[i][0])), int(_array(inits, grid[i][1]))) for i in node.input}
            if len(values) == 1:
                grid[node.output[0]] = grid[node.input[0]]
    return grid


def _leaky_outputs(graph: onnx.GraphProto, grid: dict[str, tuple[str, str]]) -> dict[str, float]:
    """Outputs of quantised Convs (input on a grid, weights dequantised) whose only consumer is a LeakyRelu
    with a quantised output: tensor -> the LeakyRelu's alpha. A Conv kept in float gets no quantiser."""
    producer = {out: node for node in graph.node for out in node.output}
    consumers = _consumers(graph)
    found = {}
    for node in graph.node:
        if node.op_type != "Conv" or node.input[0] not in grid or \
                getattr(producer.get(node.input[1]), "op_type", None) != "DequantizeLinear":
            continue
        after = consumers[node.output[0]]
        if len(after) == 1 and after[0].op_type == "LeakyRelu" and \
                any(user.op_type == "QuantizeLinear" for user in consumers[after[0].output[0]]):
            found[node.output[0]] = next((a.f for a in after[0].attribute if a.name == "alpha"), 0.01)
    return found


def _clipped_range(centres: np.ndarray, counts: np.ndarray, alpha: float) -> tuple[float, float]:
    """(low, high): the observed high, and the low, of the observed one times ``LOW_FACTORS``, whose uint8 grid
    keeps LeakyRelu(x) closest (mean squared error over the histogram ``centres``/``counts``) to the float one."""
    def leaky(x: np.ndarray) -> np.ndarray:
        return np.where(x > 0, x, alpha * x)

    low, high = min(0.0, float(centres[0])), max(1e-6, float(centres[-1]))
    reference, weights, best = leaky(centres), counts / counts.sum(), (np.inf, low)
    for a in low * LOW_FACTORS:
        scale = (high - a) / 255.0
        zero = np.clip(np.round(-a / scale), 0, 255)
        fake = (np.clip(np.round(centres / scale) + zero, 0, 255) - zero) * scale
        error = float(np.sum(weights * (leaky(fake) - reference) ** 2))
        if error < best[0]:
            best = (error, float(a))
    return best[1], high


def _output_ranges(model: onnx.ModelProto, tensors: dict[str, float], calibration: list[np.ndarray],
                   input_name: str) -> dict[str, tuple[float, float]]:
    """Each tensor's uint8 range (``_clipped_range``) from its values on the calibration images: one pass for
    the extremes, one for the histograms."""
    if not tensors:
        return {}
    session = cpu_session(model, list(tensors))
    names = list(tensors)
    low, high = {name: 0.0 for name in names}, {name: 1e-6 for name in names}
    for tensor in calibration:
        for name, value in zip(names, session.run(names, {input_name: tensor})):
            low[name], high[name] = min(low[name], float(value.min())), max(high[name], float(value.max()))
    edges = {name: np.linspace(low[name], high[name], HISTOGRAM_BINS + 1) for name in names}
    counts = {name: np.zeros(HISTOGRAM_BINS) for name in names}
    for tensor in calibration:
        for name, value in zip(names, session.run(names, {input_name: tensor})):
            counts[name] += np.histogram(value, edges[name])[0]
    return {name: _clipped_range((edges[name][:-1] + edges[name][1:]) / 2, counts[name], tensors[name])
            for name in names}


def cpu_session(model: onnx.ModelProto, extra_outputs: Sequence[str] = ()) -> onnxruntime.InferenceSession:
    """A 2-thread CPU session of ``model`` (what convert measures INT8 graphs with) that also returns the float
    tensors ``extra_outputs``."""
    if extra_outputs:
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        del probe.graph.value_info[:]
        probe.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                                  for name in extra_outputs)
        model = probe
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def equalise_depthwise_inputs(model: onnx.ModelProto, calibration: list[np.ndarray], input_name: str
                              ) -> tuple[onnx.ModelProto, int]:
    """A float copy of ``model`` in which every ``Conv -> (Leaky)Relu -> depthwise Conv`` chain carries its
    channels at one range: channel c of the first Conv (weights, bias) divided by s_c = range_c / max range
    (at least ``MIN_CHANNEL_SCALE``), the depthwise Conv's channel c multiplied by it. Exact in float, since
    (Leaky)Relu(x / s) = (Leaky)Relu(x) / s for s > 0, and free for per-channel weights; it lets one per-tensor
    activation grid serve the depthwise input (per-channel activations have no U8S8 kernel): on
    NanoDet-Plus-m NNCF's per-tensor graph went from 0.992 to 0.995 mean cosine, its per-channel one's.
    Chains whose weights another Conv shares, or whose tensors are graph outputs, are left alone. Returns the
    copy and how many chains it rescaled."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    model, graph = copy, copy.graph
    inits = {i.name: i for i in graph.initializer}
    consumers = _consumers(graph)
    outputs = {o.name for o in graph.output}
    uses = defaultdict(int)
    for node in graph.node:
        for name in node.input[1:]:
            uses[name] += 1
    chains = []
    for first in graph.node:
        after = consumers[first.output[0]] if first.op_type == "Conv" else []
        if len(after) != 1 or after[0].op_type not in ("LeakyRelu", "Relu"):
            continue
        nxt = consumers[after[0].output[0]]
        if len(nxt) != 1 or nxt[0].op_type != "Conv" or nxt[0].input[1] not in inits or first.input[1] not in inits:
            continue
        weight = _array(inits, nxt[0].input[1])
        group = next((a.i for a in nxt[0].attribute if a.name == "group"), 1)
        if weight.shape[1] != 1 or group != weight.shape[0]:
            continue  # not depthwise
        if any(uses[name] > 1 for name in [*first.input[1:], nxt[0].input[1]]) or \
                {first.output[0], after[0].output[0]} & outputs:
            continue
        chains.append((first, after[0].output[0], nxt[0]))
    if not chains:
        return model, 0
    session = cpu_session(model, [tensor for _, tensor, _ in chains])
    names = [tensor for _, tensor, _ in chains]
    peak = {name: 0.0 for name in names}
    for tensor in calibration:
        for name, value in zip(names, session.run(names, {input_name: tensor})):
            peak[name] = np.maximum(peak[name], np.abs(value).max(axis=tuple(i for i in range(value.ndim) if i != 1)))

    def scale_by(name: str, factor: np.ndarray) -> None:
        value = _array(inits, name)
        inits[name].CopyFrom(numpy_helper.from_array(
            (value * factor.reshape(-1, *[1] * (value.ndim - 1))).astype(value.dtype), name))

    rescaled = 0
    for first, tensor, depthwise in chains:
        top = float(peak[tensor].max())
        if top <= 0:
            continue
        rescaled += 1
        # a channel silent on every calibration image keeps its scale: raising it could clip it elsewhere
        scale = np.where(peak[tensor] > 0, np.clip(peak[tensor] / top, MIN_CHANNEL_SCALE, 1.0), 1.0)
        for name in first.input[1:]:
            scale_by(name, 1.0 / scale)
        scale_by(depthwise.input[1], scale)
    return model, rescaled


def _int32_biases(graph: onnx.GraphProto, inits: dict[str, TensorProto]) -> tuple[int, set[str]]:
    """Float biases of Convs with dequantised input and weights -> int32 with a DequantizeLinear; returns how
    many Convs, and the names of the float biases replaced."""
    producer = {out: node for node in graph.node for out in node.output}
    made, replaced = 0, set()
    for node in list(graph.node):
        if node.op_type != "Conv" or len(node.input) < 3 or node.input[2] not in inits:
            continue
        x, w = producer.get(node.input[0]), producer.get(node.input[1])
        if x is None or w is None or x.op_type != "DequantizeLinear" or w.op_type != "DequantizeLinear":
            continue
        bias = _array(inits, node.input[2]).astype(np.float64)
        scale = (_array(inits, x.input[1]).astype(np.float64) * _array(inits, w.input[1]).astype(np.float64)
                 ).reshape(-1) * np.ones_like(bias)
        quantised = np.round(bias / np.where(scale > 0, scale, 1.0))
        if not (scale > 0).all() or np.abs(quantised).max(initial=0) >= 2**31 - 1:
            continue  # a zero or tiny scale: the bias stays float and ONNX Runtime leaves that Conv unfused
        name = f"{node.name}_bias_int32"
        graph.initializer.extend([numpy_helper.from_array(quantised.astype(np.int32), name),
                                  numpy_helper.from_array(scale.astype(np.float32), f"{name}_scale"),
                                  numpy_helper.from_array(np.zeros(bias.shape, np.int32), f"{name}_zero")])
        graph.node.append(helper.make_node("DequantizeLinear", [name, f"{name}_scale", f"{name}_zero"],
                                           [f"{name}_dq"], name=f"{name}_DQ", axis=0))
        replaced.add(node.input[2])
        node.input[2] = f"{name}_dq"
        made += 1
    return made, replaced


def _topological(graph: onnx.GraphProto) -> None:
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, order = list(graph.node), []
    while pending:
        waiting = []
        for node in pending:
            if all(name in ready for name in node.input):
                order.append(node)
                ready.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            raise ValueError(f"{waiting[0].name}: the graph has a cycle or a missing input")
        pending = waiting
    del graph.node[:]
    graph.node.extend(order)


def fuse_for_ort(quantized: onnx.ModelProto, calibration: list[np.ndarray], input_name: str
                 ) -> tuple[onnx.ModelProto, dict[str, int]]:
    """A copy of a per-tensor-activation QDQ graph in ONNX Runtime's fused U8S8 form (the module's steps),
    and counts of what changed."""
    model = onnx.ModelProto()
    model.CopyFrom(quantized)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    weights = {name for name in inits}
    unsigned = _unsigned_activations(graph, inits, weights)
    grid = _grids(graph, inits, weights)
    producer = {out: node for node in graph.node for out in node.output}
    explicit = {t: g for t, g in grid.items() if producer[t].op_type != "DequantizeLinear"}
    leaky = _leaky_outputs(graph, grid)
    for name, (low, high) in _output_ranges(model, leaky, calibration, input_name).items():
        scale = (high - low) / 255.0
        zero = int(np.clip(round(-low / scale), 0, 255))
        graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), f"{name}_scale"),
                                  numpy_helper.from_array(np.array(zero, np.uint8), f"{name}_zero")])
        explicit[name] = (f"{name}_scale", f"{name}_zero")
    outputs = {o.name for o in graph.output}
    consumers = _consumers(graph)
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for tensor in node.output:
            if tensor not in explicit or tensor in outputs:
                continue
            scale, zero = explicit[tensor]
            nodes += [helper.make_node("QuantizeLinear", [tensor, scale, zero], [f"{tensor}_u8"], name=f"{tensor}_Q"),
                      helper.make_node("DequantizeLinear", [f"{tensor}_u8", scale, zero], [f"{tensor}_dq"],
                                       name=f"{tensor}_DQ")]
            for user in consumers[tensor]:
                user.input[:] = [f"{tensor}_dq" if name == tensor else name for name in user.input]
    del graph.node[:]
    graph.node.extend(nodes)
    biases, replaced = _int32_biases(graph, {i.name: i for i in graph.initializer})
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    kept = [i for i in graph.initializer if i.name not in replaced or i.name in used]  # ONNX Runtime warns of
    del graph.initializer[:]                                                             # each one left unused
    graph.initializer.extend(kept)
    _topological(graph)
    del graph.value_info[:]  # the int8 types recorded there are stale
    onnx.checker.check_model(model)
    return model, {"uint8_zero_points": unsigned, "grid_quantisers": len(explicit) - len(leaky),
                   "conv_output_quantisers": len(leaky), "int32_biases": biases}

"""Fold ShuffleNetV2's channel shuffles away: the same network, with less data movement.

A ShuffleNetV2 unit ends in Concat -> Reshape(N, g, C/g, H, W) -> Transpose(0, 2, 1, 3, 4) -> Reshape and
the next unit splits the result in halves (Slice); YOLO-FastestV2's units start with Reshape(C/2, 2, H*W) ->
Transpose(1, 0, 2) -> Reshape(2, 1, C/2, H, W) -> Gather 0 / Gather 1 (even / odd channels). Either way
several copies of every channel per unit, only to put channels in an order. Here those tensors become
*virtual*: a list of (source tensor, channel) per logical channel, with no node behind it. Only what
another node reads is built (in these networks, convolutions), as one Slice per source tensor and a
Concat; a convolution takes its input channels in that order through its weights (a depthwise convolution
keeps the order, which its readers take in turn). Each source's output channels are ordered (its producing
convolution's rows permuted) by the convolution input they end up in, so every piece is one contiguous
Slice. The rewrite is exact up to float summation order.

A Concat along channels that reads a virtual tensor is virtual too, and Resize, pooling and activations
keep a reordered tensor's order. Graphs without either shuffle pattern are left alone, and so is any graph
where a virtual tensor would need a Gather. Measurements: docs/formats-and-int8.md.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

_ELEMENTWISE = ("LeakyRelu", "Relu", "Sigmoid", "Clip", "HardSwish", "HardSigmoid")
Channels = list[tuple[str, int]]  # a virtual tensor: (source tensor, its logical channel) per logical channel


@dataclass
class FoldResult:
    model: onnx.ModelProto | None  # None: nothing folded, use the original
    shuffles: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # nodes added: slices, concats
    reason: str = ""  # why nothing was folded

    def record(self) -> dict[str, Any]:
        return {"channel_shuffles_folded": self.shuffles, **self.counts} if self.model is not None \
            else {"channel_shuffles_folded": 0, "why": self.reason}


def _placed(values: np.ndarray, order: np.ndarray, axis: int = 0) -> np.ndarray:
    """``values`` with its entry i along ``axis`` moved to position ``order[i]``."""
    placed = np.zeros_like(values)
    index: list[Any] = [slice(None)] * values.ndim
    index[axis] = order
    placed[tuple(index)] = values
    return placed


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


class _Rewrite:
    """One pass over the graph in topological order. ``source_order``: producing Conv's output name -> the
    physical position of each of its logical output channels (absent: natural order)."""

    def __init__(self, model: onnx.ModelProto, source_order: dict[str, np.ndarray]) -> None:
        self.model = onnx.ModelProto()
        self.model.CopyFrom(model)
        graph = self.model.graph
        self.init = {i.name: i for i in graph.initializer}
        self.readers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.readers.setdefault(name, []).append(node)
        inferred = onnx.shape_inference.infer_shapes(self.model)
        self.shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
                       for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
        self.channels = {name: dims[1] for name, dims in self.shapes.items() if len(dims) > 1}
        self.outputs = {o.name for o in graph.output}
        self.source_order = source_order
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.perm: dict[str, np.ndarray] = {}  # real tensor -> physical position of each logical channel
        self.virtual: dict[str, Channels] = {}
        self.built: dict[str, str] = {}  # virtual tensor -> the real tensor built for it
        self.reader_of: dict[tuple[str, int], int] = {}  # (source, channel) -> which built tensor reads it
        self.counts: Counter = Counter()
        self.shuffles = 0
        self.gathers = 0

    def array(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.init[name])

    def const(self, value: np.ndarray, hint: str) -> str:
        name = f"shuffle_fold/{hint}_{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def shuffle_at(self, node: onnx.NodeProto) -> tuple[list[str], dict[str, np.ndarray]] | None:
        """When ``node`` starts a channel shuffle of a C-channel tensor: the outputs of the nodes it spans, and
        per output tensor the input channel behind each of its channels. Two forms:
        Reshape(N, g, C/g, H, W) -> Transpose(0, 2, 1, 3, 4) -> Reshape(N, C, H, W) (NanoDet), and, batch 1,
        Reshape(C/g, g, H*W) -> Transpose(1, 0, 2) -> Reshape(g, 1, C/g, H, W) -> Gather(axis 0, j) for each
        j read (YOLO-FastestV2: channels j, j+g, ...)."""
        if node.op_type != "Reshape" or node.input[1] not in self.init:
            return None
        shape, dims = [int(v) for v in self.array(node.input[1])], self.shapes.get(node.input[0], [])
        channels = dims[1] if len(dims) == 4 else 0
        after = self.readers.get(node.output[0], [])
        if channels <= 0 or len(after) != 1 or after[0].op_type != "Transpose":
            return None
        perm = list(_attr(after[0], "perm", []))
        last = self.readers.get(after[0].output[0], [])
        if len(last) != 1 or last[0].op_type != "Reshape" or last[0].input[1] not in self.init or \
                {node.output[0], after[0].output[0]} & self.outputs:  # tensors the fold would drop
            return None
        target = [int(v) for v in self.array(last[0].input[1])]
        if len(shape) == 5 and perm == [0, 2, 1, 3, 4] and shape[1] * shape[2] == channels and \
                len(target) == 4 and target[1] == channels:
            groups = shape[1]
            return [after[0].output[0], last[0].output[0]], \
                {last[0].output[0]: np.arange(channels).reshape(groups, -1).T.ravel()}
        groups = shape[1] if len(shape) == 3 else 0
        if last[0].output[0] in self.outputs or dims[0] != 1 or 0 in dims or perm != [1, 0, 2] or groups < 2 or \
                len(target) != 5 or target[1] not in (1, -1) or \
                shape != [channels // groups, groups, dims[2] * dims[3]] or \
                target[:1] + target[2:] != [groups, channels // groups, dims[2], dims[3]]:
            return None
        gathers = self.readers.get(last[0].output[0], [])
        picked: dict[str, np.ndarray] = {}
        for gather in gathers:
            index = self.array(gather.input[1]) if gather.op_type == "Gather" and gather.input[1] in self.init else None
            if index is None or _attr(gather, "axis", 0) != 0 or index.ndim != 0 or not 0 <= int(index) < groups:
                return None
            picked[gather.output[0]] = np.arange(channels).reshape(-1, groups)[:, int(index)]
        return [after[0].output[0], last[0].output[0], *picked], picked

    def channel_list(self, name: str) -> Channels:
        if name in self.virtual:
            return self.virtual[name]
        count = len(self.perm[name]) if name in self.perm else self.channels[name]
        return [(name, c) for c in range(count)]

    def build(self, name: str) -> str:
        """The real tensor for virtual ``name``: one Slice per source (a Gather where its channels are not
        contiguous), then a Concat; records its channel order in ``perm``."""
        if name in self.built:
            return self.built[name]
        channels = self.virtual[name]
        pieces, offset, where = [], 0, {}
        for source in dict.fromkeys(s for s, _ in channels):
            logical = [c for s, c in channels if s == source]
            for c in logical:
                self.reader_of.setdefault((source, c), len(self.built))
            order = self.perm.get(source, np.arange(self.channels.get(source, 0)))
            physical = order[logical]
            low, high = int(physical.min()), int(physical.max()) + 1
            if high - low == len(logical) == len(set(logical)):
                piece = source
                if high - low != len(order):
                    piece = f"shuffle_fold/slice_{len(self.nodes)}"
                    self.nodes.append(helper.make_node(
                        "Slice", [source, self.const(np.array([low]), "start"), self.const(np.array([high]), "end"),
                                  self.const(np.array([1]), "axis")], [piece], name=piece))
                    self.counts["slices"] += 1
                where.update({(source, c): offset + int(p) - low for c, p in zip(logical, physical)})
                offset += high - low
            else:
                piece = f"shuffle_fold/gather_{len(self.nodes)}"
                self.nodes.append(helper.make_node("Gather", [source, self.const(physical.astype(np.int64), "index")],
                                                   [piece], axis=1, name=piece))
                self.gathers += 1
                where.update({(source, c): offset + k for k, c in enumerate(logical)})
                offset += len(logical)
            pieces.append(piece)
        out = f"shuffle_fold/{'concat' if len(pieces) > 1 else 'view'}_{len(self.nodes)}"
        # a lone source is an Identity: its own name keeps its own channel order for its other readers
        self.nodes.append(helper.make_node("Concat", pieces, [out], axis=1, name=out) if len(pieces) > 1
                          else helper.make_node("Identity", pieces, [out], name=out))
        self.counts["concats"] += len(pieces) > 1
        self.built[name] = out
        self.perm[out] = np.array([where[sc] for sc in channels])
        return out

    def conv(self, node: onnx.NodeProto, inputs: list[str]) -> None:
        weight = self.array(node.input[1])
        bias = self.array(node.input[2]) if len(node.input) > 2 else None
        order_in = self.perm.get(inputs[0])
        group = _attr(node, "group", 1)
        if group == 1:
            if order_in is not None:
                weight = _placed(weight, order_in, axis=1)
            order_out = self.source_order.get(node.output[0])
        elif order_in is not None and group == weight.shape[0] == len(order_in) and weight.shape[1] == 1:
            order_out = order_in  # depthwise: channel c stays channel c, wherever it sits
        elif order_in is not None:
            inputs[0] = self.logical(inputs[0])  # a Gather: the fold is then refused
            return
        else:
            return
        if order_out is not None:
            weight = _placed(weight, order_out)
            bias = None if bias is None else _placed(bias, order_out)
            self.perm[node.output[0]] = order_out
        if order_in is not None or order_out is not None:
            inputs[1] = self.const(weight, "weight")
            if bias is not None:
                inputs[2] = self.const(bias, "bias")

    def resizes_in_space(self, node: onnx.NodeProto) -> bool:
        """A Resize whose constant scales (or sizes) keep batch and channels and that samples each channel
        on its own: it treats channels alike. (No ``axes``, no crop-and-resize, whose roi spans channels.)"""
        if node.op_type != "Resize" or _attr(node, "axes") is not None or \
                _attr(node, "coordinate_transformation_mode", b"half_pixel") == b"tf_crop_and_resize" or \
                _attr(node, "keep_aspect_ratio_policy", b"stretch") != b"stretch":
            return False
        scales = node.input[2] if len(node.input) > 2 else ""
        sizes = node.input[3] if len(node.input) > 3 else ""
        if scales and not sizes and scales in self.init:
            return self.array(scales)[:2].tolist() == [1.0, 1.0]
        if sizes and not scales and sizes in self.init:
            return self.array(sizes)[:2].tolist() == self.shapes.get(node.input[0], [])[:2]
        return False

    def reordered(self, name: str) -> bool:
        return name in self.perm and not np.array_equal(self.perm[name], np.arange(len(self.perm[name])))

    def logical(self, name: str) -> str:
        """``name`` in its logical channel order (a Gather), for a reader that cannot take any other."""
        out = f"shuffle_fold/logical_{len(self.nodes)}"
        self.nodes.append(helper.make_node("Gather", [name, self.const(self.perm[name].astype(np.int64), "index")],
                                           [out], axis=1, name=out))
        self.gathers += 1
        return out

    def run(self) -> _Rewrite:
        skip: set[str] = set()  # by output name: ONNX does not require node names
        for node in self.model.graph.node:
            if node.output[0] in skip:
                continue
            inputs = list(node.input)
            shuffle = self.shuffle_at(node)
            if shuffle is not None:
                spanned, picked = shuffle
                skip.update(spanned)
                channels = self.channel_list(inputs[0])
                for out, order in picked.items():
                    self.virtual[out] = [channels[j] for j in order]
                self.shuffles += 1
                continue
            if node.op_type == "Concat" and _attr(node, "axis") == 1 and (any(i in self.virtual for i in inputs) or any(
                    self.shuffle_at(r) for r in self.readers.get(node.output[0], []))):
                self.virtual[node.output[0]] = [sc for i in inputs for sc in self.channel_list(i)]
                continue
            if node.op_type == "Slice" and inputs[0] in self.virtual and len(node.input) >= 4 and \
                    all(i in self.init for i in node.input[1:]) and list(self.array(node.input[3])) == [1] and \
                    (len(node.input) < 5 or list(self.array(node.input[4])) == [1]):
                channels = self.virtual[inputs[0]]
                start, end = int(self.array(node.input[1])[0]), int(self.array(node.input[2])[0])
                self.virtual[node.output[0]] = channels[start:end]  # clamped as ONNX clamps
                continue
            inputs = [self.build(i) if i in self.virtual else i for i in inputs]
            if node.op_type == "Conv":
                self.conv(node, inputs)
            elif inputs[0] in self.perm and (node.op_type in _ELEMENTWISE + ("MaxPool", "AveragePool")
                                             or self.resizes_in_space(node)):
                self.perm[node.output[0]] = self.perm[inputs[0]]
            else:
                inputs = [self.logical(i) if self.reordered(i) else i for i in inputs]
            del node.input[:]
            node.input.extend(inputs)
            self.nodes.append(node)
        return self


def fold_channel_shuffles(model: onnx.ModelProto) -> FoldResult:
    """``model`` with its channel shuffles folded away (see the module docstring), or ``FoldResult(None)``
    with the reason when there is none to fold, folding would need a Gather, or a graph output would
    come out reordered."""
    first = _Rewrite(model, {}).run()
    if not first.shuffles:
        return FoldResult(None, reason="no Reshape-Transpose-Reshape(-Gather) channel shuffle")
    producer = {out: node for node in model.graph.node for out in node.output}
    readers_by_source: dict[str, dict[int, int]] = {}
    for (source, channel), reader in first.reader_of.items():
        readers_by_source.setdefault(source, {})[channel] = reader
    source_order = {}
    for source, readers in readers_by_source.items():
        node = producer.get(source)
        while node is not None and node.op_type in _ELEMENTWISE:
            node = producer.get(node.input[0])
        if node is None or node.op_type != "Conv" or _attr(node, "group", 1) != 1:
            continue  # its order stays; a piece that is not contiguous then needs a Gather (refused below)
        count = first.array(node.input[1]).shape[0]
        by_reader = sorted(range(count), key=lambda c: (readers.get(c, count), c))
        order = np.empty(count, dtype=np.int64)
        order[by_reader] = np.arange(count)
        source_order[node.output[0]] = order
    final = _Rewrite(model, source_order).run()
    if final.gathers:
        return FoldResult(None, reason=f"{final.gathers} reordered tensors would need a Gather")
    if any(final.reordered(o.name) or o.name in final.virtual for o in model.graph.output):
        return FoldResult(None, reason="a graph output would come out reordered")
    graph = final.model.graph
    graph.ClearField("node")
    graph.node.extend(final.nodes)
    graph.initializer.extend(final.inits)
    graph.ClearField("value_info")
    used = {i for node in graph.node for i in node.input}
    kept = [i for i in graph.initializer if i.name in used]
    graph.ClearField("initializer")
    graph.initializer.extend(kept)
    onnx.checker.check_model(final.model)
    return FoldResult(final.model, final.shuffles, dict(final.counts))

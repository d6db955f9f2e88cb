"""Multiply-accumulates of an ONNX graph, counted from its shapes: what the roofline line of ``bench``
divides by latency (one MAC = 2 FLOPs), and per node what ``profile`` tabulates.

Counted: Conv / ConvTranspose (output elements x input channels per group x kernel area), Gemm and
MatMul (M x N x K). Everything else (activations, adds, resizes, softmax) is a few percent of a
detector's arithmetic and is left out, as the published GFLOPs figures of NanoDet and YOLO-FastestV2 do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import onnx
from onnx import helper, shape_inference


@dataclass(frozen=True)
class NodeCount:
    """One ONNX node: its arithmetic and the bytes it touches, from the graph's inferred shapes."""

    name: str
    op_type: str
    inputs: tuple[str, ...]  # activation tensors it reads (graph inputs, other nodes' outputs)
    input_nbytes: tuple[int, ...]  # their sizes
    outputs: tuple[str, ...]
    output_nbytes: tuple[int, ...]
    output_shape: tuple[int, ...]  # of its first output
    macs: int
    params: int  # elements of the weights it is the first node to read (a shared weight counts once)
    weight_bytes: int  # weights read (a shared weight counts at every reader)

    @property
    def input_bytes(self) -> int:
        return sum(self.input_nbytes)

    @property
    def output_bytes(self) -> int:
        return sum(self.output_nbytes)


@dataclass(frozen=True)
class _Tensor:
    shape: list[int]  # 0 where a dimension is unknown
    itemsize: int  # 0 where the element type is unknown

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.itemsize


def _itemsize(elem_type: int) -> int:
    try:
        return helper.tensor_dtype_to_np_dtype(elem_type).itemsize
    except (KeyError, TypeError, ValueError):  # undefined / string element types
        return 0


def _tensors(model: onnx.ModelProto) -> dict[str, _Tensor]:
    inferred = shape_inference.infer_shapes(model)
    graph = inferred.graph
    tensors = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        ttype = info.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in ttype.shape.dim]
        tensors[info.name] = _Tensor(dims, _itemsize(ttype.elem_type))
    for init in graph.initializer:
        tensors[init.name] = _Tensor(list(init.dims), _itemsize(init.data_type))
    return tensors


def _node_macs(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> int:
    if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1:
        out, weight = shapes.get(node.output[0]), shapes.get(node.input[1])
        if out and weight and all(out):
            # weight: Conv (Cout, Cin/groups, kh, kw); ConvTranspose (Cin, Cout/groups, kh, kw)
            per_output = weight[1] * math.prod(weight[2:])
            if node.op_type == "ConvTranspose":
                inp = shapes.get(node.input[0], [])
                return math.prod(inp) * weight[1] * math.prod(weight[2:]) if inp and all(inp) else 0
            return math.prod(out) * per_output
    elif node.op_type in ("Gemm", "MatMul"):
        a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
        if a and out and all(a) and all(out):
            k = a[-2] if node.op_type == "Gemm" and any(
                attr.name == "transA" and attr.i for attr in node.attribute) else a[-1]
            return math.prod(out) * k
    return 0


def _nbytes(names: tuple[str, ...], tensors: dict[str, _Tensor]) -> tuple[int, ...]:
    return tuple(tensors[name].nbytes if name in tensors else 0 for name in names)


def count_nodes(model: onnx.ModelProto) -> list[NodeCount]:
    """One :class:`NodeCount` per node of a static-shape graph, in graph (topological) order."""
    tensors = _tensors(model)
    shapes = {name: t.shape for name, t in tensors.items()}
    weights = {init.name for init in model.graph.initializer}
    counted: set[str] = set()
    rows = []
    for node in model.graph.node:
        reads = [name for name in node.input if name]
        own = [name for name in reads if name in weights and name not in counted and len(tensors[name].shape) > 0]
        counted.update(own)
        activations = tuple(name for name in reads if name not in weights)
        outputs = tuple(name for name in node.output if name)
        rows.append(NodeCount(
            name=node.name, op_type=node.op_type, inputs=activations, input_nbytes=_nbytes(activations, tensors),
            outputs=outputs, output_nbytes=_nbytes(outputs, tensors),
            output_shape=tuple(shapes.get(outputs[0], ())) if outputs else (),
            macs=_node_macs(node, shapes), params=sum(math.prod(tensors[name].shape) for name in own),
            weight_bytes=sum(tensors[name].nbytes for name in reads if name in weights)))
    return rows


def count_macs(model: onnx.ModelProto) -> dict[str, Any]:
    """{"macs": total, "params": weight elements, "by_op": {op type: macs}} for a static-shape graph."""
    rows = count_nodes(model)
    by_op: dict[str, int] = {}
    for row in rows:
        if row.macs:
            by_op[row.op_type] = by_op.get(row.op_type, 0) + row.macs
    return {"macs": sum(by_op.values()), "params": int(sum(row.params for row in rows)), "by_op": by_op}

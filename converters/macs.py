"""Multiply-accumulates of an ONNX graph, counted from its shapes: what the roofline line of ``bench``
divides by latency (one MAC = 2 FLOPs).

Counted: Conv / ConvTranspose (output elements x input channels per group x kernel area), Gemm and
MatMul (M x N x K). Everything else (activations, adds, resizes, softmax) is a few percent of a
detector's arithmetic and is left out, as the published GFLOPs figures of NanoDet and YOLO-FastestV2 do.
"""

from __future__ import annotations

import math
from typing import Any

import onnx
from onnx import shape_inference


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    inferred = shape_inference.infer_shapes(model)
    graph = inferred.graph
    shapes = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in info.type.tensor_type.shape.dim]
        shapes[info.name] = dims
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def count_macs(model: onnx.ModelProto) -> dict[str, Any]:
    """{"macs": total, "params": weight elements, "by_op": {op type: macs}} for a static-shape graph."""
    shapes = _shapes(model)
    by_op: dict[str, int] = {}
    for node in model.graph.node:
        macs = 0
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1:
            out, weight = shapes.get(node.output[0]), shapes.get(node.input[1])
            if out and weight and all(out):
                # weight: Conv (Cout, Cin/groups, kh, kw); ConvTranspose (Cin, Cout/groups, kh, kw)
                per_output = weight[1] * math.prod(weight[2:])
                if node.op_type == "ConvTranspose":
                    inp = shapes.get(node.input[0], [])
                    macs = math.prod(inp) * weight[1] * math.prod(weight[2:]) if inp and all(inp) else 0
                else:
                    macs = math.prod(out) * per_output
        elif node.op_type in ("Gemm", "MatMul"):
            a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a and out and all(a) and all(out):
                k = a[-2] if node.op_type == "Gemm" and any(
                    attr.name == "transA" and attr.i for attr in node.attribute) else a[-1]
                macs = math.prod(out) * k
        if macs:
            by_op[node.op_type] = by_op.get(node.op_type, 0) + macs
    params = sum(math.prod(init.dims) for init in model.graph.initializer if len(init.dims) > 0)
    return {"macs": sum(by_op.values()), "params": int(params), "by_op": by_op}

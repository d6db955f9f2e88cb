"""An exact ONNX rewrite applied before onnx2tf, so the TFLite graph it makes stays quantisable.

A MaxPool with pads becomes edge padding (Slice + Concat) and an unpadded MaxPool. onnx2tf pads
with -FLT_MAX instead, which makes the INT8 range of that tensor absurd (XNNPACK then refuses the
model). The rewrite is checked with ONNX Runtime (outputs must match) and dropped, with a warning,
when it does not hold. Why and what it changed: docs/tflite.md.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


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

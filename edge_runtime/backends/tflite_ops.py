"""What a .tflite graph computes in float: read before deployment, since a full-integer target (Edge
TPU, NXP VX) runs only integer ops and hands every float op back to the CPU, or refuses the model.

Reads the graph with the LiteRT interpreter (no tensors allocated, nothing run).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelLoadError, first_line
from .litert import import_litert

_FLOAT = {np.dtype(np.float32), np.dtype(np.float16)}


@dataclass
class TfliteOpReport:
    path: Path
    ops: int
    op_types: dict[str, int]
    float_ops: list[dict[str, Any]] = field(default_factory=list)  # index, op, why: compute in float
    io_converts: list[dict[str, Any]] = field(default_factory=list)  # QUANTIZE of a float input, DEQUANTIZE to a float output

    @property
    def full_integer(self) -> bool:
        """No float arithmetic inside the graph (float I/O converts at the edges are allowed)."""
        return not self.float_ops

    @property
    def integer_io(self) -> bool:
        return not self.io_converts

    def describe(self) -> str:
        if self.full_integer and self.integer_io:
            return f"{self.path.name}: {self.ops} ops, all integer (inputs and outputs too)"
        parts = []
        if self.float_ops:
            kinds = Counter(op["op"] for op in self.float_ops)
            parts.append(f"{len(self.float_ops)} float ops ({', '.join(f'{k} x{v}' for k, v in kinds.most_common())})")
        if self.io_converts:
            parts.append(f"float I/O through {len(self.io_converts)} QUANTIZE/DEQUANTIZE ops")
        return f"{self.path.name}: {self.ops} ops; " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.path.name, "ops": self.ops, "op_types": self.op_types, "full_integer": self.full_integer,
                "integer_io": self.integer_io, "float_ops": self.float_ops, "io_converts": self.io_converts}


def tflite_op_report(path: str | Path) -> TfliteOpReport:
    path = Path(path)
    Interpreter = import_litert(path)[0]
    try:
        interpreter = Interpreter(model_path=str(path))
        ops = interpreter._get_ops_details()  # the only graph listing the Python API offers
    except Exception as exc:  # ValueError for a file that is not a flatbuffer
        raise ModelLoadError(f"{path}: cannot read TFLite model: {first_line(exc)}") from None
    graph_inputs = {d["index"] for d in interpreter.get_input_details()}
    graph_outputs = {d["index"] for d in interpreter.get_output_details()}
    report = TfliteOpReport(path, len(ops), dict(Counter(op["op_name"] for op in ops)))
    for op in ops:
        types = [np.dtype(t) for t in (*op["operand_types"], *op["result_types"])]
        if not _FLOAT & set(types):
            continue
        entry = {"index": int(op["index"]), "op": op["op_name"]}
        if op["op_name"] == "QUANTIZE" and set(op["inputs"]) & graph_inputs or \
                op["op_name"] == "DEQUANTIZE" and set(op["outputs"]) & graph_outputs:
            report.io_converts.append(entry)
        elif op["op_name"] == "DEQUANTIZE" and np.dtype(op["operand_types"][0]) == np.float16:
            continue  # FP16 weights widened once at load time, not arithmetic
        else:
            report.float_ops.append(entry)
    return report

"""ONNX Runtime backend (CPU by default; any execution provider by name through options).

Options (all optional):
  ``device``              an execution provider, e.g. "QNNExecutionProvider" (with ``provider_options``)
  ``graph_optimization``  "basic", "extended" or "all" (default): ORT's graph optimisation level
  ``profile_prefix``      turns on ORT's per-node profiler, writing its JSON trace to this path prefix
                          (``session.end_profiling()`` returns the file)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailableError, EdgeRuntimeError, ModelLoadError, first_line
from .base import Backend, TensorSpec

log = logging.getLogger(__name__)
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
               "tensor(int8)": "int8", "tensor(int64)": "int64", "tensor(int32)": "int32"}


class OrtBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path: Path, threads: int, options: dict[str, Any] | None = None) -> None:
        super().__init__(path, threads, options)
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailableError(
                f"{path}: onnxruntime is not installed (pip install 'edge-runtime[onnx]')") from None
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        level = str(self.options.get("graph_optimization", "all")).upper()
        if level not in ("BASIC", "EXTENDED", "ALL"):
            raise EdgeRuntimeError(f"{path}: graph_optimization must be basic, extended or all, not {level.lower()!r}")
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, f"ORT_ENABLE_{level}")
        if self.options.get("profile_prefix"):
            so.enable_profiling = True
            so.profile_file_prefix = str(self.options["profile_prefix"])
        so.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        device = self.options.get("device")  # an execution provider, e.g. QNNExecutionProvider
        if device and device not in ("CPU", "CPUExecutionProvider"):
            if device in ort.get_available_providers():
                providers = [(device, self.options.get("provider_options", {})), "CPUExecutionProvider"]
            else:
                log.warning("%s: execution provider %s is not available in this onnxruntime (has %s); "
                            "running on CPU", path, device, ", ".join(ort.get_available_providers()))
        try:
            self.session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/... types
            raise ModelLoadError(f"{path}: cannot load ONNX model (corrupt or truncated?): {first_line(exc)}") from None
        self._version = ort.__version__
        self.inputs = [TensorSpec(i.name, tuple(i.shape), _ORT_DTYPES.get(i.type, i.type))
                        for i in self.session.get_inputs()]
        self.outputs = [TensorSpec(o.name, tuple(o.shape), _ORT_DTYPES.get(o.type, o.type))
                         for o in self.session.get_outputs()]
        self._output_names = [o.name for o in self.outputs]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._output_names, self.session.run(self._output_names, inputs)))

    def describe(self) -> str:
        return f"onnxruntime {self._version} {self.session.get_providers()[0]}, {self.threads} threads"

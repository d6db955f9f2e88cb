"""LiteRT (TensorFlow Lite) backend: XNNPACK on CPU by default, or an external delegate library.

Uses ``ai_edge_litert`` (numpy 2) and falls back to ``tflite_runtime`` when only that is installed.
Quantised (int8/uint8) inputs and outputs are handled here: ``run`` takes and returns float32, quantising
each input and dequantising each output with that tensor's own scale and zero point.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailableError, ModelLoadError, first_line
from ..versions import package_version
from .base import Backend, TargetKey, TensorSpec

log = logging.getLogger(__name__)
_QUANTIZED = ("int8", "uint8")


def import_litert(path: Path) -> tuple[Any, Any, str]:
    """(Interpreter class, load_delegate, 'library version'); ai-edge-litert preferred."""
    try:
        from ai_edge_litert.interpreter import Interpreter, load_delegate

        return Interpreter, load_delegate, f"ai-edge-litert {package_version('ai-edge-litert') or '?'}"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter, load_delegate

        return Interpreter, load_delegate, f"tflite-runtime {package_version('tflite-runtime') or '?'}"
    except ImportError:
        raise BackendUnavailableError(f"{path}: a tflite artifact needs ai-edge-litert or tflite-runtime, neither "
                                      f"is installed (pip install 'edge-runtime[tflite]')") from None


def _spec(detail: dict[str, Any]) -> TensorSpec:
    dtype = np.dtype(detail["dtype"]).name
    scale = zero_point = None
    if dtype in _QUANTIZED:
        q_scale, q_zero = detail.get("quantization", (0.0, 0))
        if q_scale:
            scale, zero_point = float(q_scale), int(q_zero)
    return TensorSpec(detail["name"], tuple(int(d) for d in detail["shape"]), dtype, scale, zero_point)


class LiteRtBackend(Backend):
    """Options: ``delegate`` (path or name of an external delegate library, e.g. libedgetpu.so.1) and
    ``delegate_options`` (dict passed to it). A delegate that fails to load or to take the graph
    leaves the model on the CPU (XNNPACK) with one warning; ``describe()`` says which one ran."""

    name = "tflite"
    format = "tflite"
    precisions = ("fp32", "fp16", "int8")
    libraries = (("ai_edge_litert", "ai-edge-litert"), ("tflite_runtime", "tflite-runtime"))
    extra = "tflite"
    option_keys = frozenset({"delegate", "delegate_options", "compiled_model"})
    target_keys = (TargetKey("delegate", option="delegate", selects=True),
                   TargetKey("delegate_options", "table", option="delegate_options", needs="delegate"),
                   # the converter's TFLite INT8 input/output type (int8/uint8 for NPU delegates)
                   TargetKey("tflite_io", "choice", choices=("float32", "int8", "uint8")),
                   # the tool convert runs on the INT8 model for the delegate (converters/tflite/compilers.py)
                   TargetKey("tflite_compiler", "choice", choices=("edgetpu_compiler",), needs="delegate"))
    import_file = (".tflite", "model_fp32.tflite")
    quantizes_inputs = True  # run() quantises each float input with its own scale and zero point
    no_layer_profiler = ("per-layer latency is not available for tflite: the TFLite Python interpreter has no "
                         "per-op profiler; use TensorFlow Lite's benchmark_model tool with --enable_op_profiling=true")

    def __init__(self, path: Path, threads: int, options: dict[str, Any] | None = None) -> None:
        super().__init__(path, threads, options)
        Interpreter, load_delegate, self._library = import_litert(self.path)
        if not self.path.is_file():
            raise ModelLoadError(f"{self.path}: TFLite model file not found")
        self._accelerator = "XNNPACK"
        self._fallback: str | None = None
        delegate = self.options.get("delegate")
        interpreter = None
        if delegate:
            name = Path(str(delegate)).name
            try:
                # check it with ctypes first: a library that is missing or is not a delegate then
                # never reaches load_delegate (whose half-built Delegate object raises again when collected)
                library = ctypes.CDLL(str(delegate))
                for symbol in ("tflite_plugin_create_delegate", "tflite_plugin_destroy_delegate"):
                    if not hasattr(library, symbol):
                        raise OSError(f"{delegate} is not a TFLite external delegate (no {symbol})")
                loaded = load_delegate(str(delegate), dict(self.options.get("delegate_options") or {}))
                compiled = self._compiled_model()
                interpreter = self._open(Interpreter, [loaded], compiled)
                self._accelerator = f"delegate {name}" + (f", compiled {compiled.name} (not checked against FP32 "
                                                          f"where it was converted)" if compiled else "")
            except Exception as exc:  # missing library, no device, delegate rejects the graph
                self._fallback = f"delegate {name} failed: CPU fallback"
                log.warning("%s: delegate %s failed (%s); running on the CPU (XNNPACK) instead",
                            self.path, delegate, first_line(exc))
        if interpreter is None:
            interpreter = self._open(Interpreter, None)
        self._interpreter = interpreter
        self.inputs = [_spec(d) for d in interpreter.get_input_details()]
        self.outputs = [_spec(d) for d in interpreter.get_output_details()]
        self._input_index = {d["name"]: d["index"] for d in interpreter.get_input_details()}
        self._output_index = [(d["name"], d["index"]) for d in interpreter.get_output_details()]
        self._input_specs = {s.name: s for s in self.inputs}
        self._output_specs = {s.name: s for s in self.outputs}

    def _compiled_model(self) -> Path | None:
        """The accelerator-compiled model beside this one (``compiled_model``: the manifest's ``compiled_file``,
        checksummed with the artifact), run only once its delegate has loaded: without the accelerator
        it cannot run, and the checked plain model runs on the CPU instead."""
        name = self.options.get("compiled_model")
        if not name:
            return None
        compiled = self.path.parent / Path(str(name)).name
        if not compiled.is_file():
            raise ModelLoadError(f"{compiled}: the compiled model listed for {self.path.name} is missing")
        return compiled

    def _open(self, Interpreter: Any, delegates: list[Any] | None, model: Path | None = None) -> Any:
        try:
            interpreter = Interpreter(model_path=str(model or self.path), num_threads=self.threads,
                                      experimental_delegates=delegates)
        except Exception as exc:  # ValueError for a file that is not a valid flatbuffer
            if delegates:
                raise RuntimeError(first_line(exc)) from None
            raise ModelLoadError(f"{self.path}: cannot load TFLite model (corrupt or truncated?): "
                                 f"{first_line(exc)}") from None
        try:
            interpreter.allocate_tensors()
        except Exception as exc:
            if delegates:
                raise RuntimeError(first_line(exc)) from None
            raise ModelLoadError(f"{self.path}: cannot prepare TFLite model: {first_line(exc)}") from None
        return interpreter

    @classmethod
    def recorded_options(cls, artifact_extra: dict[str, Any]) -> dict[str, Any]:
        """``compiled_file``: the model compiled for the delegate's accelerator (the Edge TPU's
        ``_edgetpu.tflite``), used when that delegate loads."""
        name = artifact_extra.get("compiled_file")
        return {"compiled_model": name} if isinstance(name, str) and name else {}

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, index in self._input_index.items():
            if name not in inputs:
                raise ValueError(f"{self.path}: missing input {name!r} (got {', '.join(inputs) or 'none'})")
            self._interpreter.set_tensor(index, self._quantize(self._input_specs[name], inputs[name]))
        self._interpreter.invoke()
        return {name: self._dequantize(self._output_specs[name], self._interpreter.get_tensor(index))
                for name, index in self._output_index}

    @staticmethod
    def _quantize(spec: TensorSpec, value: np.ndarray) -> np.ndarray:
        if spec.dtype in _QUANTIZED and spec.scale:
            info = np.iinfo(spec.dtype)
            q = np.round(np.asarray(value, dtype=np.float32) / np.float32(spec.scale)) + spec.zero_point
            return np.clip(q, info.min, info.max).astype(spec.dtype)
        return np.ascontiguousarray(value, dtype=spec.dtype)

    @staticmethod
    def _dequantize(spec: TensorSpec, value: np.ndarray) -> np.ndarray:
        if spec.dtype in _QUANTIZED and spec.scale:
            return (value.astype(np.float32) - np.float32(spec.zero_point)) * np.float32(spec.scale)
        return np.array(value, dtype=np.float32, copy=True)

    def describe(self) -> str:
        """Library, accelerator, threads, how much of the graph the delegates took and any fallback."""
        from collections import Counter

        total, left = undelegated_ops(self._interpreter)
        share = f"all {total} ops" if not left else (
            f"{total - len(left)} of {total} ops; not delegated: "
            + ", ".join(f"{op} x{n}" for op, n in Counter(left).most_common()))
        text = f"{self._library} {self._accelerator} ({share}), {self.threads} threads"
        return f"{text} ({self._fallback})" if self._fallback else text


def undelegated_ops(interpreter: Any) -> tuple[int, list[str]]:
    """After ``allocate_tensors``: (ops of the model, names of those no delegate took).

    LiteRT appends one DELEGATE node per partition a delegate (XNNPACK or an external one) claimed;
    the original nodes stay listed. A partition is the part of the graph between the DELEGATE node's
    inputs and outputs, so walking back from its outputs to its inputs finds the ops it replaced.
    """
    ops = interpreter._get_ops_details()
    original = [op for op in ops if op["op_name"] != "DELEGATE"]
    producer = {int(t): op["index"] for op in original for t in op["outputs"]}
    by_index = {op["index"]: op for op in original}
    claimed: set[int] = set()
    for node in (op for op in ops if op["op_name"] == "DELEGATE"):
        boundary = {int(t) for t in node["inputs"]}
        stack = [int(t) for t in node["outputs"]]
        while stack:
            tensor = stack.pop()
            index = producer.get(tensor)
            if tensor in boundary or index is None or index in claimed:
                continue
            claimed.add(index)
            stack.extend(int(t) for t in by_index[index]["inputs"] if t >= 0)
    return len(original), [op["op_name"] for op in original if op["index"] not in claimed]

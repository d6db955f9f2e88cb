"""ONNX Runtime backend (CPU by default; any execution provider by name through options).

Options (all optional):
  ``device``              an execution provider, e.g. "QNNExecutionProvider" (with ``provider_options``)
  ``graph_optimization``  "basic", "extended" or "all" (default): ORT's graph optimisation level
  ``profile_prefix``      turns on ORT's per-node profiler, writing its JSON trace to this path prefix
                          (``session.end_profiling()`` returns the file)
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailableError, EdgeRuntimeError, ModelLoadError, first_line
from ..timing import time_calls
from .base import AcceleratorPackage, Backend, DeviceListing, LayerTime, LayerTimings, TargetKey, TensorSpec

log = logging.getLogger(__name__)
# ORT's NCHWc pass (level "all", the deploy setting) renames fused convolutions after their output tensor
# and adds Reorder nodes; at "extended" every node keeps its ONNX name (Conv + activation fused keep the Conv's)
ORT_PROFILE_LEVEL = "extended"
_REGISTERED_PLUGINS: set[str] = set()  # execution-provider plugins this process registered with ONNX Runtime
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
               "tensor(int8)": "int8", "tensor(int64)": "int64", "tensor(int32)": "int32"}


def _plugin_devices(ort: Any, provider: str) -> list[Any]:
    """The devices of ``provider`` as an ONNX Runtime plugin (``OrtBackend.accelerator_packages``); its library
    is registered on first use. [] when it is built into this onnxruntime, when its package is not installed,
    or when this onnxruntime (< 1.23) has no plugin API."""
    package = OrtBackend.accelerator_packages.get(provider)
    if package is None or not hasattr(ort, "register_execution_provider_library"):
        return []
    if provider not in _REGISTERED_PLUGINS:
        # once registered, a plugin is listed among the available providers as if it were built in
        if provider in ort.get_available_providers():
            return []
        try:
            plugin = importlib.import_module(package.module)
        except ImportError:
            return []
        try:
            ort.register_execution_provider_library(provider, plugin.get_library_path())
        except Exception as exc:  # ORT's Fail: a library that does not load on this machine
            log.warning("%s: cannot register %s (%s)", package.dist, provider, first_line(exc))
            return []
        _REGISTERED_PLUGINS.add(provider)
    return [d for d in ort.get_ep_devices() if d.ep_name == provider]


class OrtBackend(Backend):
    name = "onnxruntime"
    format = "onnx"
    precisions = ("fp32", "fp16", "int8")
    libraries = (("onnxruntime", "onnxruntime"),)
    extra = "onnx"
    option_keys = frozenset({"device", "provider_options", "graph_optimization", "profile_prefix"})
    target_keys = (TargetKey("execution_provider", option="device", selects=True),
                   TargetKey("provider_options", "table", option="provider_options", needs="execution_provider"),
                   # the converter's INT8 weights for ONNX Runtime's U8S8 kernels: 7 bits where the CPU
                   # multiplies u8 x s8 pairs with 16-bit saturation (x86 without VNNI)
                   TargetKey("onnx_weight_bits", "choice", choices=("8", "7")))
    import_file = (".onnx", "model.onnx")
    int8_saturates_without_vnni = True  # measured under an emulated Haswell (AVX2)
    # onnxruntime-qnn 2.x is a plugin next to onnxruntime (1.x was a whole ONNX Runtime build, Windows only).
    # Its wheels on PyPI, checked for 2.3.0-2.7.0: manylinux_2_35_x86_64 (the HTP simulator), win_amd64,
    # win_arm64; none for Linux aarch64
    accelerator_packages = {"QNNExecutionProvider": AcceleratorPackage(
        "onnxruntime-qnn", "onnxruntime_qnn", ("linux-x86_64", "windows-amd64", "windows-arm64"),
        "build that wheel on the device (ONNX Runtime's source with the QNN SDK) and run install.sh with "
        "PIP_FIND_LINKS=<the folder holding it>")}
    device_listing = DeviceListing("ort_providers", "ONNX Runtime providers", "onnxruntime",
                                   {"QNNExecutionProvider": "ort-qnn"})

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
            provider_options = dict(self.options.get("provider_options", {}))
            if plugin_devices := _plugin_devices(ort, device):
                # a plugin EP named in providers= is silently left out: it is attached to the session options
                so.add_provider_for_devices(plugin_devices, provider_options)
                providers = None
            elif device in ort.get_available_providers():  # built into this onnxruntime
                providers = [(device, provider_options), "CPUExecutionProvider"]
            else:
                package = self.accelerator_packages.get(device)
                log.warning("%s: execution provider %s is not available in this onnxruntime (has %s%s); "
                            "running on CPU", path, device, ", ".join(ort.get_available_providers()),
                            f"; it comes with pip install {package.dist}" if package else "")
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

    def timing_runner(self, inputs: dict[str, np.ndarray]) -> Callable[[], object]:
        """Inputs and outputs bound once (io_binding): fresh numpy outputs of 100+ KiB come from mmap
        and are page-faulted in on every call, which made a small conv's time vary 6x between runs."""
        import onnxruntime as ort

        binding = self.session.io_binding()
        for name, array in inputs.items():
            binding.bind_cpu_input(name, array)
        outputs = self.run(inputs)
        for name in self._output_names:
            value = outputs[name]
            binding.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_shape_and_type(value.shape, value.dtype))
        return lambda: self.session.run_with_iobinding(binding)

    def describe(self) -> str:
        return f"onnxruntime {self._version} {self.session.get_providers()[0]}, {self.threads} threads"

    @classmethod
    def list_devices(cls) -> list[str] | None:
        try:
            import onnxruntime
        except ImportError:
            return None
        try:
            built_in = list(onnxruntime.get_available_providers())
        except Exception:  # a broken install must not stop detection
            return None
        # an installed plugin (onnxruntime-qnn) is listed only once registered: name it from its package
        return built_in + [provider for provider, package in cls.accelerator_packages.items()
                           if provider not in built_in and importlib.util.find_spec(package.module) is not None]

    @classmethod
    def profile_layers(cls, path: Path, threads: int, feed: dict[str, np.ndarray], runs: int, warmup: int,
                       options: dict[str, Any] | None = None) -> LayerTimings:
        """The session's JSON trace (``enable_profiling``): one ``<node>_kernel_time`` event per node and run."""
        with tempfile.TemporaryDirectory() as tmp:
            backend = cls(path, threads, {**(options or {}), "profile_prefix": str(Path(tmp) / "ort"),
                                           "graph_optimization": ORT_PROFILE_LEVEL})
            run_ms = time_calls(lambda: backend.run(feed), warmup, runs)
            events = json.loads(Path(backend.session.end_profiling()).read_text())
        note = f"ONNX Runtime graph optimisation '{ORT_PROFILE_LEVEL}' (keeps ONNX node names; run/bench use 'all')"
        return LayerTimings(ort_layer_times(events, runs), run_ms, backend.describe(), note)


def ort_layer_times(events: list[dict[str, Any]], runs: int) -> list[LayerTime]:
    """Mean time per node over the last ``runs`` 'model_run' spans of an ORT profiler trace (the
    warm-up runs before them are in the trace too)."""
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                   if e.get("cat") == "Session" and e.get("name") == "model_run")[-runs:]
    if len(spans) < runs:
        raise EdgeRuntimeError(f"the ONNX Runtime trace holds {len(spans)} runs, expected {runs}")
    total: dict[str, float] = {}
    kind: dict[str, tuple[str, str]] = {}
    for e in sorted(events, key=lambda e: e.get("ts", 0)):
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        if not any(start <= e["ts"] <= end for start, end in spans):
            continue
        name = e["name"][: -len("_kernel_time")]
        total[name] = total.get(name, 0.0) + e["dur"] / 1e3
        kind.setdefault(name, (e.get("args", {}).get("op_name", ""), e.get("args", {}).get("provider", "")))
    return [LayerTime(name, *kind[name], ms / runs) for name, ms in total.items()]

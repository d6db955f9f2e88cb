"""OpenVINO backend: an IR (.xml + .bin) or any file ``Core.read_model`` reads, on any OpenVINO device.

Options (all optional):
  ``device``               OpenVINO device string: "CPU" (default), "GPU", "GPU.1", "NPU", "AUTO", ...
                           A physical device this machine lacks falls back to CPU with one warning.
  ``inference_precision``  INFERENCE_PRECISION_HINT; on CPU (also when AUTO/MULTI/HETERO picks it) it
                           defaults to "f32" so that FP32 and FP16 IRs are computed in f32 (the plugin would
                           pick bf16/f16 on some CPUs), or to ``verified_precision``; GPU/NPU keep their
                           plugin default unless set. ``describe()`` reports the precision the compiled
                           model actually uses.
  ``verified_precision``   the hint ``convert`` verified the artifact with (its manifest entry's
                           ``inference_precision_hint``, passed by ``open_artifact``): "bf16" is used on CPU
                           when this CPU has AVX512-BF16 or AMX-BF16; without them f32 (more exact than what
                           was verified), said once per process in the log.
  ``performance_hint``     PERFORMANCE_HINT, default "LATENCY" (one stream, one request).
  ``config``               further compile properties, passed as they are.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailableError, ModelLoadError
from .base import Backend, DeviceListing, LayerTime, LayerTimings, TargetKey, TensorSpec

log = logging.getLogger(__name__)

# the INFERENCE_PRECISION_HINT values an artifact may record as verified (inference_precision_hint)
RECORDED_PRECISIONS = ("bf16", "f32")
_fallback_logged = False

# devices that choose or combine physical devices themselves: never "missing"
_VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")


def _device_available(device: str, available: list[str]) -> bool:
    if device.split(":")[0].upper() in _VIRTUAL_DEVICES:
        return True
    if device in available:
        return True
    # "GPU" is there when "GPU.0"/"GPU.1" are listed
    return "." not in device and any(d.split(".")[0] == device for d in available)


def _reason(exc: BaseException) -> str:
    """The informative line of an OpenVINO exception (they start with 'Exception from <file>:<line>')."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception from ", "Check '"))]
    return ((useful or lines or [type(exc).__name__])[-1])[:200]


def _looks_like_ir(path: Path) -> bool:
    """An IR .xml starts with an XML declaration or the <net> element (checked before OpenVINO tries
    every frontend on it, which prints parser noise for non-IR files)."""
    with open(path, "rb") as f:
        head = f.read(256).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith((b"<?xml", b"<net"))


def _spec(port: Any) -> TensorSpec:
    shape = tuple(d.get_length() if d.is_static else "?" for d in port.get_partial_shape())
    try:
        dtype = np.dtype(port.get_element_type().to_dtype()).name
    except (RuntimeError, TypeError):  # element types numpy lacks (bf16, u4, ...)
        dtype = port.get_element_type().get_type_name()
    return TensorSpec(port.get_any_name(), shape, dtype)


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """OpenVINO's CPU plugin computes bf16 natively here: it lists BF16 among the CPU's optimization
    capabilities (AVX512-BF16 or AMX-BF16). The converter and the runtime both ask this, so an IR is
    verified in the precision it will run in."""
    import openvino as ov

    try:
        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # noqa: BLE001 - no CPU plugin: nothing runs in bf16 here
        return False


def _cpu_precision(path: Path, verified: object) -> str:
    """The CPU hint for an artifact verified with ``verified``: bf16 only where this CPU computes it natively."""
    global _fallback_logged
    if verified != "bf16":
        return "f32"
    if cpu_has_bf16():
        return "bf16"
    if not _fallback_logged:
        _fallback_logged = True
        log.info("%s: verified with INFERENCE_PRECISION_HINT bf16, but this CPU has neither AVX512-BF16 nor "
                 "AMX-BF16: running its float parts in f32 (more exact than what was verified; said once)", path)
    return "f32"


def _numpy_dtype(name: str) -> np.dtype | None:
    try:
        return np.dtype(name)
    except TypeError:
        return None


class OpenVinoBackend(Backend):
    name = "openvino"
    format = "openvino"
    # bf16: the FP32 graph run with INFERENCE_PRECISION_HINT bf16, checked so on a CPU with AVX512-BF16/AMX-BF16
    precisions = ("fp32", "fp16", "bf16", "int8")
    opt_in_precisions = ("bf16",)
    libraries = (("openvino", "openvino"),)
    extra = "openvino"
    option_keys = frozenset({"device", "inference_precision", "verified_precision", "performance_hint", "config"})
    # openvino_inference_precision: the hint an INT8 IR is verified with and records (the converter reads it;
    # "auto": on a BF16 CPU the faster of bf16 and f32 when it is the package's, else bf16; f32 without BF16)
    target_keys = (TargetKey("openvino_device", option="device", selects=True),
                   TargetKey("openvino_inference_precision", "choice", choices=("auto", "bf16", "f32")))
    device_listing = DeviceListing("openvino_devices", "OpenVINO devices", "openvino", {"NPU": "openvino-npu"})
    int8_saturates_without_vnni = True  # measured under an emulated Haswell (AVX2)

    def __init__(self, path: Path, threads: int, options: dict[str, Any] | None = None) -> None:
        super().__init__(path, threads, options)
        try:
            import openvino as ov
        except ImportError:
            raise BackendUnavailableError(
                f"{path}: openvino is not installed (pip install 'edge-runtime[openvino]')") from None
        self._version = ".".join(ov.__version__.split("-")[0].split(".")[:2])
        core = ov.Core()
        requested = str(self.options.get("device") or "CPU")
        available = list(core.available_devices)
        device = requested
        if not _device_available(requested, available):
            log.warning("%s: OpenVINO device %r is not available on this machine (available: %s); "
                        "running on CPU instead", path, requested, ", ".join(available) or "none")
            device = "CPU"
        self.device = device

        if not self.path.is_file():
            raise ModelLoadError(f"{path}: no such file")
        weights = None
        if self.path.suffix.lower() == ".xml":
            weights = self.path.with_suffix(".bin")
            if not weights.is_file():
                raise ModelLoadError(f"{path}: its weights file {weights.name} is missing")
            if not _looks_like_ir(self.path):
                raise ModelLoadError(f"{path}: not an OpenVINO IR (no XML <net> at the start; corrupt?)")
        elif _looks_like_ir(self.path):
            # OpenVINO knows an IR by its content and would read the same-stem .bin, which the manifest
            # lists (and checksums) only for a .xml
            raise ModelLoadError(f"{path}: an OpenVINO IR must be named .xml (its weights: the .bin beside it)")
        try:
            model = core.read_model(str(self.path), *([str(weights)] if weights else []))
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError with multi-line messages
            raise ModelLoadError(f"{path}: cannot load OpenVINO model (corrupt or truncated?): {_reason(exc)}") from None

        # CPU: our thread count, and f32 or the verified bf16 unless asked otherwise (the plugin would pick
        # bf16/f16 on CPUs that have them). Other devices keep their own default precision unless options set one.
        virtual = device.split(":")[0].upper() in _VIRTUAL_DEVICES
        precision = self.options.get("inference_precision")
        if precision is None and (device == "CPU" or virtual):
            precision = _cpu_precision(path, self.options.get("verified_precision"))
        cpu_config: dict[str, Any] = {"INFERENCE_NUM_THREADS": int(threads)}
        if precision:
            cpu_config["INFERENCE_PRECISION_HINT"] = str(precision)
        config: dict[str, Any] = {}
        if device == "CPU":
            config.update(cpu_config)
        elif virtual:  # applies when AUTO/MULTI/HETERO picks the CPU
            config["DEVICE_PROPERTIES"] = {"CPU": cpu_config}
        elif precision:
            config["INFERENCE_PRECISION_HINT"] = str(precision)
        hint = self.options.get("performance_hint", "LATENCY")
        if hint:
            config["PERFORMANCE_HINT"] = str(hint)
        config.update(self.options.get("config") or {})
        try:
            self.compiled = core.compile_model(model, device, config)
        except Exception as exc:  # noqa: BLE001 - any failure here means the model cannot run
            raise ModelLoadError(f"{path}: OpenVINO cannot compile the model for {device}: {_reason(exc)}") from None
        try:
            executed = list(self.compiled.get_property("EXECUTION_DEVICES"))
        except RuntimeError:
            executed = []
        if virtual and executed:
            self.device = f"{device}->{','.join(executed)}"
        try:  # the precision the plugin really computes in ("f32", "bf16", "f16")
            used = self.compiled.get_property("INFERENCE_PRECISION_HINT")
            self.precision = used.get_type_name() if hasattr(used, "get_type_name") else str(used)
        except RuntimeError:  # virtual devices and some plugins do not report it
            self.precision = f"{precision} requested" if precision else "plugin default precision"
        self.inputs = [_spec(p) for p in self.compiled.inputs]
        self.outputs = [_spec(p) for p in self.compiled.outputs]
        self._output_names = [o.name for o in self.outputs]
        self._input_dtypes = {s.name: _numpy_dtype(s.dtype) for s in self.inputs}
        self._request = self.compiled.create_infer_request()

    @classmethod
    def weights_file(cls, model_file: str) -> str | None:
        return str(Path(model_file).with_suffix(".bin")) if model_file.lower().endswith(".xml") else None

    @classmethod
    def recorded_options(cls, artifact_extra: dict[str, Any]) -> dict[str, Any]:
        """``inference_precision_hint`` ("bf16" or "f32"), as the verified precision; any other value is ignored."""
        hint = artifact_extra.get("inference_precision_hint")
        return {"verified_precision": hint} if hint in RECORDED_PRECISIONS else {}

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {}
        for name, array in inputs.items():
            want = self._input_dtypes.get(name)
            feed[name] = np.ascontiguousarray(array, dtype=want) if want is not None else array
        self._request.infer(feed, share_inputs=True, share_outputs=True)
        # the request reuses its output buffers: hand back copies
        return {name: np.array(self._request.get_output_tensor(i).data, copy=True)
                for i, name in enumerate(self._output_names)}

    def timing_runner(self, inputs: dict[str, np.ndarray]) -> Callable[[], object]:
        """The request's own buffers, shared, without the copies ``run`` hands back."""
        request = self.compiled.create_infer_request()
        feed = {name: np.ascontiguousarray(a, dtype=self._input_dtypes.get(name) or a.dtype)
                for name, a in inputs.items()}
        return lambda: request.infer(feed, share_inputs=True, share_outputs=True)

    def describe(self) -> str:
        return f"openvino {self._version} {self.device} {self.precision}, {self.threads} threads"

    @classmethod
    def list_devices(cls) -> list[str] | None:
        try:
            try:
                from openvino import Core
            except ImportError:  # OpenVINO before 2023.1
                from openvino.runtime import Core
        except ImportError:
            return None
        try:
            return list(Core().available_devices)
        except Exception:  # a plugin that fails to initialise must not stop detection
            return None

    @classmethod
    def profile_layers(cls, path: Path, threads: int, feed: dict[str, np.ndarray], runs: int, warmup: int,
                       options: dict[str, Any] | None = None) -> LayerTimings:
        """``PERF_COUNT`` and the infer request's profiling info, summed over the timed runs."""
        import openvino.properties as props

        options = options or {}
        backend = cls(path, threads, {**options, "config": {**options.get("config", {}), props.enable_profiling(): True}})
        # a request of our own: the backend's is private, and its run() adds output copies to each run
        request = backend.compiled.create_infer_request()
        for _ in range(warmup):
            request.infer(feed)
        total: dict[str, float] = {}
        kind: dict[str, tuple[str, str]] = {}
        run_ms = []
        for _ in range(runs):
            t0 = time.perf_counter()
            request.infer(feed)
            run_ms.append((time.perf_counter() - t0) * 1e3)
            for info in request.get_profiling_info():  # the last inference's layers
                if str(info.status).endswith("EXECUTED"):
                    total[info.node_name] = total.get(info.node_name, 0.0) + info.real_time.total_seconds() * 1e3
                    kind.setdefault(info.node_name, (info.node_type, info.exec_type))
        layers = [LayerTime(name, *kind[name], ms / runs) for name, ms in total.items()]
        return LayerTimings(layers, run_ms, backend.describe(), "OpenVINO fuses activations into the layer before them")

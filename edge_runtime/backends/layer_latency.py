"""Per-layer latency of a package's artifact from its backend's own profiler (runs on the device).

ONNX Runtime: the session's JSON trace (``enable_profiling``), one ``<node>_kernel_time`` event per node
and run. OpenVINO: ``PERF_COUNT`` and the infer request's profiling info. The TFLite Python interpreter
has no per-op profiler. Inputs are random tensors of the artifact's input shape: latency of these
CNNs does not depend on the values.

Only numpy and the backend are needed here (no torch, onnx or converters).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..deploy.hostinfo import physical_cores
from ..errors import EdgeRuntimeError
from ..manifest import InputSpec, load_manifest
from ..timing import time_calls
from . import open_backend

PROFILED_BACKENDS = ("onnx", "openvino")
TFLITE_UNSUPPORTED = ("per-layer latency is not available for tflite: the TFLite Python interpreter has no "
                      "per-op profiler; use TensorFlow Lite's benchmark_model tool with --enable_op_profiling=true")
# ORT's NCHWc pass (level "all", the deploy setting) renames fused convolutions after their output tensor
# and adds Reorder nodes; at "extended" every node keeps its ONNX name (Conv + activation fused keep the Conv's)
ORT_PROFILE_LEVEL = "extended"


@dataclass(frozen=True)
class LayerTime:
    name: str  # the backend's node name (ONNX node name, OpenVINO adds "/WithoutBiases" and the like)
    op_type: str
    exec_type: str  # ORT: execution provider; OpenVINO: the kernel (e.g. brgconv_avx512_f32)
    ms: float  # mean per run


@dataclass
class LatencyProfile:
    artifact: str
    backend: str  # the backend's describe()
    runs: int
    end_to_end_ms: float  # mean wall time of the same runs, one whole inference each
    layers: list[LayerTime]  # in execution order
    note: str = ""

    @property
    def total_ms(self) -> float:
        return sum(layer.ms for layer in self.layers)

    def to_dict(self, macs_by_node: dict[str, int] | None = None) -> dict[str, Any]:
        """JSON-able; with ``macs_by_node`` (static profile: ONNX node name -> MACs) each row matched by
        name gets its ``onnx_node`` and ``macs``."""
        rows = []
        for layer in self.layers:
            row = asdict(layer)
            node = onnx_node(layer.name, macs_by_node) if macs_by_node else None
            if node is not None:
                row.update(onnx_node=node, macs=macs_by_node[node])
            rows.append(row)
        return {"artifact": self.artifact, "backend": self.backend, "runs": self.runs,
                "end_to_end_ms": self.end_to_end_ms, "layers_total_ms": self.total_ms, "note": self.note,
                "layers": rows}


def onnx_node(name: str, nodes: dict[str, Any]) -> str | None:
    """The ONNX node a backend's layer name stands for: the name itself, or its longest '/'-prefix among
    ``nodes`` (OpenVINO names a Conv's convolution '<node>/WithoutBiases'); None when none matches."""
    while name:
        if name in nodes:
            return name
        name = name.rpartition("/")[0]
    return None


def random_input(spec: InputSpec, seed: int = 0) -> np.ndarray:
    """A tensor of the input's shape and dtype: normal floats, or integers over the dtype's range."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(spec.dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=spec.shape, endpoint=True, dtype=dtype)
    return rng.standard_normal(spec.shape).astype(dtype)


def profile_latency(package: str | Path, backend: str = "onnx", precision: str | None = None, runs: int = 20,
                    warmup: int = 3, threads: int | None = None) -> LatencyProfile:
    """Mean per-layer latency over ``runs`` inferences after ``warmup``, of the package's first
    ``backend`` artifact (of ``precision`` when given), with the end-to-end mean of the same runs."""
    if backend == "tflite":
        raise EdgeRuntimeError(TFLITE_UNSUPPORTED)
    if backend not in PROFILED_BACKENDS:
        raise EdgeRuntimeError(f"unknown backend {backend!r} for per-layer latency; choose one of "
                               f"{', '.join(PROFILED_BACKENDS)}")
    if runs < 1 or warmup < 0:
        raise EdgeRuntimeError(f"runs must be >= 1 and warmup >= 0 (got {runs}, {warmup})")
    manifest = load_manifest(package)
    art = manifest.artifact(backend, precision)
    path = manifest.artifact_path(art)
    spec = manifest.input_for(art)
    feed = {spec.name: random_input(spec)}
    threads = threads or physical_cores()
    profiler = _profile_ort if backend == "onnx" else _profile_openvino
    layers, run_ms, described, note = profiler(path, threads, feed, runs, warmup)
    return LatencyProfile(artifact=art.file, backend=described, runs=runs, end_to_end_ms=float(np.mean(run_ms)),
                          layers=layers, note=note)


def _profile_ort(path: Path, threads: int, feed: dict[str, np.ndarray], runs: int, warmup: int
                 ) -> tuple[list[LayerTime], list[float], str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        backend = open_backend(path, "onnx", threads, {"profile_prefix": str(Path(tmp) / "ort"),
                                                       "graph_optimization": ORT_PROFILE_LEVEL})
        run_ms = time_calls(lambda: backend.run(feed), warmup, runs)
        events = json.loads(Path(backend.session.end_profiling()).read_text())
    layers = ort_layer_times(events, runs)
    note = f"ONNX Runtime graph optimisation '{ORT_PROFILE_LEVEL}' (keeps ONNX node names; run/bench use 'all')"
    return layers, run_ms, backend.describe(), note


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


def _profile_openvino(path: Path, threads: int, feed: dict[str, np.ndarray], runs: int, warmup: int
                      ) -> tuple[list[LayerTime], list[float], str, str]:
    import openvino.properties as props  # the backend opened below has imported openvino already

    backend = open_backend(path, "openvino", threads, {"config": {props.enable_profiling(): True}})
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
    return layers, run_ms, backend.describe(), "OpenVINO fuses activations into the layer before them"


def format_latency_table(profile: LatencyProfile, top: int | None = None,
                         macs_by_node: dict[str, int] | None = None) -> str:
    """Plain-text table, slowest layers first (``top`` keeps that many), then the per-layer sum against
    the end-to-end mean. ``macs_by_node`` (ONNX node name -> MACs, from the static profile) adds MACs
    and the GMAC/s each layer reached."""
    layers = sorted(profile.layers, key=lambda r: -r.ms)
    shown = layers[:top] if top else layers
    total = profile.total_ms or 1.0
    joined = bool(macs_by_node)
    header = f"{'layer':<56} {'op':<18} {'kernel':<22} {'ms':>8} {'%':>6}" + \
             (f" {'MMACs':>8} {'GMAC/s':>7}" if joined else "")
    lines = [(f"per-layer latency of {profile.artifact} ({profile.backend}), mean of {profile.runs} runs; "
              "slowest first" + (f" (top {len(shown)} of {len(layers)})" if len(shown) < len(layers) else "")),
             header, "-" * len(header)]
    for r in shown:
        label = r.name if len(r.name) <= 56 else "..." + r.name[-53:]
        line = f"{label:<56} {r.op_type[:18]:<18} {r.exec_type[:22]:<22} {r.ms:>8.3f} {100 * r.ms / total:>6.1f}"
        if joined:
            node = onnx_node(r.name, macs_by_node)
            macs = macs_by_node[node] if node is not None else 0
            line += f" {macs / 1e6:>8.2f} {macs / (r.ms * 1e6):>7.2f}" if macs and r.ms > 0 else f" {'':>8} {'':>7}"
        lines.append(line)
    coverage = 100 * profile.total_ms / profile.end_to_end_ms if profile.end_to_end_ms else 0.0
    lines += ["", (f"layers sum {profile.total_ms:.3f} ms of {profile.end_to_end_ms:.3f} ms end to end "
                   f"({coverage:.0f} %; the rest is the runtime's own work between layers)")]
    if profile.note:
        lines.append(f"note: {profile.note}")
    return "\n".join(lines)

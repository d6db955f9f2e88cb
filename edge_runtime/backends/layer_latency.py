"""Per-layer latency of a package's artifact from its backend's own profiler (runs on the device).

Each backend that has a profiler implements ``Backend.profile_layers`` (ONNX Runtime's JSON trace,
OpenVINO's ``PERF_COUNT``); this module picks the artifact, feeds random tensors of its input shape
(latency of these CNNs does not depend on the values) and formats the table.

Only numpy and the backend are needed here (no torch, onnx or converters).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..deploy.hostinfo import physical_cores
from ..errors import EdgeRuntimeError
from ..manifest import InputSpec, load_manifest
from . import BACKENDS, profiled_formats, require_installed
from .base import LayerTime


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
    cls = BACKENDS.get(backend)
    if cls is not None and not cls.has_layer_profiler():
        raise EdgeRuntimeError(cls.no_profiler_reason())
    if cls is None:
        raise EdgeRuntimeError(f"unknown backend {backend!r} for per-layer latency; choose one of "
                               f"{', '.join(profiled_formats())}")
    if runs < 1 or warmup < 0:
        raise EdgeRuntimeError(f"runs must be >= 1 and warmup >= 0 (got {runs}, {warmup})")
    manifest = load_manifest(package)
    art = manifest.artifact(backend, precision)
    path = manifest.artifact_path(art)
    spec = manifest.input_for(art)
    feed = {spec.name: random_input(spec)}
    require_installed(path, backend)  # a clear error before the library is imported
    # profiled as it runs: with the settings its manifest entry records as verified (bf16 on OpenVINO)
    timings = cls.profile_layers(path, threads or physical_cores(), feed, runs, warmup, cls.recorded_options(art.extra))
    return LatencyProfile(artifact=art.file, backend=timings.backend, runs=runs,
                          end_to_end_ms=float(np.mean(timings.run_ms)), layers=timings.layers, note=timings.note)


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

"""Backend registry: artifact format -> backend class, imported only when used.

Adding a backend is one new module plus one line here.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..deploy.hostinfo import package_version
from ..errors import BackendUnavailableError
from .base import Backend, TensorSpec


@dataclass(frozen=True)
class BackendEntry:
    target: str  # "module:Class"
    libraries: tuple[tuple[str, str], ...]  # (import name, distribution name); any one is enough
    extra: str  # pip extra that installs it


BACKENDS: dict[str, BackendEntry] = {
    "onnx": BackendEntry("edge_runtime.backends.onnxruntime:OrtBackend", (("onnxruntime", "onnxruntime"),), "onnx"),
    "openvino": BackendEntry("edge_runtime.backends.openvino:OpenVinoBackend", (("openvino", "openvino"),),
                             "openvino"),
    "tflite": BackendEntry("edge_runtime.backends.litert:LiteRtBackend",
                           (("ai_edge_litert", "ai-edge-litert"), ("tflite_runtime", "tflite-runtime")), "tflite"),
}


def installed_library(fmt: str) -> str | None:
    """'name version' of the first installed library that runs ``fmt`` artifacts, else None."""
    for module, dist in BACKENDS[fmt].libraries:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a broken install counts as missing
            found = False
        if found:
            return f"{dist} {ver}" if (ver := package_version(dist)) else dist
    return None


def installed_backends() -> dict[str, str]:
    return {fmt: lib for fmt in BACKENDS if (lib := installed_library(fmt))}


def open_backend(path: Path, format: str, threads: int, options: dict[str, Any] | None = None) -> Backend:
    """Load ``path`` with the backend registered for ``format``; a clear error when it is not installed."""
    entry = BACKENDS.get(format)
    if entry is None:
        raise BackendUnavailableError(f"{path}: no backend for artifact format {format!r} "
                                      f"(known: {', '.join(BACKENDS)})")
    if installed_library(format) is None:
        have = ", ".join(f"{f} ({lib})" for f, lib in installed_backends().items()) or "none"
        needs = " or ".join(dist for _, dist in entry.libraries)
        raise BackendUnavailableError(f"{path}: a {format} artifact needs {needs}, not installed here "
                                      f"(installed backends: {have}); pip install 'edge-runtime[{entry.extra}]'")
    module, cls = entry.target.split(":")
    return getattr(importlib.import_module(module), cls)(path, threads, options)


__all__ = ["BACKENDS", "Backend", "TensorSpec", "installed_backends", "open_backend"]

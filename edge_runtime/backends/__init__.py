"""Backend registry: artifact format -> backend class, imported only when used.

Adding a backend is one new module plus one line here.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from ..errors import BackendUnavailableError
from .base import Backend, TensorSpec

BACKENDS: dict[str, str] = {
    "onnx": "edge_runtime.backends.onnxruntime:OrtBackend",
}


def open_backend(path: Path, format: str, threads: int, options: dict[str, Any] | None = None) -> Backend:
    """Load ``path`` with the backend registered for ``format``."""
    target = BACKENDS.get(format)
    if target is None:
        raise BackendUnavailableError(f"{path}: no backend for artifact format {format!r} "
                                      f"(known: {', '.join(BACKENDS)})")
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)(path, threads, options)


__all__ = ["BACKENDS", "Backend", "TensorSpec", "open_backend"]

"""The backend interface: load an artifact, describe its tensors, run arrays in and out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]
    dtype: str
    # for quantised int8/uint8 I/O: real = (q - zero_point) * scale
    scale: float | None = None
    zero_point: int | None = None


class Backend(ABC):
    """One loaded artifact. Subclasses take (artifact path, threads, options) and nothing else,
    and fill ``inputs``/``outputs`` with the graph's tensor specs when they load it."""

    name: str = "backend"

    def __init__(self, path: Path, threads: int, options: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.threads = threads
        self.options = dict(options or {})
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []

    @abstractmethod
    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference; returns every output by name."""

    def describe(self) -> str:
        """Short human description, e.g. 'onnxruntime 1.32 CPUExecutionProvider, 2 threads'."""
        return f"{self.name}, {self.threads} threads"

"""What ``converters.convert`` hands a converter and what it gets back: the one interface every
converter module (quantize_onnx, convert_openvino, tflite) shares with the orchestrator.

Kept apart from ``convert`` so that a converter imports its interface without importing the
orchestrator that loads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edge_runtime.manifest import Manifest

from .accuracy import AccuracyBudget, CosineAgreement
from .calibration import CalibrationSet


@dataclass
class ConvertJob:
    manifest: Manifest
    fp32_onnx: Path
    precision: str
    calibration: CalibrationSet | None
    options: dict[str, Any] = field(default_factory=dict)
    progress: Callable[[str], None] = lambda msg: None
    agreement: CosineAgreement | None = None  # with FP32 on held-out images, for converters' own choices
    accuracy: AccuracyBudget | None = None  # INT8 only: keep layers in float until this is met
    stage: Path | None = None  # where the converter writes; the package folder when None

    @property
    def out_dir(self) -> Path:
        return self.stage or self.manifest.root


@dataclass
class ConvertResult:
    file: str  # relative to the package folder
    outputs: list[str]  # graph output names, in the family's role order
    extra: dict[str, Any] = field(default_factory=dict)  # format-specific manifest fields

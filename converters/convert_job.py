"""What ``converters.convert`` hands a converter and what it gets back: the one interface every
converter module (quantize_onnx, convert_openvino, tflite) shares with the orchestrator.

Kept apart from ``convert`` so that a converter imports its interface without importing the
orchestrator that loads it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from edge_runtime.deploy.hostinfo import detect_host, host_int8_saturates
from edge_runtime.deploy.targets import Target, load_target
from edge_runtime.manifest import Manifest

from .accuracy import AccuracyBudget, CosineAgreement
from .calibration import CalibrationSet

log = logging.getLogger(__name__)


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


@lru_cache(maxsize=1)
def host_cpu_target() -> str | None:
    """The first CPU-only profile ``targets --detect`` matches here (a board's, else the CPU family's)."""
    return next((name for name in detect_host().matching_targets if not load_target(name).accelerator), None)


def host_is_target(options: dict[str, Any]) -> tuple[bool, str]:
    """Whether timing here tells how the package runs where it goes (no target, or the target is this
    host's CPU profile), and the host's name."""
    host = detect_host()
    target = options.get("target")
    return target is None or target == host_cpu_target(), f"{host.cpu or 'unknown CPU'} ({host.arch})"


def int8_weights_saturate(options: dict[str, Any]) -> bool:
    """Whether the CPU the package is for multiplies u8 x s8 pairs with 16-bit saturation (x86 without
    VNNI/AMX: AVX2's vpmaddubsw), which full 8-bit weights can overflow, so INT8 weights feeding it take 7
    bits: the target profile's ``onnx_weight_bits`` (no target: this host's CPU profile's). A profile that
    does not say counts as saturating: 7 bits are right on every CPU."""
    if options.get("target"):
        return options.get("onnx_weight_bits", "7") == "7"
    here = host_cpu_target()
    return (load_target(here).onnx_weight_bits if here else None) in (None, "7")


def target_options(profile: Target) -> dict[str, Any]:
    """What the converters read of a target profile besides its settings: its name, and whether it is an x86
    CPU (no accelerator), the only kind whose INT8 saturation ``saturation_unmeasured`` guards against."""
    return {"target": profile.name, "target_x86_cpu": profile.x86_cpu}


def saturation_unmeasured(options: dict[str, Any]) -> bool:
    """Whether the package's CPU is an x86 that saturates (``int8_weights_saturate``; a target that is not an
    x86 CPU, ``target_options``, is not) but this host does not or cannot say: convert then cannot measure
    what 8-bit weights compute there, so NNCF's graphs take 7-bit weights everywhere (its overflow fix
    "enable"), which compute the same on both (docs/formats-and-int8.md). A host that saturates itself
    measures what the device computes, so its 8-bit graphs are recorded as measured."""
    if options.get("target") and not options.get("target_x86_cpu", False):
        return False
    return int8_weights_saturate(options) and host_int8_saturates() is not True


def time_or_warn(what: str, timer: Callable[[], dict[str, dict[str, float]]]) -> dict[str, dict[str, float]] | None:
    """``timer()`` (a fresh-process timing, ``edge_runtime.speed``), or None with one warning line naming
    ``what`` when it fails in any way: a timing only ranks candidates, so it never costs the conversion."""
    try:
        return timer()
    except Exception as exc:  # noqa: BLE001 (a runtime's, the OS's or the worker's own error: all optional here)
        log.warning("%s: not timed: %s", what, (str(exc).splitlines() or [type(exc).__name__])[0])
        return None


# two candidates timing within this ratio of each other tie, and the more accurate ships: YOLO-FastestV2's
# OpenVINO presets read 1.011x then 0.992x of each other in two conversions of the same model
SPEED_TIE = 1.02


def choose_candidate(value: dict[str, float], speed: dict[str, float], floor: float, rule: str, metric: str,
                     host: str, untimed: str) -> tuple[str, str]:
    """The candidate a converter ships of several measured ones, and why: ``value`` (key -> its accuracy by
    ``metric``, higher is better), ``speed`` (key -> its speed against a common baseline on ``host``; empty when
    not timed, ``untimed`` says why). Eligible are those at or above ``floor`` (``rule`` says what that is),
    else the most accurate; timed, the fastest eligible one ships, unless a more accurate eligible one times
    within ``SPEED_TIE`` of it (a tie on this timing's noise), else the most accurate."""
    eligible = [key for key in value if value[key] >= floor - 1e-9] or [max(value, key=value.get)]
    if not speed:
        return max(eligible, key=value.get), f"the most accurate: speed not measured ({untimed})"
    fastest = max(eligible, key=speed.get)
    chosen = max((key for key in eligible if speed[key] * SPEED_TIE >= speed[fastest]),
                 key=lambda key: (value[key], speed[key]))  # equally accurate: the faster
    why = f"the fastest on {host} whose {metric} {rule}" if chosen == fastest else \
        (f"the most accurate of those on {host} whose {metric} {rule} and that time within "
         f"{SPEED_TIE - 1:.0%} of the fastest ({fastest}, {speed[fastest] / speed[chosen]:.3f}x it: a tie)")
    return chosen, why + "".join(
        f"; {key} is faster ({speed[key]:.2f}x) but its {metric} {value[key]:.4f} is not"
        for key in value if speed[key] > speed[fastest])

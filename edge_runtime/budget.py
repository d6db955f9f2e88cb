"""The accuracy budget ``--backend auto`` chooses within: how much accuracy an artifact may have lost
against FP32, as convert recorded it in the manifest (``recorded_accuracy``).

A budget names one or both of two measures (``--max-drop cos:0.01``, ``map:0.5``, ``map:0.5,cos:0.01``):

- ``cos:D``: 1 - the mean per-image output cosine with FP32 ONNX on held-out images; every converted
  artifact records it (``fp32_agreement``).
- ``map:P``: COCO mAP points below FP32; an INT8 made with ``convert --max-map-drop`` records it.

An artifact is judged on its mAP drop when it records one and the budget names map, else on its cosine
drop when the budget names cos. An FP32 artifact without a record (the exported model, an imported one)
counts as no drop; any other artifact without the measure the budget names is not within it. ``off``
admits every verified artifact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .compare import as_float
from .errors import ManifestError, UsageError

DEFAULT_MAX_COSINE_DROP = 0.01  # convert's default INT8 budget: mean per-image cosine >= 0.99
OFF = "off"
EPSILON = 1e-9  # as convert counts a budget met: 1 - 0.99 is 0.010000000000000009 in floats
SYNTAX = ("cos:D (1 - mean output cosine with FP32, e.g. cos:0.01), map:P (mAP points below FP32, e.g. map:0.5), "
          "both comma-separated, or off")


@dataclass(frozen=True)
class Judgement:
    within: bool
    drop: str  # the recorded drop as judged ('cosine drop 0.0132', 'mAP drop 0.31 pt', 'no drop (FP32)')


@dataclass(frozen=True)
class DropBudget:
    """The most accuracy an artifact may have lost against FP32; both None: no budget (``off``)."""

    max_cosine_drop: float | None = None
    max_map_points: float | None = None
    source: str = field(default="--max-drop", compare=False)  # where it came from, for the explanation

    @property
    def off(self) -> bool:
        return self.max_cosine_drop is None and self.max_map_points is None

    def __str__(self) -> str:
        parts = ([f"map:{self.max_map_points:g}"] if self.max_map_points is not None else []) + \
                ([f"cos:{self.max_cosine_drop:g}"] if self.max_cosine_drop is not None else [])
        return ",".join(parts) or OFF

    def judge(self, art: Any) -> Judgement:
        """Whether the ``manifest.Artifact`` ``art`` is within this budget, by its recorded accuracy."""
        found = recorded_accuracy(art.extra)
        if self.off:
            return Judgement(True, describe_drop(found) or "no recorded drop")
        if self.max_map_points is not None and "map_drop_points" in found:
            drop = found["map_drop_points"]
            return Judgement(drop <= self.max_map_points + EPSILON, f"mAP drop {drop:.2f} pt")
        if self.max_cosine_drop is not None and "cosine_mean" in found:
            drop = 1.0 - found["cosine_mean"]
            return Judgement(drop <= self.max_cosine_drop + EPSILON, f"cosine drop {drop:.4f}")
        if art.precision == "fp32":
            return Judgement(True, "no drop (FP32)")
        wanted = "mAP drop" if self.max_cosine_drop is None else "cosine"
        return Judgement(False, f"no recorded {wanted} vs FP32")


def parse_budget(text: str, source: str = "--max-drop") -> DropBudget:
    """``'cos:0.01'``, ``'map:0.5'``, ``'map:0.5,cos:0.01'`` or ``'off'`` -> DropBudget; anything else is a
    one-line ``UsageError`` naming the syntax."""
    if not isinstance(text, str):
        raise UsageError(f"{source} {text!r}: give the unit: {SYNTAX}")
    spec = text.strip().lower()
    if spec in (OFF, "none"):
        return DropBudget(source=source)
    limits: dict[str, float] = {}
    for part in spec.split(","):
        unit, sep, value = part.strip().partition(":")
        try:
            number = float(value) if sep else float("nan")
        except ValueError:
            number = float("nan")
        bound = {"cos": 1.0, "map": 100.0}.get(unit)
        if bound is None or unit in limits or not 0 <= number <= bound:
            raise UsageError(f"{source} {text}: expected {SYNTAX}; cos is 0 to 1, map 0 to 100")
        limits[unit] = number
    return DropBudget(limits.get("cos"), limits.get("map"), source)


def budget_for(manifest: Any, max_drop: str | DropBudget | None = None) -> DropBudget:
    """The budget auto chooses within: ``max_drop`` when given, else the INT8 budget convert recorded in
    the package (a mAP budget judges the artifacts without a mAP record by the built-in cosine one), else
    the built-in ``cos:0.01``."""
    if isinstance(max_drop, DropBudget):
        return max_drop
    if max_drop is not None:
        return parse_budget(max_drop)
    recorded = (manifest.int8_budget or {}).get("max_drop")
    if recorded is None:
        return DropBudget(DEFAULT_MAX_COSINE_DROP, source="built-in")
    budget = parse_budget(recorded, source=f"{manifest.path} int8_budget")
    cosine = DEFAULT_MAX_COSINE_DROP if budget.max_cosine_drop is None and not budget.off else budget.max_cosine_drop
    return DropBudget(cosine, budget.max_map_points, source="the package's, from convert")


def check_recorded_budget(where: str, record: Any) -> None:
    """A manifest's ``int8_budget``: an object whose ``max_drop`` is null or a budget ``parse_budget`` reads."""
    if not isinstance(record, dict):
        raise ManifestError(f"{where}: int8_budget must be an object")
    if record.get("max_drop") is not None:
        try:
            parse_budget(record["max_drop"])
        except UsageError:
            raise ManifestError(f"{where}: int8_budget.max_drop {str(record['max_drop'])[:40]!r} is not {SYNTAX}") \
                from None


def describe_drop(found: dict[str, float]) -> str:
    """``recorded_accuracy``'s figures as a drop: 'mAP drop 0.31 pt' when recorded, else 'cosine drop 0.0132'."""
    if "map_drop_points" in found:
        return f"mAP drop {found['map_drop_points']:.2f} pt"
    return f"cosine drop {1.0 - found['cosine_mean']:.4f}" if "cosine_mean" in found else ""


def recorded_accuracy(extra: dict[str, Any]) -> dict[str, float]:
    """What convert measured against FP32 for this artifact: the mean per-image output cosine on its
    held-out images and, for an INT8 made against a labelled budget, the mAP drop in points. A value that
    is not a finite number (a damaged manifest) counts as not recorded."""
    found: dict[str, float] = {}
    agreement = extra.get("fp32_agreement")
    if isinstance(agreement, dict):
        cosine = as_float(agreement.get("cosine_mean", agreement.get("cosine")))
        if math.isfinite(cosine):
            found["cosine_mean"] = cosine
    quantization = extra.get("quantization")
    control = quantization.get("accuracy_control") if isinstance(quantization, dict) else None
    drop = as_float(control.get("drop")) if isinstance(control, dict) and control.get("metric") == "map" else math.nan
    if math.isfinite(drop):
        found["map_drop_points"] = 100 * drop
    return found

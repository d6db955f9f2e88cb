"""How close two sets of model outputs are: worst max-abs-diff and worst cosine over paired outputs.

Used by the converters (every new artifact against FP32 ONNX) and by ``bench`` (its cosine column);
``judge`` is the rule that decides whether an artifact may be listed and chosen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


def compare(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> dict[str, float]:
    diffs, cosines = [], []
    for ref, got in zip(reference, candidate):
        a, b = ref.astype(np.float64).ravel(), got.astype(np.float64).ravel()
        diffs.append(float(np.abs(a - b).max()))
        cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)))
    return {"max_abs_diff": max(diffs), "cosine": min(cosines)}


# The agreement an artifact needs before a manifest lists it (per image, the lowest cosine over the
# outputs, against FP32 ONNX on held-out images; the FP32 ONNX itself against torch). FP32 and FP16
# are the same maths: 0.999 worst image. bf16 (OpenVINO's float ops in bf16) rounds every activation to
# 8 significant bits: 0.98, twice the largest loss measured (docs/tolerances.md). INT8 without a budget
# gets a sanity floor, set from what plain INT8 of the bundled/official models measured on COCO photos
# (lowest seen: mean 0.93 and a worst crowded photo 0.70, YOLO-Fastest-1.1 TFLite) against a broken
# conversion (0.06): mean >= 0.90 and worst >= 0.50. With an INT8 budget (--int8-min-cosine /
# --max-map-drop) the budget replaces the mean floor; the worst-image floor still applies.
MIN_WORST_COSINE = {"fp32": 0.999, "fp16": 0.999, "bf16": 0.98, "int8": 0.50}
MIN_MEAN_COSINE_INT8 = 0.90


@dataclass(frozen=True)
class Verdict:
    """Whether an artifact passed its check against FP32, and the line that says so."""

    passed: bool
    check: str  # what was measured against what, e.g. "worst-image cosine vs FP32 ONNX"
    value: float | None
    threshold: float | None
    higher_is_better: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "check": self.check, "value": self.value, "threshold": self.threshold,
                "higher_is_better": self.higher_is_better}

    @classmethod
    def from_dict(cls, record: Any) -> Verdict:
        """A recorded verdict; a malformed one (from a hand-edited manifest) is a failed check."""
        if not isinstance(record, dict) or not isinstance(record.get("passed"), bool):
            return cls(False, "malformed verification record", None, None)
        value, threshold = as_float(record.get("value")), as_float(record.get("threshold"))
        return cls(record["passed"], str(record.get("check", ""))[:200], None if np.isnan(value) else value,
                   None if np.isnan(threshold) else threshold, record.get("higher_is_better") is not False)

    def describe(self) -> str:
        """'worst-image cosine vs FP32 ONNX 0.06433, needs >= 0.999'."""
        if self.value is None or self.threshold is None:
            return self.check
        return f"{self.check} {self.value:.5g}, needs {'>=' if self.higher_is_better else '<='} {self.threshold:g}"


def judge(precision: str, extra: dict[str, Any]) -> Verdict:
    """The verdict for an artifact from the figures its manifest entry records (``extra``): the
    export's ``parity_vs_torch``, a conversion's ``fp32_agreement`` and INT8 ``accuracy_control``."""
    if extra.get("imported"):
        return Verdict(True, "imported: the package's own reference", None, None)
    if "parity_vs_torch" in extra:
        parity = extra["parity_vs_torch"]
        cosine = as_float(parity.get("cosine") if isinstance(parity, dict) else None)
        return _at_least("cosine vs torch", cosine, MIN_WORST_COSINE["fp32"])
    agreement = extra.get("fp32_agreement")
    if not isinstance(agreement, dict) or "cosine" not in agreement:
        return Verdict(False, "no agreement check against FP32 recorded", None, None)
    floor = MIN_WORST_COSINE.get(precision, MIN_WORST_COSINE["fp32"])
    worst = _at_least("worst-image cosine vs FP32 ONNX", as_float(agreement["cosine"]), floor)
    if precision != "int8" or not worst.passed:
        return worst
    quantization = extra.get("quantization")
    control = quantization.get("accuracy_control") if isinstance(quantization, dict) else None
    if isinstance(control, dict):
        if not control.get("met"):
            if control.get("metric") == "map":  # in mAP points, as --max-map-drop takes it
                return Verdict(False, "INT8 budget not met: mAP drop (points) vs FP32",
                               100 * as_float(control.get("drop")), 100 * as_float(control.get("max_drop")),
                               higher_is_better=False)
            return Verdict(False, f"INT8 budget not met: {control.get('metric')}", as_float(control.get("after")),
                           as_float(control.get("target")))
        return Verdict(True, f"INT8 budget met ({control.get('metric')}) and {worst.check}", worst.value,
                       worst.threshold)
    mean = as_float(agreement.get("cosine_mean", agreement["cosine"]))
    return _at_least("mean per-image cosine vs FP32 ONNX", mean, MIN_MEAN_COSINE_INT8)


def as_float(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")


def _at_least(check: str, value: float, threshold: float) -> Verdict:
    return Verdict(bool(np.isfinite(value) and value >= threshold), check, value, threshold)

"""Accuracy-aware INT8: keep the quantised layers that cost the most in float until a budget is met.

The budget is a metric measured on held-out images (never the calibration ones) that the INT8
model may lose at most ``max_drop`` of, against the FP32 model:

- ``CosineAgreement``: per image, the lowest cosine over the model's outputs against the FP32 ONNX
  outputs, averaged over the images. FP32 scores 1.0, so ``--int8-min-cosine 0.99`` is a drop of 0.01.

ONNX and OpenVINO hand the search to NNCF's ``quantize_with_accuracy_control``: it quantises
everything, ranks each quantiser group by how much reverting it restores the metric on a subset of
the images, reverts the worst groups to float and re-ranks until the drop fits (or nothing is left
to revert). ``run_nncf_search`` adapts a metric to it; the converter records which convolutions
ended in float and the metric before and after.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from edge_runtime.compare import compare

log = logging.getLogger(__name__)
Runner = Callable[[np.ndarray], list[np.ndarray]]  # NCHW tensor -> outputs in the FP32 artifact's order


class CosineAgreement:
    """Agreement with the FP32 model: higher is better, 1.0 is identical outputs."""

    name = "cosine"

    def __init__(self, reference: Runner, images: Sequence[np.ndarray]) -> None:
        self.images = list(images)
        self._reference = [reference(t) for t in self.images]

    def per_image(self, run: Runner, indices: Sequence[int] | None = None) -> list[float]:
        indices = range(len(self.images)) if indices is None else indices
        return [compare(self._reference[i], run(self.images[i]))["cosine"] for i in indices]

    def __call__(self, run: Runner) -> float:
        return float(np.mean(self.per_image(run)))


@dataclass
class AccuracyBudget:
    metric: CosineAgreement
    max_drop: float  # absolute drop of the metric allowed against FP32 (1.0 for the cosine metric)
    fp32_value: float = 1.0

    @property
    def target(self) -> float:
        return self.fp32_value - self.max_drop

    def describe(self, before: float, after: float, float_layers: list[str]) -> dict[str, Any]:
        """``float_layers``: the layers the search put back in float (beyond the converter's defaults)."""
        met = after >= self.target - 1e-9
        if not met:
            log.warning("INT8 accuracy budget not met: %s %.4f after keeping %d layers in float, target %.4f",
                        self.metric.name, after, len(float_layers), self.target)
        return {"metric": self.metric.name, "target": round(self.target, 6), "fp32": self.fp32_value,
                "before": round(before, 6), "after": round(after, 6), "met": met,
                "validation_images": len(self.metric.images), "float_layers": float_layers}


def run_nncf_search(model: Any, budget: AccuracyBudget, input_name: str, calibration: Sequence[np.ndarray], runner_of: Callable[[Any], Runner],
                    ranking_images: int = 8, **kwargs: Any) -> Any:
    """Call NNCF's accuracy-aware quantiser with ``budget.metric`` as its validation function.

    ``runner_of`` turns the model object NNCF validates (an ``onnx.ModelProto`` or an OpenVINO
    ``CompiledModel``) into a ``Runner``. Ranking on a few images keeps the search to minutes on
    two cores; the final check uses all of them.
    """
    import nncf

    metric = budget.metric

    def validate(model_for_inference: Any, items: Any) -> tuple[float, list[float]]:
        run = runner_of(model_for_inference)
        values = metric.per_image(run, [index for index, _ in items])
        return float(np.mean(values)), values

    to_input = lambda item: {input_name: item[1]}  # items carry their index for the metric
    return nncf.quantize_with_accuracy_control(
        model, nncf.Dataset(list(enumerate(calibration)), to_input),
        nncf.Dataset(list(enumerate(metric.images)), to_input), validate,
        max_drop=budget.max_drop, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calibration),
        advanced_accuracy_restorer_parameters=nncf.AdvancedAccuracyRestorerParameters(
            ranking_subset_size=min(ranking_images, len(metric.images))),
        **kwargs)


def greedy_float_search(build: Callable[[list[str]], Runner], candidates: Sequence[str], budget: AccuracyBudget,
                        ranking_images: int = 8, max_float_layers: int = 16,
                        progress: Callable[[str], None] = lambda msg: None) -> tuple[list[str], float, float]:
    """For converters without a library search (TFLite): ``build(float_layers)`` quantises the model
    with those layers left in float and returns its runner.

    Each candidate is ranked once by how much keeping it alone in float raises the metric on a few
    held-out images; then the best ones are added to the float set one by one until the budget is
    met or ``max_float_layers`` are float. Returns (float layers, metric before, metric after).
    """
    metric = budget.metric
    before = after = metric(build([]))
    if before >= budget.target:
        return [], before, after
    subset = sorted({int(i) for i in np.linspace(0, len(metric.images) - 1, min(ranking_images, len(metric.images)))})
    base = float(np.mean(metric.per_image(build([]), subset)))
    gains = {}
    for number, layer in enumerate(candidates, 1):
        if number % 10 == 1:
            progress(f"ranking layers by sensitivity: {number}/{len(candidates)}")
        gains[layer] = float(np.mean(metric.per_image(build([layer]), subset))) - base
    chosen: list[str] = []
    for layer in sorted((c for c in gains if gains[c] > 0), key=gains.get, reverse=True)[:max_float_layers]:
        chosen.append(layer)
        after = metric(build(chosen))
        progress(f"{len(chosen)} layers in float: {metric.name} {after:.4f} (target {budget.target:.4f})")
        if after >= budget.target:
            break
    return chosen, before, after
